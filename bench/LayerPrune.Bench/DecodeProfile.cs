using System.Diagnostics;
using LayerPrune.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>
/// Where one batch-1 decode token's time goes (issue 30, diagnostic): `bench -- decode-profile --model DIR [--dtype bf16]
/// [--threads 2] [--prompt-length 128] [--steps 16]`. Prints wall ms and process CPU ms per token of the whole step and of
/// its parts measured alone (the GEMV kernel on each weight shape, with GB/s; one layer; the head), all in one run.
/// </summary>
public static class DecodeProfile
{
    public static void Run(TextWriter o, string modelDir, string[] args)
    {
        var (_, dtype) = ComputeTarget.Resolve("cpu", Arg(args, "--dtype") ?? "bf16");
        int threads = int.Parse(Arg(args, "--threads") ?? "2"), promptLength = int.Parse(Arg(args, "--prompt-length") ?? "128");
        int steps = int.Parse(Arg(args, "--steps") ?? "16");
        set_num_threads(threads);
        if (args.Contains("--gemm")) { Gemm(o, int.Parse(Arg(args, "--prompt-length") ?? "128")); return; }
        using var m = CausalLM.Load(modelDir, CPU, dtype);
        var c = m.Config;
        using var _ = no_grad();
        foreach (var (_, t) in m.NamedTensors()) t.sum().Dispose();
        var rnd = new Random(1);
        long[] prompt = Enumerable.Range(0, promptLength).Select(_ => (long)rnd.Next(c.VocabSize)).ToArray();
        // --skip-attention 1,3,5: those layers' attention sublayers are skipped in memory (issue 30: a model with attention
        // sublayers removed decoded slower than the full one).
        var skipped = Arg(args, "--skip-attention")?.Split(',').Select(int.Parse).ToArray();
        var fo = new ForwardOptions { LastPositionOnly = true, Skip = skipped is null ? null : new SublayerMask(skipped, []) };
        long Step(long[] ids, KvCache cache)
        {
            using var scope = NewDisposeScope();
            var input = tensor(ids, [1, ids.Length]);
            return m.Forward(input, cache: cache, options: fo)[0, -1].to(ScalarType.Float32).argmax().item<long>();
        }
        (double Wall, double Cpu) Time(Action a, int n)
        {
            a();
            var p = Process.GetCurrentProcess();
            p.Refresh();
            double cpu0 = p.TotalProcessorTime.TotalMilliseconds;
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < n; i++) a();
            double wall = sw.Elapsed.TotalMilliseconds / n;
            p.Refresh();
            return (wall, (p.TotalProcessorTime.TotalMilliseconds - cpu0) / n);
        }
        string F((double Wall, double Cpu) t) => $"{t.Wall,8:F2} ms wall {t.Cpu,8:F2} ms CPU";
        o.WriteLine($"decode-profile {ComputeTarget.Name(dtype)}, {threads} threads, Gemv vector bits {Gemv.VectorBits}, "
            + $"load {File.ReadAllText("/proc/loadavg").Trim()}");
        foreach (bool gemv in new[] { true, false })
        {
            Gemv.Disabled = !gemv;
            var sw = Stopwatch.StartNew();
            using var cache = new KvCache(c.NumLayers);
            long next = Step(prompt, cache);
            double prefill = sw.Elapsed.TotalMilliseconds;
            var t = Time(() => next = Step([next], cache), steps);
            string skip = skipped is null ? "" : $", attention of layers {string.Join(",", skipped)} skipped";
            o.WriteLine($"  gemv {(gemv ? "on " : "off")}{skip}: prefill {promptLength} tokens {prefill:F0} ms; decode step {F(t)}");
        }
        Gemv.Disabled = false;
        if (skipped is not null || args.Contains("--steps-only")) return;
        using (var cache = new KvCache(c.NumLayers))
        {
            long next = Step(prompt, cache);
            using var x = randn(1, 1, c.HiddenSize).to(dtype);
            var layer = m.Layer(0);
            using var single = new KvCache(1);
            using (var scope = NewDisposeScope()) { var pk = randn(1, 1, promptLength, c.HiddenSize).to(dtype); }
            using var att = m.PrepareAttention(1, 1, promptLength, null);
            // One layer at T = 1 without a cache (attention over itself) and the head.
            var noCache = Time(() => layer.Forward(x, att, null, 0).Dispose(), 50);
            o.WriteLine($"  one layer, T=1, no cache:      {F(noCache)}  (× {c.NumLayers})");
            o.WriteLine($"  head (norm + lm_head):          {F(Time(() => m.Head(x).Dispose(), 20))}");
            // The same layer with a cache of promptLength positions (it grows by one per call).
            using var one = new KvCache(1);
            using (var xs = randn(1, promptLength, c.HiddenSize).to(dtype)) using (var a0 = m.PrepareAttention(1, promptLength, 0, null))
                layer.Forward(xs, a0, one, 0).Dispose();
            var cached = Time(() =>
            {
                using var a1 = m.PrepareAttention(1, 1, one.Length, null);
                layer.Forward(x, a1, one, 0).Dispose();
                one.Advance(one.Length + 1);
            }, 20);
            o.WriteLine($"  one layer, T=1, cache {promptLength}:     {F(cached)}");
            using var q = randn(1, c.NumHeads, 1, c.HeadDim).to(dtype);
            using var kk = randn(1, c.NumHeads, promptLength, c.HeadDim).to(dtype);
            var sdpa = Time(() => nn.functional.scaled_dot_product_attention(q, kk, kk).Dispose(), 50);
            o.WriteLine($"  sdpa T=1 S={promptLength}:             {F(sdpa)}");
            using var k4 = randn(1, c.NumKvHeads, promptLength, c.HeadDim).to(dtype);
            var repeat = Time(() => k4.repeat_interleave(c.NumHeads / c.NumKvHeads, dim: 1).Dispose(), 50);
            o.WriteLine($"  repeat_interleave k:           {F(repeat)}");
            o.WriteLine($"  prepare attention:             {F(Time(() => m.PrepareAttention(1, 1, promptLength, null).Dispose(), 50))}");
        }
        foreach (var (name, lin) in m.Layer(0).Linears().Append(("lm_head", m.LmHead)))
        {
            var w = lin.Weight!;
            using var xin = randn(1, 1, w.shape[1]).to(dtype);
            double gb = w.NumberOfElements * w.ElementSize / 1e9;
            foreach (int th in new[] { 1, threads }.Distinct())
            {
                var k = Time(() => Gemv.Fused(xin, [(w, null)], threads: th)[0].Dispose(), 20);
                o.WriteLine($"  gemv {name,-18} [{w.shape[0]}x{w.shape[1]}] t={th}: {F(k)} {gb / (k.Wall / 1000):F1} GB/s");
            }
            var tl = Time(() => nn.functional.linear(xin, w).Dispose(), 20);
            o.WriteLine($"  torch {name,-17} [{w.shape[0]}x{w.shape[1]}]    : {F(tl)} {gb / (tl.Wall / 1000):F1} GB/s");
        }
    }

    /// <summary>fp32 and bf16 GEMMs of a prefill's shapes (TinyLlama: [T, 2048] × [5632, 2048]ᵀ), GFLOP/s per CPU-second.</summary>
    static void Gemm(TextWriter o, int T)
    {
        using var _ = no_grad();
        foreach (var (n, k) in new[] { (5632L, 2048L), (2048L, 5632L), (2048L, 2048L) })
        foreach (var dt in new[] { ScalarType.Float32 })
        {
            using var x = randn(T, k).to(dt);
            using var w = randn(n, k).to(dt);
            using var wt = w.t().contiguous();
            double flop = 2.0 * T * n * k;
            foreach (var (name, f) in new (string, Action)[] {
                ("linear(x, W)", () => nn.functional.linear(x, w).Dispose()),
                ("mm(x, Wt contiguous)", () => x.mm(wt).Dispose()),
                ("mm(W, xT)", () => w.mm(x.t()).Dispose()),
                ("Sgemm (C#)", () => { if (dt == ScalarType.Float32) Sgemm.Forward(x, w, null).Dispose(); }) })
            {
                f();
                var p = Process.GetCurrentProcess();
                p.Refresh();
                double cpu0 = p.TotalProcessorTime.TotalSeconds;
                var sw = Stopwatch.StartNew();
                int reps = 5;
                for (int i = 0; i < reps; i++) f();
                double wall = sw.Elapsed.TotalSeconds / reps;
                p.Refresh();
                double cpu = (p.TotalProcessorTime.TotalSeconds - cpu0) / reps;
                o.WriteLine($"  {dt,-9} [{T}x{k}]x[{n}x{k}]T {name,-22}: {flop / wall / 1e9,7:F1} GFLOP/s wall "
                    + $"{flop / cpu / 1e9,7:F1} per CPU-s");
            }
        }
    }

    static string? Arg(string[] args, string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
}
