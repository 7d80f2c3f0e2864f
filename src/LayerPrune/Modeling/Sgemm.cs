using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LayerPrune.Healing;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>
/// fp32 linear layers for a few rows on CPU (a prompt's prefill): y = x Wᵀ + b with x [M, K], W [N, K], in dot-product form,
/// so W is read as stored (no packing): tiles of 4 rows of x × 4 rows of W keep 16 AVX-512 accumulators over a block of
/// <see cref="KBlock"/> features, W's 4 rows stay in L1 while every tile of x passes them, and the output rows of W are
/// split over threads (<see cref="SpinPool"/>). libtorch's fp32 GEMM reached ~50 GFLOP/s per CPU-second on the AMD EPYC
/// (avx512f) of issue 30 (`bench -- decode-profile --gemm`). Sums are fp32 in another order than libtorch's; the torch-op
/// reference is nn.functional.linear (SgemmTests compares both with a float64 product).
/// </summary>
internal static unsafe class Sgemm
{
    /// <summary>Features per block: 4 + 4 rows of 2 KB each stay in L1.</summary>
    const int KBlock = 512;

    /// <summary>Most rows of x the kernel takes.</summary>
    public const long MaxRows = 256;

    /// <summary>Off: every linear takes nn.functional.linear (tests, A/B runs); on by default where AVX-512 exists.</summary>
    public static bool Disabled { get; set; } = !Avx512F.IsSupported || Environment.GetEnvironmentVariable("LP_SGEMM") == "0";

    /// <summary>Whether the kernel computes linear(x, w, bias): fp32 CPU tensors, x [.., K] with 2 … 256 rows (a block of x
    /// stays in L2 while W streams past; larger batches take libtorch, as before), a contiguous
    /// weight [N, K] and bias, no gradient to record.</summary>
    public static bool Applies(Tensor x, Tensor w, Tensor? bias)
    {
        if (Disabled || Gemv.Disabled || x.dtype != ScalarType.Float32 || w.dtype != ScalarType.Float32) return false;
        if (x.device_type != TorchSharp.DeviceType.CPU || w.device_type != TorchSharp.DeviceType.CPU || w.dim() != 2) return false;
        long k = w.shape[1], rows = x.NumberOfElements / Math.Max(1, k);
        if (x.shape[^1] != k || rows < 2 || rows > MaxRows || !w.is_contiguous()) return false;
        if (bias is not null && (bias.dtype != ScalarType.Float32 || !bias.is_contiguous()
            || bias.device_type != TorchSharp.DeviceType.CPU)) return false;
        return !is_grad_enabled() || !(x.requires_grad || w.requires_grad || (bias?.requires_grad ?? false));
    }

    /// <summary>linear(x, w, bias) for <see cref="Applies"/> inputs; <paramref name="threads"/> defaults to torch's count.</summary>
    public static Tensor Forward(Tensor x, Tensor w, Tensor? bias, int? threads = null)
    {
        long n = w.shape[0], k = w.shape[1], m = x.NumberOfElements / k;
        using var xc = x.contiguous();
        var y = empty([.. x.shape[..^1], n], ScalarType.Float32);
        Run((float*)CpuLoops.Address(xc), (float*)CpuLoops.Address(w), bias is null ? null : (float*)CpuLoops.Address(bias),
            (float*)CpuLoops.Address(y), m, n, k, Math.Max(1, threads ?? CpuLoops.MaxThreads ?? get_num_threads()));
        return y;
    }

    internal static void Run(float* x, float* w, float* bias, float* y, long m, long n, long k, int threads)
    {
        nint xp = (nint)x, wp = (nint)w, bp = (nint)bias, yp = (nint)y;
        long blocks = (n + 3) / 4;
        int chunks = (int)Math.Min(blocks, threads * 4L);
        SpinPool.For(chunks, threads, c => Panel((float*)xp, (float*)wp, (float*)bp, (float*)yp, m, n, k,
            c * blocks / chunks * 4, Math.Min(n, (c + 1) * blocks / chunks * 4)));
    }

    /// <summary>Output columns n0 … n1 − 1 of every row.</summary>
    static void Panel(float* x, float* w, float* bias, float* y, long m, long n, long k, long n0, long n1)
    {
        for (long k0 = 0; k0 < k; k0 += KBlock)
        {
            long kl = Math.Min(KBlock, k - k0);
            bool first = k0 == 0;
            for (long j = n0; j < n1; j += 4)
            {
                int nr = (int)Math.Min(4, n1 - j);
                for (long i = 0; i < m; i += 4)
                {
                    int mr = (int)Math.Min(4, m - i);
                    float* xs = x + i * k + k0, ws = w + j * k + k0, ys = y + i * n + j;
                    if (mr == 4 && nr == 4) Tile4x4(xs, ws, k, kl, ys, n, first, bias is null ? null : bias + j);
                    else Edge(xs, ws, k, kl, ys, n, mr, nr, first, bias is null ? null : bias + j);
                }
            }
        }
    }

