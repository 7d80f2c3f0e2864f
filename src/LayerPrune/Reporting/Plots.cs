using ScottPlot;

namespace LayerPrune.Reporting;

/// <summary>
/// Headless PNG figures for LayerPrune results (ScottPlot 5, rendered with SkiaSharp; no display needed).
/// </summary>
public static class Plots
{
    /// <summary>Default PNG width in pixels.</summary>
    public const int DefaultWidth = 900;
    /// <summary>Default PNG height in pixels.</summary>
    public const int DefaultHeight = 700;

    /// <summary>Sans-serif families tried in order; the first one installed is used for all text.</summary>
    public static readonly IReadOnlyList<string> PreferredFonts =
        ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial", "Helvetica"];

    private static readonly Lazy<string?> ResolvedFont = new(() => FirstInstalledFont(PreferredFonts));

    /// <summary>The first family in <paramref name="families"/> that Skia can load, or null if none is installed.</summary>
    public static string? FirstInstalledFont(IEnumerable<string> families)
    {
        foreach (string family in families)
        {
            try
            {
                // Skia substitutes a fallback typeface for unknown families, so compare the family name.
                var typeface = Fonts.GetTypeface(family, false, false);
                if (typeface is not null && string.Equals(typeface.FamilyName, family, StringComparison.OrdinalIgnoreCase))
                    return family;
            }
            catch (Exception)
            {
                // A broken font configuration must not break plotting: try the next family.
            }
        }
        return null;
    }

    /// <summary>
    /// The font family used for plot text: the first of <see cref="PreferredFonts"/> that is installed, or
    /// ScottPlot's own default (whatever the system offers) when none is.
    /// </summary>
    public static string FontName => ResolvedFont.Value ?? SafeDefaultFont();

    private static string SafeDefaultFont()
    {
        try
        {
            return Fonts.Default;
        }
        catch (Exception)
        {
            return "sans-serif";
        }
    }

    private static Plot NewPlot()
    {
        string? font = ResolvedFont.Value;
        if (font is not null)
            Fonts.Default = font; // styles created after this (title, axis labels, legend) pick it up
        var plot = new Plot();
        if (font is not null)
            plot.Font.Set(font);
        return plot;
    }

    /// <summary>
    /// The paper's similarity heatmap (Gromov et al. 2024, Fig. "angular distance"): for every block size
    /// n = 1..L-1 (y) and start l = 0..L-n (x), the colour is D[l, l+n], the angular distance between the
    /// residual stream entering layer l and entering layer l+n. The argmin start l*(n) of each row is marked.
    /// Cells with l+n &gt; L, and NaN entries, are left blank.
    /// </summary>
    /// <param name="matrix">(L+1)x(L+1) matrix, D[l, l+n]; NaN where undefined. L &gt;= 2.</param>
    /// <param name="path">PNG file to write.</param>
    /// <param name="title">Figure title.</param>
    /// <param name="width">Image width in pixels.</param>
    /// <param name="height">Image height in pixels.</param>
    public static void SimilarityHeatmap(double[,] matrix, string path, string title,
        int width = DefaultWidth, int height = DefaultHeight) =>
        Save(CreateSimilarityHeatmap(matrix, title), path, width, height);

