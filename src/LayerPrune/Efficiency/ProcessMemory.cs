using System.Runtime.InteropServices;

namespace LayerPrune.Efficiency;

/// <summary>
/// Resident memory of this process from /proc/self/status (Linux), in bytes. These are process-wide numbers: they count
/// every model, buffer and runtime structure the process holds, not one model. Differences taken around a load
/// (<see cref="EfficiencyMeter.LoadMeasured"/>) attribute memory to that model. Host memory only: CUDA memory is not in it.
/// </summary>
/// <param name="Rss">VmRSS: pages resident now (anonymous + file-backed + shared).</param>
/// <param name="Peak">VmHWM: the highest VmRSS since the process started or since the last <see cref="ProcessMemory.ResetPeak"/>.</param>
/// <param name="Anonymous">RssAnon: resident anonymous pages (heap, tensors allocated by libtorch).</param>
/// <param name="File">RssFile: resident file-backed pages (memory-mapped weights, loaded libraries).</param>
public sealed record MemorySnapshot(long Rss, long Peak, long Anonymous, long File);

/// <summary>This process's memory mappings of one file (from /proc/self/smaps).</summary>
/// <param name="Mappings">Mapped regions of the file (one per live mapping of the whole file; more where a mapping was split).</param>
/// <param name="Resident">Resident bytes of those regions (the sum of their Rss lines): pages of the file the process has
/// touched through a mapping that is still alive.</param>
public sealed record FileMappingMemory(int Mappings, long Resident);

/// <summary>Reads and resets the process's resident-memory counters.</summary>
public static class ProcessMemory
{
    const string Status = "/proc/self/status";

    /// <summary>True where /proc/self/status exists (Linux).</summary>
    public static bool Available => System.IO.File.Exists(Status);

    /// <summary>The current counters, or null where /proc/self/status is not available.</summary>
    public static MemorySnapshot? Read() => Available ? ReadStatus(Status) : null;

    /// <summary>
    /// The counters of process <paramref name="pid"/> (e.g. a child being measured), or null where its /proc status
    /// cannot be read (not Linux, or the process has exited).
    /// </summary>
    public static MemorySnapshot? Read(int pid)
    {
        try
        {
            return ReadStatus($"/proc/{pid}/status");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    static MemorySnapshot ReadStatus(string path)
    {
        long rss = 0, hwm = 0, anon = 0, file = 0;
        foreach (var line in System.IO.File.ReadLines(path))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = Kilobytes(line);
            else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = Kilobytes(line);
            else if (line.StartsWith("RssAnon:", StringComparison.Ordinal)) anon = Kilobytes(line);
            else if (line.StartsWith("RssFile:", StringComparison.Ordinal)) file = Kilobytes(line);
        }
        return new MemorySnapshot(rss, hwm, anon, file);
    }

    /// <summary>
    /// This process's live mappings of file <paramref name="path"/> and their resident bytes, or null where
    /// /proc/self/smaps is not available. Unlike RssFile it counts one file only (not libraries, not other models).
    /// </summary>
    public static FileMappingMemory? MappedFile(string path)
    {
        const string smaps = "/proc/self/smaps";
        if (!System.IO.File.Exists(smaps)) return null;
        string full = Path.GetFullPath(path);
        int mappings = 0;
        long resident = 0;
        bool inFile = false;
        foreach (var line in System.IO.File.ReadLines(smaps))
        {
            if (IsRegionHeader(line))
            {
                inFile = RegionPath(line) == full;
                if (inFile) mappings++;
            }
            else if (inFile && line.StartsWith("Rss:", StringComparison.Ordinal)) resident += Kilobytes(line);
        }
        return new FileMappingMemory(mappings, resident);
    }

    /// <summary>"7f12a000-7f12b000 r--p 00000000 08:01 1234   /path" (a region) rather than "Rss:   4 kB" (a field).</summary>
    static bool IsRegionHeader(string line)
    {
        int dash = line.IndexOf('-');
        return dash > 0 && line.IndexOf(' ') > dash && Uri.IsHexDigit(line[0]);
    }

    /// <summary>The path column of a region header: what follows the fifth field ("" for anonymous regions).</summary>
    static string RegionPath(string line)
    {
        int at = 0;
        for (int field = 0; field < 5; field++)
        {
            while (at < line.Length && line[at] == ' ') at++;
            while (at < line.Length && line[at] != ' ') at++;
        }
        return line[at..].Trim();
    }

    /// <summary>
    /// Resets VmHWM to the current VmRSS (writes "5" to /proc/self/clear_refs, Linux ≥ 4.0), so that a later
    /// <see cref="Read()"/> reports the peak of what ran in between. Returns false where that is not possible.
    /// </summary>
    public static bool ResetPeak()
    {
        try
        {
            System.IO.File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return false;
        }
    }

    /// <summary>
    /// Makes freed tensor memory leave the resident set at once, so that RSS differences attribute memory to the model that
    /// holds it: fixes glibc's mmap threshold at 128 KiB (its default start value). By default glibc raises the threshold
    /// to the size of each large block freed (up to 32 MiB), after which blocks of that size come from the heap and stay
    /// resident after they are freed: a second model of the same shape would then appear to need no memory.
    /// Process-wide and permanent; returns false where mallopt is not available (not glibc).
    /// </summary>
    public static bool ReturnFreedMemoryPromptly()
    {
        try
        {
            return mallopt(MmapThreshold, 128 * 1024) == 1;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    const int MmapThreshold = -3; // M_MMAP_THRESHOLD in malloc.h

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int mallopt(int param, int value);

    /// <summary>
    /// Makes RSS reflect live data: runs finalizers of unreachable managed objects (TorchSharp tensors not disposed), has the
    /// GC decommit its free memory, then returns glibc's free heap pages to the system (malloc_trim). Without the trim, blocks freed
    /// earlier stay resident and a
    /// later allocation reusing them does not grow RSS: a load would appear smaller than it is.
    /// </summary>
    public static void Settle()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        // Aggressive: the GC also decommits its free memory now (by default it does so gradually, in the background,
        // which would shrink RSS during a later measured load).
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        try
        {
            malloc_trim(0);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // not glibc: nothing to trim
        }
    }

    [DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int malloc_trim(nuint pad);

    /// <summary>"VmRSS:	  123456 kB" → 123456 × 1024.</summary>
    static long Kilobytes(string line)
    {
        var parts = line.Split(' ', '\t').Where(p => p.Length > 0).ToArray();
        return parts.Length >= 2 && long.TryParse(parts[1], out long kb) ? kb * 1024 : 0;
    }
}
