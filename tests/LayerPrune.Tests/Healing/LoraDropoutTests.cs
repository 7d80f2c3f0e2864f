using LayerPrune.Healing;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Healing;

/// <summary>
/// <see cref="LoraDropout"/>: torch's dropout formula on a hash-derived mask (kept values are exactly fp32(x)·(1/(1 − p)),
/// dropped ones 0), a keep rate and independence a Bernoulli(1 − p) mask has, the same mask for the same generator state at
/// any thread count, and the gradient through the same mask.
/// </summary>
public sealed class LoraDropoutTests
{
    /// <summary>Inputs that are never 0, so a 0 in the output marks a dropped element.</summary>
    static Tensor NonZero(long n, int seed, ScalarType dtype)
    {
        using var g = new Generator((ulong)seed);
        using var r = randn(n, generator: g);
        using var shifted = r.sign() * (r.abs() + 0.5);
        return shifted.to(dtype);
    }

    static bool[] Dropped(Tensor y) => y.data<float>().Select(v => v == 0f).ToArray();

    [Theory]
    [InlineData(ScalarType.Float32, 0.05)]
    [InlineData(ScalarType.BFloat16, 0.05)]
    [InlineData(ScalarType.Float32, 0.5)]
    public void KeptValuesAreScaled_DroppedAreZero_AtTheRate(ScalarType dtype, double p)
    {
        const long n = 1_000_003; // not a multiple of the vector width or the block: the scalar tail runs too
        using var x = NonZero(n, 1, dtype);
        using var g = new Generator(7);
        using var y = LoraDropout.Apply(x, p, g);
        Assert.Equal(ScalarType.Float32, y.dtype);
        using var x32 = x.to(ScalarType.Float32);
        var xv = x32.data<float>().ToArray();
        var yv = y.data<float>().ToArray();
        float scale = 1f / (float)(1 - p);
        long dropped = 0;
        for (long i = 0; i < n; i++)
        {
            if (yv[i] == 0f) { dropped++; continue; }
            Assert.True(yv[i] == xv[i] * scale, $"element {i}: {yv[i]} is not {xv[i]}·{scale}");
        }
        // Binomial(n, p): 5 standard deviations.
        double sigma = Math.Sqrt(p * (1 - p) / n);
        Assert.InRange((double)dropped / n, p - 5 * sigma, p + 5 * sigma);
    }

    /// <summary>
    /// Pairs that a Bernoulli mask leaves independent: neighbouring elements of one call, the same element in two calls
    /// (consecutive seeds), and elements 4096 apart (consecutive blocks). Both dropped has probability p² each.
    /// </summary>
    [Fact]
    public void MasksAreIndependent_AcrossNeighboursCallsAndBlocks()
    {
        const long n = 1 << 20;
        const double p = 0.1;
        using var x = NonZero(n, 2, ScalarType.Float32);
        using var g = new Generator(3);
        using var y1 = LoraDropout.Apply(x, p, g);
        using var y2 = LoraDropout.Apply(x, p, g);
        var d1 = Dropped(y1);
        var d2 = Dropped(y2);
        double sigma = Math.Sqrt(p * p * (1 - p * p) / n);
        void Near(Func<long, bool> both, long count, string what)
        {
            long k = 0;
            for (long i = 0; i < count; i++) if (both(i)) k++;
            Assert.True(Math.Abs((double)k / count - p * p) < 6 * sigma * Math.Sqrt((double)n / count),
                $"{what}: both dropped {(double)k / count:F5}, expected {p * p:F5}");
        }
        Near(i => d1[i] && d1[i + 1], n - 1, "neighbours");
        Near(i => d1[i] && d2[i], n, "two calls");
        Near(i => d1[i] && d1[i + 4096], n - 4096, "blocks apart");
        Assert.False(d1.SequenceEqual(d2));
    }

    [Fact]
    public void SameGeneratorState_SameMask_AtAnyThreadCount()
    {
        using var x = NonZero(300_001, 4, ScalarType.BFloat16);
        using var g = new Generator(11);
        using var start = g.get_state();
        using var two = LoraDropout.Apply(x, 0.2, g);
        g.set_state(start);
        try
        {
            CpuLoops.MaxThreads = 1;
            using var one = LoraDropout.Apply(x, 0.2, g);
            Assert.True(HealingTestUtil.Same(two, one));
        }
        finally { CpuLoops.MaxThreads = null; }
    }

    /// <summary>The vector loop keeps exactly the elements the scalar hash keeps (Hash(seed, i) &lt; (1 − p)·2³²).</summary>
    [Fact]
    public void VectorLoop_AgreesWithTheScalarHash()
    {
        const long n = 10_007;
        var ones = Enumerable.Repeat(1f, (int)n).ToArray();
        using var x = tensor(ones);
        using var y = empty(n);
        long seed = -5_123_456_789_012L;
        DropoutKernel.Apply(CpuLoops.Address(x), false, n, seed, 0.7, CpuLoops.Address(y));
        uint threshold = (uint)Math.Round(0.7 * 4294967296.0);
        var yv = y.data<float>().ToArray();
        for (long i = 0; i < n; i++)
            Assert.Equal(DropoutKernel.Hash(i, (uint)seed, (uint)((ulong)seed >> 32)) < threshold, yv[i] != 0f);
        // Indices past 2³² mix their high half in: the same low half there gives another mask.
        int same = 0;
        for (long i = 0; i < 10_000; i++)
            if (DropoutKernel.Hash(i, 1, 2) == DropoutKernel.Hash(i + (1L << 32), 1, 2)) same++;
        Assert.Equal(0, same);
    }

    /// <summary>dL/dx = dL/dy · mask/(1 − p) through the same mask, in x's dtype.</summary>
    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Gradient_UsesTheForwardMask(ScalarType dtype)
    {
        using var x0 = NonZero(20_000, 5, dtype);
        using var x = x0.detach().requires_grad_(true);
        using var g = new Generator(9);
        using var y = LoraDropout.Apply(x, 0.3, g);
        using var gy = randn(20_000, generator: g);
        y.backward([gy]);
        using var kept = y.detach().ne(0).to(ScalarType.Float32);
        using var expected = (gy * kept * (1f / 0.7f)).to(dtype);
        Assert.Equal(dtype, x.grad!.dtype);
        Assert.True(HealingTestUtil.Same(expected, x.grad!));
    }
}
