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

/// <summary>How a metric is set relative to its unpruned score u (1 = as good as unpruned, smaller = worse).</summary>
public enum Normalization
{
    /// <summary>The default: v / u when higher is better (accuracy), u / v when lower is better (loss).</summary>
    Ratio,
    /// <summary>(1 − v) / (1 − u): for a lower-is-better rate in [0, 1] whose unpruned value may be 0 (degeneration).</summary>
    Complement,
}

/// <summary>How to judge a metric: which direction is better and how much worse than unpruned still counts.</summary>
public sealed record MetricSpec(string Name, bool HigherIsBetter, double Tolerance, ToleranceKind Kind)
{
    /// <summary>How <see cref="Normalize"/> relates a value to the unpruned score.</summary>
    public Normalization Normalization { get; init; }

    /// <summary>The value relative to the unpruned score <paramref name="unpruned"/> (<see cref="Normalization"/>): 1 at the
    /// unpruned score, below 1 when worse; NaN when either is not finite or the denominator is 0.</summary>
    public double Normalize(double value, double unpruned)
    {
        double num, den;
        if (Normalization == Normalization.Complement) (num, den) = (1 - value, 1 - unpruned);
        else if (HigherIsBetter) (num, den) = (value, unpruned);
        else (num, den) = (unpruned, value);
        double r = num / den;
        return den == 0 || !double.IsFinite(r) ? double.NaN : r;
    }

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

    /// <summary>
    /// The normalized area under a metric's curve: the trapezoid rule over the points (0, 1), (f_1, r_1), …, (f_k, r_k) of
    /// <paramref name="points"/> sorted by fraction f, r being the normalized value (<see cref="MetricSpec.Normalize"/>), divided
    /// by f_k: the mean normalized score over [0, f_k] (1 = as good as unpruned everywhere). NaN when a point is not finite or
    /// no point has f &gt; 0.
    /// </summary>
    public static double NormalizedArea(IEnumerable<(double Fraction, double Normalized)> points)
    {
        ArgumentNullException.ThrowIfNull(points);
        var pts = points.Where(p => p.Fraction > 0).OrderBy(p => p.Fraction).ToList();
        if (pts.Count == 0 || pts.Any(p => !double.IsFinite(p.Normalized) || !double.IsFinite(p.Fraction))) return double.NaN;
        double area = 0, f0 = 0, r0 = 1;
        foreach (var (f, r) in pts)
        {
            area += (f - f0) * (r0 + r) / 2;
            (f0, r0) = (f, r);
        }
        return area / f0;
    }

    /// <summary>Per strategy and metric: <see cref="NormalizedArea"/> of its pruned rows against its unpruned (n = 0) row
    /// (or any strategy's), NaN when not computable.</summary>
    public static IReadOnlyDictionary<(string Strategy, string Metric), double> Areas(IReadOnlyList<SweepRow> rows,
        IReadOnlyList<MetricSpec> metrics)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(metrics);
        var areas = new Dictionary<(string, string), double>();
        foreach (var strategy in rows.Select(r => r.Strategy).Distinct(StringComparer.Ordinal))
        {
            var own = rows.Where(r => r.Strategy == strategy).ToList();
            foreach (var m in metrics)
            {
                if (!own.Any(r => r.N > 0 && r.Metrics.ContainsKey(m.Name))) continue;
                double u = Baseline(own, m.Name) ?? Baseline(rows, m.Name) ?? double.NaN;
                var pts = own.Where(r => r.N > 0 && r.Metrics.ContainsKey(m.Name))
                    .Select(r => (r.Fraction, m.Normalize(r.Metrics[m.Name], u)));
                areas[(strategy, m.Name)] = NormalizedArea(pts);
            }
        }
        return areas;
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
    /// "## Strategies side by side": one row per strategy; per metric the largest fraction within tolerance (n in brackets)
    /// and, when <paramref name="areas"/> is given, the normalized area under its curve (<see cref="NormalizedArea"/>); then
    /// what choosing the layers cost (forward passes, decoder-layer forwards, tokens, and wall-clock seconds when
    /// <paramref name="seconds"/> has the strategy; for strategies that measure once for all n, the cost up to the largest n).
    /// A strategy without a cost entry shows "–".
    /// </summary>
    public static string StrategySection(IReadOnlyList<ToleranceResult> results, IReadOnlyDictionary<string, SelectionCost?> costs,
        IReadOnlyDictionary<(string Strategy, string Metric), double>? areas = null, IReadOnlyDictionary<string, double>? seconds = null)
    {
        ArgumentNullException.ThrowIfNull(results);
        ArgumentNullException.ThrowIfNull(costs);
        var metrics = results.Select(r => r.Metric).Distinct(StringComparer.Ordinal).ToList();
        var strategies = results.Select(r => r.Strategy).Distinct(StringComparer.Ordinal).ToList();
        var sb = new StringBuilder("\n## Strategies side by side\n\n");
        sb.Append("Largest fraction within tolerance per metric (as above)");
        if (areas is not null)
            sb.Append(", then AUC = the area under the metric's normalized curve (1 at the unpruned score: v/u for accuracy, ")
              .Append("u/v for loss, (1−v)/(1−u) for degeneration), by the trapezoid rule from (0, 1) over every measured ")
              .Append("fraction, divided by the largest fraction (1 = no loss anywhere; – = undefined, e.g. an unpruned score of 0)");
        sb.Append(", and the selection cost of each strategy.\n\n");
        sb.Append("| strategy | ");
        foreach (var m in metrics)
        {
            sb.Append(Esc(m)).Append(" | ");
            if (areas is not null) sb.Append("AUC ").Append(Esc(m)).Append(" | ");
        }
        sb.Append("selection forward passes | selection layer forwards | selection tokens |");
        if (seconds is not null) sb.Append(" selection seconds |");
        sb.Append("\n|---|");
        sb.Append(string.Concat(metrics.Select(_ => areas is null ? "---:|" : "---:|---:|"))).Append("---:|---:|---:|");
        if (seconds is not null) sb.Append("---:|");
        sb.Append('\n');
        foreach (var s in strategies)
        {
            sb.Append("| ").Append(Esc(s)).Append(" |");
            foreach (var m in metrics)
            {
                var r = results.FirstOrDefault(x => x.Strategy == s && x.Metric == m);
                string cell = r is null ? "–" : $"{F(r.LargestFraction)} (n={r.LargestN.ToString(CultureInfo.InvariantCulture)})";
                sb.Append(' ').Append(cell).Append(" |");
                if (areas is not null)
                    sb.Append(' ').Append(areas.TryGetValue((s, m), out var a) && double.IsFinite(a) ? F(a) : "–").Append(" |");
            }
            if (costs.TryGetValue(s, out var c) && c is not null)
                sb.Append(CultureInfo.InvariantCulture, $" {c.ForwardPasses} | {c.LayerForwards} | {c.Tokens} |");
            else
                sb.Append(" – | – | – |");
            if (seconds is not null)
                sb.Append(seconds.TryGetValue(s, out var sec) && double.IsFinite(sec)
                    ? string.Create(CultureInfo.InvariantCulture, $" {sec:0.0} |") : " – |");
            sb.Append('\n');
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
