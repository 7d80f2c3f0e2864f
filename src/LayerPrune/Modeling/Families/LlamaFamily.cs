using LayerPrune.Checkpoints;
using LayerPrune.Gguf;
using static TorchSharp.torch;

namespace LayerPrune.Modeling.Families;

/// <summary>
/// The Llama-style family (HF modeling_llama.py; Mistral and Qwen2 are the same blocks): pre-norm RMSNorm layers with
/// a gated SiLU MLP, final "model.norm", lm_head without bias and possibly tied to embed_tokens. Mistral adds a
/// sliding window (see ModelConfig), Qwen2 always has q/k/v biases. In GGUF, Llama and Mistral are llama.cpp's "llama"
/// (adjacent-pair RoPE: q/k rows permuted like the converter's LlamaModel.permute), Qwen2 is "qwen2" (NeoX RoPE, as stored).
/// </summary>
public sealed class LlamaFamily : Architecture
{
    /// <summary>LlamaForCausalLM.</summary>
    public static readonly LlamaFamily Llama = new(ArchitectureFamily.Llama, "llama", qkvBiasAlways: false,
        gguf: "llama", ggufPermutesQk: true, paper: hidden => hidden switch
        {
            4096 => new(3e-4, 2, "Llama-2-7B"),
            5120 => new(3e-4, 64, "Llama-2-13B"),
            8192 => new(3e-5, 8, "Llama-2-70B"),
            _ => Fallback,
        });

    /// <summary>MistralForCausalLM.</summary>
    public static readonly LlamaFamily Mistral = new(ArchitectureFamily.Mistral, "mistral", qkvBiasAlways: false,
        gguf: "llama", ggufPermutesQk: true, paper: _ => new(3e-6, 4, "Mistral-7B"));

    /// <summary>Qwen2ForCausalLM.</summary>
    public static readonly LlamaFamily Qwen2 = new(ArchitectureFamily.Qwen2, "qwen2", qkvBiasAlways: true,
        gguf: "qwen2", ggufPermutesQk: false, paper: _ => new(3e-4, 64, "Qwen-7B/14B"));

    /// <summary>
    /// DeciLMForCausalLM (Nemotron-NAS): Llama blocks with per-layer attention/FFN presence (block_configs); llama.cpp's "deci"
    /// architecture (q/k rows permuted like llama).
    /// </summary>
    public static readonly LlamaFamily NemotronNas = new(ArchitectureFamily.NemotronNas, "nemotron-nas", qkvBiasAlways: false,
        gguf: "deci", ggufPermutesQk: true, paper: hidden => Llama._paper(hidden));

    /// <summary>PEFT's default Llama-style target list: all attention and MLP projections.</summary>
    public static readonly IReadOnlyList<string> AllLinear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    static readonly IReadOnlyList<string> Ffn = ["gate_proj", "up_proj", "down_proj"];

    readonly bool _qkvBiasAlways;
    readonly bool _ggufPermutesQk;
    readonly Func<int, PaperHealSettings> _paper;

    LlamaFamily(ArchitectureFamily family, string modelType, bool qkvBiasAlways, string gguf, bool ggufPermutesQk,
        Func<int, PaperHealSettings> paper)
    {
        Family = family;
        ModelType = modelType;
        _qkvBiasAlways = qkvBiasAlways;
        GgufArchitecture = gguf;
        _ggufPermutesQk = ggufPermutesQk;
        _paper = paper;
    }

    /// <inheritdoc/>
    public override ArchitectureFamily Family { get; }
    /// <inheritdoc/>
    public override string ModelType { get; }

    /// <inheritdoc/>
    public override string NormEpsKey => "rms_norm_eps";
    /// <inheritdoc/>
    public override string DefaultHiddenAct => "silu";
    /// <inheritdoc/>
    public override bool AttentionBias(bool? configured) => _qkvBiasAlways || (configured ?? false);
    /// <inheritdoc/>
    public override bool MlpBias(bool? configured) => configured ?? false;

    /// <inheritdoc/>
    public override string FinalNormName => "norm";

    /// <inheritdoc/>
    public override DecoderLayer BuildLayer(ModelConfig c, Weights w, int layerIndex, Func<Tensor, Tensor> act) =>
        new LlamaDecoderLayer(c, w, layerIndex, act);

    /// <inheritdoc/>
    public override Norm BuildFinalNorm(ModelConfig c, Weights w) => new RmsNorm(w, c.HiddenSize, c.NormEps);

    /// <inheritdoc/>
    public override (Linear Head, bool Tied) BuildLmHead(ModelConfig c, Weights w, Tensor embedTokens)
    {
        // Tied embeddings (HF tie_word_embeddings) or no stored head: lm_head shares embed_tokens; a stored copy is
        // shape-checked but not read.
        var stored = w.Optional("weight", [c.VocabSize, c.HiddenSize], read: !c.TieWordEmbeddings);
        return stored is null ? (new Linear(embedTokens.alias(), null), true) : (new Linear(stored, null), false);
    }

    /// <inheritdoc/>
    public override string GgufArchitecture { get; }
    /// <inheritdoc/>
    public override string GgufNormEpsKey => "attention.layer_norm_rms_epsilon";

    /// <inheritdoc/>
    public override IEnumerable<GgufTensorMapping> GgufLayerTensors(ModelConfig c, int i)
    {
        string hf = LayerPrefix(i), g = GgufBlockPrefix(i);
        GgufTensorMapping M(string h, string n, int permuteHeads = 0) =>
            new(hf + h, g + n, permuteHeads > 0 && _ggufPermutesQk ? GgufPermute.Heads : GgufPermute.None, permuteHeads);
        yield return M("input_layernorm.weight", "attn_norm.weight");
        foreach (var s in new[] { "weight", "bias" })
        {
            yield return M($"self_attn.q_proj.{s}", $"attn_q.{s}", permuteHeads: c.NumHeads);
            yield return M($"self_attn.k_proj.{s}", $"attn_k.{s}", permuteHeads: c.NumKvHeads);
            yield return M($"self_attn.v_proj.{s}", $"attn_v.{s}");
            yield return M($"self_attn.o_proj.{s}", $"attn_output.{s}");
        }
        yield return M("post_attention_layernorm.weight", "ffn_norm.weight");
        foreach (var s in new[] { "weight", "bias" })
        {
            yield return M($"mlp.gate_proj.{s}", $"ffn_gate.{s}");
            yield return M($"mlp.up_proj.{s}", $"ffn_up.{s}");
            yield return M($"mlp.down_proj.{s}", $"ffn_down.{s}");
        }
    }

    /// <inheritdoc/>
    public override IEnumerable<GgufTensorMapping> GgufHeadTensors(ModelConfig c, Func<string, bool> contains)
    {
        yield return new($"{FinalNorm}.weight", "output_norm.weight");
        // Tied embeddings: llama.cpp falls back to token_embd.weight when output.weight is absent.
        if (!c.TieWordEmbeddings && contains($"{LmHeadName}.weight")) yield return new($"{LmHeadName}.weight", "output.weight");
    }

    /// <inheritdoc/>
    public override IReadOnlyList<string> AllLinearTargets => AllLinear;
    /// <inheritdoc/>
    public override IReadOnlyList<string> FfnTargets => Ffn;
    /// <inheritdoc/>
    public override PaperHealSettings PaperSettings(int hiddenSize) => _paper(hiddenSize);
}
