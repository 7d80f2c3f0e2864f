using System.Globalization;
using System.Text;
using LayerPrune.Reporting;
using ScottPlot;

namespace LayerPrune.Efficiency;

/// <summary>
/// One sweep variant's efficiency: the strategy, n layers removed (fraction = n / L) and its measurement.
/// <paramref name="Reference"/>: the unpruned model timed interleaved with this variant (one
/// <see cref="EfficiencyMeter.Measure"/> call); speed-ups use it when given, else the report's reference.
/// </summary>
public sealed record EfficiencyRow(string Strategy, int N, double Fraction, EfficiencyResult Result, EfficiencyResult? Reference = null);

/// <summary>
/// The efficiency part of a sweep report: a markdown table and a figure of decode speed-up and memory saved against the
/// fraction of layers removed, each variant against the unpruned model measured in the same run. Pure, except the PNG.
/// </summary>
public static class EfficiencyReport
{
    /// <summary>Figure file name next to the quality figures.</summary>
    public const string PlotFile = "efficiency.png";

    /// <summary>
    /// "## Efficiency": how it was measured (machine, dtype, prompt, decode steps, repeats), then one row per variant:
    /// decode and prefill tokens/s with their speed-ups, the ideal L / L_kept, weight bytes and the fraction saved,
    /// KV-cache bytes. Rows are ordered by strategy, then n.
    /// </summary>
    public static string Section(EfficiencyResult reference, IReadOnlyList<EfficiencyRow> rows, string? plotFile = PlotFile)
    {
        var r = reference;
        var m = r.Machine;
        var sb = new StringBuilder();
        sb.AppendLine("## Efficiency");
        sb.AppendLine();
        sb.AppendLine(Inv($"Measured on {r.Device} ({r.Dtype}), CPU {m.CpuModel} [{string.Join(" ", m.CpuFlags)}], {m.Cores} cores, ")
            + Inv($"{m.TorchThreads} libtorch threads: prefill of {r.PromptLength} tokens, then {r.DecodeTokens} greedy decode steps with ")
            + Inv($"the KV cache at batch 1; median of {r.Repeats} rounds after {r.Warmup} warm-up. Layers are skipped in memory, so ")
            + "weights are the bytes the pruned checkpoint holds (embedding, kept layers, norm, head); speed-ups are against the "
            + "unpruned row. The ideal decode speed-up L / L_kept applies to the decoder layers only (embedding and head stay).");
        sb.AppendLine();
        sb.AppendLine("| strategy | n | fraction | decode tok/s (range) | decode × | ideal L/L_kept | prefill tok/s | prefill × | " +
            "weights | saved | KV cache |");
        sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        sb.AppendLine(Line("unpruned", 0, 0, r, r));
        foreach (var row in rows.OrderBy(x => x.Strategy, StringComparer.Ordinal).ThenBy(x => x.N))
            sb.AppendLine(Line(row.Strategy, row.N, row.Fraction, row.Result, row.Reference ?? r));
        if (plotFile is not null)
        {
            sb.AppendLine();
            sb.AppendLine($"![decode speed-up and memory saved vs fraction removed]({plotFile})");
        }
        return sb.ToString();
    }

    static string Line(string strategy, int n, double fraction, EfficiencyResult x, EfficiencyResult reference)
    {
        var c = EfficiencyComparison.Of(reference, x);
        var d = x.DecodeTokensPerSecond;
        return Inv($"| {strategy} | {n} | {fraction:0.###} | {d.Median:0.0} ({d.Min:0.0}–{d.Max:0.0}) | {c.DecodeSpeedup:0.00} | ")
            + Inv($"{c.IdealLayerSpeedup:0.00} | {x.PrefillTokensPerSecond.Median:0.0} | {c.PrefillSpeedup:0.00} | {Mib(x.WeightBytes)} | ")
            + Inv($"{100 * c.WeightSavedFraction:0.0} % | {Mib(x.KvCacheBytes)} |");
    }

