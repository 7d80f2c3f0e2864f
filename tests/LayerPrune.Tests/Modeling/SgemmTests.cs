using LayerPrune.Modeling;
using Xunit;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Modeling;

/// <summary>
/// The fp32 prefill linear (<see cref="Sgemm"/>) against a float64 product of the same values and against the torch-op
/// reference nn.functional.linear: odd sizes (edge tiles of fewer than 4 rows of x or of W, feature counts that are not a
/// multiple of 16 or cross the 512-feature blocks), with and without bias, threads 1 and 2 (bit-identical: threads split
/// the rows of W only).
/// </summary>
public sealed class SgemmTests
{
    static readonly (long M, long N, long K)[] Shapes =
        [(2, 1, 1), (3, 5, 17), (4, 4, 16), (5, 7, 33), (9, 13, 515), (8, 64, 1024), (6, 37, 1100), (17, 130, 2049)];

    [Fact]
    public void MatchesFloat64ProductAndTorchLinear()
    {
        if (!System.Runtime.Intrinsics.X86.Avx512F.IsSupported) return;   // the kernel declines without AVX-512 (tested below)
        using var _ = no_grad();
        int seed = 0;
        foreach (var (m, n, k) in Shapes)
        foreach (bool withBias in new[] { false, true })
        {
            using var scope = NewDisposeScope();
            using var g = new Generator((ulong)seed++);
            var x = randn(1, m, k, generator: g);
            var w = randn(n, k, generator: g) * 0.5;
            var b = withBias ? randn(n, generator: g) : null;
            Assert.True(Sgemm.Applies(x, w, b));
            var x64 = x.to(ScalarType.Float64);
            var w64 = w.to(ScalarType.Float64);
            var exact = x64.matmul(w64.t());
            var absSum = x64.abs().matmul(w64.abs().t());
            if (b is not null)
            {
                exact = exact + b.to(ScalarType.Float64);
                absSum = absSum + b.to(ScalarType.Float64).abs();
            }
            // fp32 sum of k products and a bias: error ≤ (k + 1)·2⁻²⁴·Σ|x·w| (Higham §3.1, γ_n ≈ n·u).
            var bound = absSum * ((k + 1) * Math.Pow(2, -24)) + 1e-30;
            var torchOp = nn.functional.linear(x, w, b);
            var one = Sgemm.Forward(x, w, b, threads: 1);
            var two = Sgemm.Forward(x, w, b, threads: 2);
            string what = $"{m}x{n}x{k} bias {withBias}";
            Assert.Equal(new[] { 1L, m, n }, one.shape);
            Assert.True(((one.to(ScalarType.Float64) - exact).abs() - bound).max().item<double>() <= 0, what);
            Assert.True(((torchOp.to(ScalarType.Float64) - exact).abs() - bound).max().item<double>() <= 0, what + " (torch)");
            Assert.True(((one - torchOp).abs().to(ScalarType.Float64) - 2 * bound).max().item<double>() <= 0, what + " vs torch");
            Assert.True(one.equal(two).all().item<bool>(), what + ": 1 and 2 threads differ");
        }
    }

    [Fact]
    public void DeclinesWhatItDoesNotCompute()
    {
        using var scope = NewDisposeScope();
        var w = randn(8, 16);
        Assert.False(Sgemm.Applies(randn(1, 16), w, null));                                   // one row: Gemv's
        Assert.False(Sgemm.Applies(randn(3, 16).to(ScalarType.BFloat16), w.to(ScalarType.BFloat16), null));   // bf16: libtorch
        Assert.False(Sgemm.Applies(randn(3, 8), randn(16, 8).t(), null));                    // non-contiguous weight
        Assert.False(Sgemm.Applies(randn(3, 16), w, randn(8).to(ScalarType.BFloat16)));      // bias dtype
        using (enable_grad())
            Assert.False(Sgemm.Applies(randn(3, 16, requires_grad: true), w, null));         // a graph to record
    }
}
