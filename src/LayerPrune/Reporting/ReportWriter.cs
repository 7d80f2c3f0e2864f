using System.Globalization;
using System.Text;
using LayerPrune.Pruning.Strategies;

namespace LayerPrune.Reporting;

/// <summary>One sweep measurement: a strategy with n layers removed (fraction = n / L) and its metric values.</summary>
public sealed record SweepRow(string Strategy, int N, double Fraction, IReadOnlyDictionary<string, double> Metrics);

/// <summary>How a metric's tolerance is measured.</summary>
public enum ToleranceKind
{
    /// <summary>Allowed drop is <c>Tolerance</c> in the metric's own units (e.g. 0.05 accuracy).</summary>
    Absolute,
    /// <summary>Allowed drop is <c>Tolerance</c> times |unpruned score| (e.g. 0.10 = 10 % worse loss).</summary>
    Relative,
}

/// <summary>How to judge a metric: which direction is better and how much worse than unpruned still counts.</summary>
public sealed record MetricSpec(string Name, bool HigherIsBetter, double Tolerance, ToleranceKind Kind)
{
    /// <summary>Higher-is-better, absolute tolerance (default 0.05).</summary>
    public static MetricSpec Accuracy(string name, double tolerance = 0.05) =>
        new(name, true, tolerance, ToleranceKind.Absolute);

    /// <summary>Lower-is-better, relative tolerance (default 10 %).</summary>
    public static MetricSpec Loss(string name, double tolerance = 0.10) =>
        new(name, false, tolerance, ToleranceKind.Relative);

    /// <summary>The worst score that still counts as "within tolerance" of <paramref name="unpruned"/>.</summary>
    public double Threshold(double unpruned)
    {
        double slack = Kind == ToleranceKind.Absolute ? Tolerance : Tolerance * Math.Abs(unpruned);
        return HigherIsBetter ? unpruned - slack : unpruned + slack;
    }

    /// <summary>True when <paramref name="value"/> is no worse than <see cref="Threshold"/>; NaN is never within.</summary>
    public bool IsWithin(double value, double unpruned)
    {
        if (double.IsNaN(value)) return false;
        double t = Threshold(unpruned);
        // Small epsilon so a value exactly on the boundary (up to float rounding) counts as within.
        double eps = 1e-12 * Math.Max(1, Math.Abs(t));
        return HigherIsBetter ? value >= t - eps : value <= t + eps;
    }

    /// <summary>E.g. "higher is better, 0.05 absolute".</summary>
    public string Describe()
    {
        string how = Kind == ToleranceKind.Absolute
            ? Fmt(Tolerance) + " absolute"
            : Fmt(Tolerance * 100) + " % relative";
        return (HigherIsBetter ? "higher is better, " : "lower is better, ") + how;
    }

    internal static string Fmt(double v) => v.ToString("0.####", CultureInfo.InvariantCulture);
}

/// <summary>Per strategy and metric: the largest pruned fraction that stays within tolerance.</summary>
public sealed record ToleranceResult(
    string Strategy, string Metric, double Unpruned, double Threshold,
    int LargestN, double LargestFraction, double ScoreAtLargest,
    int? FirstFailN, double? FirstFailFraction, int TestedPoints);

/// <summary>
/// Builds the markdown summary (report.md) of a layer-pruning sweep. Pure: no I/O.
/// Protocol: for each strategy, walk its rows by increasing n; the answer is the largest fraction such that every
/// measured point from n = 1 up to it is within tolerance of the unpruned (n = 0) score ("stays within").
/// </summary>
public static class ReportWriter
{
    /// <summary>Computes the per-strategy, per-metric results (the numbers behind the table).</summary>
    public static IReadOnlyList<ToleranceResult> Evaluate(IReadOnlyList<SweepRow> rows, IReadOnlyList<MetricSpec> metrics)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(metrics);
        foreach (var r in rows)
        {
            if (r is null || r.Metrics is null)
                throw new LayerPruneException("report: a sweep row or its metrics dictionary is null");
            if (r.N < 0)
                throw new LayerPruneException($"report: strategy '{r.Strategy}' has a row with negative n={r.N}");
        }
        foreach (var dup in metrics.GroupBy(m => m.Name, StringComparer.Ordinal).Where(g => g.Count() > 1))
            throw new LayerPruneException($"report: metric '{dup.Key}' is listed more than once");
        foreach (var m in metrics)
            if (!(m.Tolerance >= 0) || double.IsInfinity(m.Tolerance))
                throw new LayerPruneException($"report: metric '{m.Name}' has invalid tolerance {m.Tolerance}");

