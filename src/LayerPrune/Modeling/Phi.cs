using LayerPrune.Checkpoints;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>
/// PhiDecoderLayer (HF modeling_phi.py, Phi-2): one LayerNorm feeds attention and MLP in parallel,
///   n = input_layernorm(x);  out = x + self_attn(n) + mlp(n).
/// Partial rotary: RoPE on the first partial_rotary_factor · head_dim features (see Rope).
/// </summary>
public sealed class PhiDecoderLayer : DecoderLayer
{
    readonly Norm _inputLayernorm;
    readonly Attention _selfAttn;
    readonly PhiMlp _mlp;

    /// <summary>Layer <paramref name="layerIndex"/> of <paramref name="c"/>; <paramref name="act"/> is hidden_act.</summary>
    public PhiDecoderLayer(ModelConfig c, Weights w, int layerIndex, Func<Tensor, Tensor> act)
    {
        Index = layerIndex;
        _inputLayernorm = Add("input_layernorm", w, s => new LayerNorm(s, c.HiddenSize, c.NormEps));
        _selfAttn = Add("self_attn", w, s => new Attention(c, s, layerIndex, "dense", qkvBias: true, outputBias: true));
        _mlp = Add("mlp", w, s => new PhiMlp(c, s, act));
    }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x, AttentionInputs a, KvCache? cache, int slot)
    {
        using var scope = NewDisposeScope();
        // A skipped branch drops out of the sum (out = x + mlp(n) or x + attn(n)); the shared norm stays while either branch does.
        bool attention = a.Skip?.SkipsAttention(Index) != true, mlp = a.Skip?.SkipsMlp(Index) != true;
        if (!attention && !mlp) return x.alias().MoveToOuterDisposeScope();
        var n = _inputLayernorm.Forward(x);
        var y = attention ? _selfAttn.Forward(n, a, cache, slot) : null;
        if (mlp) y = y is null ? _mlp.Forward(n) : y.add_(_mlp.Forward(n));
        return y!.add_(x).MoveToOuterDisposeScope();   // in place on the fresh dense output
    }
}

/// <summary>PhiMLP: fc2(act(fc1(x))).</summary>
public sealed class PhiMlp : Module
{
    readonly Linear _fc1, _fc2;
    readonly Func<Tensor, Tensor> _act;

    /// <summary>fc1 [I, H] and fc2 [H, I], both with bias.</summary>
    public PhiMlp(ModelConfig c, Weights w, Func<Tensor, Tensor> act)
    {
        _fc1 = Add("fc1", w, s => new Linear(s, c.IntermediateSize, c.HiddenSize, biasRequired: true));
        _fc2 = Add("fc2", w, s => new Linear(s, c.HiddenSize, c.IntermediateSize, biasRequired: true));
        _act = act;
    }

    /// <summary>x [B, T, H] → [B, T, H].</summary>
    public Tensor Forward(Tensor x)
    {
        using var hidden = _fc1.Forward(x);   // [B, T, I]
        using var activated = _act(hidden);
        return _fc2.Forward(activated);
    }
}
