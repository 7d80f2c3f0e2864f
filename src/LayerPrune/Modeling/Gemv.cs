using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LayerPrune.Healing;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>
/// Batch-1 linear layers on CPU: y = x Wᵀ + b for one input row, the matrix–vector product of every decode step.
/// It is bound by reading W once (llama.cpp's ggml_vec_dot_bf16 / ggml_vec_dot_f32 do the same work): W stays in its
/// dtype in memory (bf16 is widened to fp32 in registers, a 16-bit shift), products are accumulated in fp32, and the
/// output rows are split over torch's intra-op thread count. Several weights that read the same input (q/k/v,
/// gate/up) run as one parallel loop over all their rows (<see cref="Fused"/>), with no copy of the weights.
/// A bf16 output is the fp32 sum rounded to nearest even, as torch's cast; the torch-op reference is
/// nn.functional.linear (tests/…/GemvTests.cs compares both against a float64 product).
/// </summary>
public static unsafe class Gemv
{
    /// <summary>Turns the kernel off (every linear takes nn.functional.linear); for A/B benchmarks and tests.</summary>
    public static bool Disabled { get; set; } = Environment.GetEnvironmentVariable("LP_GEMV") == "0";

    /// <summary>The widest vector path this CPU runs: 512 (AVX-512F), 256 (AVX2 + FMA) or 0 (scalar).</summary>
    public static readonly int VectorBits = Avx512F.IsSupported ? 512 : Avx2.IsSupported && Fma.IsSupported ? 256 : 0;

    /// <summary>Rows of W computed together (their dot products share each load of x).</summary>
    const int RowBlock = 4;

    /// <summary>
    /// Whether the kernel computes linear(x, w, bias): a CPU input with one row (x.numel == in features) of w's dtype,
    /// bf16 or fp32, a contiguous weight [out, in], no gradient to record, and a bias (if any) of the same dtype.
    /// </summary>
    public static bool Applies(Tensor x, Tensor w, Tensor? bias)
    {
        if (Disabled || w.device_type != TorchSharp.DeviceType.CPU || x.device_type != TorchSharp.DeviceType.CPU) return false;
        if (w.dtype is not (ScalarType.BFloat16 or ScalarType.Float32) || x.dtype != w.dtype || w.dim() != 2) return false;
        if (x.NumberOfElements != w.shape[1] || !w.is_contiguous()) return false;
        if (bias is not null && (bias.dtype != w.dtype || !bias.is_contiguous() || bias.device_type != TorchSharp.DeviceType.CPU))
            return false;
        return !is_grad_enabled() || !(x.requires_grad || w.requires_grad || (bias?.requires_grad ?? false));
    }

    /// <summary>linear(x, w, bias) for <see cref="Applies"/> inputs: x [.., in] with one row → [.., out].</summary>
    public static Tensor Forward(Tensor x, Tensor w, Tensor? bias) => Fused(x, [(w, bias)])[0];

    /// <summary>
    /// linear(x, w_k, b_k) for every pair, in one parallel loop over all output rows: x is converted to fp32 once.
    /// Each pair must satisfy <see cref="Applies"/> with x. <paramref name="threads"/> (default: torch's intra-op count)
    /// and <paramref name="vectorBits"/> (512, 256 or 0; default: the widest this CPU has) are for tests; every choice
    /// gives the same rows bit for bit except the vector width, which changes the order of the fp32 sums.
    /// </summary>
    public static Tensor[] Fused(Tensor x, IReadOnlyList<(Tensor Weight, Tensor? Bias)> linears, int? threads = null,
        int? vectorBits = null)
    {
        long n = x.shape[^1];
        bool bf16 = x.dtype == ScalarType.BFloat16;
        int bits = vectorBits ?? VectorBits;
        if (bits is not (0 or 256 or 512) || bits > VectorBits)
            throw new ArgumentException($"vector width {bits} is not available here (widest: {VectorBits})", nameof(vectorBits));
        using var x32 = x.to(ScalarType.Float32);
        using var xf = x32.contiguous();
        var outs = new Tensor[linears.Count];
        var jobs = new Job[linears.Count];
        long totalBlocks = 0, bytes = 0;
        for (int k = 0; k < linears.Count; k++)
        {
            var (w, b) = linears[k];
            long rows = w.shape[0];
            outs[k] = empty([.. x.shape[..^1], rows], x.dtype);
            jobs[k] = new Job(CpuLoops.Address(w), b is null ? 0 : CpuLoops.Address(b), CpuLoops.Address(outs[k]), rows,
                totalBlocks, Float32Out: false);
            totalBlocks += (rows + RowBlock - 1) / RowBlock;
            bytes += w.NumberOfElements * w.ElementSize;
        }
        Run((float*)CpuLoops.Address(xf), n, jobs, bf16, bits, bytes < ParallelBytes ? 1
            : Math.Max(1, threads ?? CpuLoops.MaxThreads ?? get_num_threads()));
        return outs;
    }

