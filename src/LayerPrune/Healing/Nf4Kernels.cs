using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>
/// CPU loops behind <see cref="Nf4Weight"/>: blockwise NF4 quantization and the per-block table lookup of dequantization,
/// on raw contiguous memory, vectorized (Vector256, AVX-512 permutes where present) and split over torch's intra-op
/// thread count. They compute what the torch-op reference path computes, bit for bit (tests/…/Nf4KernelTests.cs).
/// </summary>
static unsafe class Nf4Kernels
{
        static readonly float[] ThresholdValues = Nf4Weight.Thresholds.ToArray();

    /// <summary>
    /// Codes and absmax of n values at <paramref name="src"/> (bf16 when <paramref name="bf16"/>, else fp32), blocks of
    /// <paramref name="blockSize"/> (even): absmax[b] = max |x| (fp32), code = #{t : x·(1/absmax) &gt; t} (a NaN product,
    /// e.g. of an all-zero block, fails every test: code 0), two codes per byte, the first element in the high nibble;
    /// the missing element of an odd n is coded as 0·(1/absmax), as the zero padding of the reference.
    /// </summary>
    public static void Quantize(nint src, bool bf16, long n, int blockSize, nint packed, nint absmax)
    {
        CpuLoops.ForBlocks(n, blockSize, (b, start, len) =>
        {
            byte* dst = (byte*)packed + start / 2;
            float a = bf16
                ? QuantizeBlock((ushort*)src + start, len, dst)
                : QuantizeBlock((float*)src + start, len, dst);
            ((float*)absmax)[b] = a;
        });
    }

    /// <summary>
    /// out[i] = table[block(i)·16 + code(i)] for n elements of <paramref name="elementSize"/> bytes (2, 4 or 8), where
    /// table [blocks, 16] already holds level·absmax in the output dtype.
    /// </summary>
    public static void Dequantize(nint packed, nint table, long n, int blockSize, int elementSize, nint dst)
    {
        CpuLoops.ForBlocks(n, blockSize, (b, start, len) =>
        {
            byte* p = (byte*)packed + start / 2;
            byte* t = (byte*)table + b * 16 * elementSize;
            byte* o = (byte*)dst + start * elementSize;
            switch (elementSize)
            {
                case 2: DequantizeBlock(p, (ushort*)t, len, (ushort*)o); break;
                case 4: DequantizeBlock(p, (uint*)t, len, (uint*)o); break;
                default: DequantizeScalar(p, (ulong*)t, 0, len, (ulong*)o); break;
            }
        });
    }

    /// <summary>Smallest absmax whose products with the nonzero levels (|level| ≥ 0.0796) are normal floats.</summary>
    const float MinNormalAbsmax = 1.5e-37f;

    static readonly float[] LevelValues = Nf4Weight.Codebook.ToArray();

    /// <summary>
    /// Whether every absmax is finite and either 0 or large enough that its 16 products are normal floats: then the
    /// round-to-nearest-even of <see cref="DequantizeFromAbsmax"/> is exactly torch's fp32 → bf16 cast, with no NaN or
    /// subnormal special case.
    /// </summary>
    public static bool TablesAreOrdinary(nint absmax, long blocks)
    {
        float* a = (float*)absmax;
        for (long b = 0; b < blocks; b++)
        {
            float x = a[b];
            if (!(x == 0f || (x >= MinNormalAbsmax && float.IsFinite(x))))
                return false;
        }
        return true;
    }

    /// <summary>
    /// out[i] = level[code(i)] · absmax[block(i)] in fp32, stored as fp32 or rounded to nearest even bf16; each block's
    /// 16 products are computed once in registers. Only for <see cref="TablesAreOrdinary"/> absmax.
    /// </summary>
    public static void DequantizeFromAbsmax(nint packed, nint absmax, long n, int blockSize, bool bf16, nint dst)
    {
        CpuLoops.ForBlocks(n, blockSize, (b, start, len) =>
        {
            byte* p = (byte*)packed + start / 2;
            float a = ((float*)absmax)[b];
            if (bf16)
            {
                ushort* t = stackalloc ushort[16];
                Bf16Table(a, t);
                DequantizeBlock(p, t, len, (ushort*)dst + start);
            }
            else
            {
                float* t = stackalloc float[16];
                for (int k = 0; k < 16; k++)
                    t[k] = LevelValues[k] * a;
                DequantizeBlock(p, (uint*)t, len, (uint*)dst + start);
            }
        });
    }

