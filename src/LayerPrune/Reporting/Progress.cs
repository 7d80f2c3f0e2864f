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
    /// <summary>A reporter started.</summary>
    void OnStart(ProgressSnapshot s);
    /// <summary>A reporter advanced.</summary>
    void OnAdvance(ProgressSnapshot s);
    /// <summary>A reporter finished (disposed).</summary>
    void OnEnd(ProgressSnapshot s);
}

/// <summary>Prints nothing (the CLI uses it for --quiet).</summary>
public sealed class NullProgressSink : IProgressSink
{
    /// <summary>The shared instance.</summary>
    public static readonly NullProgressSink Instance = new();
    /// <inheritdoc/>
    public void OnStart(ProgressSnapshot s) { }
    /// <inheritdoc/>
    public void OnAdvance(ProgressSnapshot s) { }
    /// <inheritdoc/>
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

    /// <inheritdoc/>
    public void OnStart(ProgressSnapshot s)
    {
        lock (_lock) _lastPrinted[s.Id] = s.Elapsed;
    }

    /// <inheritdoc/>
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

    /// <inheritdoc/>
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

/// <summary>The text form of a snapshot shared by the plain and live sinks.</summary>
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

    /// <summary>A rate with 0–2 decimals depending on its size.</summary>
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
/// Progress for a long loop: <c>using var p = ProgressReporter.Start("similarity", 64, "samples", sink, null); ... p.Advance();</c>.
/// The sink is always passed in (a library call takes an <see cref="IProgressSink"/>; null there means
/// <see cref="NullProgressSink"/>); the CLI passes its live bar, stderr lines or a quiet sink.
/// </summary>
public sealed class ProgressReporter : IDisposable
{
    private static int _nextId;

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
        _label = label;
        _total = total;
        _unit = unit;
        _target = sink;
        _clock = clock;
        _id = Interlocked.Increment(ref _nextId);
        _target.OnStart(Snapshot(false));
    }

    /// <summary>Starts a reporter on <paramref name="sink"/> (null = <see cref="NullProgressSink"/>).</summary>
    /// <param name="label">Shown before the counts, e.g. "heal".</param>
    /// <param name="total">Items expected; &lt;= 0 when unknown.</param>
    /// <param name="unit">Plural item name, e.g. "steps".</param>
    /// <param name="sink">Where snapshots go.</param>
    /// <param name="clock">Elapsed time source (tests); null = a stopwatch started now.</param>
    public static ProgressReporter Start(string label, long total, string unit, IProgressSink? sink, Func<TimeSpan>? clock = null)
    {
        ArgumentNullException.ThrowIfNull(label);
        ArgumentNullException.ThrowIfNull(unit);
        if (clock is null)
        {
            var sw = Stopwatch.StartNew();
            clock = () => sw.Elapsed;
        }
        return new ProgressReporter(label, total, unit, sink ?? NullProgressSink.Instance, clock);
    }

    /// <summary>Items finished so far.</summary>
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

    /// <summary>The current state.</summary>
    public ProgressSnapshot Snapshot() { lock (_lock) return Snapshot(_disposed); }

    private ProgressSnapshot Snapshot(bool finished) =>
        new(_id, _label, _done, _total, _unit, _status, _clock(), finished);

    /// <summary>Finishes the reporter (sends the final snapshot once).</summary>
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
