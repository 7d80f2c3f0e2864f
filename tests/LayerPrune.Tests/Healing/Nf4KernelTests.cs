using LayerPrune.Healing;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Healing;

/// <summary>
/// The CPU loops of <see cref="Nf4Weight.Quantize"/> and <see cref="Nf4Weight.Dequantize"/> against the torch-op
/// reference path (which matches bitsandbytes), bit for bit, on awkward shapes and values.
/// </summary>
public sealed class Nf4KernelTests
{
    /// <summary>Same dtype, shape and bit patterns (so -0.0 ≠ 0.0 and every rounding counts).</summary>
    static void AssertSameBits(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.dtype, actual.dtype);
        Assert.Equal(expected.shape, actual.shape);
        using var e = expected.contiguous();
        using var a = actual.contiguous();
        var eb = e.bytes;
        var ab = a.bytes;
        int first = eb.CommonPrefixLength(ab);
        long element = first / Math.Max(1, (int)e.ElementSize);
        Assert.True(first == eb.Length, $"{what}: first difference at element {element} of {e.NumberOfElements}");
    }

    /// <summary>
    /// Random rows with awkward content: an all-zero stretch, ±inf, values exactly on the thresholds of an absmax-1 block
    /// and one float above them, a block whose absmax is subnormal (1/absmax = inf), negative zeros, a bf16 rounding tie.
    /// </summary>
    /// (Without <paramref name="extremes"/>: no inf and no subnormal block, so dequantization takes the direct path that
    /// rounds to bf16 itself instead of the torch-cast table.)
    static Tensor Awkward(long rows, long cols, int seed, bool extremes = true)
    {
        using var g = new Generator((ulong)seed);
        var w = randn(rows, cols, generator: g) * (rand(rows, 1, generator: g) * 3);
        var flat = w.view(-1);
        long n = flat.shape[0];
        if (n > 200)
        {
            flat.narrow(0, 64, 64).zero_();               // an all-zero block (blocks of 64)
            if (extremes)
            {
                flat[130] = float.PositiveInfinity;
                flat[131] = float.NegativeInfinity;
            }
            flat[140] = -0.0f;
        }
        if (n > 400)
        {
            // Block 5: absmax 1 and every threshold, exactly and one ulp above ("x > t" decides).
            var block = flat.narrow(0, 320, 64);
            block.zero_();
            block[0] = 1.0f;
            for (int i = 0; i < 15; i++)
            {
                float t = Nf4Weight.Thresholds[i];
                block[1 + 2 * i] = t;
                block[2 + 2 * i] = MathF.BitIncrement(t);
            }
        }
        if (n > 500 && extremes)
        {
            // Block 6: absmax 1e-40 (subnormal): 1/absmax overflows to inf, x·inf = ±inf, 0·inf = NaN.
            var block = flat.narrow(0, 384, 64);
            block.zero_();
            block[0] = 1e-40f;
            block[1] = -1e-40f;
            block[2] = 5e-41f;
        }
        if (n > 512)
        {
            // Block 7: absmax 1 + 2^-8, so level ±1 · absmax lies exactly halfway between two bf16 values (ties to even).
            var block = flat.narrow(0, 448, 64);
            block.mul_(0.1);
            block[0] = 1.00390625f;
            block[1] = -1.00390625f;
        }
        return w;
    }

    public static IEnumerable<object[]> Cases()
    {
        // (rows, cols, block size): partial last blocks, odd numel, one short block, a block size that is not a multiple
        // of the 64-element vector step, block 2.
        long[][] shapes = [[10, 10], [3, 67], [1, 7], [96, 200], [1, 1], [5, 1000], [33, 65]];
        foreach (var s in shapes)
        {
            yield return [s[0], s[1], 64];
            yield return [s[0], s[1], 128];
        }
        yield return [13L, 57L, 6];
        yield return [4L, 130L, 2];
        yield return [7L, 190L, 96];
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Quantize_EqualsReference_BitForBit(long rows, long cols, int blockSize)
    {
        Check(rows, cols, blockSize, extremes: true);
        Check(rows, cols, blockSize, extremes: false);
    }

    static void Check(long rows, long cols, int blockSize, bool extremes)
    {
        using var w32 = Awkward(rows, cols, (int)(rows * 131 + cols), extremes);
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16, ScalarType.Float64 })
        {
            using var w = w32.to(dtype);
            foreach (bool dq in new[] { false, true })
            {
                using var fast = Nf4Weight.Quantize(w, dq, blockSize);
                using var reference = Nf4Weight.QuantizeReference(w, dq, blockSize);
                string what = $"{dtype} [{rows}, {cols}] block {blockSize} double quant {dq} extremes {extremes}";
                AssertSameBits(reference.Packed, fast.Packed, what + " codes");
                if (dq)
                {
                    AssertSameBits(reference.QuantizedAbsmax!, fast.QuantizedAbsmax!, what + " quantized absmax");
                    AssertSameBits(reference.AbsmaxScale!, fast.AbsmaxScale!, what + " state2");
                    Assert.Equal(BitConverter.SingleToInt32Bits(reference.AbsmaxOffset), BitConverter.SingleToInt32Bits(fast.AbsmaxOffset));
                }
                else AssertSameBits(reference.Absmax!, fast.Absmax!, what + " absmax");

                foreach (var outType in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16, ScalarType.Float64 })
                {
                    using var d = fast.Dequantize(outType);
                    using var dr = fast.DequantizeReference(outType);
                    AssertSameBits(dr, d, what + $" dequantized to {outType}");
                }
            }
        }
    }

    [Fact]
    public void Quantize_NonContiguousInput_EqualsReference()
    {
        using var g = new Generator(5);
        using var w = randn(130, 70, generator: g).to(ScalarType.BFloat16);
        using var t = w.t(); // [70, 130], a strided view
        using var fast = Nf4Weight.Quantize(t);
        using var reference = Nf4Weight.QuantizeReference(t);
        AssertSameBits(reference.Packed, fast.Packed, "codes");
        AssertSameBits(reference.Absmax!, fast.Absmax!, "absmax");
        Assert.Equal(new long[] { 70, 130 }, fast.Shape);
    }

    [Fact]
    public void AwkwardValues_HaveTheDocumentedCodes()
    {
        // The reference itself on the awkward blocks (so the comparison above is not vacuous): the all-zero block codes 0,
        // a value exactly on a threshold takes the lower code and one ulp above the upper, the subnormal block's ±x·inf.
        using var w = Awkward(1, 1000, 1);
        using var q = Nf4Weight.Quantize(w);
        using var codes = q.Codes();
        var c = codes.data<long>().ToArray();
        Assert.All(c.Skip(64).Take(64), x => Assert.Equal(0L, x));
        for (int i = 0; i < 15; i++)
        {
            Assert.Equal(i, c[320 + 1 + 2 * i]);
            Assert.Equal(i + 1, c[320 + 2 + 2 * i]);
        }
        Assert.Equal(15L, c[384]);
        Assert.Equal(0L, c[385]);
        Assert.Equal(15L, c[386]);
        Assert.Equal(0L, c[387]); // 0 · inf = NaN
        Assert.Equal(float.PositiveInfinity, q.Absmax![2].item<float>()); // the ±inf block
        Assert.Equal(7L, c[129]); // finite · (1/inf) = 0 → code 7
        Assert.Equal(0L, c[130]); // inf · 0 = NaN → code 0
    }
}
