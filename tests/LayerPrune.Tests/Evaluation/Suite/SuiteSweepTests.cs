using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Sweep;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Evaluation.Suite;

/// <summary>The report's zero-shot suite table and average figure from sweep rows.</summary>
public class SuiteSweepTests
{
    sealed class FakeTask(string kind, params MetricInfo[] metrics) : IPreparedTask
    {
        public TaskSpec Spec { get; } = new(kind, "x", 0);
        public IReadOnlyList<MetricInfo> Metrics => metrics;
        public IReadOnlyDictionary<string, double> Protocol { get; } = new Dictionary<string, double>();
        public TaskScore Score(CausalLM model, IReadOnlyList<int>? layers = null, IProgressSink? progress = null) =>
            throw new NotSupportedException();
    }

    [Fact]
    public void TableHoldsThePapersMetricPerTaskAndTheirAverage()
    {
        IPreparedTask[] tasks =
        [
            new FakeTask("arc_challenge", MetricInfo.Accuracy("arc_challenge", "acc", 0.25),
                MetricInfo.Accuracy("arc_challenge", "acc_norm", 0.25)),
            new FakeTask("winogrande", MetricInfo.Accuracy("winogrande", "acc", 0.5)),
            new FakeTask("loss", MetricInfo.Loss("validation_loss", "loss")),
        ];
        // In the papers' column order (boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa, ...).
        Assert.Equal([("winogrande_acc", (double?)0.5), ("arc_challenge_acc_norm", 0.25)], SuiteSweep.Present(tasks));
        static Dictionary<string, double> M(double arc, double arcNorm, double wino) => new()
        {
            ["arc_challenge_acc"] = arc, ["arc_challenge_acc_norm"] = arcNorm, ["winogrande_acc"] = wino, ["validation_loss"] = 3,
        };
        SweepRow[] rows =
        [
            new("similarity", 0, 0, M(0.30, 0.40, 0.60)), new("similarity", 4, 0.25, M(0.2, 0.30, 0.55)),
            new("deepest", 0, 0, M(0.30, 0.40, 0.60)), new("deepest", 4, 0.25, M(0.1, 0.26, 0.52)),
        ];
        using var dir = new TempDir();
        var md = SuiteSweep.Section(dir.Path, rows, ["similarity", "deepest"], tasks, "kjv", 16);
        Assert.Contains("## Zero-shot suite", md);
        Assert.Contains("| variant | n | fraction | winogrande_acc | arc_challenge_acc_norm | average |", md);
        Assert.Contains("| unpruned | 0 | 0.000 | 0.6000 | 0.4000 | 0.5000 |", md);
        Assert.Contains("| similarity | 4 | 0.250 | 0.5500 | 0.3000 | 0.4250 |", md);
        Assert.Contains("| deepest | 4 | 0.250 | 0.5200 | 0.2600 | 0.3900 |", md);
        Assert.Contains("Chance average: 0.3750.", md);
        Assert.True(new FileInfo(Path.Combine(dir.Path, SuiteSweep.Figure)).Length > 1000);
        Assert.Equal("", SuiteSweep.Section(dir.Path, rows, ["similarity"], [tasks[2]], "kjv", 16));
    }
}