    /// <summary>Writes <see cref="CreatePlot"/> as a PNG (the folder is created if needed).</summary>
    public static void Plot(string path, EfficiencyResult reference, IReadOnlyList<EfficiencyRow> rows,
        int width = Plots.DefaultWidth, int height = Plots.DefaultHeight)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new LayerPruneException("efficiency plot: output path is empty");
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        CreatePlot(reference, rows).SavePng(path, width, height);
    }

    /// <summary>
    /// Decode speed-up per strategy (left axis, ×) with the ideal L / (L − n) dashed, and the fraction of weight bytes
    /// saved (right axis) against the fraction of layers removed; the unpruned model is the point (0, 1×).
    /// </summary>
    public static Plot CreatePlot(EfficiencyResult reference, IReadOnlyList<EfficiencyRow> rows)
    {
        var plot = new Plot();
        plot.Font.Set(Plots.FontName);
        var palette = new ScottPlot.Palettes.Category10();
        var strategies = rows.Select(x => x.Strategy).Distinct().Order(StringComparer.Ordinal).ToList();
        for (int i = 0; i < strategies.Count; i++)
        {
            var pts = rows.Where(x => x.Strategy == strategies[i]).OrderBy(x => x.Fraction)
                .Select(x => (x.Fraction, EfficiencyComparison.Of(x.Reference ?? reference, x.Result).DecodeSpeedup)).Prepend((0.0, 1.0))
                    .ToArray();
            var sc = plot.Add.Scatter(pts.Select(p => p.Item1).ToArray(), pts.Select(p => p.Item2).ToArray(), palette.GetColor(i));
            sc.LegendText = $"decode speed-up, {strategies[i]}";
            sc.LineWidth = 2;
            sc.MarkerSize = 7;
        }
        var byN = rows.GroupBy(x => x.N).Select(g => g.First()).OrderBy(x => x.N).ToList();
        if (byN.Count > 0)
        {
            int layers = reference.LayersRun.Length;
            var ideal = plot.Add.Scatter(byN.Select(x => x.Fraction).Prepend(0).ToArray(),
                byN.Select(x => (double)layers / Math.Max(1, layers - x.N)).Prepend(1).ToArray(), Colors.Gray);
            ideal.LegendText = "ideal L / L_kept (decoder layers only)";
            ideal.LinePattern = LinePattern.Dashed;
            ideal.MarkerSize = 0;
            var saved = plot.Add.Scatter(byN.Select(x => x.Fraction).Prepend(0).ToArray(),
                byN.Select(x => 100 * EfficiencyComparison.Of(reference, x.Result).WeightSavedFraction).Prepend(0).ToArray(), Colors.Black);
            saved.LegendText = "weights saved (%, right axis)";
            saved.LinePattern = LinePattern.Dotted;
            saved.MarkerShape = MarkerShape.OpenSquare;
            saved.MarkerSize = 7;
            saved.Axes.YAxis = plot.Axes.Right;
            plot.Axes.Right.Label.Text = "weight bytes saved (%)";
            plot.Axes.Right.Label.FontSize = 15;
            plot.Axes.SetLimitsY(0, 100, plot.Axes.Right);
        }
        plot.Title(Inv($"Efficiency ({reference.Device}, {reference.Dtype}, decode at batch 1)"), 18);
        plot.XLabel("fraction of layers removed", 15);
        plot.YLabel("decode speed-up vs unpruned (×)", 15);
        plot.ShowLegend(Edge.Bottom);
        plot.Legend.FontName = Plots.FontName;
        plot.Legend.FontSize = 13;
        plot.Axes.SetLimitsX(-0.02, 1.02);
        double top = rows.Count == 0 ? 2 : rows.Max(x => Math.Max(EfficiencyComparison.Of(x.Reference ?? reference, x.Result).DecodeSpeedup,
            (double)reference.LayersRun.Length / Math.Max(1, reference.LayersRun.Length - x.N)));
        plot.Axes.SetLimitsY(0, top * 1.08, plot.Axes.Left);
        return plot;
    }

    static string Mib(long bytes) => Inv($"{bytes / (double)(1 << 20):0.0} MiB");
    static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
