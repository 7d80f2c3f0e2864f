using LayerPrune.Reporting;
using SkiaSharp;
using Xunit;

namespace LayerPrune.Tests.Reporting;

public sealed class PlotsTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "layerprune-plots-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>D[l, l+n] = 0.1 n + 0.01 (l - 2)^2 for l+n &lt;= L, NaN elsewhere: argmin over l is l = 2 when reachable.</summary>
    private static double[,] Synthetic(int layers)
    {
        var d = new double[layers + 1, layers + 1];
        for (int i = 0; i <= layers; i++)
            for (int j = 0; j <= layers; j++)
                d[i, j] = j > i ? 0.1 * (j - i) + 0.01 * (i - 2) * (i - 2) : double.NaN;
        return d;
    }

    private static (int width, int height) PngSize(string path)
    {
        byte[] b = File.ReadAllBytes(path);
        byte[] signature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];
        Assert.True(b.Length > 24, $"{path} too short");
        Assert.Equal(signature, b[..8]);
        Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(b, 12, 4));
        int w = (b[16] << 24) | (b[17] << 16) | (b[18] << 8) | b[19];
        int h = (b[20] << 24) | (b[21] << 16) | (b[22] << 8) | b[23];
        return (w, h);
    }

    /// <summary>Pixels that differ between two same-size images, and the bounding rows of the differences.</summary>
    private static (int count, int minRow, int maxRow) Diff(string a, string b)
    {
        using var ia = SKBitmap.Decode(a);
        using var ib = SKBitmap.Decode(b);
        Assert.Equal(ia.Width, ib.Width);
        Assert.Equal(ia.Height, ib.Height);
        int count = 0, minRow = int.MaxValue, maxRow = -1;
        for (int y = 0; y < ia.Height; y++)
            for (int x = 0; x < ia.Width; x++)
                if (ia.GetPixel(x, y) != ib.GetPixel(x, y))
                {
                    count++;
                    minRow = Math.Min(minRow, y);
                    maxRow = Math.Max(maxRow, y);
                }
        return (count, minRow, maxRow);
    }

    [Fact]
    public void Heatmap_WritesValidPngOfRequestedSize()
    {
        string path = Path.Combine(_dir, "sub", "heatmap.png"); // sub-folder is created
        Plots.SimilarityHeatmap(Synthetic(8), path, "test heatmap");
        Assert.Equal((900, 700), PngSize(path));
        Assert.True(new FileInfo(path).Length > 10_000, $"PNG only {new FileInfo(path).Length} bytes");

        string small = Path.Combine(_dir, "small.png");
        Plots.SimilarityHeatmap(Synthetic(8), small, "test heatmap", 640, 480);
        Assert.Equal((640, 480), PngSize(small));
    }

    [Fact]
    public void Heatmap_TitleGlyphsAreRendered()
    {
        // Same-length titles keep the layout identical; only real glyphs (not missing-glyph boxes) differ.
        string a = Path.Combine(_dir, "a.png"), b = Path.Combine(_dir, "b.png");
        Plots.SimilarityHeatmap(Synthetic(6), a, "AAAAAAAA");
        Plots.SimilarityHeatmap(Synthetic(6), b, "WWWWWWWW");
        var (count, minRow, maxRow) = Diff(a, b);
        Assert.True(count > 100, $"only {count} pixels differ");
        Assert.True(minRow >= 0 && maxRow < 60, $"differences in rows {minRow}..{maxRow}, expected only the title band");
    }

    [Fact]
    public void Font_DejaVuSansIsUsedWhenInstalled_UnknownFamiliesResolveToNull()
    {
        Assert.Null(Plots.FirstInstalledFont(["No Such Font Family 12345"]));
        if (File.Exists("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"))
        {
            Assert.Equal("DejaVu Sans", Plots.FirstInstalledFont(["No Such Font Family 12345", "DejaVu Sans"]));
            Assert.Equal("DejaVu Sans", Plots.FontName);
        }
        Assert.False(string.IsNullOrEmpty(Plots.FontName));
    }

    [Fact]
    public void SimilarityGrid_MapsDiagonalsAndBlanksOutOfRange()
    {
        var d = Synthetic(5);
        d[1, 3] = double.NaN; // undefined entry stays blank
        var g = Plots.SimilarityGrid(d);
        Assert.Equal(4, g.GetLength(0)); // n = 1..4
        Assert.Equal(5, g.GetLength(1)); // l = 0..4
        Assert.Equal(0.1 * 1 + 0.01 * 4, g[0, 0], 12);  // n=1, l=0
        Assert.Equal(0.1 * 3 + 0.01 * 1, g[2, 1], 12);  // n=3, l=1 -> D[1,4]
        Assert.True(double.IsNaN(g[1, 1]));             // n=2, l=1 -> D[1,3] was NaN
        Assert.True(double.IsNaN(g[3, 2]));             // n=4, l=2: 2+4 > 5
        Assert.Equal(0.1 * 4 + 0.01 * 1, g[3, 1], 12);  // n=4, l=1: 1+4 = 5 is the last valid start
    }

    [Fact]
    public void BlockArgmin_FindsMinimumStartPerBlockSize()
    {
        var best = Plots.BlockArgmin(Synthetic(6));
        // n=1..4 can reach l=2 (2+n <= 6): argmin 2. n=5: l in {0,1}, (l-2)^2 smallest at l=1.
        Assert.Equal([(1, 2), (2, 2), (3, 2), (4, 2), (5, 1)], best.Select(b => (b.n, b.l)).ToArray());
        Assert.Equal(0.5 + 0.01, best[4].distance, 12);
    }

    [Fact]
    public void HeatmapPlot_CellsCentredOnIntegerLAndN_MarkersAtArgmin()
    {
        var plot = Plots.CreateSimilarityHeatmap(Synthetic(6), "t");
        var hm = Assert.Single(plot.GetPlottables().OfType<ScottPlot.Plottables.Heatmap>());
        var ext = hm.GetAlignedExtent();
        Assert.Equal((-0.5, 5.5, 0.5, 5.5), (ext.Left, ext.Right, ext.Bottom, ext.Top)); // l = 0..5, n = 1..5
        // Row 0 is drawn at the top, so it holds the largest block size n = 5: D[l, l+5].
        Assert.Equal(0.5 + 0.01 * 4, hm.Intensities[0, 0], 12);
        Assert.Equal(0.1 + 0.01 * 9, hm.Intensities[4, 5], 12); // bottom row n = 1, l = 5: D[5, 6]
        var marks = Assert.Single(plot.GetPlottables().OfType<ScottPlot.Plottables.Markers>());
        var pts = marks.Data.GetScatterPoints().Select(c => (c.X, c.Y)).ToArray();
        Assert.Equal([(2.0, 1.0), (2.0, 2.0), (2.0, 3.0), (2.0, 4.0), (1.0, 5.0)], pts);
        var bar = Assert.Single(plot.Axes.GetPanels().OfType<ScottPlot.Panels.ColorBar>());
        Assert.Equal("angular distance d(x_l, x_{l+n})", bar.Label);
    }

    [Fact]
    public void Heatmap_RejectsBadMatricesAndSurvivesAllNaN()
    {
        string path = Path.Combine(_dir, "bad.png");
        Assert.Throws<LayerPruneException>(() => Plots.SimilarityHeatmap(new double[4, 5], path, "x"));
        Assert.Throws<LayerPruneException>(() => Plots.SimilarityHeatmap(new double[2, 2], path, "x"));
        var nan = new double[5, 5];
        for (int i = 0; i < 5; i++) for (int j = 0; j < 5; j++) nan[i, j] = double.NaN;
        Plots.SimilarityHeatmap(nan, path, "all undefined");
        Assert.Equal((900, 700), PngSize(path));
    }

    private static List<(string, IReadOnlyList<(double, double)>)> Series() =>
    [
        ("similarity", [(0.0, 0.6), (0.25, 0.55), (0.5, 0.3)]),
        ("last layers", [(0.0, 0.6), (0.25, 0.4), (0.5, 0.25)]),
    ];

    [Fact]
    public void MetricVsFraction_WritesPngAndDrawsReferenceLines()
    {
        string plain = Path.Combine(_dir, "m0.png"), lines = Path.Combine(_dir, "m1.png");
        Plots.MetricVsFraction(plain, "accuracy", "accuracy", Series(), null, null);
        Plots.MetricVsFraction(lines, "accuracy", "accuracy", Series(), 0.25, 0.6);
        Assert.Equal((900, 700), PngSize(plain));
        Assert.Equal((900, 700), PngSize(lines));
        Assert.True(new FileInfo(lines).Length > 10_000);
        var (count, _, _) = Diff(plain, lines);
        Assert.True(count > 500, $"chance/baseline lines changed only {count} pixels");
    }

    [Fact]
    public void MetricVsFraction_EmptySeriesStillRenders()
    {
        string path = Path.Combine(_dir, "empty.png");
        Plots.MetricVsFraction(path, "nothing yet", "loss", [], null, 2.0);
        Assert.Equal((900, 700), PngSize(path));
    }

    /// <summary>
    /// Issue 12, defect 5: the "unpruned" label was drawn on the right axis, over its edge. Both reference-line labels
    /// must lie inside the data area, for a baseline at the top of the range and one at the bottom.
    /// </summary>
    [Theory]
    [InlineData(0.6, 0.25)]
    [InlineData(0.25, 0.6)]
    public void MetricVsFraction_ReferenceLabelsLieInsideTheDataArea(double baseline, double chance)
    {
        var plot = Plots.CreateMetricVsFraction("accuracy", "accuracy", Series(), chance, baseline);
        plot.GetImage(Plots.DefaultWidth, Plots.DefaultHeight); // lays the figure out
        var data = plot.RenderManager.LastRender.DataRect;
        var labels = plot.GetPlottables().OfType<ScottPlot.Plottables.Text>().ToList();
        Assert.Equal(["chance", "unpruned"], labels.Select(l => l.LabelText).Order());
        foreach (var label in labels)
        {
            var anchor = plot.GetPixel(label.Location);
            using var paint = ScottPlot.Paint.NewDisposablePaint();
            var rect = label.LabelStyle.Measure(paint).Rect(label.LabelAlignment);
            float left = anchor.X + rect.Left, right = anchor.X + rect.Right;
            float top = anchor.Y + rect.Top, bottom = anchor.Y + rect.Bottom;
            Assert.True(right - left > 10 && bottom - top > 5, $"{label.LabelText}: size {right - left}x{bottom - top}");
            Assert.True(left >= data.Left && right <= data.Right && top >= data.Top && bottom <= data.Bottom,
                $"{label.LabelText}: [{left}, {right}] x [{top}, {bottom}] outside the data area " +
                $"[{data.Left}, {data.Right}] x [{data.Top}, {data.Bottom}]");
        }
    }
}
