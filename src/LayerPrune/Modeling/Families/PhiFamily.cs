using LayerPrune.Checkpoints;
using LayerPrune.Gguf;
using static TorchSharp.torch;

namespace LayerPrune.Modeling.Families;

/// <summary>
/// Phi (HF modeling_phi.py, Phi-2): parallel attention + MLP behind one LayerNorm, biases everywhere, partial rotary,
/// final "model.final_layernorm" and an untied lm_head with bias. In GGUF it is llama.cpp's "phi2" (NeoX RoPE, q/k as stored).
/// </summary>
public sealed class PhiFamily : Architecture
{
    /// <summary>PhiForCausalLM.</summary>
    public static readonly PhiFamily Phi = new();

    PhiFamily() { }

    /// <inheritdoc/>
    public override ArchitectureFamily Family => ArchitectureFamily.Phi;
    /// <inheritdoc/>
    public override string ModelType => "phi";

    /// <inheritdoc/>
    public override string NormEpsKey => "layer_norm_eps";
    /// <inheritdoc/>
    public override string DefaultHiddenAct => "gelu_new";
    /// <inheritdoc/>
    public override bool AttentionBias(bool? configured) => true;
    /// <inheritdoc/>
    public override bool MlpBias(bool? configured) => true;

    /// <inheritdoc/>
    public override string FinalNormName => "final_layernorm";

    /// <inheritdoc/>
    public override DecoderLayer BuildLayer(ModelConfig c, Weights w, int layerIndex, Func<Tensor, Tensor> act) =>
        new PhiDecoderLayer(c, w, layerIndex, act);

    /// <inheritdoc/>
    public override Norm BuildFinalNorm(ModelConfig c, Weights w) => new LayerNorm(w, c.HiddenSize, c.NormEps);

    /// <inheritdoc/>
    public override (Linear Head, bool Tied) BuildLmHead(ModelConfig c, Weights w, Tensor embedTokens) =>
        (new Linear(w, c.VocabSize, c.HiddenSize, biasRequired: true), false);

    /// <inheritdoc/>
    public override string GgufArchitecture => "phi2";
    /// <inheritdoc/>
    public override string GgufNormEpsKey => "attention.layer_norm_epsilon";

    static readonly (string Hf, string Gguf)[] GgufProjections =
    [
        ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
        ("self_attn.dense", "attn_output"), ("mlp.fc1", "ffn_up"), ("mlp.fc2", "ffn_down"),
    ];

    /// <inheritdoc/>
    public override IEnumerable<GgufTensorMapping> GgufLayerTensors(ModelConfig c, int i)
    {
        string hf = LayerPrefix(i), g = GgufBlockPrefix(i);
        foreach (var s in new[] { "weight", "bias" })
            yield return new($"{hf}input_layernorm.{s}", $"{g}attn_norm.{s}");
        foreach (var (h, n) in GgufProjections)
            foreach (var s in new[] { "weight", "bias" })
                yield return new($"{hf}{h}.{s}", $"{g}{n}.{s}");
    }

    /// <inheritdoc/>
    public override IEnumerable<GgufTensorMapping> GgufHeadTensors(ModelConfig c, Func<string, bool> contains)
    {
        yield return new($"{FinalNorm}.weight", "output_norm.weight");
        yield return new($"{FinalNorm}.bias", "output_norm.bias");
        yield return new($"{LmHeadName}.weight", "output.weight");
        yield return new($"{LmHeadName}.bias", "output.bias");
    }

    /// <inheritdoc/>
    public override IReadOnlyList<string> AllLinearTargets { get; } = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"];
    /// <inheritdoc/>
    public override IReadOnlyList<string> FfnTargets { get; } = ["fc1", "fc2"];
    /// <inheritdoc/>
    public override PaperHealSettings PaperSettings(int hiddenSize) => new(2e-4, 64, "Phi-2");
}
