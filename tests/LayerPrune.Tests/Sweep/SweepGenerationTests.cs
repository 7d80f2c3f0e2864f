using System.Globalization;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Evaluation;
using LayerPrune.Pruning;
using LayerPrune.Pruning.Strategies;
using LayerPrune.Reporting;
using LayerPrune.Sweep;
using LayerPrune.Tests.Cli;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Sweep;

/// <summary>The degeneration score, the normalized area under a curve and the strategy table's new columns, on numbers
/// worked out by hand.</summary>
public class SweepScoreTests
{
    [Fact]
    public void RepeatedTrigramRateIsOneMinusDistinctOverTotal()
    {
        // 1 2 3 1 2 3 1 2 3: 7 trigrams, 3 distinct (123, 231, 312) → 1 − 3/7.
        Assert.Equal(4.0 / 7, SweepGenerations.RepeatedNgramRate([1, 2, 3, 1, 2, 3, 1, 2, 3]), 15);
        // 5 5 5 5: 2 trigrams, 1 distinct → 0.5; a sequence without repeats → 0; fewer than 3 tokens → NaN.
        Assert.Equal(0.5, SweepGenerations.RepeatedNgramRate([5, 5, 5, 5]), 15);
        Assert.Equal(0.0, SweepGenerations.RepeatedNgramRate([1, 2, 3, 4, 5, 1, 2, 4]), 15);
        Assert.True(double.IsNaN(SweepGenerations.RepeatedNgramRate([1, 2])));
        // Bigrams of 1 2 1 2 1: 4 bigrams, 2 distinct.
        Assert.Equal(0.5, SweepGenerations.RepeatedNgramRate([1, 2, 1, 2, 1], 2), 15);
        // A variant's score: the mean over continuations with at least 3 tokens (the 2-token one is left out).
        Assert.Equal((4.0 / 7 + 0.5) / 2, SweepGenerations.Degeneration([[1, 2, 3, 1, 2, 3, 1, 2, 3], [5, 5, 5, 5], [7, 8]]), 15);
        Assert.True(double.IsNaN(SweepGenerations.Degeneration([[7, 8]])));
    }

    [Fact]
    public void NormalizationSetsEveryMetricToOneAtTheUnprunedScore()
    {
        Assert.Equal(0.5, MetricSpec.Accuracy("acc").Normalize(0.3, 0.6), 15);      // v / u
        Assert.Equal(0.5, MetricSpec.Loss("loss").Normalize(4.0, 2.0), 15);         // u / v
        Assert.Equal(0.5, SweepGenerations.Metric.Report.Normalize(0.55, 0.1), 15); // (1 − v) / (1 − u)
        Assert.Equal(0.45, SweepGenerations.Metric.Report.Normalize(0.55, 0.0), 15);
        Assert.True(double.IsNaN(MetricSpec.Accuracy("acc").Normalize(0.0, 0.0))); // an unpruned accuracy of 0 has no ratio
    }

