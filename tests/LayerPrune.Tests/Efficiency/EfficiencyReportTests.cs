using LayerPrune.Efficiency;

namespace LayerPrune.Tests.Efficiency;

public sealed class EfficiencyReportTests : IDisposable
{
    readonly string _dir = Path.Combine(Path.GetTempPath(), $"lp-effreport-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    static EfficiencyResult Result(int layers, double decode, double prefill, long weights, long kv) => new(
        $"{layers}", "/m", 16, Enumerable.Range(0, layers).ToArray(), "cpu", "Float32", 128, 32, 1, 3,
        Spread.Of([prefill]), Spread.Of([decode * 0.9, decode, decode * 1.2]), weights, kv, null, null,
        new MachineInfo("AMD EPYC", ["avx2", "avx512f"], 2, 2));

    static readonly EfficiencyResult Unpruned = Result(16, 100, 1000, 16 << 20, 4 << 20);

    static readonly EfficiencyRow[] Rows =
    [
        new("similarity", 8, 0.5, Result(8, 180, 1900, 9 << 20, 2 << 20)),
        new("deepest", 4, 0.25, Result(12, 130, 1300, 13 << 20, 3 << 20)),
        new("deepest", 8, 0.5, Result(8, 190, 2000, 9 << 20, 2 << 20)),
    ];

    [Fact]
    public void Section_has_one_row_per_variant_with_speed_ups_against_the_unpruned_row()
    {
        string md = EfficiencyReport.Section(Unpruned, Rows);
        var lines = md.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.StartsWith("| ", StringComparison.Ordinal)).ToList();
        Assert.Equal(5, lines.Count); // header + unpruned + 3 variants
        Assert.Equal("| unpruned | 0 | 0 | 100.0 (90.0–120.0) | 1.00 | 1.00 | 1000.0 | 1.00 | 16.0 MiB | 0.0 % | 4.0 MiB |", lines[1]);
        // Ordered by strategy, then n: deepest 4, deepest 8, similarity 8.
        Assert.Equal("| deepest | 4 | 0.25 | 130.0 (117.0–156.0) | 1.30 | 1.33 | 1300.0 | 1.30 | 13.0 MiB | 18.8 % | 3.0 MiB |", lines[2]);
        Assert.Equal("| deepest | 8 | 0.5 | 190.0 (171.0–228.0) | 1.90 | 2.00 | 2000.0 | 2.00 | 9.0 MiB | 43.8 % | 2.0 MiB |", lines[3]);
        Assert.StartsWith("| similarity | 8 | 0.5 | 180.0", lines[4]);
        Assert.Contains("CPU AMD EPYC [avx2 avx512f], 2 cores", md);
        Assert.Contains("median of 3 rounds after 1 warm-up", md);
        Assert.Contains("](efficiency.png)", md);
        Assert.DoesNotContain("](", EfficiencyReport.Section(Unpruned, Rows, plotFile: null));
    }

    [Fact]
    public void A_row_with_its_own_interleaved_reference_is_compared_with_that_reference()
    {
        var own = Result(16, 50, 500, 16 << 20, 4 << 20);
        var row = new EfficiencyRow("deepest", 8, 0.5, Result(8, 95, 1000, 9 << 20, 2 << 20), own);
        string line = EfficiencyReport.Section(Unpruned, [row]).Split('\n').Single(l => l.StartsWith("| deepest", StringComparison.Ordinal));
        Assert.StartsWith("| deepest | 8 | 0.5 | 95.0 (85.5–114.0) | 1.90 | 2.00 | 1000.0 | 2.00 |", line);
    }

    [Fact]
    public void Plot_writes_a_png()
    {
        string path = Path.Combine(_dir, "sub", EfficiencyReport.PlotFile);
        EfficiencyReport.Plot(path, Unpruned, Rows);
        var b = File.ReadAllBytes(path);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, b[..4]);
        int width = (b[16] << 24) | (b[17] << 16) | (b[18] << 8) | b[19];
        Assert.Equal(900, width);
        Assert.True(b.Length > 10_000, $"PNG only {b.Length} bytes");
        EfficiencyReport.Plot(Path.Combine(_dir, "empty.png"), Unpruned, []); // no variants yet: axes only, no error
    }
}