    /// <summary>
    /// The rows of every job for fp32 input x [n] (the weights' dtype: bf16 or fp32), on <paramref name="threads"/> threads
    /// of <see cref="SpinPool"/>; jobs[k].FirstBlock must count the blocks of the jobs before it.
    /// </summary>
    internal static void Run(float* x, long n, Job[] jobs, bool bf16, int bits, int threads)
    {
        var last = jobs[^1];
        long totalBlocks = last.FirstBlock + (last.Rows + RowBlock - 1) / RowBlock;
        nint xp = (nint)x;
        void Blocks(long first, long end)
        {
            int k = 0;
            for (long block = first; block < end; block++)
            {
                while (k + 1 < jobs.Length && jobs[k + 1].FirstBlock <= block) k++;
                long r0 = (block - jobs[k].FirstBlock) * RowBlock;
                Rows(jobs[k], (float*)xp, n, r0, (int)Math.Min(RowBlock, jobs[k].Rows - r0), bf16, bits);
            }
        }
        if (threads <= 1) Blocks(0, totalBlocks);
        else
        {
            // A few chunks per thread balance the rows when a thread is held up.
            long chunks = Math.Min(totalBlocks, threads * 4L);
            SpinPool.For((int)chunks, threads, c => Blocks(c * totalBlocks / chunks, (c + 1) * totalBlocks / chunks));
        }
    }

    /// <summary>Blocks of <see cref="RowBlock"/> rows in a weight of <paramref name="rows"/> rows.</summary>
    internal static long BlocksOf(long rows) => (rows + RowBlock - 1) / RowBlock;

    /// <summary>Weight bytes from which a call is split over threads (a 512×512 fp32 matrix, about 50 µs of reading).</summary>
    public const long ParallelBytes = 1L << 20;

    /// <summary>
    /// The outputs of <paramref name="linears"/> (plain weights, no adapter) on the same input x with one row, computed
    /// in one loop; null when the kernel does not apply to all of them (the caller then runs each Linear.Forward).
    /// </summary>
    public static Tensor[]? TryFused(Tensor x, params Linear[] linears)
    {
        foreach (var l in linears)
            if (l.Adapter is not null || l.Weight is null || !Applies(x, l.Weight, l.Bias)) return null;
        return Fused(x, linears.Select(l => (l.Weight!, l.Bias)).ToArray());
    }

    /// <summary>One weight's part of a fused loop: addresses, rows and the index of its first block of rows; Float32Out: the
    /// output is fp32 (sum + bias, not rounded) rather than the weight's dtype.</summary>
    internal readonly record struct Job(nint W, nint Bias, nint Out, long Rows, long FirstBlock, bool Float32Out);

    /// <summary>Output rows r0 … r0 + count − 1 (count ≤ <see cref="RowBlock"/>) of one job.</summary>
    static void Rows(in Job j, float* x, long n, long r0, int count, bool bf16, int bits)
    {
        float* sums = stackalloc float[RowBlock];
        if (count == RowBlock)
        {
            if (bf16) Dot4((ushort*)j.W + r0 * n, n, x, sums, bits);
            else Dot4((float*)j.W + r0 * n, n, x, sums, bits);
        }
        else
        {
            for (int r = 0; r < count; r++)
                sums[r] = bf16 ? Dot1((ushort*)j.W + (r0 + r) * n, n, x, bits) : Dot1((float*)j.W + (r0 + r) * n, n, x, bits);
        }
        for (int r = 0; r < count; r++)
        {
            long row = r0 + r;
            float s = sums[r];
            if (bf16)
            {
                if (j.Bias != 0) s += Bf16ToFloat(((ushort*)j.Bias)[row]);
                if (j.Float32Out) ((float*)j.Out)[row] = s;
                else ((ushort*)j.Out)[row] = FloatToBf16(s);
            }
            else
            {
                if (j.Bias != 0) s += ((float*)j.Bias)[row];
                ((float*)j.Out)[row] = s;
            }
        }
    }

