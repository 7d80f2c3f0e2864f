using System.Globalization;
using System.Text;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Pruning.Strategies;
using LayerPrune.Reporting;

namespace LayerPrune.Sweep;

/// <summary>
/// `sweep --repair linear[,cosine]`: beside each unrepaired variant, the same plan repaired without training
/// (<see cref="LinearRepair"/>), evaluated with the layers skipped in memory and the maps applied in memory for that
/// variant only (the loaded weights are put back before the next variant). Repaired rows are their own series
/// ("similarity+linear"); their selection_cost is the repair fit's cost (the selection's is on the unrepaired row).
/// </summary>
public static class SweepRepair
{
    /// <summary>The series of <paramref name="strategy"/> repaired by <paramref name="method"/>, e.g. "similarity+linear".</summary>
    public static string Series(string strategy, string method) => $"{strategy}+{method}";

    /// <summary>Every repaired series of the sweep.</summary>
    public static IEnumerable<string> AllSeries(SweepOptions o) =>
        o.Repair is { } methods ? o.Strategies.SelectMany(s => methods.Select(m => Series(s, m))) : [];

    /// <summary>Checks <see cref="SweepOptions.Repair"/>: methods linear or cosine, each once.</summary>
    public static void Validate(SweepOptions o)
    {
        if (o.Repair is not { } methods) return;
        if (methods.Count == 0 || methods.Distinct().Count() != methods.Count || methods.Any(m => m is not ("linear" or "cosine")))
            throw new ArgumentException("give linear and/or cosine, each once", nameof(SweepOptions.Repair));
    }

    /// <summary>
    /// Fits the maps of <paramref name="plan"/> by <paramref name="method"/> and evaluates the variant with them applied in
    /// memory: (metrics, the fit's cost); null when the plan removes layer 0 (no kept layer precedes that cut).
    /// </summary>
    public static (T Result, SelectionCost Cost)? Evaluate<T>(CausalLM model, PrunePlan plan, string method,
        IReadOnlyList<int[]> calibration, SweepOptions o, Func<T> evaluate)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(evaluate);
        if (plan.Removed[0] == 0) return null;
        var options = new RepairOptions { Method = method, BatchSize = o.Batch, Seed = o.Seed };
        // The sweep's shared prefixes (SweepPrefixes) hold streams of the unrepaired weights: the fit needs every layer's
        // hooks and the repaired layer s-1 changes the streams after it, so neither may read or fill that cache.
        var prefixes = model.PrefixCache;
        model.PrefixCache = null;
        try
        {
            using var repair = LinearRepair.Fit(model, plan, calibration, options);
            using (repair.ApplyTo(model))
                return (evaluate(), repair.Cost);
        }
        finally
        {
            model.PrefixCache = prefixes;
        }
    }

    /// <summary>
    /// "## Repair without training": per strategy and metric, the largest fraction within tolerance unrepaired, repaired
    /// (each method) and QLoRA-healed, with what each cost: forward passes (calibration sequences) and seconds.
    /// </summary>
    public static string ComparisonSection(SweepOptions o, IReadOnlyList<ToleranceResult> tolerance, IReadOnlyList<VariantRow> rows,
        IReadOnlyDictionary<string, double> seconds)
    {
        ArgumentNullException.ThrowIfNull(o);
        if (o.Repair is not { } methods) return "";
        var columns = new List<string> { "none" };
        columns.AddRange(methods);
        if (o.Heal is not null) columns.Add("heal");
        var sb = new StringBuilder("\n## Repair without training (docs/repair.md)\n\n");
        sb.Append("Largest fraction of layers removed within tolerance; cost = forward passes (sequences) and seconds to get there ")
          .Append("for the variant at that n (none: the selection; linear/cosine: the selection plus the fit; heal: QLoRA steps × ")
          .Append("batch sequences, forward and backward, after the selection).\n\n| strategy | metric | ")
          .Append(string.Join(" | ", columns)).Append(" |\n|---|---|").Append(string.Concat(columns.Select(_ => "---|"))).Append('\n');
        string F(double x) => x.ToString("0.###", CultureInfo.InvariantCulture);
        foreach (var s in o.Strategies)
            foreach (var metric in tolerance.Where(t => t.Strategy == s).Select(t => t.Metric).Distinct())
            {
                sb.Append(CultureInfo.InvariantCulture, $"| {s} | {metric} |");
                foreach (var c in columns)
                {
                    string series = c == "none" ? s : c == "heal" ? s + "+heal" : Series(s, c);
                    var t = tolerance.FirstOrDefault(x => x.Strategy == series && x.Metric == metric);
                    if (t is null) { sb.Append(" — |"); continue; }
                    var raw = rows.Where(r => r.Strategy == s && !r.Healed && r.N == t.LargestN).ToList();
                    var fit = rows.Where(r => r.Strategy == series && r.N == t.LargestN).ToList();
                    long passes = raw.Select(r => r.SelectionCost?.ForwardPasses ?? 0).FirstOrDefault();
                    double secs = raw.Select(r => seconds.GetValueOrDefault(r.Key, 0)).FirstOrDefault();
                    string cost;
                    if (t.LargestN == 0) cost = "unpruned";
                    else if (c == "heal") cost = $"{passes} fwd + {(long)o.Heal!.Steps * o.Heal.Batch} fwd+bwd";
                    else
                    {
                        if (c != "none")
                        {
                            passes += fit.Sum(r => r.SelectionCost?.ForwardPasses ?? 0);
                            secs += fit.Sum(r => seconds.GetValueOrDefault(r.Key, 0));
                        }
                        cost = $"{passes} fwd, {F(secs)} s";
                    }
                    sb.Append(CultureInfo.InvariantCulture, $" {F(t.LargestFraction)} (n = {t.LargestN}; {cost}) |");
                }
                sb.Append('\n');
            }
        sb.Append(SkippedNote(o, rows));
        return sb.ToString();
    }

    /// <summary>
    /// The variants that have no repaired rows because their plans remove layer 0 (no kept layer precedes that cut to take the
    /// map), as one report line; "" when there are none. Derived from the unrepaired rows, so a resumed sweep gives it too.
    /// </summary>
    public static string SkippedNote(SweepOptions o, IReadOnlyList<VariantRow> rows)
    {
        ArgumentNullException.ThrowIfNull(o);
        ArgumentNullException.ThrowIfNull(rows);
        if (o.Repair is not { } methods) return "";
        var skipped = rows
            .Where(r => !r.Healed && r.N > 0 && o.Strategies.Contains(r.Strategy) && r.Removed.Count > 0 && r.Removed[0] == 0)
            .GroupBy(r => r.Strategy)
            .Select(g => $"{g.Key} n = {string.Join(", ", g.Select(r => r.Seed is int s ? $"{r.N} (seed {s})" : $"{r.N}").Distinct())}")
            .ToList();
        if (skipped.Count == 0) return "";
        return $"\nNo {string.Join("/", methods)} rows for {string.Join("; ", skipped)}: their plans remove layer 0, so no kept " +
               "layer precedes the cut to take the map (docs/repair.md).\n";
    }
}
