using ScottPlot;

namespace LayerPrune.Reporting;

/// <summary>A sweep over units' figures (<see cref="Sweep.UnitSweep"/>): a metric against an x axis other than the fraction of
/// layers (removed parameters / decoder parameters, decode speed-up, KV-cache bytes per token), one curve per unit × strategy.</summary>
public static class UnitPlots
{
    /// <summary>
    /// Draws <paramref name="series"/> as <see cref="Plots.MetricVsFraction"/> does, with <paramref name="xLabel"/> on the x
    /// axis; a fraction axis spans [0, 1], any other the points' range. The unpruned line is drawn when
    /// <paramref name="baseline"/> is given (elsewhere the unpruned model is each curve's first point).
    /// </summary>
    public static void Save(string path, string title, string xLabel, string yLabel,
        IReadOnlyList<(string strategy, IReadOnlyList<(double fraction, double value)> points)> series, double? chance, double? baseline,
        bool fractionAxis)
    {
        ArgumentNullException.ThrowIfNull(series);
        var plot = Plots.CreateMetricVsFraction(title, yLabel, series, fractionAxis ? chance : null, baseline);
        plot.XLabel(xLabel, 15);
        if (!fractionAxis)
        {
            var xs = series.SelectMany(s => s.points).Select(p => p.fraction).Where(double.IsFinite).ToList();
            if (xs.Count > 0)
            {
                double lo = xs.Min(), hi = xs.Max(), pad = Math.Max(hi - lo, Math.Abs(hi) * 0.1 + 1e-9) * 0.05;
                plot.Axes.SetLimitsX(lo - pad, hi + pad);
            }
        }
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        plot.SavePng(path, Plots.DefaultWidth, Plots.DefaultHeight);
    }
}
