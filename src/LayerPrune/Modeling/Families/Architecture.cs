using LayerPrune.Checkpoints;
using LayerPrune.Gguf;
using static TorchSharp.torch;

namespace LayerPrune.Modeling.Families;

/// <summary>The paper's healing hyper-parameters for one model (Gromov et al. 2024, App. A.1).</summary>
/// <param name="Lr">Learning rate.</param>
/// <param name="Rank">LoRA rank (α = rank).</param>
/// <param name="Matched">The model the setting was recognised as, e.g. "Llama-2-7B", or "fallback".</param>
public sealed record PaperHealSettings(double Lr, int Rank, string Matched);

/// <summary>
/// Everything that differs between architecture families, in one place per family: config.json defaults, how a
/// decoder layer / final norm / lm_head is built (and so which tensors a checkpoint must hold, with which shapes),
/// the HF tensor names with their GGUF (llama.cpp) names, the LoRA target modules and the healing recipe. Code outside
/// the descriptors asks the descriptor instead of branching on <see cref="ArchitectureFamily"/>.
/// </summary>
public abstract class Architecture
{
    /// <summary>The embedding's module name (HF state dict).</summary>
    public const string EmbedTokensName = "model.embed_tokens";
    /// <summary>The decoder layers' module list.</summary>
    public const string LayersName = "model.layers";
    /// <summary>The output head's module name.</summary>
    public const string LmHeadName = "lm_head";

    static readonly Architecture[] All =
        [LlamaFamily.Llama, LlamaFamily.Mistral, LlamaFamily.Qwen2, PhiFamily.Phi, LlamaFamily.NemotronNas];

    /// <summary>Supported config.json model_type values and their descriptors.</summary>
    public static IReadOnlyDictionary<string, Architecture> ByModelType { get; } = All.ToDictionary(a => a.ModelType);

    /// <summary>The descriptor of <paramref name="family"/>.</summary>
    public static Architecture For(ArchitectureFamily family) => All.Single(a => a.Family == family);

    /// <summary>The descriptor of the family of <paramref name="config"/>.</summary>
    public static Architecture For(ModelConfig config) => For(config.Family);

    /// <summary>The family this descriptor stands for.</summary>
    public abstract ArchitectureFamily Family { get; }

    /// <summary>config.json model_type, e.g. "llama".</summary>
    public abstract string ModelType { get; }

    // ---- config.json defaults ----

    /// <summary>The config.json key holding the norm epsilon (e.g. rms_norm_eps).</summary>
    public abstract string NormEpsKey { get; }

    /// <summary>hidden_act when config.json does not name one.</summary>
    public abstract string DefaultHiddenAct { get; }

    /// <summary>Whether q/k/v (and Phi's dense) have biases, given config.json attention_bias (null when absent).</summary>
    public abstract bool AttentionBias(bool? configured);

    /// <summary>Whether the MLP projections have biases, given config.json mlp_bias (null when absent).</summary>
    public abstract bool MlpBias(bool? configured);

    // ---- modules and tensor names ----

    /// <summary>The final norm's name inside the model body ("norm"; Phi: "final_layernorm").</summary>
    public abstract string FinalNormName { get; }

    /// <summary>The final norm's full module name, e.g. "model.norm".</summary>
    public string FinalNorm => $"model.{FinalNormName}";

    /// <summary>The prefix of every tensor of layer <paramref name="i"/>, e.g. "model.layers.3.".</summary>
    public static string LayerPrefix(int i) => $"{LayersName}.{i}.";

    /// <summary>Decoder layer <paramref name="layerIndex"/> of <paramref name="c"/>, read from <paramref name="w"/>.</summary>
    public abstract DecoderLayer BuildLayer(ModelConfig c, Weights w, int layerIndex, Func<Tensor, Tensor> act);

    /// <summary>The final norm from <paramref name="w"/> (the norm's weights).</summary>
    public abstract Norm BuildFinalNorm(ModelConfig c, Weights w);

    /// <summary>
    /// lm_head from <paramref name="w"/> (the head's weights); <paramref name="embedTokens"/> is the embedding table
    /// for families that tie it. Tied = the head is a view of the embedding table and is not stored.
    /// </summary>
    public abstract (Linear Head, bool Tied) BuildLmHead(ModelConfig c, Weights w, Tensor embedTokens);

