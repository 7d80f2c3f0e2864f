using System.Diagnostics;
using System.Globalization;
using static TorchSharp.torch;

namespace LayerPrune.Evaluation;

/// <summary>
/// libtorch's intra-op thread count while a task scores: no more threads than the cores other processes leave free.
/// libtorch's CPU kernels run OpenMP teams whose threads spin at each barrier until the whole team arrives; when the
/// machine is oversubscribed (load average above the core count) a team member waits for a core it does not get and the
/// others burn their time slices spinning. Measured on a 2-core AMD EPYC at load 40–50 (docs/zero-shot-suite.md):
/// arc_easy, 64 documents, batch 16 on samples/kjv-llama-16l took 36 s wall / 7.8 s CPU with one thread and 130 s wall /
/// 32 s CPU with libtorch's default two. The number of threads does not change the scores (tested).
/// </summary>
/// <remarks>
/// Left alone: an explicit OMP_NUM_THREADS (the user chose), <see cref="Fixed"/> set by the caller, a machine without
/// /proc/loadavg, or a current count of 1. Otherwise the count is min(current, max(1, round(cores − others))), where
/// others = the 1-minute load average minus this process's own CPU use since the previous choice (or since it started):
/// a core counts as free when others leave at least half of it.
/// </remarks>
public static class EvalThreads
{
    static readonly object Gate = new();
    static (DateTime Wall, TimeSpan Cpu)? _last;

    /// <summary>A fixed count for every scoring scope (e.g. a benchmark's); null = the policy above.</summary>
    public static int? Fixed { get; set; }

    /// <summary>The count the policy picks.</summary>
    /// <param name="current">libtorch's intra-op threads now.</param>
    /// <param name="cores">Cores this process may use.</param>
    /// <param name="load">1-minute load average; null when unknown.</param>
    /// <param name="ownLoad">This process's recent CPU use in cores (it is part of the load average).</param>
    public static int Choose(int current, int cores, double? load, double ownLoad)
    {
        if (current <= 1 || load is not double l) return Math.Max(1, current);
        double others = Math.Max(0, l - Math.Max(0, ownLoad));
        int free = (int)Math.Round(cores - others, MidpointRounding.AwayFromZero);
        return Math.Clamp(free, 1, current);
    }

    /// <summary>Sets the count for a scoring call and restores the previous one when disposed.</summary>
    public static IDisposable Use()
    {
        int current = get_num_threads();
        int chosen = Fixed ?? (Environment.GetEnvironmentVariable("OMP_NUM_THREADS") is { Length: > 0 } ? current
            : Choose(current, Environment.ProcessorCount, LoadAverage(), OwnLoad()));
        if (chosen == current) return Restore.None;
        set_num_threads(chosen);
        return new Restore(current);
    }

    /// <summary>The 1-minute load average from /proc/loadavg; null where there is none.</summary>
    public static double? LoadAverage()
    {
        try
        {
            var first = File.ReadAllText("/proc/loadavg").Split(' ')[0];
            return double.TryParse(first, NumberStyles.Float, CultureInfo.InvariantCulture, out var l) ? l : null;
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    /// <summary>This process's CPU time per wall second since the previous call (the first: since it started).</summary>
    static double OwnLoad()
    {
        using var p = Process.GetCurrentProcess();
        var now = (Wall: DateTime.UtcNow, Cpu: p.TotalProcessorTime);
        lock (Gate)
        {
            var since = _last ?? (p.StartTime.ToUniversalTime(), TimeSpan.Zero);
            _last = now;
            double wall = (now.Wall - since.Item1).TotalSeconds;
            return wall > 0.5 ? (now.Cpu - since.Item2).TotalSeconds / wall : 0;
        }
    }

    sealed class Restore(int threads) : IDisposable
    {
        public static readonly IDisposable None = new Restore(0);
        bool _done;

        public void Dispose()
        {
            if (_done || threads < 1) return;
            _done = true;
            set_num_threads(threads);
        }
    }
}
