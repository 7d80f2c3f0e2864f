using LayerPrune.Reporting;
using ScottPlot;

namespace LayerPrune.Similarity;

/// <summary>The per-metric heatmaps: <see cref="Plots.CreateSimilarityHeatmap"/> with the metric's colour-bar label and bootstrap
/// marks.</summary>
public static class SimilarityFigures
{
    /// <summary>The block heatmap of any (L+1)×(L+1) distance matrix, its colour bar labelled <paramref name="colorLabel"/>.</summary>
    public static void Heatmap(double[,] matrix, string path, string title, string colorLabel)
    {
        var plot = Plots.CreateSimilarityHeatmap(matrix, title);
        foreach (var bar in plot.Axes.GetPanels().OfType<ScottPlot.Panels.ColorBar>()) bar.Label = colorLabel;
        plot.SavePng(path, Plots.DefaultWidth, Plots.DefaultHeight);
    }

    /// <summary>The angular heatmap with every unstable l*(n) (argmin in fewer than 95 % of resamples) circled in orange.</summary>
    public static void HeatmapWithBootstrap(double[,] matrix, SimilarityBootstrap bootstrap, string path, string title)
    {
        var plot = Plots.CreateSimilarityHeatmap(matrix, title);
        var unstable = bootstrap.Unstable.ToList();
        if (unstable.Count > 0)
        {
            var marks = plot.Add.Markers(unstable.Select(c => (double)c.Start).ToArray(), unstable.Select(c => (double)c.N).ToArray(),
                                         MarkerShape.OpenCircle, 22, Colors.Orange);
            marks.MarkerStyle.LineWidth = 3;
            marks.LegendText = $"unstable: argmin in < {SimilarityBootstrap.StableFrequency:P0} of resamples";
        }
        plot.SavePng(path, Plots.DefaultWidth, Plots.DefaultHeight);
    }
}
