using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace LayerPrune.Healing;

/// <summary>
/// PEFT's <c>lora_dropout(x.to(lora_A.weight.dtype))</c> for an fp32 adapter on CPU, in one pass: y = fp32(x) · mask / (1 − p)
/// (torch's dropout: a Bernoulli(1 − p) keep-mask scaled by 1/(1 − p)). The mask is not stored: it is a counter-based hash
/// of (seed, element index) (<see cref="DropoutKernel"/>), one 64-bit seed drawn from the generator per call, so backward
/// recomputes it (dL/dx = dL/dy · mask / (1 − p)) and a checkpointed layer that restores the generator draws the same masks.
/// torch's <c>bernoulli_</c> with an explicit generator draws ~250 M values/s on one thread, which made dropout cost more
/// than the frozen layer's matmuls (bench: heal-profile).
/// </summary>
public sealed class LoraDropout : SingleTensorFunction<LoraDropout>
{
    /// <summary>The name autograd shows for this node.</summary>
    public override string Name => "LoraDropout";

    /// <summary>Whether the loop serves x (bf16 or fp32 on CPU) for an adapter of <paramref name="adapterDtype"/> (fp32).</summary>
    public static bool Serves(Tensor x, ScalarType adapterDtype) =>
        adapterDtype == ScalarType.Float32 && x.device_type == DeviceType.CPU &&
        x.dtype is ScalarType.Float32 or ScalarType.BFloat16;

    /// <summary>
    /// x [...] (bf16 or fp32, CPU) → fp32 [...] with dropout p, the mask seeded by one draw from <paramref name="generator"/>
    /// (null: torch's default generator).
    /// </summary>
    public static Tensor Apply(Tensor x, double p, Generator? generator)
    {
        if (p <= 0 || p >= 1) throw new ArgumentOutOfRangeException(nameof(p), p, "dropout must be in (0, 1)");
        long seed;
        using (var draw = randint(long.MinValue, long.MaxValue, [1], dtype: ScalarType.Int64, generator: generator))
            seed = draw.item<long>();
        return apply(x, seed, p);
    }

    /// <inheritdoc/>
    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        long seed = (long)vars[1];
        double p = (double)vars[2];
        ctx.save_data("seed", seed);
        ctx.save_data("p", p);
        ctx.save_data("dtype", x.dtype);
        return Masked(x, seed, p);
    }

    /// <inheritdoc/>
    public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
    {
        var dtype = (ScalarType)ctx.get_data("dtype");
        using var grad = gradOutput;   // our handle (BackwardHandles)
        // Written in x's dtype directly (bf16: rounded to nearest even, as torch's cast).
        var dx = Masked(grad, (long)ctx.get_data("seed"), (double)ctx.get_data("p"), dtype);
        // One entry per argument of apply: the seed and p are not tensors.
        return Modeling.BackwardHandles.Returning([dx, null!, null!]);
    }

    /// <summary>x (bf16 or fp32) masked and scaled, in <paramref name="dtype"/> (bf16 or fp32; default fp32).</summary>
    static Tensor Masked(Tensor x, long seed, double p, ScalarType dtype = ScalarType.Float32)
    {
        using var src = x.contiguous();
        var y = empty(x.shape, dtype);
        DropoutKernel.Apply(CpuLoops.Address(src), x.dtype == ScalarType.BFloat16, x.NumberOfElements, seed, 1 - p,
            CpuLoops.Address(y), dtype == ScalarType.BFloat16);
        return y;
    }
}

/// <summary>
/// The keep-mask of <see cref="LoraDropout"/>: element i is kept when Hash(seed, i) &lt; (1 − p)·2³², where Hash is two
/// rounds of MurmurHash3's 32-bit finalizer (fmix32) over the index and the seed's halves: deterministic for a seed,
/// independent of the thread count, vectorized 8 lanes wide.
/// </summary>
static unsafe class DropoutKernel
{
    const int Block = 4096;
    const uint Golden = 0x9E3779B9u;

