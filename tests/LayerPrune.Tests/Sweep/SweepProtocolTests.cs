using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using LayerPrune.Sweep;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Sweep;

/// <summary>One validation-loss protocol for eval and sweep (issue 12, defect 3), stated in every result file; typed rows
/// that survive being written and read back.</summary>
public class SweepProtocolTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    /// <summary>
    /// Before the fix the sweep's default was 64 chunks and eval's 128, so the unpruned loss differed between them.
    /// With their defaults both now give the 128 × 256 reference value (HF 2.94131 ± 1e-3), bit for bit equal.
    /// </summary>
    [Fact]
    public void UnprunedValidationLossOfEvalAndSweepDefaultsIsEqualAndMatchesTheReference()
    {
        using var tmp = new TempDir();
        string spec = $"loss:{KjvModel.Validation}";
        var eval = Evaluator.Run(kjv.Model, kjv.Tokenizer, spec, EvalOptions.Default);
        var options = new SweepOptions
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Tasks = [spec], Strategies = ["deepest"], Ns = [1],
            OutDir = tmp["sweep"],
        };
        var sweep = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        double fromSweep = sweep.Row("none", 0).Metrics["validation_loss"];
        Assert.Equal(eval.Values["validation_loss"], fromSweep);
        double hf = (double)kjv.Reference["validation_loss"]!["value"]!;
        Assert.InRange(fromSweep, hf - 1e-3, hf + 1e-3);
        Assert.Equal(128 * 255, eval.Values["tokens"]);

        // Every sweep file states the protocol it used.
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(options.OutDir, "results.json")))!;
        var protocol = json["protocol"]![spec]!;
        Assert.Equal((256, 128, 128, 128 * 255), ((int)protocol["seq_len"]!, (int)protocol["max_chunks"]!,
            (int)protocol["chunks"]!, (int)protocol["tokens"]!));
        Assert.Equal(128, (int)json["config"]!["max_chunks"]!);
        Assert.Contains("- `loss:validation.txt`: seq_len 256, max_chunks 128, chunks 128, tokens 32640",
            File.ReadAllText(Path.Combine(options.OutDir, "report.md")));
    }

    /// <summary>An interrupted sweep (its last row lost) resumes to exactly the files of an uninterrupted one.</summary>
    [Fact]
    public void ResumedSweepWritesRowsIdenticalToAnUninterruptedOne()
    {
        using var tmp = new TempDir();
        var options = new SweepOptions
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 8, SeqLen = 128,
            Tasks = [$"loss:{KjvModel.Validation}", $"mc:{KjvModel.Cloze}"], Strategies = ["similarity", "deepest"], Ns = [2, 5],
            OutDir = tmp["sweep"], Eval = new EvalOptions { MaxChunks = 8, SeqLen = 128, Limit = 8, BatchSize = 8 },
        };
        var full = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        string results = Path.Combine(options.OutDir, "results.json");
        string json = File.ReadAllText(results);
        string csv = File.ReadAllText(Path.Combine(options.OutDir, "results.csv"));

        // Drop the last two rows as if the run had been killed there.
        var doc = JsonNode.Parse(json)!.AsObject();
        var rows = doc["rows"]!.AsArray();
        rows.RemoveAt(rows.Count - 1);
        rows.RemoveAt(rows.Count - 1);
        File.WriteAllText(results, doc.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));

        var resumed = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        Assert.Equal(json, File.ReadAllText(results));
        Assert.Equal(csv, File.ReadAllText(Path.Combine(options.OutDir, "results.csv")));
        Assert.Equal(full.Rows.Select(r => r.ToJson().ToJsonString()), resumed.Rows.Select(r => r.ToJson().ToJsonString()));
        Assert.Equal(5, full.Rows.Count);
        Assert.NotNull(full.Row("similarity", 2).AngularDistance);
        Assert.Null(full.Row("deepest", 2).AngularDistance);
    }

    [Fact]
    public void RowsRoundTripThroughJsonAndCsvKeepsColumnOrder()
    {
        var rows = new List<VariantRow>
        {
            new() { Strategy = "none", Metrics = new OrderedDictionary<string, double> { ["validation_loss"] = 2.5, ["mc_acc"] = 0.75 } },
            new()
            {
                Strategy = "similarity", N = 2, Fraction = 0.125, Removed = [6, 7], AngularDistance = 0.1875,
                Metrics = new OrderedDictionary<string, double> { ["validation_loss"] = 2.75, ["mc_acc"] = double.NaN },
            },
        };
        var back = rows.Select(r => VariantRow.FromJson(JsonNode.Parse(r.ToJson().ToJsonString())!.AsObject())).ToList();
        Assert.Equal(rows.Select(r => r.ToJson().ToJsonString()), back.Select(r => r.ToJson().ToJsonString()));
        Assert.Equal(["validation_loss", "mc_acc"], back[1].Metrics.Keys);
        Assert.True(double.IsNaN(back[1].Metrics["mc_acc"]));           // written as null
        Assert.Equal(0.1875, back[1].AngularDistance);
        Assert.Equal(
            "strategy,n,fraction,removed,healed,validation_loss,mc_acc,angular_distance\n" +
            "none,0,0,,false,2.5,0.75,\n" +
            "similarity,2,0.125,6 7,false,2.75,,0.1875\n",
            SweepFiles.ToCsv(back));
    }

    /// <summary>Counts the texts a tokenizer encodes.</summary>
    sealed class CountingTokenizer(LayerPrune.Tokenization.ITextTokenizer inner) : LayerPrune.Tokenization.ITextTokenizer
    {
        public int Calls;
        public IReadOnlyList<int> EncodeRaw(string text)
        {
            Interlocked.Increment(ref Calls);
            return inner.EncodeRaw(text);
        }
        public IReadOnlyList<int> Encode(string text)
        {
            Interlocked.Increment(ref Calls);
            return inner.Encode(text);
        }
        public string Decode(IEnumerable<int> ids) => inner.Decode(ids);
        public int? BosId => inner.BosId;
        public IReadOnlyList<int> EosIds => inner.EosIds;
        public int? PadId => inner.PadId;
        public bool AddsBos => inner.AddsBos;
        public int VocabSize => inner.VocabSize;
    }

    /// <summary>The sweep builds every task's requests once, not once per variant: a sweep of 3 variants encodes exactly
    /// the texts one preparation of its tasks encodes (before, each variant re-tokenized every task).</summary>
    [Fact]
    public void SweepTokenizesEveryTaskOnceForAllVariants()
    {
        using var tmp = new TempDir();
        var eval = new EvalOptions { MaxChunks = 4, Limit = 5, BatchSize = 8 };
        string[] specs = [$"loss:{KjvModel.Validation}", $"mc:{KjvModel.Cloze}"];
        var once = new CountingTokenizer(kjv.Tokenizer);
        foreach (var spec in specs) EvalTasks.Parse(spec).Prepare(once, eval);
        Assert.True(once.Calls > 20, $"{once.Calls} encodes");

        var counting = new CountingTokenizer(kjv.Tokenizer);
        var options = new SweepOptions
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Tasks = specs, Strategies = ["deepest"], Ns = [2, 4],
            OutDir = tmp["sweep"], Eval = eval,
        };
        Assert.Equal(3, SweepRunner.Run(kjv.Model, counting, options).Rows.Count);
        Assert.Equal(once.Calls, counting.Calls);
    }
}
