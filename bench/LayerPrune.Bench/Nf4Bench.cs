using System.Diagnostics;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LayerPrune.Healing;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>
/// NF4 quantize and dequantize speed (M weights/s) of the CPU loops against the torch-op reference path, on a
/// TinyLlama MLP weight (5632×2048, bf16 as a checkpoint stores it), with same-run baselines: a plain bf16 → fp32
/// convert and a bf16 copy of the same tensor (memory traffic), and the bf16 linear the dequantized weight feeds.
/// </summary>
public static class Nf4Benchmarks
{
    public static void Run(TextWriter output, int iterations = 15)
    {
        const int rows = 5632, cols = 2048;
        double m = rows * (double)cols / 1e6;
        using var g = new Generator(0);
        using var w32 = randn(rows, cols, generator: g) * 0.02;
        using var w = w32.to(ScalarType.BFloat16);
        using var x = randn(512, cols, generator: g).to(ScalarType.BFloat16);
        using var _ = no_grad();
        using var q = Nf4Weight.Quantize(w);
        using var qd = Nf4Weight.Quantize(w, doubleQuant: true);

        output.WriteLine($"NF4 {rows}x{cols} bf16 ({m:F1} M weights; torch threads {get_num_threads()}, Vector256 " +
            $"{Vector256.IsHardwareAccelerated}, AVX-512BW {Avx512BW.IsSupported}; best of {iterations}: on a shared machine " +
            "the least disturbed run), M weights/s:");
        double copy = Best(iterations, () => w.clone());
        double convert = Best(iterations, () => w.to(ScalarType.Float32));
        Line(output, "baseline: bf16 copy (clone)", m, copy, null);
        Line(output, "baseline: bf16 -> fp32 convert", m, convert, null);
        Line(output, "quantize, reference (torch ops)", m, Best(iterations, () => Dispose(Nf4Weight.QuantizeReference(w))), null);
        double quant = Best(iterations, () => Dispose(Nf4Weight.Quantize(w)));
        Line(output, "quantize, CPU loop", m, quant, convert);
        Line(output, "quantize fp32 input, reference", m, Best(iterations, () => Dispose(Nf4Weight.QuantizeReference(w32))), null);
        Line(output, "quantize fp32 input, CPU loop", m, Best(iterations, () => Dispose(Nf4Weight.Quantize(w32))), convert);
        Line(output, "quantize double quant, CPU loop", m, Best(iterations, () => Dispose(Nf4Weight.Quantize(w, true))), convert);
        foreach (var (name, weight) in new[] { ("", q), (", double quant", qd) })
            foreach (var dtype in new[] { ScalarType.BFloat16, ScalarType.Float32 })
            {
                string d = dtype == ScalarType.BFloat16 ? "bf16" : "fp32";
                Line(output, $"dequantize -> {d}{name}, reference", m, Best(iterations, () => weight.DequantizeReference(dtype)), null);
                Line(output, $"dequantize -> {d}{name}, CPU loop", m, Best(iterations, () => weight.Dequantize(dtype)),
                    dtype == ScalarType.BFloat16 ? copy : convert);
            }
        using var levels = tensor(Nf4Weight.Codebook.ToArray());
        Line(output, "  of which: table level·absmax -> bf16", m,
            Best(iterations, () => (q.Absmax!.unsqueeze(1) * levels).to(ScalarType.BFloat16)), null);
        Line(output, "  of which: double-quant absmax", m, Best(iterations, () => qd.DequantizeAbsmax()), null);
        Line(output, "  of which: double-quant absmax compression", m, Best(iterations, () =>
        {
            var (c, s) = DynamicQuant8.QuantizeBlockwise(q.Absmax! - 0.01f, 256);
            s.Dispose();
            return c;
        }), null);
        double linear = Best(iterations, () => nn.functional.linear(x, w));
        double deq = Best(iterations, () => q.Dequantize(ScalarType.BFloat16));
        double both = Best(iterations, () =>
        {
            using var wq = q.Dequantize(ScalarType.BFloat16);
            return nn.functional.linear(x, wq);
        });
        output.WriteLine($"  bf16 linear [512x{cols}]x[{cols}x{rows}]^T {linear,8:F2} ms; bf16 dequantize / linear = {deq / linear:F3}; " +
            $"dequantize then linear {both:F2} ms (sum of the two alone {deq + linear:F2} ms)");
        foreach (int threads in new[] { 1, 2, 1, 2 })
        {
            CpuLoops.MaxThreads = threads;
            double t = Best(iterations, () =>
            {
                using var wq = q.Dequantize(ScalarType.BFloat16);
                return nn.functional.linear(x, wq);
            });
            output.WriteLine($"  dequantize (loop on {threads} thread{(threads > 1 ? "s" : "")}) then linear {t:F2} ms");
        }
        CpuLoops.MaxThreads = null;
        double viaMatmul = Best(iterations, () => LayerPrune.Modeling.QuantizedMatmul.Apply(x, q));
        using var lora = new LoraAdapter(cols, rows, 8, 16, 0.05, generator: g) { Training = false };
        double adapter = Best(iterations, () => lora.Forward(x));
        output.WriteLine($"  QuantizedMatmul (scratch buffer) {viaMatmul:F2} ms = {viaMatmul / linear:F2} × the plain linear; " +
            $"LoRA r 8 adapter forward {adapter:F2} ms = {adapter / linear:F2} × the plain linear");
    }

    static void Line(TextWriter output, string name, double mWeights, double ms, double? baselineMs)
    {
        string ratio = baselineMs is double b ? $"  ({ms / b:F2} × the baseline's time)" : "";
        output.WriteLine($"  {name,-40} {ms,8:F2} ms {mWeights / (ms / 1000),8:F0} M/s{ratio}");
    }

    static Tensor Dispose(Nf4Weight q)
    {
        q.Dispose();
        return empty(0);
    }

    /// <summary>Least milliseconds of <paramref name="iterations"/> runs after a warm-up.</summary>
    static double Best(int iterations, Func<Tensor> op)
    {
        op().Dispose(); // warm-up
        var times = new double[iterations];
        for (int i = 0; i < iterations; i++)
        {
            var sw = Stopwatch.StartNew();
            op().Dispose();
            times[i] = sw.Elapsed.TotalMilliseconds;
        }
        return times.Min();
    }
}