    static void Tile4x4(float* x, float* w, long ld, long kl, float* y, long ldy, bool first, float* bias)
    {
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a10 = default, a11 = default, a12 = default,
            a13 = default, a20 = default, a21 = default, a22 = default, a23 = default, a30 = default, a31 = default,
            a32 = default, a33 = default;
        float* w1 = w + ld, w2 = w + 2 * ld, w3 = w + 3 * ld, x1 = x + ld, x2 = x + 2 * ld, x3 = x + 3 * ld;
        long t = 0;
        for (; t + 16 <= kl; t += 16)
        {
            var v0 = Vector512.Load(w + t);
            var v1 = Vector512.Load(w1 + t);
            var v2 = Vector512.Load(w2 + t);
            var v3 = Vector512.Load(w3 + t);
            var u = Vector512.Load(x + t);
            a00 = Avx512F.FusedMultiplyAdd(u, v0, a00); a01 = Avx512F.FusedMultiplyAdd(u, v1, a01);
            a02 = Avx512F.FusedMultiplyAdd(u, v2, a02); a03 = Avx512F.FusedMultiplyAdd(u, v3, a03);
            u = Vector512.Load(x1 + t);
            a10 = Avx512F.FusedMultiplyAdd(u, v0, a10); a11 = Avx512F.FusedMultiplyAdd(u, v1, a11);
            a12 = Avx512F.FusedMultiplyAdd(u, v2, a12); a13 = Avx512F.FusedMultiplyAdd(u, v3, a13);
            u = Vector512.Load(x2 + t);
            a20 = Avx512F.FusedMultiplyAdd(u, v0, a20); a21 = Avx512F.FusedMultiplyAdd(u, v1, a21);
            a22 = Avx512F.FusedMultiplyAdd(u, v2, a22); a23 = Avx512F.FusedMultiplyAdd(u, v3, a23);
            u = Vector512.Load(x3 + t);
            a30 = Avx512F.FusedMultiplyAdd(u, v0, a30); a31 = Avx512F.FusedMultiplyAdd(u, v1, a31);
            a32 = Avx512F.FusedMultiplyAdd(u, v2, a32); a33 = Avx512F.FusedMultiplyAdd(u, v3, a33);
        }
        float* s = stackalloc float[16];
        s[0] = Vector512.Sum(a00); s[1] = Vector512.Sum(a01); s[2] = Vector512.Sum(a02); s[3] = Vector512.Sum(a03);
        s[4] = Vector512.Sum(a10); s[5] = Vector512.Sum(a11); s[6] = Vector512.Sum(a12); s[7] = Vector512.Sum(a13);
        s[8] = Vector512.Sum(a20); s[9] = Vector512.Sum(a21); s[10] = Vector512.Sum(a22); s[11] = Vector512.Sum(a23);
        s[12] = Vector512.Sum(a30); s[13] = Vector512.Sum(a31); s[14] = Vector512.Sum(a32); s[15] = Vector512.Sum(a33);
        for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
        {
            float v = s[r * 4 + c];
            for (long q = t; q < kl; q++) v = MathF.FusedMultiplyAdd(x[r * ld + q], w[c * ld + q], v);
            Store(y + r * ldy + c, v, first, bias is null ? 0f : bias[c]);
        }
    }

    static void Edge(float* x, float* w, long ld, long kl, float* y, long ldy, int mr, int nr, bool first, float* bias)
    {
        for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++)
        {
            float* xr = x + r * ld, wc = w + c * ld;
            var a = Vector512<float>.Zero;
            long t = 0;
            for (; t + 16 <= kl; t += 16) a = Avx512F.FusedMultiplyAdd(Vector512.Load(xr + t), Vector512.Load(wc + t), a);
            float v = Vector512.Sum(a);
            for (; t < kl; t++) v = MathF.FusedMultiplyAdd(xr[t], wc[t], v);
            Store(y + r * ldy + c, v, first, bias is null ? 0f : bias[c]);
        }
    }

    static void Store(float* y, float v, bool first, float bias) => *y = first ? v + bias : *y + v;
}
