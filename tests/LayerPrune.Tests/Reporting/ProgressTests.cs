using LayerPrune.Cli;
using LayerPrune.Reporting;
using Spectre.Console;
using Xunit;

namespace LayerPrune.Tests.Reporting;

public sealed class ProgressTests
{
    /// <summary>A manually advanced clock.</summary>
    private sealed class FakeClock
    {
        public TimeSpan Now;
        public Func<TimeSpan> Func => () => Now;
        public void Set(double seconds) => Now = TimeSpan.FromSeconds(seconds);
    }

    [Fact]
    public void Line_ShowsCountRateAndEta()
    {
        // 32 of 64 in 2.6 s: rate 12.31/s, remaining 32 / 12.31 = 2.6 s.
        var s = new ProgressSnapshot(1, "similarity", 32, 64, "samples", null, TimeSpan.FromSeconds(2.6), false);
        Assert.Equal(32 / 2.6, s.Rate, 12);
        Assert.Equal(2.6, s.Eta!.Value.TotalSeconds, 9);
        Assert.Equal("similarity: 32/64 samples, 12.3 samples/s, ETA 2.6s", ProgressFormat.Line(s));

        var done = s with { Done = 64, Elapsed = TimeSpan.FromSeconds(125), Finished = true, Status = "layer 7" };
        Assert.Equal("similarity: 64/64 samples, 0.51 samples/s, done in 2m05s (layer 7)", ProgressFormat.Line(done));

        var unknown = new ProgressSnapshot(2, "tokenize", 1500, 0, "docs", null, TimeSpan.FromSeconds(10), false);
        Assert.Null(unknown.Eta);
        Assert.Equal("tokenize: 1500 docs, 150 docs/s", ProgressFormat.Line(unknown));
    }

    [Fact]
    public void Duration_Formats()
    {
        Assert.Equal("0.4s", ProgressFormat.Duration(TimeSpan.FromSeconds(0.44)));
        Assert.Equal("42s", ProgressFormat.Duration(TimeSpan.FromSeconds(42.4)));
        Assert.Equal("2m05s", ProgressFormat.Duration(TimeSpan.FromSeconds(125)));
        Assert.Equal("1h02m", ProgressFormat.Duration(TimeSpan.FromSeconds(3720)));
    }

    [Fact]
    public void StderrSink_PrintsAtMostEveryInterval()
    {
        var clock = new FakeClock();
        var w = new StringWriter();
        var sink = new StderrProgressSink(w, TimeSpan.FromSeconds(2));
        using (var p = ProgressReporter.Start("eval", 10, "items", sink, clock.Func))
        {
            foreach (double t in new[] { 0.5, 1.0, 1.9 }) { clock.Set(t); p.Advance(); }
            Assert.Equal("", w.ToString());
            clock.Set(2.5); p.Advance();          // 4 done: first line
            clock.Set(3.0); p.Advance();          // 0.5 s after the last line: silent
            clock.Set(4.6); p.Advance(2, "half"); // 7 done, 2.1 s after: second line
            clock.Set(5.0);
        }
        string[] lines = w.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(
        [
            "eval: 4/10 items, 1.60 items/s, ETA 3.8s",
            "eval: 7/10 items, 1.52 items/s, ETA 2.0s (half)",
            "eval: 7/10 items, 1.40 items/s, done in 5.0s (half)",
        ], lines);
    }

    [Fact]
    public void StderrSink_ShortLoopsStaySilent_QuietSinkPrintsNothing()
    {
        var clock = new FakeClock();
        var w = new StringWriter();
        using (var p = ProgressReporter.Start("fast", 3, "items", new StderrProgressSink(w), clock.Func))
        {
            clock.Set(0.1); p.Advance(3);
            clock.Set(0.2);
        }
        Assert.Equal("", w.ToString());

        // No sink passed (null) means the quiet sink: the reporter still counts, and nothing is printed anywhere.
        using (var p = ProgressReporter.Start("quiet", 2, "items", null, clock.Func))
        {
            p.Advance(2);
            Assert.Equal(2, p.Done);
        }
        Assert.Same(NullProgressSink.Instance, SpectreProgressSink.ForCli(quiet: true));
    }

    [Fact]
    public void Advance_IsThreadSafeAndIgnoredAfterDispose()
    {
        var p = ProgressReporter.Start("par", 4000, "items", NullProgressSink.Instance, null);
        Parallel.For(0, 4000, _ => p.Advance());
        Assert.Equal(4000, p.Done);
        p.Dispose();
        p.Advance(5);
        Assert.Equal(4000, p.Done);
        Assert.True(p.Snapshot().Finished);
    }

    [Fact]
    public void SpectreSink_RendersBarWithRateAndFinalState()
    {
        var w = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.Yes,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.Yes,
            Out = new AnsiConsoleOutput(w),
        });
        console.Profile.Width = 160;
        var sink = new SpectreProgressSink(console);
        var clock = new FakeClock();
        using (var p = ProgressReporter.Start("similarity", 64, "samples", sink, clock.Func))
        {
            clock.Set(2.0); p.Advance(32);
            clock.Set(4.0); p.Advance(32);
        }
        string output = w.ToString();
        Assert.Contains("similarity", output);
        Assert.Contains("64/64 samples", output);
        Assert.Contains("16.0 samples/s", output);
        Assert.Contains("done in 4.0s", output);
    }
}
