using System.Text.Json.Nodes;
using LayerPrune.Healing;
using LayerPrune.Modeling;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Healing;

public sealed class LoraTests
{
    static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var d = (a - b).abs().max();
        return d.ToDouble();
    }

    [Fact]
    public void FreshAdapter_AddsExactlyZero()
    {
        using var g = new Generator(5);
        using var adapter = new LoraAdapter(32, 24, r: 4, alpha: 8, dropout: 0.1, generator: g);
        using var x = randn(3, 7, 32, generator: g);
        using var delta = adapter.Forward(x);
        Assert.Equal(new long[] { 3, 7, 24 }, delta.shape);
        Assert.Equal(0.0, delta.abs().max().ToDouble());

        using var w = randn(24, 32, generator: g);
        using var bias = randn(24, generator: g);
        var linear = new Linear(w.clone(), bias.clone());
        using var plain = linear.Forward(x);
        linear.Adapter = new LoraAdapter(32, 24, r: 4, alpha: 8, generator: g);
        using var withAdapter = linear.Forward(x);
        Assert.True(HealingTestUtil.Same(plain, withAdapter));
        linear.Dispose();
    }

    [Fact]
    public void Scaling_AlphaOverR_OrSqrtR()
    {
        using var a = new LoraAdapter(8, 8, r: 8, alpha: 16);
        Assert.Equal(2.0, a.Scaling);
        using var rs = new LoraAdapter(8, 8, r: 8, alpha: 16, useRsLora: true);
        Assert.Equal(16 / Math.Sqrt(8), rs.Scaling, 1e-15);
    }

    [Fact]
    public void KaimingUniform_BoundsAndSeed()
    {
        // kaiming_uniform_(a=√5): gain = sqrt(2/6), bound = sqrt(3)·gain/sqrt(fan_in) = 1/sqrt(fan_in) = 1/16 for 256.
        Assert.Equal(1.0 / 16, LoraAdapter.KaimingUniformBound(256), 1e-15);
        using var g1 = new Generator(42);
        using var a1 = new LoraAdapter(256, 64, r: 16, alpha: 32, generator: g1);
        var v = a1.A.detach().data<float>().ToArray();
        Assert.Equal(16 * 256, v.Length);
        Assert.All(v, x => Assert.InRange(x, -1.0 / 16, 1.0 / 16));
        // 4096 uniform draws: the extremes get close to the bound and the variance is bound²/3.
        Assert.True(v.Max() > 0.98 / 16 && v.Min() < -0.98 / 16);
        double mean = v.Average(x => (double)x), var_ = v.Average(x => (double)x * x) - mean * mean;
        Assert.InRange(var_, 0.95 / (3 * 256), 1.05 / (3 * 256));
        Assert.Equal(0.0, a1.B.detach().abs().max().ToDouble());
        Assert.True(a1.A.requires_grad && a1.B.requires_grad);
        using var g2 = new Generator(42);
        using var a2 = new LoraAdapter(256, 64, r: 16, alpha: 32, generator: g2);
        Assert.True(HealingTestUtil.Same(a1.A.detach(), a2.A.detach()));
        using var g3 = new Generator(43);
        using var a3 = new LoraAdapter(256, 64, r: 16, alpha: 32, generator: g3);
        Assert.False(HealingTestUtil.Same(a1.A.detach(), a3.A.detach()));
    }

    [Fact]
    public void Gradients_MatchFiniteDifferences_Float64()
    {
        using var g = new Generator(11);
        const int inF = 6, outF = 5, r = 3;
        var adapter = new LoraAdapter(randn(r, inF, dtype: ScalarType.Float64, generator: g),
            randn(outF, r, dtype: ScalarType.Float64, generator: g), alpha: 6, dropout: 0.0);
        using var x = randn(4, inF, dtype: ScalarType.Float64, generator: g);
        using var probe = randn(4, outF, dtype: ScalarType.Float64, generator: g);
        double Loss()
        {
            using var _ = no_grad();
            using var y = adapter.Forward(x);
            return (y * probe).sum().ToDouble();
        }
        using (var y = adapter.Forward(x))
        using (var loss = (y * probe).sum())
            loss.backward();
        foreach (var p in new[] { adapter.A, adapter.B })
        {
            var grad = p.grad!.data<double>().ToArray();
            long n = p.NumberOfElements;
            const double eps = 1e-6;
            for (long i = 0; i < n; i++)
            {
                double orig;
                using (no_grad())
                {
                    using var flat = p.view(-1);
                    orig = flat[i].ToDouble();
                    flat[i].fill_(orig + eps);
                    double lp = Loss();
                    flat[i].fill_(orig - eps);
                    double lm = Loss();
                    flat[i].fill_(orig);
                    double fd = (lp - lm) / (2 * eps);
                    Assert.True(Math.Abs(fd - grad[i]) < 1e-6, $"element {i}: autograd {grad[i]} vs finite difference {fd}");
                }
            }
        }
        adapter.Dispose();
    }

    [Fact]
    public void Merge_EqualsAdapterForward()
    {
        using var g = new Generator(21);
        using var w = randn(48, 40, generator: g) * 0.1;
        using var bias = randn(48, generator: g);
        var linear = new Linear(w.clone(), bias.clone());
        var adapter = new LoraAdapter(randn(8, 40, generator: g) * 0.1, randn(48, 8, generator: g) * 0.1, alpha: 16);
        linear.Adapter = adapter;
        using var x = randn(5, 40, generator: g);
        using var y = linear.Forward(x);
        using var merged = adapter.MergeInto(w);
        Assert.Equal(ScalarType.Float32, merged.dtype);
        using var yMerged = nn.functional.linear(x, merged, bias);
        Assert.True(MaxAbsDiff(y, yMerged) < 1e-5, $"max diff {MaxAbsDiff(y, yMerged)}");
        // The delta is not negligible: without it the outputs differ.
        using var yBase = nn.functional.linear(x, w, bias);
        Assert.True(MaxAbsDiff(y, yBase) > 0.1);
        // Merge keeps the weight's dtype.
        using var wb = w.to(ScalarType.BFloat16);
        using var mb = adapter.MergeInto(wb);
        Assert.Equal(ScalarType.BFloat16, mb.dtype);
        linear.Dispose();
    }

    [Fact]
    public void Dropout_OnlyWhileTraining()
    {
        using var g = new Generator(8);
        var adapter = new LoraAdapter(randn(4, 16, generator: g), randn(8, 4, generator: g), alpha: 4, dropout: 0.5);
        using var x = randn(64, 16, generator: g);
        adapter.Training = false;
        using var e1 = adapter.Forward(x);
        using var e2 = adapter.Forward(x);
        Assert.True(HealingTestUtil.Same(e1, e2));
        using var expected = nn.functional.linear(nn.functional.linear(x, adapter.A), adapter.B);
        Assert.True(MaxAbsDiff(e1, expected) < 1e-5);
        adapter.Training = true;
        using var t1 = adapter.Forward(x);
        Assert.True(MaxAbsDiff(t1, e1) > 1e-3);
        adapter.Dispose();
    }

    [Fact]
    public void PeftKeyNames()
    {
        Assert.Equal("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight",
            PeftAdapterFiles.KeyA("model.layers.3.self_attn.q_proj"));
        Assert.Equal("base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight",
            PeftAdapterFiles.KeyB("model.layers.3.self_attn.q_proj"));
    }

    static List<(string, Linear)> TinyModel(int seed, int layers = 2, int hidden = 16, int inter = 24)
    {
        using var g = new Generator((ulong)seed);
        var list = new List<(string, Linear)>();
        for (int l = 0; l < layers; l++)
        {
            string p = $"model.layers.{l}.";
            foreach (var (n, o, i) in new[] { ("self_attn.q_proj", hidden, hidden), ("self_attn.k_proj", 8, hidden),
                         ("self_attn.v_proj", 8, hidden), ("self_attn.o_proj", hidden, hidden), ("mlp.gate_proj", inter, hidden),
                         ("mlp.up_proj", inter, hidden), ("mlp.down_proj", hidden, inter) })
                list.Add((p + n, new Linear(randn(o, i, generator: g), null)));
        }
        list.Add(("lm_head", new Linear(randn(40, hidden, generator: g), null)));
        return list;
    }

    [Fact]
    public void Injector_FreezesQuantizesAndTargets()
    {
        var model = TinyModel(1);
        using var original = model[0].Item2.Weight!.clone();
        var settings = new LoraSettings(["q_proj", "v_proj"], R: 4, Alpha: 8, Dropout: 0.0);
        var adapters = LoraInjector.Inject(model, settings, seed: 3, quantize: BaseQuantization.Nf4);
        Assert.Equal(new[] { "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
            "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj" }, adapters.Select(a => a.Name));
        foreach (var (name, linear) in model)
        {
            bool targeted = name.EndsWith("q_proj") || name.EndsWith("v_proj");
            Assert.Equal(targeted, linear.Adapter is not null);
            if (name == "lm_head")
            {
                Assert.NotNull(linear.Weight);
                Assert.False(linear.Weight!.requires_grad);
            }
            else
            {
                Assert.Null(linear.Weight);
                Assert.IsType<Nf4Weight>(linear.Quantized);
            }
        }
        Assert.Equal((16L, 16L), (model[0].Item2.OutFeatures, model[0].Item2.InFeatures));
        // Fresh adapters: the layer computes exactly the dequantized base.
        using var x = randn(2, 16);
        using var y = model[0].Item2.Forward(x);
        using var wq = model[0].Item2.Quantized!.Dequantize(ScalarType.Float32);
        using var yq = nn.functional.linear(x, wq);
        Assert.True(HealingTestUtil.Same(y, yq));
        Assert.True(MaxAbsDiff(wq, original) > 0); // it really is quantized
        // Same seed → same A.
        var again = LoraInjector.Inject(TinyModel(1), settings, seed: 3, quantize: BaseQuantization.None);
        Assert.True(HealingTestUtil.Same(adapters[2].Adapter.A.detach(), again[2].Adapter.A.detach()));
        foreach (var (_, l) in model) l.Dispose();
        foreach (var (_, a) in again) a.Dispose();
    }

    [Fact]
    public void PeftFiles_RoundTrip()
    {
        var model = TinyModel(2);
        var settings = new LoraSettings(LoraSettings.AllLinear, R: 4, Alpha: 16, Dropout: 0.05, UseRsLora: true);
        var adapters = LoraInjector.Inject(model, settings, seed: 9, quantize: BaseQuantization.None);
        Assert.Equal(14, adapters.Count); // 7 projections × 2 layers; lm_head is not targeted
        using var g = new Generator(4);
        foreach (var (_, a) in adapters)
            using (no_grad()) a.B.copy_(randn(a.B.shape, generator: g));
        var tensors = PeftAdapterFiles.ToTensors(adapters);
        Assert.Equal(28, tensors.Count);
        Assert.Equal(new long[] { 4, 16 }, tensors["base_model.model.model.layers.1.mlp.up_proj.lora_A.weight"].shape);
        Assert.Equal(new long[] { 16, 4 }, tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].shape);

        var config = PeftAdapterFiles.Config(settings, "kjv-llama-16l");
        var json = JsonNode.Parse(config.ToJsonString())!.AsObject(); // through text, as written to disk
        Assert.Equal("LORA", json["peft_type"]!.GetValue<string>());
        Assert.Equal("CAUSAL_LM", json["task_type"]!.GetValue<string>());
        Assert.Equal(4, json["r"]!.GetValue<int>());
        Assert.Equal(16, json["lora_alpha"]!.GetValue<int>());
        Assert.Equal(0.05, json["lora_dropout"]!.GetValue<double>());
        Assert.Equal("none", json["bias"]!.GetValue<string>());
        Assert.True(json["use_rslora"]!.GetValue<bool>());
        Assert.True(json["inference_mode"]!.GetValue<bool>());
        Assert.False(json["fan_in_fan_out"]!.GetValue<bool>());
        Assert.Equal(7, json["target_modules"]!.AsArray().Count);

        var fresh = TinyModel(2);
        var attached = PeftAdapterFiles.Attach(fresh, tensors, json);
        Assert.Equal(14, attached.Count);
        Assert.Equal(16 / Math.Sqrt(4), attached[0].Adapter.Scaling);
        using var x = randn(3, 16);
        foreach (var a in adapters) a.Adapter.Training = false;
        foreach (var a in attached) a.Adapter.Training = false;
        for (int i = 0; i < model.Count; i++)
        {
            var xi = model[i].Item2.InFeatures == 16 ? x : randn(3, model[i].Item2.InFeatures);
            using var y1 = model[i].Item2.Forward(xi);
            using var y2 = fresh[i].Item2.Forward(xi);
            Assert.True(HealingTestUtil.Same(y1, y2), model[i].Item1);
        }

        // A missing tensor is an error naming the key.
        tensors.Remove("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight", out var removed);
        removed!.Dispose();
        var ex = Assert.Throws<LayerPruneException>(() => PeftAdapterFiles.Attach(TinyModel(2), tensors, json));
        Assert.Contains("layers.0.self_attn.k_proj", ex.Message);
        foreach (var t in tensors.Values) t.Dispose();
        foreach (var (_, l) in model) l.Dispose();
        foreach (var (_, l) in fresh) l.Dispose();
    }

    [Fact]
    public void MergeAndUnload_Nf4Base()
    {
        var model = TinyModel(5, layers: 1);
        var adapters = LoraInjector.Inject(model, new LoraSettings(["o_proj"], R: 2, Alpha: 4, Dropout: 0), seed: 1,
            quantize: BaseQuantization.Nf4, doubleQuant: true);
        var (_, linear) = model.Single(m => m.Item1.EndsWith("o_proj"));
        using (no_grad()) adapters[0].Adapter.B.copy_(randn(16, 2));
        adapters[0].Adapter.Training = false;
        using var x = randn(4, 16);
        using var before = linear.Forward(x);
        LoraInjector.MergeAndUnload(model);
        Assert.Null(linear.Adapter);
        Assert.Null(linear.Quantized);
        using var after = linear.Forward(x);
        Assert.True(MaxAbsDiff(before, after) < 1e-5);
        foreach (var (_, l) in model) l.Dispose();
    }
}