        var strategies = rows.Select(r => r.Strategy).Distinct(StringComparer.Ordinal).ToList();
        var results = new List<ToleranceResult>();
        foreach (string strategy in strategies)
        {
            var own = rows.Where(r => r.Strategy == strategy).ToList();
            foreach (var metric in metrics)
            {
                double? unpruned = Baseline(own, metric.Name) ?? Baseline(rows, metric.Name);
                var pruned = own.Where(r => r.N > 0 && r.Metrics.ContainsKey(metric.Name))
                    .OrderBy(r => r.N).ToList();
                if (unpruned is null)
                {
                    if (pruned.Count == 0) continue; // metric not measured for this strategy at all
                    throw new LayerPruneException(
                        $"report: no unpruned (n=0) row with metric '{metric.Name}' to compare strategy '{strategy}' against");
                }
                double u = unpruned.Value;
                int largestN = 0;
                double largestFraction = 0, scoreAtLargest = u;
                int? failN = null;
                double? failFraction = null;
                foreach (var r in pruned)
                {
                    double v = r.Metrics[metric.Name];
                    if (!metric.IsWithin(v, u))
                    {
                        failN = r.N;
                        failFraction = r.Fraction;
                        break;
                    }
                    largestN = r.N; largestFraction = r.Fraction; scoreAtLargest = v;
                }
                results.Add(new ToleranceResult(strategy, metric.Name, u, metric.Threshold(u), largestN,
                    largestFraction, scoreAtLargest, failN, failFraction, pruned.Count));
            }
        }
        return results;
    }

    private static double? Baseline(IEnumerable<SweepRow> rows, string metric)
    {
        foreach (var r in rows)
            if (r.N == 0 && r.Metrics.TryGetValue(metric, out double v) && !double.IsNaN(v))
                return v;
        return null;
    }

    /// <summary>The report.md text: title, one-sentence protocol, and the results table.</summary>
    public static string Build(IReadOnlyList<SweepRow> rows, IReadOnlyList<MetricSpec> metrics,
        string title = "LayerPrune sweep report")
    {
        var results = Evaluate(rows, metrics);
        var byName = metrics.ToDictionary(m => m.Name, StringComparer.Ordinal);
        var sb = new StringBuilder();
        sb.Append("# ").Append(title).Append("\n\n");
        sb.Append("Protocol: for each strategy, layers are removed in increasing block sizes n (fraction = n / L), ")
          .Append("and a metric counts as retained up to the largest fraction for which every measured point from n = 1 ")
          .Append("up to it is no worse than the unpruned (n = 0) score by more than the tolerance listed per metric.\n\n");

        sb.Append("| strategy | metric | tolerance | unpruned | threshold | largest fraction within tolerance | n | score there ")
          .Append("| first outside |\n");
        sb.Append("|---|---|---|---|---|---|---|---|---|\n");
        foreach (var r in results)
        {
            var spec = byName[r.Metric];
            string firstOutside = r.FirstFailN is int fn
                ? $"{F(r.FirstFailFraction!.Value)} (n={fn})"
                : r.TestedPoints == 0 ? "not measured" : "none (all within)";
            sb.Append("| ").Append(Esc(r.Strategy))
              .Append(" | ").Append(Esc(r.Metric))
              .Append(" | ").Append(spec.Describe())
              .Append(" | ").Append(F(r.Unpruned))
              .Append(" | ").Append(F(r.Threshold))
              .Append(" | ").Append(F(r.LargestFraction))
              .Append(" | ").Append(r.LargestN.ToString(CultureInfo.InvariantCulture))
              .Append(" | ").Append(F(r.ScoreAtLargest))
              .Append(" | ").Append(firstOutside)
              .Append(" |\n");
        }
        return sb.ToString();
    }

    /// <summary>
    /// "## Strategies side by side": one row per strategy, the largest fraction within tolerance of each metric (n in
    /// brackets) and what choosing the layers cost (forward passes, decoder-layer forwards, tokens; for strategies that
    /// measure once for all n, the cost up to the largest n). A strategy without a cost entry shows "–".
    /// </summary>
    public static string StrategySection(IReadOnlyList<ToleranceResult> results, IReadOnlyDictionary<string, SelectionCost?> costs)
    {
        ArgumentNullException.ThrowIfNull(results);
        ArgumentNullException.ThrowIfNull(costs);
        var metrics = results.Select(r => r.Metric).Distinct(StringComparer.Ordinal).ToList();
        var strategies = results.Select(r => r.Strategy).Distinct(StringComparer.Ordinal).ToList();
        var sb = new StringBuilder("\n## Strategies side by side\n\n");
        sb.Append("Largest fraction within tolerance per metric (as above) and the selection cost of each strategy.\n\n");
        sb.Append("| strategy | ").Append(string.Join(" | ", metrics.Select(Esc)))
          .Append(" | selection forward passes | selection layer forwards | selection tokens |\n");
        sb.Append("|---|").Append(string.Concat(metrics.Select(_ => "---:|"))).Append("---:|---:|---:|\n");
        foreach (var s in strategies)
        {
            sb.Append("| ").Append(Esc(s)).Append(" |");
            foreach (var m in metrics)
            {
                var r = results.FirstOrDefault(x => x.Strategy == s && x.Metric == m);
                string cell = r is null ? "–" : $"{F(r.LargestFraction)} (n={r.LargestN.ToString(CultureInfo.InvariantCulture)})";
                sb.Append(' ').Append(cell).Append(" |");
            }
            if (costs.TryGetValue(s, out var c) && c is not null)
                sb.Append(CultureInfo.InvariantCulture, $" {c.ForwardPasses} | {c.LayerForwards} | {c.Tokens} |\n");
            else
                sb.Append(" – | – | – |\n");
        }
        return sb.ToString();
    }

    /// <summary>
    /// The "Measured:" section: one line per task with what exactly it measured, e.g.
    /// <c>- `loss:validation.txt`: seq_len 256, max_chunks 128, chunks 128, tokens 32640</c>.
    /// </summary>
    public static string ProtocolSection(IEnumerable<(string Task, IReadOnlyDictionary<string, double> Protocol)> tasks)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        var sb = new StringBuilder("\nMeasured:\n");
        foreach (var (task, protocol) in tasks)
        {
            var parts = protocol.Select(kv => kv.Key + " " + MetricSpec.Fmt(kv.Value));
            sb.Append("- `").Append(Esc(task)).Append("`: ").Append(string.Join(", ", parts)).Append('\n');
        }
        return sb.ToString();
    }

    private static string F(double v) => v.ToString("0.0000", CultureInfo.InvariantCulture);

    private static string Esc(string s) => s.Replace("|", "\\|").Replace("\n", " ");
}