    /// <summary>
    /// dst[i] = keep(i) ? fp32(src[i]) · (float)(1/keep) : 0 for n elements; src bf16 or fp32, dst fp32 or (when
    /// <paramref name="dstBf16"/>) that value rounded to nearest even bf16, NaN as 0x7FC0 (c10::BFloat16's rounding).
    /// </summary>
    public static void Apply(nint src, bool bf16, long n, long seed, double keep, nint dst, bool dstBf16 = false)
    {
        uint k0 = (uint)seed, k1 = (uint)((ulong)seed >> 32);
        // keep·2³² as an unsigned threshold; keep < 1 so it fits.
        uint threshold = (uint)Math.Min(uint.MaxValue, Math.Round(keep * 4294967296.0));
        float scale = 1f / (float)keep;   // torch: noise.div_(1 − p), the scalar in the tensor's dtype
        CpuLoops.ForBlocks(n, Block, (_, start, len) =>
        {
            ushort* b16 = bf16 ? (ushort*)src + start : null;
            float* f32 = bf16 ? null : (float*)src + start;
            if (dstBf16) Run(b16, f32, start, len, k0, k1, threshold, scale, null, (ushort*)dst + start);
            else Run(b16, f32, start, len, k0, k1, threshold, scale, (float*)dst + start, null);
        }, blocksPerChunk: 16);
    }

    /// <summary>The 32-bit hash of element <paramref name="i"/> (the scalar form of the vector loop).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Hash(long i, uint k0, uint k1)
    {
        uint h = Fmix((uint)i * Golden ^ k0);
        return Fmix(h ^ k1 ^ (uint)((ulong)i >> 32) * 0x85EBCA77u);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static uint Fmix(uint h)
    {
        h ^= h >> 16; h *= 0x85EBCA6Bu;
        h ^= h >> 13; h *= 0xC2B2AE35u;
        return h ^ (h >> 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<uint> Fmix(Vector256<uint> h)
    {
        h ^= Vector256.ShiftRightLogical(h, 16); h *= Vector256.Create(0x85EBCA6Bu);
        h ^= Vector256.ShiftRightLogical(h, 13); h *= Vector256.Create(0xC2B2AE35u);
        return h ^ Vector256.ShiftRightLogical(h, 16);
    }

    /// <summary>c10::BFloat16(float): round to nearest even; NaN → 0x7FC0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ushort ToBf16(float v)
    {
        if (float.IsNaN(v)) return 0x7FC0;
        uint u = BitConverter.SingleToUInt32Bits(v);
        return (ushort)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
    }

    /// <summary>One block: into <paramref name="o"/> (fp32) or <paramref name="ob"/> (bf16), whichever is given.</summary>
    static void Run(ushort* b16, float* f32, long start, int len, uint k0, uint k1, uint threshold, float scale, float* o,
        ushort* ob)
    {
        int j = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            // All indices of one block share their high 32 bits (blocks are 4096-aligned).
            var high = Vector256.Create(k1 ^ (uint)((ulong)start >> 32) * 0x85EBCA77u);
            var lane = Vector256.Create(0u, 1, 2, 3, 4, 5, 6, 7);
            var limit = Vector256.Create(threshold ^ 0x80000000u).AsInt32();
            var sign = Vector256.Create(0x80000000u);
            var s = Vector256.Create(scale);
            for (; j + 8 <= len; j += 8)
            {
                var idx = Vector256.Create((uint)(start + j)) + lane;
                var h = Fmix(Fmix(idx * Vector256.Create(Golden) ^ Vector256.Create(k0)) ^ high);
                // Unsigned h < threshold as a signed compare of both with the sign bit flipped.
                var kept = Vector256.LessThan((h ^ sign).AsInt32(), limit).AsSingle();
                Vector256<float> v;
                if (b16 is not null)
                    v = Vector256.ShiftLeft(Vector256.WidenLower(Vector256.Create(Vector128.Load(b16 + j), Vector128<ushort>.Zero)), 16)
                        .AsSingle();
                else v = Vector256.Load(f32 + j);
                var r = Vector256.BitwiseAnd(v * s, kept);
                if (o is not null) r.Store(o + j);
                else
                {
                    var u = r.AsUInt32();
                    var rounded = Vector256.ShiftRightLogical(u + Vector256.Create(0x7FFFu) +
                        (Vector256.ShiftRightLogical(u, 16) & Vector256.Create(1u)), 16);
                    rounded = Vector256.ConditionalSelect(Vector256.Equals(r, r).AsUInt32(), rounded, Vector256.Create(0x7FC0u));
                    Vector128.Narrow(rounded.GetLower(), rounded.GetUpper()).Store(ob + j);
                }
            }
        }
        for (; j < len; j++)
        {
            float v = b16 is not null ? BitConverter.UInt32BitsToSingle((uint)b16[j] << 16) : f32[j];
            float r = Hash(start + j, k0, k1) < threshold ? v * scale : 0f;
            if (o is not null) o[j] = r;
            else ob[j] = ToBf16(r);
        }
    }
}