    /// <summary>
    /// The model body (embed_tokens, layers, final norm) and lm_head of <paramref name="c"/>, read from
    /// <paramref name="root"/> (full HF names). <paramref name="residentLayers"/> false leaves the layers unloaded.
    /// </summary>
    public (DecoderModel Model, Linear LmHead, bool TiedHead) Build(
        ModelConfig c, Weights root, Func<Tensor, Tensor> act, bool residentLayers)
    {
        var model = new DecoderModel(c, this, root.At("model"), residentLayers ? (w, i) => BuildLayer(c, w, i, act) : null);
        try
        {
            var (head, tied) = BuildLmHead(c, root.At(LmHeadName), model.EmbedTokens.Weight);
            return (model, head, tied);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The tensors the model code reads for <paramref name="c"/>, in load order, with the shapes config.json implies:
    /// recorded by building the modules against a source that hands out empty placeholders (no checkpoint needed).
    /// </summary>
    public IReadOnlyList<ExpectedTensor> ExpectedTensors(ModelConfig c)
    {
        var recorder = new ExpectedTensorRecorder();
        // Not called: building only declares tensors (the real activation is resolved when a model is loaded).
        static Tensor NotRun(Tensor x) => throw new InvalidOperationException("declaration-only module");
        var (model, head, _) = Build(c, new Weights(recorder), NotRun, residentLayers: true);
        model.Dispose();
        head.Dispose();
        return recorder.Tensors;
    }

    // ---- GGUF (llama.cpp) ----

    /// <summary>llama.cpp's architecture name (general.architecture and the metadata key prefix), e.g. "llama".</summary>
    public abstract string GgufArchitecture { get; }

    /// <summary>The metadata key (after "{arch}.") llama.cpp reads the norm epsilon from.</summary>
    public abstract string GgufNormEpsKey { get; }

    /// <summary>The embedding table's GGUF tensor (the first one in the file).</summary>
    public static GgufTensorMapping GgufEmbedding { get; } = new($"{EmbedTokensName}.weight", "token_embd.weight");

    /// <summary>The per-layer GGUF tensor-name prefix ("blk.N.").</summary>
    public static string GgufBlockPrefix(int layer) => $"blk.{layer}.";

    /// <summary>
    /// Decoder layer <paramref name="i"/>'s tensors as llama.cpp's converter (convert_hf_to_gguf.py + gguf-py
    /// tensor_mapping.py) names them, in file order, optional ones (biases) included: HF name → GGUF name, with the q/k
    /// row permutation where llama.cpp's graph for <see cref="GgufArchitecture"/> rotates adjacent pairs.
    /// </summary>
    public abstract IEnumerable<GgufTensorMapping> GgufLayerTensors(ModelConfig c, int i);

    /// <summary>
    /// The tensors after the layers (final norm, output head) in file order; <paramref name="contains"/> says whether
    /// the checkpoint stores an HF tensor (a tied head is not exported: llama.cpp falls back to token_embd.weight).
    /// </summary>
    public abstract IEnumerable<GgufTensorMapping> GgufHeadTensors(ModelConfig c, Func<string, bool> contains);

    // ---- healing ----

    /// <summary>Every attention and MLP projection of a layer (PEFT target_modules names), in layer order.</summary>
    public abstract IReadOnlyList<string> AllLinearTargets { get; }

    /// <summary>The MLP projections only (the paper heals the FFN blocks).</summary>
    public abstract IReadOnlyList<string> FfnTargets { get; }

    /// <summary>The paper's LR and rank for a model of this family with <paramref name="hiddenSize"/> (pruning keeps it).</summary>
    public abstract PaperHealSettings PaperSettings(int hiddenSize);

    /// <summary>The paper's fallback for models it does not list: LR 3e-4, rank 8.</summary>
    protected static readonly PaperHealSettings Fallback = new(3e-4, 8, "fallback");

    sealed class ExpectedTensorRecorder : IWeightSource
    {
        public List<ExpectedTensor> Tensors { get; } = [];

        public Tensor Required(string name, long[] shape)
        {
            Tensors.Add(new ExpectedTensor(name, shape, true));
            return empty(0);
        }

        public Tensor? Optional(string name, long[] shape, bool read)
        {
            Tensors.Add(new ExpectedTensor(name, shape, false));
            return null;
        }
    }
}
