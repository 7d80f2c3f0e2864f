using LayerPrune.Modeling;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Modeling;

/// <summary>
/// The batch-1 linear kernel (<see cref="Gemv"/>) against a float64 product of the same bf16/fp32 values and against
/// the torch-op reference nn.functional.linear: odd sizes (tails of every vector width, fewer rows than a row block),
/// each dtype, each vector path this CPU has, threads 1 and 2, with and without bias, fused and alone.
/// </summary>
public sealed class GemvTests
{
    static readonly (long Rows, long Cols)[] Shapes = [(1, 1), (3, 7), (5, 17), (13, 33), (64, 255), (37, 1000), (700, 515)];

    static IEnumerable<int> Widths() => new[] { 512, 256, 0 }.Where(b => b <= Gemv.VectorBits);

    /// <summary>
    /// Error bound of one output: the fp32 sum of n products (and the bias) has error ≤ (n + 1)·2⁻²⁴·Σ|x_i·w_i| (+|b|)
    /// (Higham, Accuracy and Stability, §3.1, with γ_n ≈ n·u); a bf16 output adds half a bf16 ulp, ≤ 2⁻⁸·|y|.
    /// </summary>
    static Tensor Bound(Tensor x64, Tensor w64, Tensor? b64, long n, bool bf16, Tensor exact)
    {
        var absSum = x64.abs().matmul(w64.abs().t());
        if (b64 is not null) absSum = absSum + b64.abs();
        var bound = absSum * ((n + 1) * Math.Pow(2, -24)) + 1e-30;
        return bf16 ? bound + exact.abs() * Math.Pow(2, -8) + absSum * Math.Pow(2, -24) : bound;
    }

    static void AssertWithin(Tensor actual, Tensor exact, Tensor bound, string what)
    {
        using var err = (actual.to(ScalarType.Float64) - exact).abs();
        using var over = err - bound;
        double worst = over.max().item<double>();
        Assert.True(worst <= 0, $"{what}: error exceeds the bound by {worst:G3} (max error {err.max().item<double>():G3})");
    }

    [Fact]
    public void MatchesFloat64ProductAndTorchLinear()
    {
        using var _ = no_grad();
        int seed = 0;
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        foreach (var (rows, cols) in Shapes)
        foreach (bool withBias in new[] { false, true })
        {
            using var scope = NewDisposeScope();
            using var g = new Generator((ulong)seed++);
            var w = (randn(rows, cols, generator: g) * 0.5).to(dtype);
            var x = randn(1, 1, cols, generator: g).to(dtype);
            var b = withBias ? randn(rows, generator: g).to(dtype) : null;
            Assert.True(Gemv.Applies(x, w, b));
            var (x64, w64, b64) = (x.to(ScalarType.Float64), w.to(ScalarType.Float64), b?.to(ScalarType.Float64));
            var exact = x64.matmul(w64.t());
            if (b64 is not null) exact = exact + b64;
            bool bf16 = dtype == ScalarType.BFloat16;
            var bound = Bound(x64, w64, b64, cols, bf16, exact);
            var torchOp = nn.functional.linear(x, w, b);
            // libtorch's own kernel meets the same bound (it is the reference, not the one checked).
            AssertWithin(torchOp, exact, bound * 2, $"torch linear {dtype} {rows}x{cols}");
            Tensor? first = null;
            foreach (int bits in Widths())
            foreach (int threads in new[] { 1, 2 })
            {
                var y = Gemv.Fused(x, [(w, b)], threads, bits)[0];
                Assert.Equal(dtype, y.dtype);
                Assert.Equal(new[] { 1L, 1, rows }, y.shape);
                string what = $"{dtype} {rows}x{cols} bias {withBias} width {bits} threads {threads}";
                AssertWithin(y, exact, bound, what);
                AssertWithin(y, torchOp.to(ScalarType.Float64), bound * 3, what + " vs torch linear");
                if (bits == Gemv.VectorBits)
                {
                    // Threads split rows only: the same width gives the same bits.
                    if (first is null) first = y;
                    else Assert.True(first.equal(y).all().item<bool>(), what + ": threads changed the result");
                }
            }
        }
    }

    [Fact]
    public void ThreadsSplitLargeWeightsBitIdentically()
    {
        using var _ = no_grad();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            using var scope = NewDisposeScope();
            using var g = new Generator(7);
            // Above Gemv.ParallelBytes, so two threads really split the rows; 1023 rows leave a short last row block.
            var w = randn(1023, 1029, generator: g).to(dtype);
            var x = randn(1, 1029, generator: g).to(dtype);
            Assert.True(w.NumberOfElements * w.ElementSize >= Gemv.ParallelBytes);
            var one = Gemv.Fused(x, [(w, null)], threads: 1)[0];
            var two = Gemv.Fused(x, [(w, null)], threads: 2)[0];
            Assert.True(one.equal(two).all().item<bool>(), $"{dtype}: 1 and 2 threads differ");
            var x64 = x.to(ScalarType.Float64);
            var w64 = w.to(ScalarType.Float64);
            var exact = x64.matmul(w64.t());
            AssertWithin(two, exact, Bound(x64, w64, null, 1029, dtype == ScalarType.BFloat16, exact), $"{dtype} 1023x1029");
        }
    }

    [Fact]
    public void FusedEqualsEachAlone()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var g = new Generator(3);
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var x = randn(1, 1, 130, generator: g).to(dtype);
            var q = new Linear(randn(130, 130, generator: g).to(dtype), randn(130, generator: g).to(dtype));
            var k = new Linear(randn(18, 130, generator: g).to(dtype), null);
            var v = new Linear(randn(1001, 130, generator: g).to(dtype), null);
            var fused = Gemv.TryFused(x, q, k, v)!;
            Assert.NotNull(fused);
            var alone = new[] { q, k, v }.Select(l => Gemv.Forward(x, l.Weight!, l.Bias)).ToArray();
            for (int i = 0; i < 3; i++)
                Assert.True(fused[i].equal(alone[i]).all().item<bool>(), $"{dtype}: fused output {i} differs from the same weight alone");
            // Linear.Forward takes the kernel for one row.
            Assert.True(q.Forward(x).equal(alone[0]).all().item<bool>());
        }
    }

    [Fact]
    public void DeclinesWhatItDoesNotCompute()
    {
        using var scope = NewDisposeScope();
        var w = randn(8, 16);
        Assert.False(Gemv.Applies(randn(2, 16), w, null));                                 // two rows: a GEMM
        Assert.False(Gemv.Applies(randn(1, 16).to(ScalarType.BFloat16), w, null));       // dtype mismatch
        Assert.False(Gemv.Applies(randn(1, 16).to(ScalarType.Float16), w.to(ScalarType.Float16), null)); // fp16
        Assert.False(Gemv.Applies(randn(1, 8), randn(16, 8).t(), null));                 // non-contiguous weight
        Assert.False(Gemv.Applies(randn(1, 16), w, randn(8).to(ScalarType.BFloat16)));   // bias dtype
        using (enable_grad())
            Assert.False(Gemv.Applies(randn(1, 16, requires_grad: true), w, null));      // a graph to record
        Assert.Null(Gemv.TryFused(randn(1, 16).to(ScalarType.BFloat16), new Linear(w, null)));   // one weight declines
        Assert.Throws<ArgumentException>(() => Gemv.Fused(randn(1, 16), [(w, null)], vectorBits: 128));
    }
}