    [Fact]
    public void NormalizedAreaIsTheTrapezoidFromOneAtZeroDividedByTheLargestFraction()
    {
        // (0, 1) → (0.5, 0.5) → (1, 0): 0.5·0.75 + 0.5·0.25 = 0.5, over [0, 1].
        Assert.Equal(0.5, ReportWriter.NormalizedArea([(1.0, 0.0), (0.5, 0.5)]), 15);
        // (0, 1) → (0.25, 1) → (0.5, 0.5): 0.25 + 0.1875 = 0.4375, over [0, 0.5] → 0.875.
        Assert.Equal(0.875, ReportWriter.NormalizedArea([(0.25, 1.0), (0.5, 0.5)]), 15);
        Assert.True(double.IsNaN(ReportWriter.NormalizedArea([(0.25, double.NaN), (0.5, 0.5)])));
        Assert.True(double.IsNaN(ReportWriter.NormalizedArea([])));

        // Per strategy from sweep rows: accuracy 0.8 → 0.4 at 1/2 → 0.2 at 1: normalized 1, 0.5, 0.25 → (0.375 + 0.1875) / 1.
        var rows = new List<SweepRow>
        {
            new("s", 0, 0, new Dictionary<string, double> { ["acc"] = 0.8 }),
            new("s", 1, 0.5, new Dictionary<string, double> { ["acc"] = 0.4 }),
            new("s", 2, 1.0, new Dictionary<string, double> { ["acc"] = 0.2 }),
        };
        var areas = ReportWriter.Areas(rows, [MetricSpec.Accuracy("acc")]);
        Assert.Equal(0.5625, areas[("s", "acc")], 15);
        var section = ReportWriter.StrategySection(ReportWriter.Evaluate(rows, [MetricSpec.Accuracy("acc")]),
            new Dictionary<string, SelectionCost?> { ["s"] = new SelectionCost(3, 48, 300, double.NaN) }, areas,
            new Dictionary<string, double> { ["s"] = 12.34 });
        Assert.Contains("| strategy | acc | AUC acc | selection forward passes | selection layer forwards | selection tokens "
            + "| selection seconds |", section);
        Assert.Contains("| s | 0.0000 (n=0) | 0.5625 | 3 | 48 | 300 | 12.3 |", section);
    }

    [Fact]
    public void TaskListOptionsStayWithTheirSpec()
    {
        Assert.Equal(["loss:v.txt", "gsm8k:g/,shots=1,limit=5", "mc:c.jsonl"],
            LayerPrune.Cli.Commands.SweepCommand.SplitTasks("loss:v.txt, gsm8k:g/,shots=1,limit=5,mc:c.jsonl"));
        Assert.Equal(["mmlu:dir,dev=a:b.csv"], LayerPrune.Cli.Commands.SweepCommand.SplitTasks("mmlu:dir,dev=a:b.csv"));
    }
}

