using LayerPrune.Checkpoints;
using static TorchSharp.torch;

namespace LayerPrune.Modeling.Families;

/// <summary>
/// Phi (HF modeling_phi.py, Phi-2): parallel attention + MLP behind one LayerNorm, biases everywhere, partial rotary,
/// final "model.final_layernorm" and an untied lm_head with bias.
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
    public override IReadOnlyList<string> AllLinearTargets { get; } = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"];
    /// <inheritdoc/>
    public override IReadOnlyList<string> FfnTargets { get; } = ["fc1", "fc2"];
    /// <inheritdoc/>
    public override PaperHealSettings PaperSettings(int hiddenSize) => new(2e-4, 64, "Phi-2");
}
