using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

public interface INorm : IDisposable
{
    Tensor Forward(Tensor x);
    IEnumerable<(string name, Tensor tensor)> Tensors();
}

/// <summary>LlamaRMSNorm: x / sqrt(mean(x²) + eps) computed in fp32, then × weight in the input dtype.</summary>
public sealed class RmsNorm(Tensor weight, double eps) : INorm
{
    public Tensor Forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x.to(ScalarType.Float32);
        var normed = h * rsqrt(h.pow(2).mean([-1], keepdim: true) + eps);
        return (weight * normed.to(x.dtype)).MoveToOuterDisposeScope();
    }
    public IEnumerable<(string, Tensor)> Tensors() { yield return ("weight", weight); }
    public void Dispose() => weight.Dispose();
}

/// <summary>torch.nn.LayerNorm (Phi).</summary>
public sealed class LayerNorm(Tensor weight, Tensor bias, double eps) : INorm
{
    public Tensor Forward(Tensor x) => nn.functional.layer_norm(x, [weight.shape[0]], weight, bias, eps);
    public IEnumerable<(string, Tensor)> Tensors() { yield return ("weight", weight); yield return ("bias", bias); }
    public void Dispose() { weight.Dispose(); bias.Dispose(); }
}

/// <summary>What every layer of one forward call shares: rotary tables and attention masks.</summary>
public sealed class AttentionInputs : IDisposable
{
    public required Tensor Cos, SinSigned; // [B, 1, T, rotaryDim] (see Rope.CosSin)
    /// <summary>Additive mask [B, 1, T, S] for full-attention layers; null = plain causal (T == S, no padding).</summary>
    public Tensor? FullMask;
    /// <summary>Additive mask for sliding-window layers, keyed by window size.</summary>
    public Dictionary<int, Tensor> SlidingMasks { get; } = new();
    public void Dispose() { Cos.Dispose(); SinSigned.Dispose(); FullMask?.Dispose(); foreach (var m in SlidingMasks.Values) m.Dispose(); }
}

/// <summary>Multi-head attention with grouped-query K/V, RoPE and an optional sliding window (HF LlamaAttention / PhiAttention).</summary>
public sealed class Attention(Linear q, Linear k, Linear v, Linear o, string oName, int heads, int kvHeads, int headDim, Rope rope, int? slidingWindow) : IDisposable
{
    public Linear Q => q; public Linear K => k; public Linear V => v; public Linear O => o;
    public int? SlidingWindow => slidingWindow;

    public Tensor Forward(Tensor x /*[B,T,H]*/, AttentionInputs a, KvCache? cache, int slot)
    {
        using var scope = NewDisposeScope();
        long B = x.shape[0], T = x.shape[1];
        var query = q.Forward(x).view(B, T, heads, headDim).transpose(1, 2);    // [B, h, T, d]
        var key = k.Forward(x).view(B, T, kvHeads, headDim).transpose(1, 2);    // [B, kvh, T, d]
        var value = v.Forward(x).view(B, T, kvHeads, headDim).transpose(1, 2);
        query = rope.Apply(query, a.Cos, a.SinSigned);
        key = rope.Apply(key, a.Cos, a.SinSigned);
        if (cache is not null) (key, value) = cache.Append(slot, key, value); // [B, kvh, S, d]
        if (kvHeads != heads)
        {
            key = key.repeat_interleave(heads / kvHeads, dim: 1);
            value = value.repeat_interleave(heads / kvHeads, dim: 1);
        }
        Tensor? mask = slidingWindow is int w && a.SlidingMasks.TryGetValue(w, out var sm) ? sm : a.FullMask;
        var attn = mask is null
            ? nn.functional.scaled_dot_product_attention(query, key, value, is_casual: T > 1)
            : nn.functional.scaled_dot_product_attention(query, key, value, attn_mask: mask);
        var merged = attn.transpose(1, 2).reshape(B, T, heads * headDim);
        return o.Forward(merged).MoveToOuterDisposeScope();
    }

    public IEnumerable<(string name, Linear linear)> Linears() { yield return ("q_proj", q); yield return ("k_proj", k); yield return ("v_proj", v); yield return (oName, o); }
    public void Dispose() { q.Dispose(); k.Dispose(); v.Dispose(); o.Dispose(); }
}

public abstract class DecoderLayer : IDisposable
{
    /// <summary>Residual stream in → residual stream out, [B, T, H].</summary>
    public abstract Tensor Forward(Tensor h, AttentionInputs a, KvCache? cache, int slot);
    /// <summary>Linear sub-modules with HF names relative to the layer, e.g. "self_attn.q_proj", "mlp.down_proj".</summary>
    public abstract IEnumerable<(string name, Linear linear)> Linears();
    /// <summary>Every tensor with HF names relative to the layer (e.g. "input_layernorm.weight").</summary>
    public IEnumerable<(string name, Tensor tensor)> Tensors()
    {
        foreach (var (n, l) in Linears())
        {
            if (l.Weight is not null) yield return ($"{n}.weight", l.Weight);
            if (l.Bias is not null) yield return ($"{n}.bias", l.Bias);
        }
        foreach (var (n, norm) in Norms()) foreach (var (p, t) in norm.Tensors()) yield return ($"{n}.{p}", t);
    }
    protected abstract IEnumerable<(string name, INorm norm)> Norms();
    public virtual void Dispose()
    {
        foreach (var (_, l) in Linears()) l.Dispose();
        foreach (var (_, n) in Norms()) n.Dispose();
    }

    public static Func<Tensor, Tensor> Activation(string name) => name switch
    {
        "silu" or "swish" => x => nn.functional.silu(x),
        "gelu" => x => nn.functional.gelu(x),
        // gelu_new / gelu_pytorch_tanh: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        "gelu_new" or "gelu_pytorch_tanh" => GeluTanh,
        "relu" => x => nn.functional.relu(x),
        _ => throw new LayerPruneException($"unsupported hidden_act '{name}' (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, relu)"),
    };

    /// <summary>HF NewGELUActivation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).</summary>
    static Tensor GeluTanh(Tensor x)
    {
        using var scope = NewDisposeScope();
        var inner = Math.Sqrt(2.0 / Math.PI) * (x + 0.044715 * x.pow(3));
        return (0.5 * x * (1.0 + inner.tanh())).MoveToOuterDisposeScope();
    }
}
