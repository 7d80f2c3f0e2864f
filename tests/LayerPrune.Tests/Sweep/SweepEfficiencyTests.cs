using System.Text.Json.Nodes;
using LayerPrune.Efficiency;
using LayerPrune.Evaluation;
using LayerPrune.Sweep;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Sweep;

/// <summary><see cref="SweepOptions.Efficiency"/>: every variant's row carries its speed and memory against an unpruned
/// reference timed in the same call, report.md has the table and the figure, and a rerun does not measure again.</summary>
/// <remarks>Timing: runs alone, with the other process-wide measurements, not beside the parallel tests.</remarks>
[Collection(LayerPrune.Tests.Efficiency.ProcessWideCollection.Name)]
public class SweepEfficiencyTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    [Fact]
    public void RowsCarryEfficiencyTheReportShowsItAndResumeDoesNotRemeasure()
    {
        using var tmp = new TempDir();
        var options = new SweepOptions
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 4, SeqLen = 128, Batch = 4,
            Tasks = [$"loss:{KjvModel.Validation}"], Strategies = ["deepest"], Ns = [4, 8], OutDir = tmp["sweep"],
            Eval = new EvalOptions { MaxChunks = 4, BatchSize = 8, SeqLen = 128 },
            Efficiency = new EfficiencyOptions { PromptLength = 32, DecodeTokens = 16, Repeats = 3 }, EfficiencyThreads = 1,
        };
        var result = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        Assert.Equal(3, result.Rows.Count);
        var unpruned = result.Row("none", 0);
        Assert.NotNull(unpruned.Efficiency);
        Assert.Equal(16, unpruned.Efficiency!.LayersRun.Length);
        foreach (int n in new[] { 4, 8 })
        {
            var row = result.Row("deepest", n);
            var e = row.Efficiency!;
            var reference = row.EfficiencyReference!;
            Assert.Equal(16 - n, e.LayersRun.Length);
            Assert.Equal(16, reference.LayersRun.Length);
            Assert.Equal(3, e.DecodeTokensPerSecond.Samples.Count);
            var fields = row.ToJson();
            // Weight bytes: exactly the kept layers' (and the shared embedding/norm/head's) bytes of the model.
            long all = EfficiencyMeter.WeightBytes(kjv.Model);
            long kept = EfficiencyMeter.WeightBytes(kjv.Model, Enumerable.Range(0, 16).Except(row.Removed).ToArray());
            Assert.Equal(kept, (double)fields["weight_bytes"]!);
            Assert.Equal(1 - (double)kept / all, (double)fields["weight_saved_fraction"]!, 1e-12);
            // Speed: the variant against its own interleaved reference; loose bounds (a shared, noisy machine).
            double speedup = (double)fields["decode_speedup"]!;
            Assert.Equal(e.DecodeTokensPerSecond.Median / reference.DecodeTokensPerSecond.Median, speedup, 1e-9);
            Assert.InRange(speedup, 1.0, 16.0 / (16 - n) * 1.5);
            Assert.True(fields["efficiency"] is JsonObject && fields["efficiency_reference"] is JsonObject);
        }
        Assert.True(result.Row("deepest", 8).Efficiency!.DecodeTokensPerSecond.Median
            > result.Row("deepest", 8).EfficiencyReference!.DecodeTokensPerSecond.Median * 1.2,
            "removing half of the layers should decode clearly faster than the unpruned model timed alongside");
        Assert.Contains("decode_speedup", File.ReadAllText(Path.Combine(options.OutDir, "results.csv")).Split('\n')[0]);
        string report = File.ReadAllText(Path.Combine(options.OutDir, "report.md"));
        Assert.Contains("## Efficiency", report);
        Assert.Contains("| deepest | 8 | 0.5 |", report);
        Assert.True(new FileInfo(Path.Combine(options.OutDir, EfficiencyReport.PlotFile)).Length > 1000);

        // Rerun: finished rows come back from results.json, measurements included (timings would differ if re-measured).
        string resultsPath = Path.Combine(options.OutDir, "results.json");
        var before = File.ReadAllText(resultsPath);
        var again = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        Assert.Equal(before, File.ReadAllText(resultsPath));
        Assert.Equal(result.Row("deepest", 8).Efficiency!.DecodeTokensPerSecond.Samples,
            again.Row("deepest", 8).Efficiency!.DecodeTokensPerSecond.Samples);

        // Drop the last row: only that variant is evaluated and measured again; the others keep their numbers.
        var doc = JsonNode.Parse(before)!.AsObject();
        var rows = doc["rows"]!.AsArray();
        rows.RemoveAt(rows.Count - 1);
        File.WriteAllText(resultsPath, doc.ToJsonString());
        var resumed = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        Assert.Equal(3, resumed.Rows.Count);
        Assert.Equal(result.Row("deepest", 4).Efficiency!.ToJson().ToJsonString(),
            resumed.Row("deepest", 4).Efficiency!.ToJson().ToJsonString());
        Assert.Equal(result.Row("none", 0).Efficiency!.ToJson().ToJsonString(),
            resumed.Row("none", 0).Efficiency!.ToJson().ToJsonString());
        Assert.NotEqual(result.Row("deepest", 8).Efficiency!.DecodeTokensPerSecond.Samples,
            resumed.Row("deepest", 8).Efficiency!.DecodeTokensPerSecond.Samples);
    }
}
