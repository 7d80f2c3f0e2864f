using LayerPrune.Reporting;
using Xunit;

namespace LayerPrune.Tests.Reporting;

public sealed class ReportWriterTests
{
    private static SweepRow Row(string s, int n, double acc, double loss) =>
        new(s, n, n / 10.0, new Dictionary<string, double> { ["acc"] = acc, ["loss"] = loss });

    // L = 10 layers. Unpruned: acc 0.60, loss 2.0. Accuracy: 0.05 absolute -> threshold 0.55.
    // Loss: 10 % relative -> threshold 2.2.
    private static List<SweepRow> Rows() =>
    [
        Row("similarity", 0, 0.60, 2.00),
        Row("similarity", 3, 0.54, 2.30), // listed out of order on purpose
        Row("similarity", 1, 0.59, 2.05),
        Row("similarity", 2, 0.56, 2.21),
        Row("similarity", 4, 0.57, 2.10), // back within, but after a failure: does not count
        // No own n=0 row: compared with the shared unpruned score above.
        Row("last", 1, 0.50, 2.20),       // acc fails at once; loss exactly on the 10 % boundary = within
        Row("last", 2, 0.40, 2.30),
        Row("healed", 0, 0.60, 2.00),
        Row("healed", 1, 0.58, 2.10),
        Row("healed", 2, 0.55, 2.15),     // acc exactly on the 0.05 boundary = within
    ];

    private static readonly MetricSpec[] Specs = [MetricSpec.Accuracy("acc", 0.05), MetricSpec.Loss("loss", 0.10)];

    [Fact]
    public void Evaluate_LargestFractionThatStaysWithinTolerance()
    {
        var r = ReportWriter.Evaluate(Rows(), Specs).ToDictionary(x => (x.Strategy, x.Metric));
        Assert.Equal(6, r.Count);

        var simAcc = r[("similarity", "acc")];
        Assert.Equal(0.60, simAcc.Unpruned);
        Assert.Equal(0.55, simAcc.Threshold, 12);
        Assert.Equal((2, 0.2, 0.56), (simAcc.LargestN, simAcc.LargestFraction, simAcc.ScoreAtLargest));
        Assert.Equal((3, 0.3), (simAcc.FirstFailN, simAcc.FirstFailFraction));
        Assert.Equal(4, simAcc.TestedPoints);

        var simLoss = r[("similarity", "loss")];
        Assert.Equal(2.2, simLoss.Threshold, 12);
        Assert.Equal((1, 0.1, 2.05), (simLoss.LargestN, simLoss.LargestFraction, simLoss.ScoreAtLargest));
        Assert.Equal(2, simLoss.FirstFailN);

        var lastAcc = r[("last", "acc")];
        Assert.Equal((0, 0.0, 0.60), (lastAcc.LargestN, lastAcc.LargestFraction, lastAcc.ScoreAtLargest));
        Assert.Equal(1, lastAcc.FirstFailN);

        var lastLoss = r[("last", "loss")];
        Assert.Equal((1, 0.1, 2.20), (lastLoss.LargestN, lastLoss.LargestFraction, lastLoss.ScoreAtLargest));
        Assert.Equal(2, lastLoss.FirstFailN);

        var healedAcc = r[("healed", "acc")];
        Assert.Equal((2, 0.2, 0.55), (healedAcc.LargestN, healedAcc.LargestFraction, healedAcc.ScoreAtLargest));
        Assert.Null(healedAcc.FirstFailN);
        var healedLoss = r[("healed", "loss")];
        Assert.Equal((2, 0.2, 2.15), (healedLoss.LargestN, healedLoss.LargestFraction, healedLoss.ScoreAtLargest));
    }

    [Fact]
    public void Build_WritesProtocolAndMarkdownTable()
    {
        string md = ReportWriter.Build(Rows(), Specs, "Example sweep");
        string[] lines = md.Split('\n');
        Assert.Equal("# Example sweep", lines[0]);
        Assert.StartsWith("Protocol: ", lines[2]);
        Assert.Single(lines, l => l.StartsWith("Protocol: "));
        Assert.Contains("| strategy | metric | tolerance | unpruned | threshold | largest fraction within tolerance | n | score there | first outside |", lines);
        Assert.Contains("| similarity | acc | higher is better, 0.05 absolute | 0.6000 | 0.5500 | 0.2000 | 2 | 0.5600 | 0.3000 (n=3) |", lines);
        Assert.Contains("| similarity | loss | lower is better, 10 % relative | 2.0000 | 2.2000 | 0.1000 | 1 | 2.0500 | 0.2000 (n=2) |", lines);
        Assert.Contains("| last | acc | higher is better, 0.05 absolute | 0.6000 | 0.5500 | 0.0000 | 0 | 0.6000 | 0.1000 (n=1) |", lines);
        Assert.Contains("| healed | acc | higher is better, 0.05 absolute | 0.6000 | 0.5500 | 0.2000 | 2 | 0.5500 | none (all within) |", lines);
        Assert.Equal(6, lines.Count(l => l.StartsWith("| ") && !l.StartsWith("| strategy")));
    }

    [Fact]
    public void Tolerance_AbsoluteAndRelativeInBothDirections()
    {
        Assert.Equal(0.45, new MetricSpec("a", true, 0.05, ToleranceKind.Absolute).Threshold(0.5), 12);
        Assert.Equal(0.45, new MetricSpec("a", true, 0.10, ToleranceKind.Relative).Threshold(0.5), 12);
        Assert.Equal(3.5, new MetricSpec("l", false, 0.5, ToleranceKind.Absolute).Threshold(3.0), 12);
        Assert.Equal(3.3, new MetricSpec("l", false, 0.10, ToleranceKind.Relative).Threshold(3.0), 12);
        var loss = MetricSpec.Loss("l");
        Assert.True(loss.IsWithin(1.0, 3.0));     // better than unpruned
        Assert.False(loss.IsWithin(3.31, 3.0));
        Assert.False(loss.IsWithin(double.NaN, 3.0));
    }

    [Fact]
    public void Build_FailsClearlyWithoutBaselineOrWithDuplicateMetrics()
    {
        var noBase = new List<SweepRow> { Row("s", 1, 0.5, 2.0) };
        var ex = Assert.Throws<LayerPruneException>(() => ReportWriter.Build(noBase, Specs));
        Assert.Contains("n=0", ex.Message);
        Assert.Throws<LayerPruneException>(() => ReportWriter.Build(Rows(), [MetricSpec.Loss("loss"), MetricSpec.Loss("loss")]));
    }
}
