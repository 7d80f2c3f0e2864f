using LayerPrune.Healing;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Healing;

public sealed class Nf4WeightTests(ITestOutputHelper output)
{
    // bitsandbytes NF4 levels (as given in the QLoRA paper appendix / bitsandbytes kernels).
    static readonly double[] ExpectedLevels =
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
        -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
        0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ];

    [Fact]
    public void Codebook_IsBitsandbytesNf4()
    {
        Assert.Equal(16, Nf4Weight.Codebook.Count);
        for (int i = 0; i < 16; i++) Assert.Equal((float)ExpectedLevels[i], Nf4Weight.Codebook[i]);
        // The kernel's thresholds are the midpoints of adjacent levels.
        Assert.Equal(15, Nf4Weight.Thresholds.Count);
        for (int i = 0; i < 15; i++)
            Assert.Equal((ExpectedLevels[i] + ExpectedLevels[i + 1]) / 2, Nf4Weight.Thresholds[i], 1e-7);
    }

    [Fact]
    public void RoundTrip_EveryLevelTimesAbsmax_IsExact()
    {
        const float absmax = 2.5f;
        // One 64-value block: the 16 levels four times, in a scrambled order.
        var values = new float[64];
        var expectedCodes = new long[64];
        for (int i = 0; i < 64; i++)
        {
            int code = (i * 7 + i / 16) % 16;
            expectedCodes[i] = code;
            values[i] = (float)ExpectedLevels[code] * absmax;
        }
        using var w = tensor(values).view(4, 16);
        using var q = Nf4Weight.Quantize(w);
        using var codes = q.Codes();
        Assert.Equal(expectedCodes, codes.data<long>().ToArray());
        using var d = q.Dequantize(ScalarType.Float32);
        Assert.Equal(new long[] { 4, 16 }, d.shape);
        var back = d.data<float>().ToArray();
        for (int i = 0; i < 64; i++) Assert.Equal(values[i], back[i], 1e-7);
    }

    [Fact]
    public void Packing_FirstElementInHighNibble()
    {
        // absmax = 1. Codes by hand: 1.0 → 15, -1.0 → 0, 0 → 7, 0.5 → 12 (0.5 < threshold 0.5017 between
        // 0.4407 and 0.5626), 0.1 → 8 (0.0398 < 0.1 < 0.1203), -0.3 → 4 (-0.3397 < -0.3 < -0.2346).
        using var w = tensor(new float[] { 1.0f, -1.0f, 0.0f, 0.5f, 0.1f, -0.3f });
        using var q = Nf4Weight.Quantize(w);
        Assert.Equal(ScalarType.Byte, q.Packed.dtype);
        Assert.Equal(new byte[] { 0xF0, 0x7C, 0x84 }, q.Packed.data<byte>().ToArray());
        Assert.Equal(1.0f, q.Absmax!.item<float>());
    }

    [Fact]
    public void PartialLastBlock_IsZeroPadded()
    {
        // 10×10 = 100 values → blocks of 64 and 36 (padded with zeros), 50 bytes.
        using var g = new Generator(7);
        using var w = randn(10, 10, generator: g);
        using var q = Nf4Weight.Quantize(w);
        Assert.Equal(50, q.Packed.shape[0]);
        Assert.Equal(2, q.Absmax!.shape[0]);
        using var flat = w.flatten();
        Assert.Equal(flat.narrow(0, 64, 36).abs().max().item<float>(), q.Absmax[1].item<float>());
        using var d = q.Dequantize(ScalarType.Float32);
        Assert.Equal(new long[] { 10, 10 }, d.shape);
        // Each value is within half the widest level gap (0.2768·absmax / 2) of the original.
        var a = q.Absmax.data<float>().ToArray();
        var orig = flat.data<float>().ToArray();
        var back = d.flatten().data<float>().ToArray();
        for (int i = 0; i < 100; i++) Assert.True(Math.Abs(orig[i] - back[i]) <= 0.14 * a[i / 64], $"element {i}");
        Assert.Equal(50 + 2 * 4, q.StorageBytes);
    }

    [Fact]
    public void OddNumel_StoresHalfByte()
    {
        using var w = tensor(new float[] { 0.5f, -1.0f, 0.25f });
        using var q = Nf4Weight.Quantize(w);
        Assert.Equal(2, q.Packed.shape[0]);
        // 0.5/1 → 12, -1 → 0, 0.25 → 10 (0.2035 < 0.25 < 0.2920); the padding 0 → 7 in the low nibble.
        Assert.Equal(new byte[] { 0xC0, 0xA7 }, q.Packed.data<byte>().ToArray());
        using var d = q.Dequantize(ScalarType.Float32);
        Assert.Equal(new[] { 0.44070982933044434f, -1.0f, 0.24611230194568634f }, d.data<float>().ToArray());
    }

    [Fact]
    public void ZeroBlock_DequantizesToZero()
    {
        // Block 0 all zeros (absmax 0: the kernel's 0·(1/0) = NaN gives code 0), block 1 random.
        using var g = new Generator(17);
        using var w = cat([zeros(64), randn(64, generator: g)]).view(2, 64);
        // (Single quantization: with double quantization the stored absmax of 0 comes back only approximately.)
        using var q = Nf4Weight.Quantize(w);
        using var codes = q.Codes();
        Assert.All(codes.narrow(0, 0, 64).data<long>().ToArray(), c => Assert.Equal(0L, c));
        using var d = q.Dequantize(ScalarType.Float32);
        Assert.Equal(0.0, d[0].abs().max().ToDouble());
        Assert.True(d[1].abs().max().ToDouble() > 1);
    }

    [Fact]
    public void DoubleQuant_PartialAbsmaxBlock()
    {
        // 300 blocks of 64 → double-quant blocks of 256 and 44.
        using var g = new Generator(23);
        using var w = randn(300, 64, generator: g) * (1 + rand(300, 1, generator: g));
        using var q = Nf4Weight.Quantize(w, doubleQuant: true);
        Assert.Equal(300, q.QuantizedAbsmax!.shape[0]);
        Assert.Equal(2, q.AbsmaxScale!.shape[0]);
        using var single = Nf4Weight.Quantize(w);
        using var exact = single.Absmax!.clone();
        using var approx = q.DequantizeAbsmax();
        using var centred = exact - exact.mean();
        // state2 of the second block = max |absmax − mean| over its 44 values.
        Assert.Equal(centred.narrow(0, 256, 44).abs().max().item<float>(), q.AbsmaxScale[1].item<float>());
        Assert.Equal(exact.mean().item<float>(), q.AbsmaxOffset);
        Assert.True(RelativeError(exact, approx) < 0.01);
    }

    static double RelativeError(Tensor w, Tensor approx)
    {
        using var diff = w - approx;
        return diff.norm().item<float>() / w.norm().item<float>();
    }

    /// <summary>Symmetric absmax int4 baseline: round(x / (absmax/7)) ∈ [-7, 7], blocks of 64.</summary>
    static Tensor Int4Absmax(Tensor w, int blockSize = 64)
    {
        using var scope = NewDisposeScope();
        var blocks = w.flatten().view(-1, blockSize);
        var step = blocks.abs().amax([1], keepdim: true) / 7;
        var q = (blocks / step).round().clamp(-7, 7) * step;
        return q.view(w.shape).MoveToOuterDisposeScope();
    }

    [Fact]
    public void GaussianMatrix_Nf4BeatsInt4Absmax()
    {
        using var g = new Generator(1234);
        using var w = randn(256, 512, generator: g);
        using var q = Nf4Weight.Quantize(w);
        using var d = q.Dequantize(ScalarType.Float32);
        using var i4 = Int4Absmax(w);
        double nf4Err = RelativeError(w, d), int4Err = RelativeError(w, i4);
        output.WriteLine($"relative Frobenius error, 256x512 N(0,1), block 64: NF4 {nf4Err:F5}, int4 absmax {int4Err:F5}");
        // NF4 is information-theoretically optimal for normal data; its error here is expected at ≈0.09–0.11.
        Assert.InRange(nf4Err, 0.07, 0.13);
        Assert.True(nf4Err < int4Err, $"NF4 {nf4Err} should beat int4 {int4Err}");
        Assert.Equal(256L * 512 / 2 + 4L * (256 * 512 / 64), q.StorageBytes);
    }

    [Fact]
    public void DoubleQuant_KeepsErrorAndSavesStorage()
    {
        using var g = new Generator(99);
        using var w = randn(256, 512, generator: g) * 0.02;
        using var single = Nf4Weight.Quantize(w);
        using var dq = Nf4Weight.Quantize(w, doubleQuant: true);
        Assert.True(dq.DoubleQuant);
        // The codes are computed with the exact absmax; only the stored absmax differs.
        Assert.True(HealingTestUtil.Same(single.Packed, dq.Packed));
        using var ds = single.Dequantize(ScalarType.Float32);
        using var dd = dq.Dequantize(ScalarType.Float32);
        double eSingle = RelativeError(w, ds), eDouble = RelativeError(w, dd);
        using var a1 = single.DequantizeAbsmax();
        using var a2 = dq.DequantizeAbsmax();
        double absmaxErr = RelativeError(a1, a2);
        output.WriteLine($"NF4 error single {eSingle:F6}, double {eDouble:F6}; absmax rel. error {absmaxErr:E3}; " +
                         $"storage {single.StorageBytes} vs {dq.StorageBytes} bytes");
        Assert.True(Math.Abs(eDouble - eSingle) / eSingle < 0.01, $"double {eDouble} vs single {eSingle}");
        Assert.True(absmaxErr < 0.01);
        // 2048 blocks: 2048·4 bytes → 2048·1 + 8 blocks of 256 → 8·4 + 4 (offset).
        Assert.Equal(65536 + 2048 * 4, single.StorageBytes);
        Assert.Equal(65536 + 2048 + 8 * 4 + 4, dq.StorageBytes);
    }

    [Fact]
    public void Dequantize_Bf16AndShape()
    {
        using var g = new Generator(3);
        using var w = randn(32, 64, generator: g);
        using var q = Nf4Weight.Quantize(w.to(ScalarType.BFloat16));
        using var d32 = q.Dequantize(ScalarType.Float32);
        using var d16 = q.Dequantize(ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, d16.dtype);
        Assert.Equal(new long[] { 32, 64 }, d16.shape);
        using var expected = d32.to(ScalarType.BFloat16);
        Assert.True(HealingTestUtil.Same(expected, d16));
    }

    [Fact]
    public void DynamicMap_MatchesCreateDynamicMapSigned()
    {
        var map = DynamicQuant8.Map;
        Assert.Equal(256, map.Count);
        for (int i = 1; i < 256; i++) Assert.True(map[i] > map[i - 1], $"map not strictly increasing at {i}");
        // 127 negative values, 0, 127 positive means and 1.0.
        Assert.Equal(127, map.Count(v => v < 0));
        Assert.Equal(0f, map[127]);
        Assert.Equal(1.0f, map[255]);
        // Largest |mean|: linspace(0.1, 1, 65) ends with 0.9859375, 1 → 0.99296875 (exponent 10^0).
        Assert.Equal(-0.99296875, map[0], 1e-7);
        Assert.Equal(0.99296875, map[254], 1e-7);
        // Smallest: i = 0, linspace(0.1, 1, 2) → mean 0.55, times 10^-6.
        Assert.Equal(5.5e-7, map[128], 1e-12);
        Assert.Equal(-5.5e-7, map[126], 1e-12);
        // i = 1: linspace(0.1, 1, 3) = 0.1, 0.55, 1 → means 0.325, 0.775, times 10^-5.
        Assert.Equal(3.25e-6, map[129], 1e-12);
        Assert.Equal(7.75e-6, map[130], 1e-12);
    }

    [Fact]
    public void DynamicQuant8_RoundTripsMapValues()
    {
        // Values that are exactly map entries times a block absmax of 1 come back unchanged.
        var map = DynamicQuant8.Map.ToArray();
        using var x = tensor(map);
        var (codes, absmax) = DynamicQuant8.QuantizeBlockwise(x, 256);
        using (codes)
        using (absmax)
        {
            Assert.Equal(Enumerable.Range(0, 256).Select(i => (byte)i).ToArray(), codes.data<byte>().ToArray());
            using var back = DynamicQuant8.DequantizeBlockwise(codes, absmax, 256);
            Assert.Equal(map, back.data<float>().ToArray());
        }
    }
}