/// <summary>
/// gsm8k, generations and bootstrap in a sweep of kjv-llama-16l: the gsm8k metrics of a variant equal `eval` of its pruned
/// checkpoint, each continuation equals `generate` on that checkpoint token for token, the degeneration metric is the mean
/// repeated-trigram rate of the stored continuations, and the report and figures carry them.
/// </summary>
public class SweepGenerationTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    static string Gsm8k => Path.Combine(TestPaths.Fixtures, "benchmarks", "gsm8k");

    [Fact]
    public void VariantsGenerateWhatThePrunedCheckpointGeneratesAndScoreGsm8kAsEvalDoes()
    {
        using var tmp = new TempDir();
        string gsm = $"gsm8k:{Gsm8k},shots=1,limit=2";
        string[] prompts = ["In the beginning God created", "And it came to pass"];
        var options = new SweepOptions
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 4, SeqLen = 64, Batch = 4,
            Tasks = [$"loss:{KjvModel.Validation}", gsm], Strategies = ["similarity"], Ns = [6],
            Prompts = prompts, GenerationTokens = 12, Bootstrap = 20, OutDir = tmp["sweep"],
            Eval = new EvalOptions { MaxChunks = 2, SeqLen = 64, BatchSize = 4, MaxNewTokens = 16 },
        };
        var result = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        var row = result.Row("similarity", 6);
        Assert.Equal(6, row.Removed.Count);
        Assert.Equal(2.0, (double)result.Protocol[gsm]!["items"]!);

        // The pruned checkpoint: eval's gsm8k and generate's continuations are the sweep's.
        string dir = tmp["pruned"];
        using (var source = Checkpoint.Open(KjvModel.Dir))
            CheckpointPruner.Write(source, PrunePlan.FromLayerSpec(string.Join(",", row.Removed), 16), dir);
        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", dir, "--task", gsm, "--max-new-tokens", "16", "--json", "--quiet");
        Assert.True(code == 0, stderr);
        var eval = JsonNode.Parse(stdout)!;
        var task = eval["results"]?["gsm8k"] ?? eval;
        Assert.Equal((double)task["exact_match_strict"]!, row.Metrics["gsm8k_exact_match_strict"]);
        Assert.Equal((double)task["exact_match_flexible"]!, row.Metrics["gsm8k_exact_match_flexible"]);
        Assert.Equal(prompts.Length, row.Generations!.Count);
        for (int i = 0; i < prompts.Length; i++)
        {
            var (gc, gout, gerr) = CliRunner.Run("generate", "--model", dir, "--prompt", prompts[i], "--max-new-tokens", "12",
                "--json", "--quiet");
            Assert.True(gc == 0, gerr);
            var g = JsonNode.Parse(gout)!;
            int promptLength = kjv.Tokenizer.Encode(prompts[i]).Count;
            var ids = g["token_ids"]!.AsArray().Select(x => (int)x!).Skip(promptLength).ToArray();
            Assert.Equal(ids, row.Generations[i].TokenIds);
            Assert.Equal((string)g["completion"]!, row.Generations[i].Completion);
        }
        // The unpruned continuation differs from the 6-layers-removed one (the test would not notice a variant ignoring its plan).
        Assert.NotEqual(result.Row("none", 0).Generations![0].TokenIds, row.Generations[0].TokenIds);
        double expected = row.Generations.Select(x => SweepGenerations.RepeatedNgramRate(x.TokenIds)).Average();
        Assert.Equal(expected, row.Metrics[SweepGenerations.Column], 15);

        // Files: the degeneration and normalized figures, the report's sections, seconds beside the rows, the bootstrap.
        foreach (var f in new[] { "degeneration.png", SweepRunner.NormalizedFigure("similarity"), SweepRunner.SecondsFile })
            Assert.True(File.Exists(Path.Combine(options.OutDir, f)), f);
        string report = File.ReadAllText(Path.Combine(options.OutDir, "report.md"));
        Assert.Contains("## Generations", report);
        Assert.Contains("| AUC validation_loss |", report);
        string first = SweepGenerations.RepeatedNgramRate(row.Generations[0].TokenIds).ToString("0.000", CultureInfo.InvariantCulture);
        Assert.Contains($"| similarity | 6 | {first} |", report);
        var seconds = JsonNode.Parse(File.ReadAllText(Path.Combine(options.OutDir, SweepRunner.SecondsFile)))!;
        Assert.True((double)seconds["similarity/6/raw"]! > 0);
        var bootstrap = JsonNode.Parse(File.ReadAllText(Path.Combine(options.OutDir, "similarity.json")))!["bootstrap"]!;
        Assert.Equal(20, (int)bootstrap["resamples"]!);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(options.OutDir, "results.json")))!;
        Assert.Equal(12, (int)json["config"]!["generation_tokens"]!);
        Assert.Equal(16, (int)json["config"]!["max_new_tokens"]!);

        // A rerun resumes: nothing recomputed, results.json unchanged (the seconds are not in it).
        string before = File.ReadAllText(Path.Combine(options.OutDir, "results.json"));
        var again = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        Assert.Equal(before, File.ReadAllText(Path.Combine(options.OutDir, "results.json")));
        Assert.Equal(row.Generations[1].TokenIds, again.Row("similarity", 6).Generations![1].TokenIds);
    }

    [Fact]
    public void BadGenerationOptionsNameTheirParameter()
    {
        using var tmp = new TempDir();
        var o = new SweepOptions
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Tasks = [$"loss:{KjvModel.Validation}"], OutDir = tmp["s"],
        };
        string? Param(SweepOptions bad) => Assert.ThrowsAny<ArgumentException>(() => SweepRunner.BlockSizes(bad, 16)).ParamName;
        Assert.Equal("Prompts", Param(o with { Prompts = ["a", " "] }));
        Assert.Equal("GenerationTokens", Param(o with { GenerationTokens = 0 }));
        Assert.Equal("Bootstrap", Param(o with { Bootstrap = -1 }));
        var e = Assert.Throws<LayerPruneException>(() => TaskSpec.Parse($"gsm8k:{Gsm8k},limit=0"));
        Assert.Contains("limit must be a positive integer", e.Message);
    }
}