    /// <summary>The <see cref="SimilarityHeatmap"/> figure as a ScottPlot <see cref="Plot"/> (to restyle or save as SVG).</summary>
    public static Plot CreateSimilarityHeatmap(double[,] matrix, string title)
    {
        int layers = CheckMatrix(matrix);
        int maxN = layers - 1;
        var grid = SimilarityGrid(matrix);
        var best = BlockArgmin(matrix);
        // ScottPlot draws Intensities[0, *] at the top of the extent: flip so that n = 1 is the bottom row.
        var flipped = new double[maxN, layers];
        double lo = double.PositiveInfinity, hi = double.NegativeInfinity;
        for (int r = 0; r < maxN; r++)
            for (int l = 0; l < layers; l++)
            {
                double v = grid[r, l];
                flipped[maxN - 1 - r, l] = v;
                if (double.IsNaN(v)) continue;
                lo = Math.Min(lo, v);
                hi = Math.Max(hi, v);
            }
        double[] argminL = best.Select(b => (double)b.l).ToArray();
        double[] argminN = best.Select(b => (double)b.n).ToArray();

        var plot = NewPlot();
        if (double.IsFinite(lo))
        {
            var hm = plot.Add.Heatmap(flipped);
            hm.Colormap = new ScottPlot.Colormaps.Viridis();
            hm.NaNCellColor = Colors.Transparent;
            // Outer edges, so that cell centres sit on integer (l, n). (Extent would describe cell centres.)
            hm.Rectangle = new CoordinateRect(-0.5, layers - 0.5, 0.5, maxN + 0.5);
            if (hi - lo < 1e-12)
                hm.ManualRange = new ScottPlot.Range(lo - 0.5, lo + 0.5); // constant data: avoid a zero-width colour range

            var bar = plot.Add.ColorBar(hm, Edge.Right);
            bar.Label = "angular distance d(x_l, x_{l+n})";
            bar.LabelStyle.FontSize = 15;
            bar.LabelStyle.FontName = FontName;
        }
        else
        {
            // ScottPlot's heatmap cannot colour an all-NaN grid: draw the labelled, empty axes with a note.
            var note = plot.Add.Text("no defined distances", (layers - 1) / 2.0, (maxN + 1) / 2.0);
            note.LabelFontSize = 16;
            note.LabelFontName = FontName;
            note.LabelAlignment = Alignment.MiddleCenter;
        }

        if (argminL.Length > 0)
        {
            var marks = plot.Add.Markers(argminL, argminN, MarkerShape.FilledCircle,
                Math.Clamp(360f / layers, 5f, 11f), Colors.Red);
            marks.MarkerStyle.OutlineColor = Colors.White;
            marks.MarkerStyle.OutlineWidth = 1.5f;
            marks.LegendText = "l*(n) = argmin over l of d (per n)";
            plot.ShowLegend(Alignment.UpperRight);
            plot.Legend.FontName = FontName;
            plot.Legend.FontSize = 14;
        }

        plot.Title(title, 18);
        plot.XLabel("block start l (0-based layer index)", 15);
        plot.YLabel("block size n (layers removed)", 15);
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plot.Axes.SetLimits(-0.5, layers - 0.5, 0.5, maxN + 0.5);
        plot.Grid.IsVisible = false;
        return plot;
    }

    /// <summary>Validates an (L+1)x(L+1) distance matrix and returns L.</summary>
    private static int CheckMatrix(double[,] matrix)
    {
        ArgumentNullException.ThrowIfNull(matrix);
        int rows = matrix.GetLength(0), cols = matrix.GetLength(1);
        if (rows != cols)
            throw new LayerPruneException($"similarity heatmap: matrix must be square (L+1)x(L+1), got {rows}x{cols}");
        if (rows - 1 < 2)
            throw new LayerPruneException($"similarity heatmap: need at least 2 layers (a 3x3 matrix), got {rows}x{cols}");
        return rows - 1;
    }

    /// <summary>
    /// The heatmap's cells: grid[n-1, l] = D[l, l+n] for n = 1..L-1 and l = 0..L-1; NaN where l+n &gt; L or where
    /// the input is NaN/infinite.
    /// </summary>
    public static double[,] SimilarityGrid(double[,] matrix)
    {
        int layers = CheckMatrix(matrix);
        var grid = new double[layers - 1, layers];
        for (int n = 1; n < layers; n++)
            for (int l = 0; l < layers; l++)
            {
                double v = l + n <= layers ? matrix[l, l + n] : double.NaN;
                grid[n - 1, l] = double.IsFinite(v) ? v : double.NaN;
            }
        return grid;
    }

