using LayerPrune.Modeling;
using Xunit;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Modeling;

/// <summary>
/// The batch-1 decode layer (<see cref="DecodeLayer"/>) against the torch-op layer it replaces and against a float64 run of
/// the same model: a prompt, then decode steps with the KV cache, on the embedded kjv model (bf16 checkpoint; 8 heads over
/// 4 kv heads, head_dim 32) and the golden Qwen2 fixture (q/k/v biases, 4 heads over 2 kv heads, head_dim 16), in fp32
/// and bf16, on 1 and 2 threads with every GEMV and the attention split, and with attention sublayers skipped.
/// </summary>
public sealed class DecodeLayerTests
{
    static string Kjv => Path.Combine(TestPaths.Samples, "kjv-llama-16l");
    static string Qwen2 => Path.Combine(TestPaths.Fixtures, "golden", "qwen2");

    /// <summary>Logits [steps + 1, V] (fp64) of the prompt's last position and of each decode step fed the fixed ids.</summary>
    static Tensor Run(CausalLM model, long[] prompt, long[] steps, bool torchOps, (int, long)? split = null,
        SublayerMask? skip = null)
    {
        DecodeLayer.TorchOpsOnThisThread = torchOps;
        DecodeLayer.Split = split;
        try
        {
            using var _ = no_grad();
            using var cache = new KvCache(model.NumLayers);
            long taken = DecodeLayer.TakenOnThisThread;
            var o = new ForwardOptions { LastPositionOnly = true, Skip = skip };
            var rows = new List<Tensor>();
            foreach (var ids in new[] { prompt }.Concat(steps.Select(s => new[] { s })))
            {
                using var input = tensor(ids, [1, ids.Length]);
                using var logits = model.Forward(input, cache: cache, options: o);
                rows.Add(logits[0, -1].to(ScalarType.Float64));
            }
            Assert.Equal(prompt.Length + steps.Length, cache.Length);
            // The decode steps (not the prompt) of every layer take the decode layer unless the torch ops are asked for.
            bool kernels = model.Dtype is ScalarType.Float32 or ScalarType.BFloat16 && !torchOps;
            Assert.Equal(kernels ? steps.Length * model.NumLayers : 0, DecodeLayer.TakenOnThisThread - taken);
            return stack(rows);
        }
        finally
        {
            DecodeLayer.TorchOpsOnThisThread = false;
            DecodeLayer.Split = null;
        }
    }

    static double MaxAbs(Tensor a, Tensor b) => (a - b).abs().max().item<double>();

    static (long[] Prompt, long[] Steps) Ids(CausalLM m, int seed)
    {
        var r = new Random(seed);
        return (Enumerable.Range(0, 9).Select(_ => (long)r.Next(m.Config.VocabSize)).ToArray(),
                Enumerable.Range(0, 6).Select(_ => (long)r.Next(m.Config.VocabSize)).ToArray());
    }

    [Theory]
    [InlineData("kjv")]
    [InlineData("qwen2")]
    public void MatchesTorchOpsAndIsAsCloseToFloat64(string which)
    {
        string dir = which == "kjv" ? Kjv : Qwen2;
        Tensor exact;
        long[] prompt, steps;
        using (var m64 = CausalLM.Load(dir, CPU, ScalarType.Float64))
        {
            (prompt, steps) = Ids(m64, 5);
            exact = Run(m64, prompt, steps, torchOps: true);   // fp64: every op is torch's (the kernels decline fp64)
        }
        double scale = exact.abs().max().item<double>();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            using var m = CausalLM.Load(dir, CPU, dtype);
            var reference = Run(m, prompt, steps, torchOps: true);
            var fast = Run(m, prompt, steps, torchOps: false);
            double refErr = MaxAbs(reference, exact), fastErr = MaxAbs(fast, exact), diff = MaxAbs(fast, reference);
            string what = $"{which} {dtype}: torch ops {refErr:G3}, decode layer {fastErr:G3} from fp64, apart {diff:G3} "
                + $"(logits up to {scale:G3})";
            // fp32: both are fp32 sums of the same products in other orders, ~1e-6 relative apart. bf16: the same roundings
            // to bf16 after every op; a sum landing on the other side of a rounding boundary moves a value by one bf16 ulp
            // (2^-8 relative), which the following layers carry, so the two paths may differ like any two bf16 runs: the
            // decode layer must stay as close to fp64 as the torch ops are (within 1.5x), and within 5 % of the logit range.
            if (dtype == ScalarType.Float32) Assert.True(diff <= 1e-5 * scale + 1e-6, what);
            else Assert.True(fastErr <= 1.5 * refErr + 1e-3 * scale && diff <= 0.05 * scale, what);
            // Threads split rows and heads only: one and two threads give the same bits, with every loop split.
            var one = Run(m, prompt, steps, torchOps: false, split: (1, 0));
            var two = Run(m, prompt, steps, torchOps: false, split: (2, 0));
            Assert.True(one.equal(two).all().item<bool>(), what + ": 1 and 2 threads differ");
        }
    }

    [Fact]
    public void SkippedAttentionSublayersMatchTorchOps()
    {
        using var m = CausalLM.Load(Kjv, CPU, ScalarType.Float32);
        var (prompt, steps) = Ids(m, 11);
        var skip = new SublayerMask([1, 2, 7], [4]);
        var reference = Run(m, prompt, steps, torchOps: true, skip: skip);
        var fast = Run(m, prompt, steps, torchOps: false, skip: skip);
        double scale = reference.abs().max().item<double>();
        Assert.True(MaxAbs(fast, reference) <= 1e-5 * scale + 1e-6, $"apart {MaxAbs(fast, reference):G3}");
        // And the mask is really applied: the unmasked model gives other logits.
        var full = Run(m, prompt, steps, torchOps: false);
        Assert.True(MaxAbs(full, reference) > 1e-2 * scale);
    }

    [Fact]
    public void KvCacheGrowsInPlaceAndReportsFilledBytes()
    {
        using var _ = no_grad();
        using var cache = new KvCache(1);
        var k = randn(1, 2, 3, 4);
        var v = randn(1, 2, 3, 4);
        var (k1, v1) = cache.Append(0, k, v);
        Assert.Equal(new long[] { 1, 2, 3, 4 }, k1.shape);
        Assert.Equal(2 * 2 * 3 * 4 * 4, cache.Bytes);
        var k2s = randn(1, 2, 1, 4);
        var (k2, v2) = cache.Append(0, k2s, randn(1, 2, 1, 4));
        Assert.Equal(4, k2.shape[2]);
        Assert.True(k2.narrow(2, 0, 3).equal(k).all().item<bool>() && k2.narrow(2, 3, 1).equal(k2s).all().item<bool>());
        Assert.True(v2.narrow(2, 0, 3).equal(v).all().item<bool>());
        Assert.Equal(2 * 2 * 4 * 4 * 4, cache.Bytes);   // the spare capacity is not counted
        using var selected = cache.Select(tensor(new long[] { 0, 0 }));
        Assert.Equal(4, selected.Length);
    }
}
