using System.Diagnostics;
using LayerPrune.Healing;
using LayerPrune.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>
/// Where a QLoRA training step's time goes, one decoder layer of a real-shape model (diagnostic, bare times):
/// <c>heal-profile --model DIR [--dtype bf16] [--batch 4] [--seq-len 128]</c>.
/// </summary>
public static class HealProfile
{
    public static void Run(TextWriter o, string dir, string[] args)
    {
        string Arg(string name, string fallback) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? fallback;
        var (device, dtype) = ComputeTarget.Resolve("cpu", Arg("--dtype", "auto"));
        int B = int.Parse(Arg("--batch", "4")), T = int.Parse(Arg("--seq-len", "128"));
        using var model = CausalLM.Load(dir, device, dtype);
        foreach (var (_, t) in model.NamedTensors()) t.requires_grad_(false);
        var adapters = LoraInjector.Inject(model.NamedLinears(), new LoraSettings(LoraSettings.AllLinear, 8, 16, 0.05), 0,
            BaseQuantization.Nf4);
        using var gen = new Generator(1);
        foreach (var (_, a) in adapters) a.DropoutGenerator = gen;
        var c = model.Config;
        var layer = model.Layer(0);
        using var att = model.PrepareAttention(B, T, 0, null);
        using var x0 = (randn(B, T, c.HiddenSize) * 0.5).to(dtype);
        using var gy = (randn(B, T, c.HiddenSize) * 1e-3).to(dtype);
        void SetTraining(bool on) { foreach (var (_, a) in adapters) a.Training = on; }
        double NoGrad() => Time(() => { using var _ = no_grad(); layer.Forward(x0, att, null, 0).Dispose(); });
        double FwdBwd(bool backward) => Time(() =>
        {
            using var scope = NewDisposeScope();
            var x = x0.detach().requires_grad_(true);
            var y = layer.Forward(x, att, null, 0);
            if (backward) y.backward([gy]);
        });
        o.WriteLine($"heal-profile layer 0, {ComputeTarget.Name(dtype)} {B}×{T}, CPU flags {Planning.CpuFeatures.Summary} (ms, median of 5)");
        SetTraining(true);
        o.WriteLine($"  lora train (dropout):  no-grad fwd {NoGrad():F1}, grad fwd {FwdBwd(false):F1}, fwd+bwd {FwdBwd(true):F1}");
        SetTraining(false);
        o.WriteLine($"  lora eval (no dropout): no-grad fwd {NoGrad():F1}, grad fwd {FwdBwd(false):F1}, fwd+bwd {FwdBwd(true):F1}");
        var saved = layer.Linears().Select(l => (l.linear, l.linear.Adapter)).ToList();
        foreach (var (l, _) in saved) l.Adapter = null;
        o.WriteLine($"  no adapters:            no-grad fwd {NoGrad():F1}, grad fwd {FwdBwd(false):F1}, fwd+bwd {FwdBwd(true):F1}");
        foreach (var (l, a) in saved) l.Adapter = a;
        SetTraining(true);
        o.WriteLine($"  lora train again:       no-grad fwd {NoGrad():F1}, grad fwd {FwdBwd(false):F1}, fwd+bwd {FwdBwd(true):F1}");
        var ckpt = new GradientCheckpointing { PreservedGenerators = [gen] };
        double Checkpointed(bool backward) => Time(() =>
        {
            using var scope = NewDisposeScope();
            var x = x0.detach().requires_grad_(true);
            var y = LayerCheckpoint.Apply(layer, x, att, ckpt);
            if (backward) y.backward([gy]);
        });
        o.WriteLine($"  lora train, checkpointed: forward {Checkpointed(false):F1}, fwd+bwd {Checkpointed(true):F1}");

        // Memory one layer's training graph holds (no checkpointing): RSS growth per kept graph, of 3.
        double GraphMb(Func<Tensor, Tensor> f, Tensor input)
        {
            Efficiency.ProcessMemory.Settle();
            long before = Efficiency.ProcessMemory.Read()!.Rss;
            var kept = new List<Tensor>();
            for (int i = 0; i < 3; i++)
            {
                var xi = input.detach().requires_grad_(true);
                kept.Add(f(xi).DetachFromDisposeScope());
            }
            Efficiency.ProcessMemory.Settle();
            long after = Efficiency.ProcessMemory.Read()!.Rss;
            foreach (var k in kept) k.Dispose();
            Efficiency.ProcessMemory.Settle();
            return (after - before) / 3.0 / 1e6;
        }
        Efficiency.ProcessMemory.ReturnFreedMemoryPromptly();
        double perTokenKb(double mb) => mb * 1e3 / (B * T);
        double whole = GraphMb(t => layer.Forward(t, att, null, 0), x0);
        o.WriteLine($"  graph memory per layer, lora train: {whole:F1} MB = {perTokenKb(whole):F0} KB/token");
        foreach (var (l, _) in saved) l.Adapter = null;
        double bare = GraphMb(t => layer.Forward(t, att, null, 0), x0);
        foreach (var (l, a) in saved) l.Adapter = a;
        o.WriteLine($"  graph memory per layer, no adapters: {bare:F1} MB = {perTokenKb(bare):F0} KB/token");
        double oneAdapter = GraphMb(t => saved[0].Adapter!.Forward(t), x0);
        o.WriteLine($"  graph memory of q_proj's adapter: {oneAdapter:F1} MB = {perTokenKb(oneAdapter):F0} KB/token");
        double oneNf4 = GraphMb(t => saved[0].linear.Forward(t), x0);
        o.WriteLine($"  graph memory of q_proj (NF4 + adapter): {oneNf4:F1} MB = {perTokenKb(oneNf4):F0} KB/token");

        using var idsAll = randint(0, c.VocabSize, [B, T], dtype: ScalarType.Int64);
        var seqs = Enumerable.Range(0, B).Select(b => idsAll[b].data<long>().Select(v => (int)v).ToArray()).ToList();
        foreach (bool ck in new[] { false, true })
        {
            model.GradientCheckpointing = ck ? ckpt : null;
            Efficiency.ProcessMemory.Settle();
            long m0 = Efficiency.ProcessMemory.Read()!.Rss;
            var lossGraph = Evaluation.LossEvaluator.MeanLoss(model, seqs);
            Efficiency.ProcessMemory.Settle();
            long m1 = Efficiency.ProcessMemory.Read()!.Rss;
            Efficiency.ProcessMemory.ResetPeak();
            lossGraph.backward();
            long peak = Efficiency.ProcessMemory.Read()!.Peak;
            lossGraph.Dispose();
            o.WriteLine($"  whole model loss graph, checkpointing {ck}: {(m1 - m0) / 1e6:F0} MB kept after forward " +
                $"({(m1 - m0) / 1e3 / (B * T) / c.NumLayers:F0} KB/token/layer); backward peak {(peak - m0) / 1e6:F0} MB above the start");
        }
        model.GradientCheckpointing = null;

        // Parts: one adapter (q_proj shape), the NF4 matmul, SDPA, RMSNorm; each no-grad / fwd+bwd.
        var q = saved[0].Adapter!;
        using var xin = x0.detach();
        double Part(Func<Tensor, Tensor> f, Tensor input, bool grad) => Time(() =>
        {
            using var scope = NewDisposeScope();
            if (!grad) { using var _ = no_grad(); f(input); return; }
            var xi = input.detach().requires_grad_(true);
            var y = f(xi);
            y.backward([ones_like(y)]);
        });
        o.WriteLine($"  one adapter (q_proj): no-grad {Part(q.Forward, xin, false):F2}, fwd+bwd {Part(q.Forward, xin, true):F2}");
        var down = saved.First(s => s.linear.InFeatures == c.IntermediateSize);
        var ql = saved[0].linear;
        var nf4 = ql.Quantized!;
        o.WriteLine($"  q_proj NF4 matmul: no-grad {Part(t => QuantizedMatmul.Apply(t, nf4), xin, false):F2}, " +
            $"fwd+bwd {Part(t => QuantizedMatmul.Apply(t, nf4), xin, true):F2}");
        using var wq = nf4.Dequantize(dtype);
        var dn = (Nf4Weight)down.linear.Quantized!;
        using var into = empty(dn.Shape, dtype);
        o.WriteLine($"  dequantize down_proj: fresh tensor {Time(() => dn.Dequantize(dtype).Dispose()):F2}, into a kept buffer {Time(() => dn.DequantizeInto(into)):F2}");
        o.WriteLine($"  q_proj plain matmul: no-grad {Part(t => nn.functional.linear(t, wq), xin, false):F2}, fwd+bwd(dx) {Part(t => nn.functional.linear(t, wq), xin, true):F2}");
        using var xi2 = (randn(B, T, c.IntermediateSize) * 0.5).to(dtype);
        o.WriteLine($"  down_proj NF4 matmul: no-grad {Part(t => QuantizedMatmul.Apply(t, down.linear.Quantized!), xi2, false):F2}, " +
            $"fwd+bwd {Part(t => QuantizedMatmul.Apply(t, down.linear.Quantized!), xi2, true):F2}; its adapter no-grad " +
            $"{Part(down.Adapter!.Forward, xi2, false):F2}, fwd+bwd {Part(down.Adapter!.Forward, xi2, true):F2}");
        using var qh = randn(B, c.NumHeads, T, c.HeadDim).to(dtype);
        o.WriteLine($"  sdpa causal: no-grad {Part(t => nn.functional.scaled_dot_product_attention(t, qh, qh, is_casual: true), qh, false):F2}, " +
            $"fwd+bwd {Part(t => nn.functional.scaled_dot_product_attention(t, qh, qh, is_casual: true), qh, true):F2}");
        using var causal = ones(T, T, dtype: ScalarType.Bool).tril().logical_not();
        double scale = 1 / Math.Sqrt(c.HeadDim);
        Tensor Eager(Tensor t)
        {
            var scores = t.matmul(qh.transpose(-1, -2)).mul_(scale).masked_fill_(causal, -1e4);
            return nn.functional.softmax(scores, -1, ScalarType.Float32).to(dtype).matmul(qh);
        }
        o.WriteLine($"  eager attention (fp32 softmax): no-grad {Part(Eager, qh, false):F2}, fwd+bwd {Part(Eager, qh, true):F2}");
        using var q32 = qh.to(ScalarType.Float32);
        o.WriteLine($"  sdpa causal fp32: no-grad {Part(t => nn.functional.scaled_dot_product_attention(t, q32, q32, is_casual: true), q32, false):F2}, " +
            $"fwd+bwd {Part(t => nn.functional.scaled_dot_product_attention(t, q32, q32, is_casual: true), q32, true):F2}");
        using var kvh = randn(B, c.NumKvHeads, T, c.HeadDim).to(dtype);
        o.WriteLine($"  repeat_interleave kv: fwd+bwd {Part(t => t.repeat_interleave(c.NumHeads / c.NumKvHeads, dim: 1), kvh, true):F2}");
        using var w1 = ones(c.HiddenSize).to(dtype);
        Tensor Rms(Tensor t) { var h = t.to(ScalarType.Float32); return w1 * (h * rsqrt(h.pow(2).mean([-1], keepdim: true) + 1e-5)).to(dtype); }
        o.WriteLine($"  rmsnorm: no-grad {Part(Rms, xin, false):F2}, fwd+bwd {Part(Rms, xin, true):F2}");
        o.WriteLine($"  rope(q): fwd+bwd {Part(t => att.Rope.Apply(t, att.Cos, att.SinSigned), qh, true):F2}");
        using var g = randn(B, T, c.IntermediateSize).to(dtype);
        o.WriteLine($"  silu·up: fwd+bwd {Part(t => nn.functional.silu(t) * t, g, true):F2}");
        using var f32 = randn(B, T, c.HiddenSize);
        o.WriteLine($"  bernoulli [B,T,H] fp32 gen: {Time(() => empty_like(f32).bernoulli_(0.95, gen).Dispose()):F2}, " +
            $"bool: {Time(() => empty(f32.shape, ScalarType.Bool).bernoulli_(0.95, gen).Dispose()):F2}, " +
            $"global dropout: {Time(() => nn.functional.dropout(f32, 0.05, true).Dispose()):F2}, to fp32 {Time(() => xin.to(ScalarType.Float32).Dispose()):F2}");
    }

    static double Time(Action a)
    {
        a();
        var t = new List<double>();
        for (int i = 0; i < 5; i++) { var sw = Stopwatch.StartNew(); a(); t.Add(sw.Elapsed.TotalMilliseconds); }
        t.Sort();
        return t[2];
    }
}