    /// <summary>
    /// For each block size n = 1..L-1 with at least one defined entry: l*(n) = argmin over l in 0..L-n of
    /// D[l, l+n] (the paper's choice of block to prune), lowest l on ties.
    /// </summary>
    public static IReadOnlyList<(int n, int l, double distance)> BlockArgmin(double[,] matrix)
    {
        int layers = CheckMatrix(matrix);
        var result = new List<(int, int, double)>();
        for (int n = 1; n < layers; n++)
        {
            int bestL = -1;
            double best = double.PositiveInfinity;
            for (int l = 0; l + n <= layers; l++)
            {
                double v = matrix[l, l + n];
                if (double.IsFinite(v) && v < best)
                {
                    best = v;
                    bestL = l;
                }
            }
            if (bestL >= 0) result.Add((n, bestL, best));
        }
        return result;
    }

    /// <summary>
    /// A metric against the fraction of layers removed: one line with markers per strategy, plus an optional
    /// dashed "chance" line and dotted "unpruned" baseline.
    /// </summary>
    public static void MetricVsFraction(string path, string title, string yLabel,
        IReadOnlyList<(string strategy, IReadOnlyList<(double fraction, double value)> points)> series,
        double? chanceLevel, double? baseline, int width = DefaultWidth, int height = DefaultHeight) =>
        Save(CreateMetricVsFraction(title, yLabel, series, chanceLevel, baseline), path, width, height);

    /// <summary>The <see cref="MetricVsFraction"/> figure as a ScottPlot <see cref="Plot"/>.</summary>
    public static Plot CreateMetricVsFraction(string title, string yLabel,
        IReadOnlyList<(string strategy, IReadOnlyList<(double fraction, double value)> points)> series,
        double? chanceLevel, double? baseline)
    {
        ArgumentNullException.ThrowIfNull(series);
        var plot = NewPlot();
        var palette = new ScottPlot.Palettes.Category10();
        MarkerShape[] shapes = [MarkerShape.FilledCircle, MarkerShape.FilledSquare, MarkerShape.FilledTriangleUp,
            MarkerShape.FilledDiamond, MarkerShape.FilledTriangleDown, MarkerShape.OpenCircle];

        for (int i = 0; i < series.Count; i++)
        {
            var (name, points) = series[i];
            if (points is null)
                throw new LayerPruneException($"metric plot: series '{name}' has no points list");
            var pts = points.Where(p => double.IsFinite(p.fraction) && double.IsFinite(p.value))
                .OrderBy(p => p.fraction).ToArray();
            if (pts.Length == 0) continue;
            var sc = plot.Add.Scatter(pts.Select(p => p.fraction).ToArray(), pts.Select(p => p.value).ToArray(),
                palette.GetColor(i));
            sc.LegendText = name;
            sc.LineWidth = 2;
            sc.MarkerSize = 8;
            sc.MarkerShape = shapes[i % shapes.Length];
        }

        if (chanceLevel is double chance && double.IsFinite(chance))
            AddLabelledLine(plot, chance, "chance", Colors.Gray, LinePattern.Dashed);
        if (baseline is double b && double.IsFinite(b))
            AddLabelledLine(plot, b, "unpruned", Colors.Black, LinePattern.Dotted);

        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { TickDensity = 0.6 };
        plot.Title(title, 18);
        plot.XLabel("fraction of layers removed", 15);
        plot.YLabel(yLabel, 15);
        plot.ShowLegend(Edge.Bottom); // outside the data area: curves can go anywhere
        plot.Legend.FontName = FontName;
        plot.Legend.FontSize = 14;
        plot.Axes.AutoScale();
        var limits = plot.Axes.GetLimits();
        plot.Axes.SetLimitsX(-0.02, 1.02);
        double span = limits.Top - limits.Bottom;
        if (span <= 0) span = Math.Max(Math.Abs(limits.Top), 1);
        plot.Axes.SetLimitsY(limits.Bottom - 0.05 * span, limits.Top + 0.05 * span);
        PlaceLineLabels(plot, limits.Bottom - 0.05 * span, limits.Top + 0.05 * span);
        return plot;
    }

