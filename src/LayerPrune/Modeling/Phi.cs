using LayerPrune.Checkpoints;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>
/// PhiDecoderLayer (HF modeling_phi.py, Phi-2): one LayerNorm feeds attention and MLP in parallel,
///   n = input_layernorm(x);  out = x + dense(attn(n)) + fc2(gelu_new(fc1(n))).
/// Partial rotary: RoPE on the first partial_rotary_factor · head_dim features (see Rope).
/// </summary>
public sealed class PhiDecoderLayer : DecoderLayer
{
    readonly INorm _inputNorm;
    readonly Attention _attn;
    readonly Linear _fc1, _fc2;
    readonly Func<Tensor, Tensor> _act;

    public PhiDecoderLayer(ModelConfig c, Func<string, Tensor> w, string p, Rope rope, int layerIndex)
    {
        Linear Lin(string name) => new(w($"{p}{name}.weight"), w($"{p}{name}.bias"));
        _inputNorm = new LayerNorm(w($"{p}input_layernorm.weight"), w($"{p}input_layernorm.bias"), c.NormEps);
        _attn = new Attention(Lin("self_attn.q_proj"), Lin("self_attn.k_proj"), Lin("self_attn.v_proj"), Lin("self_attn.dense"), "dense",
                              c.NumHeads, c.NumKvHeads, c.HeadDim, rope, c.SlidingWindows[layerIndex]);
        _fc1 = Lin("mlp.fc1"); _fc2 = Lin("mlp.fc2");
        _act = Activation(c.HiddenAct);
    }

    public override Tensor Forward(Tensor x, AttentionInputs a, KvCache? cache, int slot)
    {
        using var scope = NewDisposeScope();
        var n = _inputNorm.Forward(x);
        var attn = _attn.Forward(n, a, cache, slot);
        var mlp = _fc2.Forward(_act(_fc1.Forward(n)));
        return attn.add_(mlp).add_(x).MoveToOuterDisposeScope();   // in place on the fresh dense output
    }

    public override IEnumerable<(string, Linear)> Linears()
    {
        foreach (var (n, l) in _attn.Linears()) yield return ($"self_attn.{n}", l);
        yield return ("mlp.fc1", _fc1); yield return ("mlp.fc2", _fc2);
    }
    protected override IEnumerable<(string, INorm)> Norms() { yield return ("input_layernorm", _inputNorm); }
}
