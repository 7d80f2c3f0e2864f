using System.Diagnostics;
using LayerPrune.Healing;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>
/// Cost of NF4 dequantization (what every QLoRA forward pays per layer) relative to the fp32 matmul it feeds:
/// dequantize a 4096×4096 NF4 weight vs y = x Wᵀ with x [8, 4096], timed in the same run.
/// </summary>
public static class Nf4Benchmarks
{
    public static void Run(TextWriter output, int iterations = 10)
    {
        const int n = 4096;
        using var g = new Generator(0);
        using var w = randn(n, n, generator: g) * 0.02;
        using var x = randn(8, n, generator: g);
        var sw = Stopwatch.StartNew();
        using var q = Nf4Weight.Quantize(w);
        double quantMs = sw.Elapsed.TotalMilliseconds;
        using var qd = Nf4Weight.Quantize(w, doubleQuant: true);

        using var _ = no_grad();
        double dequant = Median(iterations, () => q.Dequantize(ScalarType.Float32));
        double dequantDq = Median(iterations, () => qd.Dequantize(ScalarType.Float32));
        double dequantBf16 = Median(iterations, () => q.Dequantize(ScalarType.BFloat16));
        double linear = Median(iterations, () => nn.functional.linear(x, w));
        double both = Median(iterations, () =>
        {
            using var wq = q.Dequantize(ScalarType.Float32);
            return nn.functional.linear(x, wq);
        });

        output.WriteLine($"NF4 4096x4096 (torch threads {get_num_threads()}, median of {iterations}):");
        output.WriteLine($"  quantize (once)                  {quantMs,9:F2} ms");
        output.WriteLine($"  storage                          {q.StorageBytes / 1048576.0,9:F2} MiB  (double quant {qd.StorageBytes / 1048576.0:F2} MiB, fp32 {4.0 * n * n / 1048576:F2} MiB)");
        output.WriteLine($"  dequantize -> fp32               {dequant,9:F2} ms");
        output.WriteLine($"  dequantize -> fp32, double quant {dequantDq,9:F2} ms");
        output.WriteLine($"  dequantize -> bf16               {dequantBf16,9:F2} ms");
        output.WriteLine($"  fp32 linear [8x4096]x[4096x4096]^T {linear,7:F2} ms");
        output.WriteLine($"  dequantize + linear              {both,9:F2} ms");
        output.WriteLine($"  ratio dequantize / linear        {dequant / linear,9:F2}x");
    }

    static double Median(int iterations, Func<Tensor> op)
    {
        op().Dispose(); // warm-up
        var times = new double[iterations];
        for (int i = 0; i < iterations; i++)
        {
            var sw = Stopwatch.StartNew();
            op().Dispose();
            times[i] = sw.Elapsed.TotalMilliseconds;
        }
        Array.Sort(times);
        return iterations % 2 == 1 ? times[iterations / 2] : (times[iterations / 2 - 1] + times[iterations / 2]) / 2;
    }
}