    /// <summary>level[k] · a (fp32) rounded to nearest even bf16, for finite normal products.</summary>
    static void Bf16Table(float a, ushort* t)
    {
        if (Avx512F.IsSupported)
        {
            var bits = (Vector512.Create(LevelValues) * a).AsUInt32();
            var rounded = (bits + Vector512.Create(0x7FFFu) + ((bits >> 16) & Vector512.Create(1u))) >> 16;
            Avx512F.ConvertToVector256UInt16(rounded).Store(t);
            return;
        }
        for (int k = 0; k < 16; k++)
        {
            uint u = BitConverter.SingleToUInt32Bits(LevelValues[k] * a);
            t[k] = (ushort)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
        }
    }

    static int Code(float x)
    {
        int c = 0;
        foreach (float t in ThresholdValues)
            c += x > t ? 1 : 0;
        return c;
    }

    /// <summary>8 codes: the number of thresholds below each lane (NaN lanes: 0).</summary>
    static Vector256<uint> Codes(Vector256<float> x)
    {
        var c = Vector256<uint>.Zero;
        foreach (float t in ThresholdValues)
            c -= Vector256.GreaterThan(x, Vector256.Create(t)).AsUInt32();
        return c;
    }

    /// <summary>
    /// 64 codes (4 × 16 as uint lanes, in element order) → 32 packed bytes: pairs of codes (2k, 2k+1) as one ushort,
    /// code[2k] | code[2k+1] &lt;&lt; 8, then (code[2k] &lt;&lt; 4) | code[2k+1].
    /// </summary>
    static Vector256<byte> Pack(Vector256<uint> c0, Vector256<uint> c1, Vector256<uint> c2, Vector256<uint> c3,
        Vector256<uint> c4, Vector256<uint> c5, Vector256<uint> c6, Vector256<uint> c7)
    {
        var lo = Vector256.Narrow(Vector256.Narrow(c0, c1), Vector256.Narrow(c2, c3)).AsUInt16(); // 32 codes
        var hi = Vector256.Narrow(Vector256.Narrow(c4, c5), Vector256.Narrow(c6, c7)).AsUInt16();
        var mask = Vector256.Create((ushort)0xF0);
        var pl = ((lo << 4) & mask) | (lo >> 8);
        var ph = ((hi << 4) & mask) | (hi >> 8);
        return Vector256.Narrow(pl, ph);
    }

    static float QuantizeBlock(ushort* x, int len, byte* dst)
    {
        // max |x| as bit patterns: with the sign bit cleared, the integer order is the float order (NaN above inf).
        var m = Vector256<ushort>.Zero;
        int i = 0;
        for (; i + 16 <= len; i += 16)
            m = Vector256.Max(m, Vector256.Load(x + i) & Vector256.Create((ushort)0x7FFF));
        ushort bits = 0;
        for (int k = 0; k < 16; k++)
            bits = Math.Max(bits, m[k]);
        for (; i < len; i++)
            bits = Math.Max(bits, (ushort)(x[i] & 0x7FFF));
        float absmax = BitConverter.UInt32BitsToSingle((uint)bits << 16);
        float r = 1f / absmax;
        var rv = Vector256.Create(r);
        i = 0;
        for (; i + 64 <= len; i += 64)
        {
            var (a0, a1) = Vector256.Widen(Vector256.Load(x + i));
            var (a2, a3) = Vector256.Widen(Vector256.Load(x + i + 16));
            var (a4, a5) = Vector256.Widen(Vector256.Load(x + i + 32));
            var (a6, a7) = Vector256.Widen(Vector256.Load(x + i + 48));
            Pack(Codes((a0 << 16).AsSingle() * rv), Codes((a1 << 16).AsSingle() * rv),
                Codes((a2 << 16).AsSingle() * rv), Codes((a3 << 16).AsSingle() * rv),
                Codes((a4 << 16).AsSingle() * rv), Codes((a5 << 16).AsSingle() * rv),
                Codes((a6 << 16).AsSingle() * rv), Codes((a7 << 16).AsSingle() * rv)).Store(dst + i / 2);
        }
        for (; i < len; i += 2)
        {
            float x0 = BitConverter.UInt32BitsToSingle((uint)x[i] << 16);
            float x1 = i + 1 < len ? BitConverter.UInt32BitsToSingle((uint)x[i + 1] << 16) : 0f;
            dst[i / 2] = (byte)(Code(x0 * r) << 4 | Code(x1 * r));
        }
        return absmax;
    }

