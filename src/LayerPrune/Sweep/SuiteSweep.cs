using System.Globalization;
using System.Text;
using LayerPrune.Evaluation;
using LayerPrune.Evaluation.Suite;
using LayerPrune.Reporting;

namespace LayerPrune.Sweep;

/// <summary>
/// The zero-shot suite in a sweep: per variant, lm-eval's results file (OUT/lm-eval/VARIANT/MODEL/results_DATE.json),
/// and in report.md the table the pruning papers print — each task's accuracy per variant and their average — with the
/// figure of that average against the fraction of layers removed, one curve per strategy (and per healed strategy).
/// </summary>
public static class SuiteSweep
{
    /// <summary>The accuracy each task contributes, as LLM-Pruner, ShortGPT and SLEB tabulate the suite: acc_norm for
    /// HellaSwag, ARC-c and OpenBookQA, acc for the others.</summary>
    public static readonly IReadOnlyList<(string Task, string Metric)> Columns =
    [
        ("boolq", "acc"), ("piqa", "acc"), ("hellaswag", "acc_norm"), ("winogrande", "acc"), ("arc_easy", "acc"),
        ("arc_challenge", "acc_norm"), ("openbookqa", "acc_norm"), ("lambada_openai", "acc"), ("mmlu", "acc"),
    ];

    /// <summary>The figure's file name.</summary>
    public const string Figure = "zero_shot_average.png";

    /// <summary>Writes a variant's scores as lm-eval's results file under OUT/lm-eval/KEY.</summary>
    public static Action<List<IPreparedTask>, List<TaskScore>> LmEvalWriter(SweepOptions o, string key) =>
        (tasks, scores) =>
            LmEvalResults.Write(Path.Combine(o.OutDir, "lm-eval", key), tasks, scores, o.ModelDir, o.Eval, logSamples: false);

    /// <summary>The suite's columns present in the run (sweep column names, e.g. "arc_easy_acc"), with their chance levels.</summary>
    public static List<(string Column, double? Chance)> Present(IReadOnlyList<IPreparedTask> tasks)
    {
        var metrics = tasks.SelectMany(t => t.Metrics).ToList();
        return Columns.Select(c => metrics.FirstOrDefault(m => m.Column == $"{c.Task}_{c.Metric}"))
            .Where(m => m is not null).Select(m => (m!.Column, m.Chance)).ToList();
    }

    /// <summary>The mean of the suite's columns in <paramref name="metrics"/>; NaN when one is missing.</summary>
    public static double Average(IReadOnlyDictionary<string, double> metrics, IReadOnlyList<string> columns) =>
        columns.Count == 0 ? double.NaN : columns.Average(c => metrics.TryGetValue(c, out var v) ? v : double.NaN);

    /// <summary>"## Zero-shot suite": the table and the average figure; empty when the run has none of the suite's tasks.</summary>
    public static string Section(string outDir, IReadOnlyList<SweepRow> rows, IReadOnlyList<string> strategies,
        IReadOnlyList<IPreparedTask> tasks, string model, int layers)
    {
        var present = Present(tasks);
        if (present.Count == 0) return "";
        var cols = present.Select(p => p.Column).ToList();
        var baseline = rows.First(r => r.N == 0);
        var series = strategies.Select(s => (s, (IReadOnlyList<(double, double)>)rows.Where(r => r.Strategy == s)
            .OrderBy(r => r.N).Select(r => (r.Fraction, Average(r.Metrics, cols))).ToList())).ToList();
        double? chance = present.All(p => p.Chance is not null) ? present.Average(p => p.Chance!.Value) : null;
        Plots.MetricVsFraction(Path.Combine(outDir, Figure), $"{model}: zero-shot average vs fraction of {layers} layers removed",
            "average accuracy (" + string.Join(", ", cols) + ")", series, chance, Average(baseline.Metrics, cols));
        var sb = new StringBuilder("\n## Zero-shot suite\n\n");
        sb.Append("Accuracy per task as the pruning papers tabulate it (acc_norm for HellaSwag, ARC-c and OpenBookQA, acc for the ")
          .Append("others) and their unweighted average; random variants are the mean over seeds.");
        if (chance is double c) sb.Append(CultureInfo.InvariantCulture, $" Chance average: {c:0.0000}.");
        sb.Append("\n\n| variant | n | fraction | ").Append(string.Join(" | ", cols)).Append(" | average |\n|---|---:|---:|")
          .Append(string.Concat(cols.Select(_ => "---:|"))).Append("---:|\n");
        void Row(string name, SweepRow r) => sb.Append(CultureInfo.InvariantCulture, $"| {name} | {r.N} | {r.Fraction:0.000} | ")
            .Append(string.Join(" | ", cols.Select(k =>
                r.Metrics.TryGetValue(k, out var v) ? v.ToString("0.0000", CultureInfo.InvariantCulture) : "–")))
            .Append(CultureInfo.InvariantCulture, $" | {Average(r.Metrics, cols):0.0000} |\n");
        Row("unpruned", baseline);
        foreach (var s in strategies)
            foreach (var r in rows.Where(r => r.Strategy == s && r.N > 0).OrderBy(r => r.N)) Row(s, r);
        sb.Append("\n![zero-shot average](").Append(Figure).Append(")\n");
        return sb.ToString();
    }
}
