using System.Diagnostics;
using System.Runtime.InteropServices;

namespace LayerPrune.Fuzz;

/// <summary>
/// CPU time of the calling thread (Linux clock_gettime(CLOCK_THREAD_CPUTIME_ID)), in nanoseconds. The fuzzer's hang limits
/// use it: on a machine shared with other jobs, wall time measures the load, not the parser. Elsewhere: wall time.
/// </summary>
static partial class ThreadCpu
{
    const int ClockThreadCpuTimeId = 3;

    [StructLayout(LayoutKind.Sequential)]
    struct Timespec { public long Seconds, Nanoseconds; }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGettime(int clock, out Timespec ts);

    static readonly bool Available = OperatingSystem.IsLinux() && Probe();

    static bool Probe()
    {
        try { return ClockGettime(ClockThreadCpuTimeId, out _) == 0; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return false; }
    }

    /// <summary>True when <see cref="Ticks"/> is CPU time (false: wall time).</summary>
    public static bool IsCpuTime => Available;

    public static long Ticks()
    {
        if (Available && ClockGettime(ClockThreadCpuTimeId, out var ts) == 0) return ts.Seconds * 1_000_000_000 + ts.Nanoseconds;
        return (long)(Stopwatch.GetTimestamp() * (1e9 / Stopwatch.Frequency));
    }
}