    static float QuantizeBlock(float* x, int len, byte* dst)
    {
        var m = Vector256<uint>.Zero;
        int i = 0;
        for (; i + 8 <= len; i += 8)
            m = Vector256.Max(m, Vector256.Load((uint*)x + i) & Vector256.Create(0x7FFFFFFFu));
        uint bits = 0;
        for (int k = 0; k < 8; k++)
            bits = Math.Max(bits, m[k]);
        for (; i < len; i++)
            bits = Math.Max(bits, ((uint*)x)[i] & 0x7FFFFFFFu);
        float absmax = BitConverter.UInt32BitsToSingle(bits);
        float r = 1f / absmax;
        var rv = Vector256.Create(r);
        i = 0;
        for (; i + 64 <= len; i += 64)
        {
            float* s = x + i;
            Pack(Codes(Vector256.Load(s) * rv), Codes(Vector256.Load(s + 8) * rv),
                Codes(Vector256.Load(s + 16) * rv), Codes(Vector256.Load(s + 24) * rv),
                Codes(Vector256.Load(s + 32) * rv), Codes(Vector256.Load(s + 40) * rv),
                Codes(Vector256.Load(s + 48) * rv), Codes(Vector256.Load(s + 56) * rv)).Store(dst + i / 2);
        }
        for (; i < len; i += 2)
        {
            float x1 = i + 1 < len ? x[i + 1] : 0f;
            dst[i / 2] = (byte)(Code(x[i] * r) << 4 | Code(x1 * r));
        }
        return absmax;
    }

    /// <summary>16-bit outputs: 32 per step with one AVX-512 word permute of the block's 16-entry table.</summary>
    static void DequantizeBlock(byte* p, ushort* table, int len, ushort* o)
    {
        int i = 0;
        if (Avx512BW.IsSupported)
        {
            var t = Vector512.Create(Vector256.Load(table), Vector256<ushort>.Zero);
            for (; i + 32 <= len; i += 32)
            {
                var b = Avx512F.ConvertToVector512UInt32(Vector128.Load(p + i / 2)); // 16 bytes → 16 uint lanes
                var idx = (b >> 4) | ((b & Vector512.Create(15u)) << 16);             // (hi, lo) nibbles as two words
                Avx512BW.PermuteVar32x16(t, idx.AsUInt16()).Store(o + i);
            }
        }
        DequantizeScalar(p, table, i, len, o);
    }

    /// <summary>32-bit outputs: 16 per step with one AVX-512 dword permute of the block's 16-entry table.</summary>
    static void DequantizeBlock(byte* p, uint* table, int len, uint* o)
    {
        int i = 0;
        if (Avx512F.IsSupported)
        {
            var t = Vector512.Load(table);
            for (; i + 16 <= len; i += 16)
            {
                var b = Avx512F.ConvertToVector512UInt64(Vector128.CreateScalar(*(ulong*)(p + i / 2)).AsByte()); // 8 bytes
                var idx = (b >> 4) | ((b & Vector512.Create(15ul)) << 32);
                Avx512F.PermuteVar16x32(t, idx.AsUInt32()).Store(o + i);
            }
        }
        DequantizeScalar(p, table, i, len, o);
    }

    /// <summary>Elements [from, len) of a block (from even), one table lookup each.</summary>
    static void DequantizeScalar<T>(byte* p, T* table, int from, int len, T* o) where T : unmanaged
    {
        for (int i = from; i < len; i += 2)
        {
            byte b = p[i / 2];
            o[i] = table[b >> 4];
            if (i + 1 < len)
                o[i + 1] = table[b & 15];
        }
    }
}
