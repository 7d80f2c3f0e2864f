using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>What the CPU loops over raw tensor memory share (<see cref="Nf4Kernels"/>, <see cref="DropoutKernel"/>).</summary>
static class CpuLoops
{
    /// <summary>Threads of the loops (default null: torch's intra-op thread count); for benchmarks.</summary>
    internal static int? MaxThreads { get; set; }

    /// <summary>
    /// The address of a contiguous CPU tensor's data (libtorch memory, not moved by the GC; valid while the tensor lives).
    /// </summary>
    public static unsafe nint Address(Tensor t)
    {
        if (!t.is_contiguous() || t.device_type != TorchSharp.DeviceType.CPU)
            throw new LayerPruneException("CpuLoops: expected a contiguous CPU tensor");
        return (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));
    }

    /// <summary>
    /// Runs body(block, first element, length) for every block of <paramref name="blockSize"/> of n elements (the last one
    /// may be short), <paramref name="blocksPerChunk"/> blocks per work item, over torch's thread count.
    /// </summary>
    public static void ForBlocks(long n, int blockSize, Action<long, long, int> body, long blocksPerChunk = 2048)
    {
        long blocks = (n + blockSize - 1) / blockSize;
        long chunks = (blocks + blocksPerChunk - 1) / blocksPerChunk;
        void Chunk(long c)
        {
            long end = Math.Min(blocks, (c + 1) * blocksPerChunk);
            for (long b = c * blocksPerChunk; b < end; b++)
            {
                long start = b * blockSize;
                body(b, start, (int)Math.Min(blockSize, n - start));
            }
        }
        int threads = Math.Max(1, MaxThreads ?? get_num_threads());
        if (chunks == 1 || threads == 1)
        {
            for (long c = 0; c < chunks; c++)
                Chunk(c);
            return;
        }
        Parallel.For(0L, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, Chunk);
    }
}
