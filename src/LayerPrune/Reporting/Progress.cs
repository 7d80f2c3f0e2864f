using System.Diagnostics;
using System.Globalization;

namespace LayerPrune.Reporting;

/// <summary>A point-in-time view of one progress reporter.</summary>
public sealed record ProgressSnapshot(int Id, string Label, long Done, long Total, string Unit, string? Status,
    TimeSpan Elapsed, bool Finished)
{
    /// <summary>Items per second so far; 0 before any time has elapsed.</summary>
    public double Rate => Elapsed.TotalSeconds > 0 ? Done / Elapsed.TotalSeconds : 0;

    /// <summary>Remaining time at the current rate; null when the total is unknown (&lt;= 0) or no rate yet.</summary>
    public TimeSpan? Eta => Total > 0 && Rate > 0 && Done <= Total
        ? TimeSpan.FromSeconds((Total - Done) / Rate)
        : null;
}

/// <summary>Where progress goes. Implementations must be thread-safe; progress output belongs on stderr.</summary>
public interface IProgressSink
{
    void OnStart(ProgressSnapshot s);
    void OnAdvance(ProgressSnapshot s);
    void OnEnd(ProgressSnapshot s);
}

/// <summary>Prints nothing (--quiet).</summary>
public sealed class NullProgressSink : IProgressSink
{
    public static readonly NullProgressSink Instance = new();
    public void OnStart(ProgressSnapshot s) { }
    public void OnAdvance(ProgressSnapshot s) { }
    public void OnEnd(ProgressSnapshot s) { }
}

/// <summary>
/// Plain-text progress for non-interactive runs: one line per reporter at most every <c>interval</c> (default 2 s),
/// e.g. "similarity: 32/64 samples, 12.3 samples/s, ETA 3s", and a final line for loops that ran at least that long.
/// Writes to stderr by default so stdout (JSON) stays clean.
/// </summary>
public sealed class StderrProgressSink(TextWriter? writer = null, TimeSpan? interval = null) : IProgressSink
{
    private readonly TextWriter _writer = writer ?? Console.Error;
    private readonly TimeSpan _interval = interval ?? TimeSpan.FromSeconds(2);
    private readonly Dictionary<int, TimeSpan> _lastPrinted = new();
    private readonly HashSet<int> _printed = new();
    private readonly object _lock = new();

    public void OnStart(ProgressSnapshot s)
    {
        lock (_lock) _lastPrinted[s.Id] = s.Elapsed;
    }

    public void OnAdvance(ProgressSnapshot s)
    {
        lock (_lock)
        {
            var last = _lastPrinted.TryGetValue(s.Id, out var t) ? t : TimeSpan.Zero;
            if (s.Elapsed - last < _interval) return;
            _lastPrinted[s.Id] = s.Elapsed;
            _printed.Add(s.Id);
            _writer.WriteLine(ProgressFormat.Line(s));
            _writer.Flush();
        }
    }

    public void OnEnd(ProgressSnapshot s)
    {
        lock (_lock)
        {
            bool printedBefore = _printed.Remove(s.Id);
            _lastPrinted.Remove(s.Id);
            // Short loops stay silent; long ones get a closing line with the total time.
            if (!printedBefore && s.Elapsed < _interval) return;
            _writer.WriteLine(ProgressFormat.Line(s));
            _writer.Flush();
        }
    }
}

public static class ProgressFormat
{
    /// <summary>"label: done/total unit, rate unit/s, ETA 3s[, status]" (or "done in 5.2s" when finished).</summary>
    public static string Line(ProgressSnapshot s)
    {
        var c = CultureInfo.InvariantCulture;
        string count = s.Total > 0 ? $"{s.Done.ToString(c)}/{s.Total.ToString(c)}" : s.Done.ToString(c);
        string line = $"{s.Label}: {count} {s.Unit}, {Rate(s.Rate)} {s.Unit}/s";
        if (s.Finished) line += $", done in {Duration(s.Elapsed)}";
        else if (s.Eta is TimeSpan eta) line += $", ETA {Duration(eta)}";
        if (!string.IsNullOrEmpty(s.Status)) line += $" ({s.Status})";
        return line;
    }

