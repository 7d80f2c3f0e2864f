using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Efficiency;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Sweep;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Sweep;

/// <summary>`sweep --unit attention,mlp,layer` (issue 25) on the embedded model: rows, the parameter axis, resume, report.</summary>
public class UnitSweepTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    static SweepOptions Options(string outDir) => new()
    {
        ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 4, SeqLen = 64,
        Tasks = [$"loss:{KjvModel.Validation}", $"mc:{KjvModel.Cloze}"], Strategies = ["similarity", "deepest"], Ns = [2],
        Units = [PruneUnit.Attention, PruneUnit.Mlp, PruneUnit.Layer], OutDir = outDir,
        Eval = new EvalOptions { MaxChunks = 4, Limit = 10, BatchSize = 8 },
    };

    /// <summary>Parameters per attention sublayer, MLP sublayer and layer, from config.json by hand (Llama: q, k, v, o and
    /// input_layernorm; gate, up, down and post_attention_layernorm).</summary>
    static (long Attention, long Mlp, int Layers, long KvPerLayer) Counts()
    {
        var c = JsonNode.Parse(File.ReadAllText(Path.Combine(KjvModel.Dir, "config.json")))!;
        long h = (long)c["hidden_size"]!, heads = (long)c["num_attention_heads"]!, kv = (long)c["num_key_value_heads"]!;
        long d = (long)c["head_dim"]!, inter = (long)c["intermediate_size"]!;
        long attention = h * heads * d + 2 * h * kv * d + heads * d * h + h;
        long mlp = 3 * h * inter + h;
        return (attention, mlp, (int)c["num_hidden_layers"]!, 2 * kv * d * sizeof(float)); // fp32 compute
    }

    [Fact]
    public void UnitRowsSitOnTheParameterAxisResumeIdenticallyAndReportOneCurvePerUnitAndStrategy()
    {
        using var tmp = new TempDir();
        var o = Options(tmp["units"]);
        var rows = SweepRunner.Run(kjv.Model, kjv.Tokenizer, o).Rows;
        Assert.Equal(7, rows.Count); // unpruned + 3 units × 2 strategies at n = 2
        var (attention, mlp, layers, kvPerLayer) = Counts();
        double decoder = layers * (double)(attention + mlp);
        VariantRow Row(string unit, string s) => rows.Single(r => r.Unit == unit && r.Strategy == s);

        // deepest: the two deepest sublayers of the unit below the final layer.
        var attn = Row("attention", "deepest");
        Assert.Equal([new Sublayer(13, SublayerKind.Attention), new Sublayer(14, SublayerKind.Attention)], attn.RemovedSublayers!);
        Assert.Empty(attn.Removed);
        Assert.Equal(2, attn.N);
        foreach (var s in new[] { "similarity", "deepest" })
        {
            Assert.InRange(Row("attention", s).ParameterFraction!.Value - 2 * attention / decoder, -1e-12, 1e-12);
            Assert.InRange(Row("mlp", s).ParameterFraction!.Value - 2 * mlp / decoder, -1e-12, 1e-12);
            Assert.InRange(Row("layer", s).ParameterFraction!.Value - 2.0 / layers, -1e-12, 1e-12);
            Assert.Equal(Row("attention", s).ParameterFraction, Row("attention", s).Fraction);
            Assert.Equal((layers - 2) * kvPerLayer, Row("attention", s).KvCacheBytesPerToken);
            Assert.Equal(layers * kvPerLayer, Row("mlp", s).KvCacheBytesPerToken);
            Assert.Equal((layers - 2) * kvPerLayer, Row("layer", s).KvCacheBytesPerToken);
            Assert.Equal(2, Row("mlp", s).RemovedSublayers!.Count(x => x.Kind == SublayerKind.Mlp));
        }
        var none = rows.Single(r => r.Strategy == "none");
        Assert.Equal(0, none.ParameterFraction);
        Assert.Equal(layers * kvPerLayer, none.KvCacheBytesPerToken);

        // The in-memory variant equals the written Nemotron-NAS checkpoint reloaded (no mask: a different code path).
        string written = tmp["attention-deepest"];
        using (var ckpt = Checkpoint.Open(KjvModel.Dir))
            SublayerCheckpointWriter.Write(ckpt, SublayerPlan.FromSpec("13,14", PruneUnit.Attention, ckpt.Config), written);
        using (var reloaded = CausalLM.Load(written))
        {
            var loss = EvalTasks.Parse($"loss:{KjvModel.Validation}").Prepare(kjv.Tokenizer, o.Eval);
            double expected = loss.Score(reloaded).Values[loss.Metrics[0].Key];
            Assert.InRange(attn.Metrics["validation_loss"] - expected, -1e-4, 1e-4);
        }
        Assert.True(attn.Metrics["validation_loss"] > none.Metrics["validation_loss"]);

        // Killed after 4 rows and resumed: the same results, byte for byte.
        string results = Path.Combine(o.OutDir, "results.json");
        string full = File.ReadAllText(results), fullCsv = File.ReadAllText(Path.Combine(o.OutDir, "results.csv"));
        var doc = JsonNode.Parse(full)!.AsObject();
        var cut = doc["rows"]!.AsArray();
        while (cut.Count > 4) cut.RemoveAt(cut.Count - 1);
        File.WriteAllText(results, doc.ToJsonString());
        SweepRunner.Run(kjv.Model, kjv.Tokenizer, o);
        Assert.Equal(full, File.ReadAllText(results));
        Assert.Equal(fullCsv, File.ReadAllText(Path.Combine(o.OutDir, "results.csv")));
        Assert.Contains("unit,removed_sublayers", fullCsv);
        Assert.Contains("attention:13 attention:14", fullCsv);

        string report = File.ReadAllText(Path.Combine(o.OutDir, "report.md"));
        Assert.Contains("## Units", report);
        Assert.Contains(UnitSweep.AxisLabel, report);
        foreach (var u in new[] { "attention", "mlp", "layer" })
            foreach (var s in new[] { "similarity", "deepest" })
                Assert.Contains($"| {u} | {s} | 2 |", report);
        Assert.Contains("| attention | deepest | 2 | attention 13, 14 |", report);
        foreach (var f in new[] { "units_validation_loss.png", "units_mc_acc.png" })
        {
            Assert.True(File.Exists(Path.Combine(o.OutDir, f)), f);
            Assert.Contains($"({f})", report);
        }

        // The default unit: the layer rows as a sweep without units writes them, without the unit fields.
        var plain = SweepRunner.Run(kjv.Model, kjv.Tokenizer, o with { Units = null, OutDir = tmp["plain"] });
        Assert.Equal(3, plain.Rows.Count);
        Assert.Null(plain.Config["units"]);
        foreach (var p in plain.Rows)
        {
            Assert.Null(p.Unit);
            Assert.Null(p.ParameterFraction);
            var same = rows.Single(r => r.Strategy == p.Strategy && !VariantRow.IsSublayerUnit(r.Unit));
            Assert.Equal(p.Removed, same.Removed);
            Assert.Equal(p.Metrics, same.Metrics);
            Assert.Equal(p.Key, same.Key);
            var j = p.ToJson();
            Assert.False(j.ContainsKey("unit") || j.ContainsKey("removed_parameter_fraction") || j.ContainsKey("kv_cache_bytes_per_token"));
        }
        Assert.DoesNotContain("## Units", File.ReadAllText(Path.Combine(tmp["plain"], "report.md")));
    }

    [Fact]
    public void WithEfficiencyHalfTheAttentionSublayersHalveTheMeasuredKvCacheAndTheReportPlotsSpeedAndMemory()
    {
        using var tmp = new TempDir();
        var o = Options(tmp["eff"]) with
        {
            Tasks = [$"loss:{KjvModel.Validation}"], Strategies = ["deepest"], Ns = [8], Units = [PruneUnit.Attention, PruneUnit.Layer],
            Eval = new EvalOptions { MaxChunks = 2, BatchSize = 8 },
            Efficiency = new EfficiencyOptions { PromptLength = 8, DecodeTokens = 4, Warmup = 0, Repeats = 1 },
        };
        var rows = SweepRunner.Run(kjv.Model, kjv.Tokenizer, o).Rows;
        var (attention, _, layers, kvPerLayer) = Counts();
        var half = rows.Single(r => r.Unit == "attention");
        Assert.Equal(Enumerable.Range(7, 8), half.RemovedSublayers!.Select(s => s.Layer));
        Assert.Equal(half.EfficiencyReference!.KvCacheBytesPerToken / 2, half.Efficiency!.KvCacheBytesPerToken);
        Assert.Equal(half.KvCacheBytesPerToken, half.Efficiency.KvCacheBytesPerToken);
        Assert.Equal(layers / 2 * kvPerLayer, half.Efficiency.KvCacheBytesPerToken);
        Assert.Equal(8 * attention * sizeof(float), half.EfficiencyReference.WeightBytes - half.Efficiency.WeightBytes);
        string report = File.ReadAllText(Path.Combine(o.OutDir, "report.md"));
        foreach (var f in new[] { "units_validation_loss.png", "units_validation_loss_decode.png", "units_validation_loss_kv.png" })
            Assert.True(File.Exists(Path.Combine(o.OutDir, f)), f);
        Assert.Contains("decode speed-up |", report);
    }

    [Fact]
    public void UnitsWithoutLayerOrWithoutASublayerStrategyAreRefusedNamingTheOption()
    {
        using var tmp = new TempDir();
        var o = Options(tmp["bad"]);
        var e = Assert.Throws<ArgumentException>(() => SweepRunner.BlockSizes(o with { Units = [PruneUnit.Attention] }, 16));
        Assert.Equal(nameof(SweepOptions.Units), e.ParamName);
        e = Assert.Throws<ArgumentException>(() => SweepRunner.BlockSizes(o with { Strategies = ["shallowest"] }, 16));
        Assert.Equal(nameof(SweepOptions.Strategies), e.ParamName);
        e = Assert.Throws<ArgumentException>(() => SweepRunner.BlockSizes(o with { Units = [PruneUnit.Layer, PruneUnit.Layer] }, 16));
        Assert.Equal(nameof(SweepOptions.Units), e.ParamName);
        Assert.Equal([1, 8, 15], UnitSweep.SizesOf(o with { Ns = null, Fractions = [0.01, 0.5, 0.99] }, 16));
    }

    [Fact]
    public void CliSaysWhatIsWrongWithUnitsInOneLine()
    {
        using var tmp = new TempDir();
        var (code, _, stderr) = LayerPrune.Tests.Cli.CliRunner.Run("sweep", "--unit", "attention,mlp", "--n", "2", "--out", tmp["a"], "-q");
        Assert.Equal(2, code);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Contains("--unit: include layer", stderr);
        (code, _, stderr) = LayerPrune.Tests.Cli.CliRunner.Run("sweep", "--unit", "heads,layer", "--n", "2", "--out", tmp["b"], "-q");
        Assert.Equal(2, code);
        Assert.Equal("error: --unit 'heads': unknown unit (expected one of layer, attention, mlp, sublayer)", stderr.Trim());
        Assert.False(Directory.Exists(tmp["a"]) || Directory.Exists(tmp["b"]));
    }
}
