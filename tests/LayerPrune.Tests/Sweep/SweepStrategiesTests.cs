using LayerPrune.Evaluation;
using LayerPrune.Pruning;
using LayerPrune.Reporting;
using LayerPrune.Sweep;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Sweep;

/// <summary>The sweep runs every <see cref="LayerPrune.Pruning.Strategies.PruneStrategies"/> strategy, random with several
/// seeds, and reports them side by side with their selection cost.</summary>
public class SweepStrategiesTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    const int SeqLen = 128;
    const int CalibrationChunks = 2;

    /// <summary>
    /// bi, greedy, loss-rank and random (seeds 0, 1) at n = 1, 2 on kjv-llama-16l: greedy's and loss-rank's n = 1 choice
    /// is the single layer whose removal gives the lowest calibration loss, recomputed here with the loss task on the
    /// same chunks; greedy's rounds are nested; random rows are per seed; report.md has the side-by-side and seed tables.
    /// </summary>
    [Fact]
    public void EveryStrategyGetsRowsWithItsChoiceAndCostAndTheReportComparesThem()
    {
        using var tmp = new TempDir();
        var options = new SweepOptions
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 4, SeqLen = SeqLen, Batch = 4,
            Tasks = [$"loss:{KjvModel.Validation}", $"mc:{KjvModel.Cloze}"],
            Strategies = ["bi", "greedy", "loss-rank", "random"], Seeds = [0, 1], Ns = [1, 2],
            CalibrationChunks = CalibrationChunks, OutDir = tmp["sweep"],
            Eval = new EvalOptions { MaxChunks = 8, Limit = 10, BatchSize = 8, SeqLen = SeqLen },
        };
        var result = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        var rows = result.Rows;
        Assert.Equal(1 + 2 * 5, rows.Count); // unpruned + 2 sizes × (bi, greedy, loss-rank, random × 2 seeds)

        // The calibration loss with each single layer removed, independently of the strategies' code: the loss task on
        // the same file, chunk length and chunk count (TokenChunks.FromLines, as PreTokenized.LossChunks for text).
        var loss = EvalTasks.Parse($"loss:{KjvModel.Validation}")
            .Prepare(kjv.Tokenizer, new EvalOptions { MaxChunks = CalibrationChunks, SeqLen = SeqLen, BatchSize = 8 });
        var key = loss.Metrics[0].Key;
        var without = Enumerable.Range(0, 16)
            .Select(i => loss.Score(kjv.Model, Enumerable.Range(0, 16).Where(k => k != i).ToArray(), NullProgressSink.Instance)
                .Values[key])
            .ToArray();
        int best = Array.IndexOf(without, without.Min());
        var second = without.Select((v, i) => (v, i)).OrderBy(x => x.v).Skip(1).First();
        Assert.True(second.v - without[best] > 1e-6, $"the best single layer must be unique to test against: {best} vs {second.i}");
        Assert.Equal([best], result.Row("greedy", 1).Removed);
        Assert.Equal([best], result.Row("loss-rank", 1).Removed);
        Assert.Contains(best, result.Row("greedy", 2).Removed); // rounds are nested
        Assert.Equal(new[] { best, second.i }.Order(), result.Row("loss-rank", 2).Removed);

        // Selection cost: greedy's grows with its rounds, loss-rank's is one ranking for all n, random's is free,
        // bi ran its own similarity pass over the 4 samples.
        var g1 = result.Row("greedy", 1).SelectionCost!;
        var g2 = result.Row("greedy", 2).SelectionCost!;
        Assert.True(g2.ForwardPasses > g1.ForwardPasses, $"greedy cost {g1.ForwardPasses} → {g2.ForwardPasses}");
        Assert.Equal(result.Row("loss-rank", 1).SelectionCost, result.Row("loss-rank", 2).SelectionCost);
        Assert.True(result.Row("loss-rank", 1).SelectionCost!.ForwardPasses >= 16 * CalibrationChunks);
        Assert.Equal(4, result.Row("bi", 1).SelectionCost!.ForwardPasses);
        Assert.Single(result.Row("bi", 1).Removed);
        Assert.Equal(2, result.Row("bi", 2).Removed.Count);

        foreach (int n in new[] { 1, 2 })
            foreach (int seed in new[] { 0, 1 })
            {
                var row = rows.Single(r => r.Strategy == "random" && r.N == n && r.Seed == seed);
                Assert.Equal(PrunePlan.RandomBlock(n, 16, seed).Removed, row.Removed);
                Assert.Equal(0, row.SelectionCost!.ForwardPasses);
            }

        string report = File.ReadAllText(Path.Combine(options.OutDir, "report.md"));
        Assert.Contains("## Strategies side by side", report);
        foreach (var s in options.Strategies)
            Assert.Contains($"\n| {s} | ", report);
        Assert.Contains("## Random seeds", report);
        var r0 = rows.Single(r => r.Strategy == "random" && r.N == 1 && r.Seed == 0).Metrics["validation_loss"];
        var r1 = rows.Single(r => r.Strategy == "random" && r.N == 1 && r.Seed == 1).Metrics["validation_loss"];
        string mean = ((r0 + r1) / 2).ToString("0.0000", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Contains($"| random | 1 | 0,1 | {mean} ± ", report);

        // The rows (seed and selection cost included) survive results.json, so a rerun resumes without recomputing.
        var before = File.ReadAllText(Path.Combine(options.OutDir, "results.json"));
        var started = DateTime.UtcNow;
        var again = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        Assert.Equal(before, File.ReadAllText(Path.Combine(options.OutDir, "results.json")));
        Assert.Equal(result.Row("greedy", 2).SelectionCost, again.Row("greedy", 2).SelectionCost);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(10));
    }

    /// <summary>With <see cref="SweepOptions.ProtectLast"/> no strategy removes layer 15, even where it would.</summary>
    [Fact]
    public void ProtectLastKeepsTheFinalLayerInEveryStrategy()
    {
        using var tmp = new TempDir();
        var options = new SweepOptions
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 4, SeqLen = SeqLen, Batch = 4,
            Tasks = [$"loss:{KjvModel.Validation}"], Strategies = ["similarity", "deepest", "random"], Ns = [12, 14],
            ProtectLast = true, OutDir = tmp["sweep"], Eval = new EvalOptions { MaxChunks = 2, BatchSize = 8, SeqLen = SeqLen },
        };
        var rows = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options).Rows.Where(r => r.N > 0).ToList();
        Assert.Equal(6, rows.Count);
        foreach (var r in rows)
        {
            Assert.DoesNotContain(15, r.Removed);
            Assert.Equal(r.N, r.Removed.Count);
        }
    }
}