    /// <summary>Four dot products of bf16 rows (row stride n) with fp32 x, sharing each load of x.</summary>
    static void Dot4(ushort* w, long n, float* x, float* sums, int bits)
    {
        long i = 0;
        if (bits == 512)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i + 16 <= n; i += 16)
            {
                var xv = Vector512.Load(x + i);
                a0 = Avx512F.FusedMultiplyAdd(Widen512(w + i), xv, a0);
                a1 = Avx512F.FusedMultiplyAdd(Widen512(w + n + i), xv, a1);
                a2 = Avx512F.FusedMultiplyAdd(Widen512(w + 2 * n + i), xv, a2);
                a3 = Avx512F.FusedMultiplyAdd(Widen512(w + 3 * n + i), xv, a3);
            }
            (sums[0], sums[1], sums[2], sums[3]) = (Vector512.Sum(a0), Vector512.Sum(a1), Vector512.Sum(a2), Vector512.Sum(a3));
        }
        else if (bits == 256)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i + 8 <= n; i += 8)
            {
                var xv = Vector256.Load(x + i);
                a0 = Fma.MultiplyAdd(Widen256(w + i), xv, a0);
                a1 = Fma.MultiplyAdd(Widen256(w + n + i), xv, a1);
                a2 = Fma.MultiplyAdd(Widen256(w + 2 * n + i), xv, a2);
                a3 = Fma.MultiplyAdd(Widen256(w + 3 * n + i), xv, a3);
            }
            (sums[0], sums[1], sums[2], sums[3]) = (Vector256.Sum(a0), Vector256.Sum(a1), Vector256.Sum(a2), Vector256.Sum(a3));
        }
        else sums[0] = sums[1] = sums[2] = sums[3] = 0f;
        for (int r = 0; r < RowBlock; r++)
        {
            float s = sums[r];
            for (long t = i; t < n; t++) s = MathF.FusedMultiplyAdd(Bf16ToFloat(w[r * n + t]), x[t], s);
            sums[r] = s;
        }
    }

    /// <summary>Four dot products of fp32 rows (row stride n) with x.</summary>
    static void Dot4(float* w, long n, float* x, float* sums, int bits)
    {
        long i = 0;
        if (bits == 512)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i + 16 <= n; i += 16)
            {
                var xv = Vector512.Load(x + i);
                a0 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i), xv, a0);
                a1 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + n + i), xv, a1);
                a2 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + 2 * n + i), xv, a2);
                a3 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + 3 * n + i), xv, a3);
            }
            (sums[0], sums[1], sums[2], sums[3]) = (Vector512.Sum(a0), Vector512.Sum(a1), Vector512.Sum(a2), Vector512.Sum(a3));
        }
        else if (bits == 256)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i + 8 <= n; i += 8)
            {
                var xv = Vector256.Load(x + i);
                a0 = Fma.MultiplyAdd(Vector256.Load(w + i), xv, a0);
                a1 = Fma.MultiplyAdd(Vector256.Load(w + n + i), xv, a1);
                a2 = Fma.MultiplyAdd(Vector256.Load(w + 2 * n + i), xv, a2);
                a3 = Fma.MultiplyAdd(Vector256.Load(w + 3 * n + i), xv, a3);
            }
            (sums[0], sums[1], sums[2], sums[3]) = (Vector256.Sum(a0), Vector256.Sum(a1), Vector256.Sum(a2), Vector256.Sum(a3));
        }
        else sums[0] = sums[1] = sums[2] = sums[3] = 0f;
        for (int r = 0; r < RowBlock; r++)
        {
            float s = sums[r];
            for (long t = i; t < n; t++) s = MathF.FusedMultiplyAdd(w[r * n + t], x[t], s);
            sums[r] = s;
        }
    }

    static float Dot1(ushort* w, long n, float* x, int bits)
    {
        long i = 0;
        float s = 0f;
        if (bits == 512)
        {
            Vector512<float> a = default;
            for (; i + 16 <= n; i += 16) a = Avx512F.FusedMultiplyAdd(Widen512(w + i), Vector512.Load(x + i), a);
            s = Vector512.Sum(a);
        }
        else if (bits == 256)
        {
            Vector256<float> a = default;
            for (; i + 8 <= n; i += 8) a = Fma.MultiplyAdd(Widen256(w + i), Vector256.Load(x + i), a);
            s = Vector256.Sum(a);
        }
        for (; i < n; i++) s = MathF.FusedMultiplyAdd(Bf16ToFloat(w[i]), x[i], s);
        return s;
    }

    static float Dot1(float* w, long n, float* x, int bits)
    {
        long i = 0;
        float s = 0f;
        if (bits == 512)
        {
            Vector512<float> a = default;
            for (; i + 16 <= n; i += 16) a = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), a);
            s = Vector512.Sum(a);
        }
        else if (bits == 256)
        {
            Vector256<float> a = default;
            for (; i + 8 <= n; i += 8) a = Fma.MultiplyAdd(Vector256.Load(w + i), Vector256.Load(x + i), a);
            s = Vector256.Sum(a);
        }
        for (; i < n; i++) s = MathF.FusedMultiplyAdd(w[i], x[i], s);
        return s;
    }

    /// <summary>16 bf16 → fp32: zero-extend to 32 bits and shift into the high half (bf16 is fp32's top 16 bits).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Widen512(ushort* p) =>
        Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.Load(p)), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Widen256(ushort* p) =>
        Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(Vector128.Load(p)), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Bf16ToFloat(ushort b) => BitConverter.UInt32BitsToSingle((uint)b << 16);

    /// <summary>fp32 → bf16, round to nearest even; NaN → quiet NaN 0x7FC0 (c10::BFloat16 round_to_nearest_even).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ushort FloatToBf16(float f)
    {
        if (float.IsNaN(f)) return 0x7FC0;
        uint u = BitConverter.SingleToUInt32Bits(f);
        return (ushort)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
    }
}
