using LayerPrune.Checkpoints;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>
/// LlamaDecoderLayer (HF modeling_llama.py), also Mistral (sliding window) and Qwen2 (q/k/v bias):
///   h = x + self_attn(input_layernorm(x));  out = h + mlp(post_attention_layernorm(h)).
/// </summary>
public sealed class LlamaDecoderLayer : DecoderLayer
{
    readonly Norm? _inputLayernorm, _postAttentionLayernorm;
    readonly Attention? _selfAttn;
    readonly LlamaMlp? _mlp;
    internal Norm? InputLayernorm => _inputLayernorm;
    internal Attention? SelfAttn => _selfAttn;
    internal Norm? PostAttentionLayernorm => _postAttentionLayernorm;
    internal LlamaMlp? Mlp => _mlp;

    /// <summary>
    /// Layer <paramref name="layerIndex"/> of <paramref name="c"/>; <paramref name="act"/> is hidden_act. A sublayer the config
    /// marks absent (Nemotron-NAS attention/ffn no_op) has no modules or tensors, its norm included (HF modeling_decilm.py).
    /// </summary>
    public LlamaDecoderLayer(ModelConfig c, Weights w, int layerIndex, Func<Tensor, Tensor> act)
    {
        Index = layerIndex;
        if (c.HasAttention(layerIndex))
        {
            _inputLayernorm = Add("input_layernorm", w, s => new RmsNorm(s, c.HiddenSize, c.NormEps));
            _selfAttn = Add("self_attn", w, s => new Attention(c, s, layerIndex, "o_proj", qkvBias: c.AttentionBias, outputBias: false));
        }
        if (c.HasMlp(layerIndex))
        {
            _postAttentionLayernorm = Add("post_attention_layernorm", w, s => new RmsNorm(s, c.HiddenSize, c.NormEps));
            _mlp = Add("mlp", w, s => new LlamaMlp(c, s, act));
        }
    }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x, AttentionInputs a, KvCache? cache, int slot)
    {
        if (DecodeLayer.TryForward(this, x, a, cache, slot) is { } fast) return fast;   // batch-1 decode: one pass in C#
        using var scope = NewDisposeScope();
        var h = x;   // an absent or skipped sublayer is the residual identity
        if (_selfAttn is not null && a.Skip?.SkipsAttention(Index) != true)
            h = _selfAttn.Forward(_inputLayernorm!.Forward(x), a, cache, slot).add_(x);   // residual, in place on the fresh o_proj output
        if (_mlp is not null && a.Skip?.SkipsMlp(Index) != true)
            h = _mlp.Forward(_postAttentionLayernorm!.Forward(h)).add_(h);                 // [B, T, H]
        return (ReferenceEquals(h, x) ? x.alias() : h).MoveToOuterDisposeScope();
    }
}

/// <summary>LlamaMLP: down_proj(act(gate_proj(x)) · up_proj(x)).</summary>
public sealed class LlamaMlp : Module
{
    readonly Linear _gateProj, _upProj, _downProj;
    readonly Func<Tensor, Tensor> _act;
    internal Linear GateProj => _gateProj;
    internal Linear UpProj => _upProj;
    internal Linear DownProj => _downProj;
    /// <summary>hidden_act is silu (what <see cref="DecodeLayer"/> computes).</summary>
    internal bool Silu { get; }

    /// <summary>gate_proj, up_proj [I, H] and down_proj [H, I]; biases must exist when mlp_bias.</summary>
    public LlamaMlp(ModelConfig c, Weights w, Func<Tensor, Tensor> act)
    {
        long h = c.HiddenSize, inter = c.IntermediateSize;
        _gateProj = Add("gate_proj", w, s => new Linear(s, inter, h, c.MlpBias));
        _upProj = Add("up_proj", w, s => new Linear(s, inter, h, c.MlpBias));
        _downProj = Add("down_proj", w, s => new Linear(s, h, inter, c.MlpBias));
        _act = act;
        Silu = c.HiddenAct is "silu" or "swish";
    }

    /// <summary>x [B, T, H] → [B, T, H].</summary>
    public Tensor Forward(Tensor x)
    {
        var gateUp = Gemv.TryFused(x, _gateProj, _upProj) ?? [_gateProj.Forward(x), _upProj.Forward(x)];  // one loop at batch 1
        using var gate = gateUp[0];   // [B, T, I]
        using var up = gateUp[1];
        using var activated = _act(gate);
        using var product = activated * up;
        return _downProj.Forward(product);
    }
}