    /// <summary>
    /// Every metric of one strategy relative to its unpruned score (<see cref="MetricSpec.Normalize"/>: 1 = unpruned, lower =
    /// worse) against the fraction of layers removed, one line per metric, so knowledge, reasoning, loss and degeneration
    /// can be compared at a glance; the y range is clamped to [0, 1.5] (values outside are drawn at the edge).
    /// </summary>
    public static void NormalizedVsFraction(string path, string title,
        IReadOnlyList<(string metric, IReadOnlyList<(double fraction, double value)> points)> series,
        int width = DefaultWidth, int height = DefaultHeight)
    {
        ArgumentNullException.ThrowIfNull(series);
        var clamped = series.Select(s => (s.metric, (IReadOnlyList<(double, double)>)s.points
            .Select(p => (p.fraction, double.IsFinite(p.value) ? Math.Clamp(p.value, 0, 1.5) : double.NaN)).ToList())).ToList();
        var plot = CreateMetricVsFraction(title, "score relative to unpruned (1 = unpruned)", clamped, null, 1.0);
        var undefined = clamped.Where(x => !x.Item2.Any(p => double.IsFinite(p.Item2) && p.Item1 > 0)).Select(x => x.metric).ToList();
        if (undefined.Count > 0)
        {
            // Say which metrics have no line (e.g. an unpruned accuracy of 0) instead of leaving them out silently.
            var note = plot.Add.Text("no ratio to unpruned: " + string.Join(", ", undefined), 0.0, 0.0);
            note.LabelFontName = FontName;
            note.LabelFontSize = 12;
            note.LabelAlignment = Alignment.LowerLeft;
        }
        plot.Axes.SetLimitsY(-0.05, Math.Max(1.1, clamped.SelectMany(s => s.Item2).Select(p => p.Item2)
            .Where(double.IsFinite).DefaultIfEmpty(1).Max() + 0.05));
        Save(plot, path, width, height);
    }

    private static void Save(Plot plot, string path, int width, int height)
    {
        if (string.IsNullOrWhiteSpace(path))
            throw new LayerPruneException("plot: output path is empty");
        if (width < 100 || height < 100)
            throw new LayerPruneException($"plot {path}: size {width}x{height} is too small (min 100x100)");
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir))
            Directory.CreateDirectory(dir);
        plot.SavePng(path, width, height);
    }

    /// <summary>
    /// A horizontal reference line with its legend entry and a label at the right end of the line, inside the data
    /// area (keeps the left tick labels readable and the right axis clear). <see cref="PlaceLineLabels"/> puts the
    /// label above the line, or below it in the upper half, once the axis limits are known.
    /// </summary>
    static void AddLabelledLine(Plot plot, double y, string label, Color color, LinePattern pattern)
    {
        var line = plot.Add.HorizontalLine(y, 1.5f, color, pattern);
        line.LegendText = label;
        var text = plot.Add.Text(label, LabelX, y);
        text.LabelFontName = FontName;
        text.LabelFontSize = 12;
        text.LabelFontColor = Colors.White;
        text.LabelBackgroundColor = color;
        text.LabelPadding = 2;
        text.LabelAlignment = Alignment.LowerRight;
    }

    /// <summary>The x (fraction) where reference-line labels end: inside the x range [−0.02, 1.02].</summary>
    const double LabelX = 1.0;

    /// <summary>Labels of lines in the upper half of the y range hang below their line, the others sit above it.</summary>
    static void PlaceLineLabels(Plot plot, double bottom, double top)
    {
        foreach (var text in plot.GetPlottables().OfType<ScottPlot.Plottables.Text>())
            text.LabelAlignment = text.Location.Y > (bottom + top) / 2 ? Alignment.UpperRight : Alignment.LowerRight;
    }
}
