using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>
/// Gives the pages of a memory-mapped tensor back to the kernel without changing its contents (madvise MADV_PAGEOUT,
/// Linux ≥ 5.4). Checkpoint weights are views of a file mapping: every page read once stays in the process's resident set
/// while any view keeps the mapping alive (the embeddings do, all run long). After a weight has been quantized or merged
/// its clean file pages are paged out: the kernel reclaims them, and a later read faults them in again from the file.
/// Only tensors inside a file mapping are touched (anonymous memory would be written to swap); a hint that never fails.
/// </summary>
public static class ResidentPages
{
    const int MadvPageout = 21; // linux/mman.h

    /// <summary>
    /// Pages out the whole pages covering <paramref name="t"/>'s data when it lies in a file mapping (contiguous CPU
    /// tensors); false when nothing was done (anonymous memory, not Linux, or the call failed).
    /// </summary>
    public static unsafe bool Release(Tensor t)
    {
        if (!OperatingSystem.IsLinux() || t.device_type != TorchSharp.DeviceType.CPU || !t.is_contiguous() || t.NumberOfElements == 0)
            return false;
        long page = Environment.SystemPageSize;
        fixed (byte* p = t.bytes)
        {
            long begin = (long)p;
            long end = begin + t.NumberOfElements * t.ElementSize;
            if (!InFileMapping(begin, end))
                return false;
            long alignedBegin = begin / page * page;
            long alignedEnd = (end + page - 1) / page * page;
            try
            {
                return madvise((nint)alignedBegin, (nuint)(alignedEnd - alignedBegin), MadvPageout) == 0;
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                return false;
            }
        }
    }

    /// <summary>Whether [begin, end) lies inside one file-backed region of /proc/self/maps.</summary>
    static bool InFileMapping(long begin, long end)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                // "7f12a0000000-7f12b0000000 r--p 00000000 fd:01 1234567   /path/model.safetensors"
                var fields = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length < 6 || fields[4] == "0" || !fields[5].StartsWith('/'))
                    continue;
                int dash = fields[0].IndexOf('-');
                long from = Convert.ToInt64(fields[0][..dash], 16);
                long to = Convert.ToInt64(fields[0][(dash + 1)..], 16);
                if (begin >= from && end <= to)
                    return true;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            // No maps to read: do nothing.
        }
        return false;
    }

    [DllImport("libc", EntryPoint = "madvise")]
    static extern int madvise(nint address, nuint length, int advice);
}
