using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Tests.Modeling;
using LayerPrune.Tests.Pruning;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Sublayers;

/// <summary>Sublayer-pruned checkpoints in the Nemotron-NAS layout: written, read back, same logits.</summary>
public class NemotronNasCheckpointTests
{
    public static readonly TheoryData<string> Writable = new() { "llama", "llama3rope", "mistral", "qwen2" };

    [Theory, MemberData(nameof(Writable))]
    public void WrittenCheckpointReloadsToTheInMemoryLogits(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var tmp = new TempDir();
        using var source = Checkpoint.Open(g.Dir);
        var plan = SublayerPlan.FromSpec("attention:1,3,mlp:2", PruneUnit.Sublayer, source.Config);
        var result = SublayerCheckpointWriter.Write(source, plan, tmp["out"]);
        Assert.Equal(source.Config.NumLayers, result.Layers);   // no layer lost both sublayers
        Assert.Contains("intermediate_size 176", result.Note);   // 176 is not a multiple of 256

        var ids = g["input_ids"][0].data<long>().ToArray();
        using var input = tensor(ids, [1, ids.Length]);
        using var model = CausalLM.Load(g.Dir);
        using var expected = model.Forward(input, options: new ForwardOptions { Skip = plan.Mask });
        using var pruned = CausalLM.Load(tmp["out"]);
        Assert.Equal(ArchitectureFamily.NemotronNas, pruned.Config.Family);
        using var got = pruned.Forward(input);
        Assert.InRange(SublayerForwardTests.MaxDiff(got, expected), 0, 1e-6);

        // The layout: no tensors for removed sublayers (norms included); block_configs with the loaders' keys.
        Assert.DoesNotContain(pruned.Checkpoint.WeightMap.Keys, n => n.StartsWith("model.layers.1.self_attn.", StringComparison.Ordinal));
        Assert.DoesNotContain("model.layers.3.input_layernorm.weight", pruned.Checkpoint.WeightMap.Keys);
        Assert.DoesNotContain("model.layers.2.post_attention_layernorm.weight", pruned.Checkpoint.WeightMap.Keys);
        Assert.Contains("model.layers.2.self_attn.q_proj.weight", pruned.Checkpoint.WeightMap.Keys);
        var config = JsonNode.Parse(File.ReadAllText(tmp["out/config.json"]))!.AsObject();
        Assert.Equal("nemotron-nas", (string?)config["model_type"]);
        Assert.Equal("DeciLMForCausalLM", (string?)config["architectures"]![0]);
        Assert.Null(config["intermediate_size"]);
        Assert.Null(config["num_key_value_heads"]);
        var blocks = config["block_configs"]!.AsArray();
        Assert.True((bool)blocks[1]!["attention"]!["no_op"]!);
        Assert.Null(blocks[1]!["attention"]!["n_heads_in_group"]);
        Assert.False((bool)blocks[2]!["attention"]!["no_op"]!);
        Assert.Equal(source.Config.NumHeads / source.Config.NumKvHeads, (int)blocks[2]!["attention"]!["n_heads_in_group"]!);
        Assert.True((bool)blocks[2]!["ffn"]!["no_op"]!);
        Assert.Equal(176, (int)blocks[0]!["ffn"]!["intermediate_size"]!);
        Assert.Equal(source.Config.Rope.Theta, (double)config["rope_theta"]!);
        Assert.Equal([1, 3], pruned.Config.AttentionPresent!.Select((p, i) => (p, i)).Where(x => !x.p).Select(x => x.i));
    }

    [Fact]
    public void ALayerLosingBothSublayersIsDroppedAndRenumbered()
    {
        using var g = new GoldenFixture("llama");
        using var tmp = new TempDir();
        using var source = Checkpoint.Open(g.Dir);
        var plan = SublayerPlan.FromSpec("attention:2-3,mlp:2", PruneUnit.Sublayer, source.Config);
        Assert.Equal(7, SublayerCheckpointWriter.Write(source, plan, tmp["out"]).Layers);
        var ids = g["input_ids"][0].data<long>().ToArray();
        using var input = tensor(ids, [1, ids.Length]);
        using var model = CausalLM.Load(g.Dir);
        using var expected = model.Forward(input, options: new ForwardOptions { Skip = plan.Mask });
        using var pruned = CausalLM.Load(tmp["out"]);
        Assert.Equal(7, pruned.NumLayers);
        Assert.False(pruned.Config.HasAttention(2));   // old layer 3
        using var got = pruned.Forward(input);
        Assert.InRange(SublayerForwardTests.MaxDiff(got, expected), 0, 1e-6);
        var written = JsonNode.Parse(File.ReadAllText(tmp["out/prune_plan.json"]))!;
        Assert.Equal([2], written["removed_layers"]!.AsArray().Select(n => (int)n!));

        // Pruning the pruned model again: its absent sublayers cannot be removed twice.
        var again = Assert.Throws<LayerPruneException>(() => SublayerPlan.FromSpec("attention:2", PruneUnit.Attention, pruned.Config));
        Assert.Contains("already removed", again.Message);
    }

