using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Gguf;
using LayerPrune.Pruning;
using LayerPrune.Tests.Modeling;

namespace LayerPrune.Tests.Sublayers;

/// <summary>`prune --model X.gguf --unit …` (issue 25): a llama GGUF loses sublayers and becomes a deci GGUF that llama.cpp
/// (LLamaSharp 0.30.0) runs exactly as LayerPrune runs the same sublayer-pruned model.</summary>
public class GgufSublayerPruneTests : IDisposable
{
    readonly string _tmp = Directory.CreateTempSubdirectory("lp-gguf-sub-").FullName;
    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    static IEnumerable<string> Layout(GgufFile f) => f.Tensors.Select(t => $"{t.Name} {t.Type} {string.Join(",", t.Dims)}").Order();

    [Fact]
    public void LlamaGgufWithAttention1And3AndMlp2And3RemovedRunsInLlamaCppAsLayerPruneRunsIt()
    {
        string source = DeciGgufTests.RandomLlama(Path.Combine(_tmp, "random"));
        string llamaGguf = Path.Combine(_tmp, "random.gguf");
        GgufExporter.Export(source, llamaGguf, new GgufExportOptions { Type = GgufOutputType.F32 });
        string nas = Path.Combine(_tmp, "nas"), pruned = Path.Combine(_tmp, "pruned.gguf");
        using (var ckpt = Checkpoint.Open(source))
        {
            // Layer 3 loses both (dropped), layer 1 its attention, layer 2 its MLP (zero FFN of width 1).
            var plan = SublayerPlan.FromSpec("attention:1,3,mlp:2,3", PruneUnit.Sublayer, ckpt.Config);
            var r = GgufSublayerPruner.Prune(llamaGguf, plan, ckpt.Config, pruned, force: false);
            Assert.Equal((4, 3), (r.OriginalLayers, r.KeptLayers));
            SublayerCheckpointWriter.Write(ckpt, plan, nas);
        }
        var f = GgufFile.Open(pruned);
        Assert.Equal("deci", f.Get("general.architecture")!.Value);
        Assert.Equal(3, f.BlockCount);
        Assert.Equal(new[] { 4, 0, 4 }, (int[])f.Get("deci.attention.head_count")!.Value);
        Assert.Equal(new[] { 2, 0, 2 }, (int[])f.Get("deci.attention.head_count_kv")!.Value);
        Assert.Equal(new[] { 256, 256, 1 }, (int[])f.Get("deci.feed_forward_length")!.Value);
        Assert.DoesNotContain(f.Metadata, kv => kv.Key.StartsWith("llama.", StringComparison.Ordinal));
        Assert.DoesNotContain(f.Tensors, t => t.Name.StartsWith("blk.3.", StringComparison.Ordinal));
        // The same tensors, types and shapes as the deci export of the Nemotron-NAS checkpoint of the same plan.
        string exported = Path.Combine(_tmp, "nas.gguf");
        GgufExporter.Export(nas, exported, new GgufExportOptions { Type = GgufOutputType.F32 });
        Assert.Equal(Layout(GgufFile.Open(exported)), Layout(f));
        DeciGgufTests.AssertSame(nas, pruned, [1, 17, 42, 99, 5, 260, 7, 300], "llama GGUF pruned to deci, attention 1,3 + mlp 2,3");
    }

    [Fact]
    public void CliPrunesALlamaGgufBySublayersAndRefusesOtherArchitecturesInOneLine()
    {
        var env = new Dictionary<string, string> { ["LAYERPRUNE_CACHE"] = Path.Combine(_tmp, "cache") };
        string source = DeciGgufTests.RandomLlama(Path.Combine(_tmp, "random"));
        string llamaGguf = Path.Combine(_tmp, "random.gguf"), pruned = Path.Combine(_tmp, "attention.gguf");
        GgufExporter.Export(source, llamaGguf, new GgufExportOptions { Type = GgufOutputType.F32 });
        var r = Robustness.ChildRun.Run(["prune", "--model", llamaGguf, "--out", pruned, "--unit", "attention", "--strategy", "deepest",
            "--n", "2", "--json", "-q"], env: env);
        Assert.True(r.Exit == 0, r.Stderr);
        var plan = JsonNode.Parse(r.Stdout)!;
        Assert.Equal([1, 2], plan["removed_sublayers"]!["attention"]!.AsArray().Select(n => (int)n!));
        Assert.Equal(new[] { 4, 0, 0, 4 }, (int[])GgufFile.Open(pruned).Get("deci.attention.head_count")!.Value);

        using var g = new GoldenFixture("phi");
        string phiGguf = Path.Combine(_tmp, "phi.gguf");
        GgufExporter.Export(g.Dir, phiGguf, new GgufExportOptions { Type = GgufOutputType.F32 });
        r = Robustness.ChildRun.Run(["prune", "--model", phiGguf, "--out", Path.Combine(_tmp, "phi-pruned.gguf"), "--unit", "mlp",
            "--layers", "1"], env: env);
        Assert.NotEqual(0, r.Exit);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.Contains("architecture 'phi2'", r.Stderr);
        Assert.False(File.Exists(Path.Combine(_tmp, "phi-pruned.gguf")));
    }
}