    public static string Rate(double perSecond) =>
        perSecond.ToString(perSecond >= 100 ? "0" : perSecond >= 10 ? "0.0" : "0.00", CultureInfo.InvariantCulture);

    /// <summary>Compact duration: "0.4s", "42s", "2m05s", "1h02m".</summary>
    public static string Duration(TimeSpan t)
    {
        double secs = Math.Max(0, t.TotalSeconds);
        if (secs < 10) return secs.ToString("0.0", CultureInfo.InvariantCulture) + "s";
        long whole = (long)Math.Round(secs);
        if (whole < 60) return $"{whole}s";
        if (whole < 3600) return $"{whole / 60}m{whole % 60:00}s";
        return $"{whole / 3600}h{whole / 60 % 60:00}m";
    }
}

/// <summary>
/// Progress for a long loop: <c>using var p = ProgressReporter.Start("similarity", 64, "samples"); ... p.Advance();</c>.
/// Output goes to <see cref="Sink"/> (stderr lines by default; the CLI swaps in a live bar or a quiet sink).
/// </summary>
public sealed class ProgressReporter : IDisposable
{
    private static IProgressSink _sink = new StderrProgressSink();
    private static int _nextId;

    /// <summary>The process-wide sink used by <see cref="Start(string,long,string)"/>. Set once at startup.</summary>
    public static IProgressSink Sink
    {
        get => Volatile.Read(ref _sink);
        set => Volatile.Write(ref _sink, value ?? NullProgressSink.Instance);
    }

    private readonly IProgressSink _target;
    private readonly Func<TimeSpan> _clock;
    private readonly object _lock = new();
    private readonly int _id;
    private readonly string _label, _unit;
    private readonly long _total;
    private long _done;
    private string? _status;
    private bool _disposed;

    private ProgressReporter(string label, long total, string unit, IProgressSink sink, Func<TimeSpan> clock)
    {
        _label = label; _total = total; _unit = unit; _target = sink; _clock = clock;
        _id = Interlocked.Increment(ref _nextId);
        _target.OnStart(Snapshot(false));
    }

    public static ProgressReporter Start(string label, long total, string unit) =>
        Start(label, total, unit, Sink, null);

    /// <summary>Explicit sink and clock (tests, or a caller that wants its own output).</summary>
    public static ProgressReporter Start(string label, long total, string unit, IProgressSink sink, Func<TimeSpan>? clock)
    {
        ArgumentNullException.ThrowIfNull(label);
        ArgumentNullException.ThrowIfNull(unit);
        ArgumentNullException.ThrowIfNull(sink);
        if (clock is null)
        {
            var sw = Stopwatch.StartNew();
            clock = () => sw.Elapsed;
        }
        return new ProgressReporter(label, total, unit, sink, clock);
    }

    public long Done { get { lock (_lock) return _done; } }

    /// <summary>Adds <paramref name="n"/> finished items; optionally replaces the status text. Thread-safe.</summary>
    public void Advance(long n = 1, string? status = null)
    {
        ProgressSnapshot s;
        lock (_lock)
        {
            if (_disposed) return;
            _done += n;
            if (status is not null) _status = status;
            s = Snapshot(false);
        }
        _target.OnAdvance(s);
    }

    public ProgressSnapshot Snapshot() { lock (_lock) return Snapshot(_disposed); }

    private ProgressSnapshot Snapshot(bool finished) =>
        new(_id, _label, _done, _total, _unit, _status, _clock(), finished);

    public void Dispose()
    {
        ProgressSnapshot s;
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            s = Snapshot(true);
        }
        _target.OnEnd(s);
    }
}
