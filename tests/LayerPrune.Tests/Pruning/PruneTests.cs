using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Tests.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Pruning;

public class PruneTests
{
    static byte[] Bytes(SafeTensorsFile f, string name) { using var ms = new MemoryStream(); f.CopyBytes(name, ms); return ms.ToArray(); }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void PrunedCheckpointHoldsExactlyHfsTensorsAndLogits(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var tmp = new TempDir();
        string outDir = tmp["pruned"];
        using (var src = Checkpoint.Open(g.Dir)) CheckpointPruner.Write(src, PrunePlan.FromLayerSpec("3-5", src.Config.NumLayers), outDir);

        using var ours = SafeTensorsFile.Open(Path.Combine(outDir, "model.safetensors"));
        using var hf = SafeTensorsFile.Open(Path.Combine(g.PrunedDir, "model.safetensors"));
        Assert.Equal(hf.Tensors.Keys.Order(), ours.Tensors.Keys.Order());
        foreach (var (name, info) in hf.Tensors)
        {
            Assert.Equal(info.Dtype, ours.Tensors[name].Dtype);
            Assert.Equal(info.Shape, ours.Tensors[name].Shape);
            Assert.True(Bytes(hf, name).AsSpan().SequenceEqual(Bytes(ours, name)), $"{arch}: bytes of {name} differ");
        }
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!.AsObject();
        Assert.Equal(5, (int)config["num_hidden_layers"]!);
        var hfConfig = JsonNode.Parse(File.ReadAllText(Path.Combine(g.PrunedDir, "config.json")))!.AsObject();
        Assert.True(JsonNode.DeepEquals(hfConfig, config), $"{arch}: config differs from HF's pruned config");
        Assert.True(File.Exists(Path.Combine(outDir, "generation_config.json")));

        var plan = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "prune_plan.json")))!;
        Assert.Equal([3, 4, 5], plan["removed"]!.AsArray().Select(x => (int)x!));
        Assert.Equal([0, 1, 2, 6, 7], plan["kept"]!.AsArray().Select(x => (int)x!));
        Assert.Equal(3, (int)plan["old_to_new"]!["6"]!);

        using var model = CausalLM.Load(outDir);
        using var ids = g["input_ids"].narrow(0, 0, 1);
        using var logits = model.Forward(ids);
        Assert.InRange((logits[0] - g["pruned_3_6_logits_row0"]).abs().max().item<float>(), 0, 1e-4);
    }

    [Fact]
    public void ShardedOutputWithFreshIndexLoadsToTheSameLogits()
    {
        using var g = new GoldenFixture("qwen2");
        using var tmp = new TempDir();
        using (var src = Checkpoint.Open(g.Dir)) CheckpointPruner.Write(src, PrunePlan.FromLayerSpec("3-5", 8), tmp["sharded"], maxShardBytes: 200_000);
        var index = JsonNode.Parse(File.ReadAllText(tmp["sharded/model.safetensors.index.json"]))!;
        var shards = index["weight_map"]!.AsObject().Select(kv => (string)kv.Value!).Distinct().ToList();
        Assert.True(shards.Count > 1);
        Assert.All(Directory.GetFiles(tmp["sharded"], "model-*.safetensors"), f => Assert.True(new FileInfo(f).Length <= 200_000 + 50_000));
        // Re-prune the sharded output: sharding is kept (fresh index) and layers renumber again.
        using (var src = Checkpoint.Open(tmp["sharded"]))
        {
            Assert.True(src.IsSharded);
            CheckpointPruner.Write(src, PrunePlan.FromLayerSpec("4", 5), tmp["twice"]);
            Assert.True(File.Exists(tmp["twice/model.safetensors.index.json"]));
        }
        using var model = CausalLM.Load(tmp["sharded"]);
        using var ids = g["input_ids"].narrow(0, 0, 1);
        using var logits = model.Forward(ids);
        Assert.InRange((logits[0] - g["pruned_3_6_logits_row0"]).abs().max().item<float>(), 0, 1e-4);
        using var twice = CausalLM.Load(tmp["twice"]);
        Assert.Equal(4, twice.NumLayers);
    }

    [Fact]
    public void RefusesExistingOutputUnlessForcedAndNeverTheInput()
    {
        using var g = new GoldenFixture("llama");
        using var tmp = new TempDir();
        using var src = Checkpoint.Open(g.Dir);
        var plan = PrunePlan.FromLayerSpec("3-5", 8);
        Directory.CreateDirectory(tmp["exists"]);
        File.WriteAllText(tmp["exists/keep.txt"], "x");
        var e = Assert.Throws<LayerPruneException>(() => CheckpointPruner.Write(src, plan, tmp["exists"]));
        Assert.Contains("already exists", e.Message);
        Assert.True(File.Exists(tmp["exists/keep.txt"]));
        CheckpointPruner.Write(src, plan, tmp["exists"], force: true);
        Assert.False(File.Exists(tmp["exists/keep.txt"]));
        Assert.Throws<LayerPruneException>(() => CheckpointPruner.Write(src, plan, g.Dir, force: true));
        Assert.True(File.Exists(Path.Combine(g.Dir, "model.safetensors")));
        Assert.Empty(Directory.GetDirectories(tmp.Path, ".*tmp-*"));
    }

    [Fact]
    public void PlansFollowTheirRules()
    {
        Assert.Equal([7, 8, 9, 10, 11, 12, 13, 14], PrunePlan.Deepest(8, 16).Removed);    // n deepest except the final layer
        Assert.Equal([1, 2, 3], PrunePlan.Shallowest(3, 16).Removed);
        Assert.Equal([2, 3, 4, 9], PrunePlan.FromLayerSpec("2-4, 9", 16).Removed);
        var r = PrunePlan.RandomBlock(4, 16, seed: 3);
        Assert.Equal(r.Removed, PrunePlan.RandomBlock(4, 16, seed: 3).Removed);
        Assert.Equal(4, r.Removed.Length);
        Assert.Equal(3, r.Removed[^1] - r.Removed[0]);
        Assert.Equal(4, PrunePlan.BlockSizeFromFraction(0.25, 16));
        foreach (var bad in new[] { "16", "3,3", "0-15", "5-2", "x" })
            Assert.Throws<LayerPruneException>(() => PrunePlan.FromLayerSpec(bad, 16));
        Assert.Throws<LayerPruneException>(() => PrunePlan.Deepest(16, 16));
        var yaml = PrunePlan.FromLayerSpec("6-13", 16).ToMergekitYaml("m", "bfloat16");
        Assert.Contains("layer_range: [0, 6]", yaml);
        Assert.Contains("layer_range: [14, 16]", yaml);
    }
}
