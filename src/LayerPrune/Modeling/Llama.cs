using LayerPrune.Checkpoints;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>
/// LlamaDecoderLayer (HF modeling_llama.py), also Mistral (sliding window) and Qwen2 (q/k/v bias):
///   h = x + o_proj(attn(input_layernorm(x)));  out = h + down_proj(act(gate_proj(n)) · up_proj(n)), n = post_attention_layernorm(h)
/// </summary>
public sealed class LlamaDecoderLayer : DecoderLayer
{
    readonly INorm _inputNorm, _postAttentionNorm;
    readonly Attention _attn;
    readonly Linear _gate, _up, _down;
    readonly Func<Tensor, Tensor> _act;

    public LlamaDecoderLayer(ModelConfig c, Func<string, Tensor> w, Func<string, Tensor?> optional, string p, Rope rope, int layerIndex)
    {
        Linear Lin(string name, bool bias) => new(w($"{p}{name}.weight"), bias ? w($"{p}{name}.bias") : optional($"{p}{name}.bias"));
        _inputNorm = new RmsNorm(w($"{p}input_layernorm.weight"), c.NormEps);
        _postAttentionNorm = new RmsNorm(w($"{p}post_attention_layernorm.weight"), c.NormEps);
        _attn = new Attention(Lin("self_attn.q_proj", c.AttentionBias), Lin("self_attn.k_proj", c.AttentionBias),
                              Lin("self_attn.v_proj", c.AttentionBias), Lin("self_attn.o_proj", false), "o_proj",
                              c.NumHeads, c.NumKvHeads, c.HeadDim, rope, c.SlidingWindows[layerIndex]);
        _gate = Lin("mlp.gate_proj", c.MlpBias); _up = Lin("mlp.up_proj", c.MlpBias); _down = Lin("mlp.down_proj", c.MlpBias);
        _act = Activation(c.HiddenAct);
    }

    public override Tensor Forward(Tensor x, AttentionInputs a, KvCache? cache, int slot)
    {
        using var scope = NewDisposeScope();
        var h = _attn.Forward(_inputNorm.Forward(x), a, cache, slot).add_(x);   // residual, in place on the fresh o_proj output
        var n = _postAttentionNorm.Forward(h);
        var mlp = _down.Forward(_act(_gate.Forward(n)) * _up.Forward(n));
        return mlp.add_(h).MoveToOuterDisposeScope();
    }

    public override IEnumerable<(string, Linear)> Linears()
    {
        foreach (var (n, l) in _attn.Linears()) yield return ($"self_attn.{n}", l);
        yield return ("mlp.gate_proj", _gate); yield return ("mlp.up_proj", _up); yield return ("mlp.down_proj", _down);
    }
    protected override IEnumerable<(string, INorm)> Norms() { yield return ("input_layernorm", _inputNorm); yield return ("post_attention_layernorm", _postAttentionNorm); }
}