    [Fact]
    public void PhiIsRefusedInOneLine()
    {
        using var g = new GoldenFixture("phi");
        using var tmp = new TempDir();
        using var source = Checkpoint.Open(g.Dir);
        var plan = SublayerPlan.FromSpec("1", PruneUnit.Attention, source.Config);
        var e = Assert.Throws<LayerPruneException>(() => SublayerCheckpointWriter.Write(source, plan, tmp["out"]));
        Assert.Contains("no Nemotron-NAS", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.False(Directory.Exists(tmp["out"]));
    }

    [Fact]
    public void FfnMultFollowsTheDeciLmRule()
    {
        // round_up(int(2·m·H/3), 256): Nemotron-51B's H = 8192 and its ffn_mult values.
        Assert.Equal(28672, NemotronNasConfig.FfnMultToIntermediateSize(5.25, 8192));
        Assert.Equal(2816, NemotronNasConfig.FfnMultToIntermediateSize(2.625, 1536));
        foreach (int h in new[] { 256, 1536, 2048, 4096, 5120 })
            for (int width = 256; width <= 4 * h; width += 256)
            {
                var m = NemotronNasConfig.FfnMultFor(width, h);
                Assert.NotNull(m);
                Assert.Equal(width, NemotronNasConfig.FfnMultToIntermediateSize(m!.Value, h));
                Assert.Equal(m.Value, Math.Round(m.Value, 6));
            }
        Assert.Null(NemotronNasConfig.FfnMultFor(688, 256));    // the embedded model's width
        Assert.NotNull(NemotronNasConfig.FfnMultFor(5632, 2048)); // TinyLlama: 5632 = 22·256
    }

    static JsonObject Config(string blocks) => JsonNode.Parse($$"""
        {"model_type":"nemotron-nas","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":32,
         "block_configs":{{blocks}}}
        """)!.AsObject();

    [Fact]
    public void ReplaceWithLinearAndOtherUnknownBlocksAreRefusedInOneLine()
    {
        const string Full = """{"attention":{"no_op":false,"replace_with_linear":false,"n_heads_in_group":2},"ffn":{"ffn_mult":4.0}}""";
        var linear = """[{{F}}, {"attention":{"no_op":false,"replace_with_linear":true,"n_heads_in_group":null},"ffn":{"ffn_mult":4.0}}]"""
            .Replace("{{F}}", Full);
        var e = Assert.Throws<LayerPruneException>(() => ModelConfig.Parse(Config(linear), "c.json"));
        Assert.Equal("c.json: block_configs[1].attention.replace_with_linear: linear-replacement blocks are not supported " +
                     "(LayerPrune reads no_op and full blocks only)", e.Message);
        var ffnLinear = "[" + Full + """, {"attention":{"no_op":true},"ffn":{"replace_with_linear":true}}]""";
        Assert.Contains("block_configs[1].ffn.replace_with_linear", Assert.Throws<LayerPruneException>(
            () => ModelConfig.Parse(Config(ffnLinear), "c.json")).Message);
        var mixed = "[" + Full + """, {"attention":{"n_heads_in_group":4},"ffn":{"ffn_mult":4.0}}]""";
        Assert.Contains("different n_heads_in_group", Assert.Throws<LayerPruneException>(
            () => ModelConfig.Parse(Config(mixed), "c.json")).Message);
        var ok = ModelConfig.Parse(Config("[" + Full + """, {"attention":{"no_op":true},"ffn":{"ffn_mult":4.0}}]"""), "c.json");
        Assert.Equal(2, ok.NumKvHeads);
        Assert.Equal(256, ok.IntermediateSize);   // round_up(int(2·4·64/3) = 170, 256)
        Assert.False(ok.HasAttention(1));
        Assert.True(ok.HasMlp(1));
    }
}
