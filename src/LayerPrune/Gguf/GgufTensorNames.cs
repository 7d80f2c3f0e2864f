using LayerPrune.Checkpoints;
using Families = LayerPrune.Modeling.Families;

namespace LayerPrune.Gguf;

/// <summary>How a tensor's rows are reordered on export.</summary>
public enum GgufPermute
{
    /// <summary>Bytes as stored.</summary>
    None,
    /// <summary>llama.cpp's q/k row order for the llama architecture (convert_hf_to_gguf.py LlamaModel.permute), per head.</summary>
    Heads,
}

/// <summary>One exported tensor: HF name → GGUF name, row permutation (with its head count), and whether it is per-layer.</summary>
public sealed record GgufTensorMapping(string HfName, string GgufName, GgufPermute Permute = GgufPermute.None, int PermuteHeads = 0);

/// <summary>
/// A model's GGUF layout, assembled from its family descriptor (<see cref="Architecture"/>: llama.cpp architecture name,
/// per-layer and head tensor names): the tensors in file order and the hyper-parameter metadata llama.cpp reads.
/// Llama and Mistral → "llama" (q/k rows permuted for llama.cpp's interleaved RoPE), Qwen2 → "qwen2", Phi → "phi2"
/// (both NeoX RoPE, no permutation).
/// </summary>
public static class GgufTensorNames
{
    /// <summary>llama.cpp's architecture name (general.architecture) for a family.</summary>
    public static string Architecture(ArchitectureFamily family) => Families.Architecture.For(family).GgufArchitecture;

    /// <summary>The per-layer GGUF tensor-name prefix ("blk.N.").</summary>
    public static string BlockPrefix(int layer) => Families.Architecture.GgufBlockPrefix(layer);

    /// <summary>The tensors to export, in file order: token embedding, each block's tensors, final norm, output head.</summary>
    /// <param name="c">The model's config.</param>
    /// <param name="contains">Whether the checkpoint stores an HF tensor (optional biases, untied lm_head).</param>
    public static IEnumerable<GgufTensorMapping> Tensors(ModelConfig c, Func<string, bool> contains)
    {
        var family = Families.Architecture.For(c);
        yield return Families.Architecture.GgufEmbedding;
        for (int i = 0; i < c.NumLayers; i++)
            foreach (var m in family.GgufLayerTensors(c, i))
                if (contains(m.HfName)) yield return m;
        foreach (var m in family.GgufHeadTensors(c, contains)) yield return m;
    }

    /// <summary>
    /// The architecture hyper-parameters llama.cpp reads ({arch}.block_count, context/embedding/feed-forward lengths,
    /// head counts, RoPE, norm epsilon). Throws for variants llama.cpp cannot represent.
    /// </summary>
    /// <param name="c">The model's config.</param>
    /// <param name="ignoreSlidingWindow">Export a sliding-window model anyway (llama.cpp's own converter silently drops it).</param>
    public static List<KeyValuePair<string, GgufValue>> Hyperparameters(ModelConfig c, bool ignoreSlidingWindow)
    {
        string arch = Architecture(c.Family);
        int contextLength = IntKey(c, "max_position_embeddings") ?? IntKey(c, "n_positions") ?? 2048;
        Check(c, arch, contextLength, ignoreSlidingWindow);
        var kv = new List<KeyValuePair<string, GgufValue>>();
        void Add(string key, GgufValue v) => kv.Add(new($"{arch}.{key}", v));
        Add("block_count", GgufValue.U32((uint)c.NumLayers));
        Add("context_length", GgufValue.U32((uint)contextLength));
        Add("embedding_length", GgufValue.U32((uint)c.HiddenSize));
        Add("feed_forward_length", GgufValue.U32((uint)c.IntermediateSize));
        Add("attention.head_count", GgufValue.U32((uint)c.NumHeads));
        Add("attention.head_count_kv", GgufValue.U32((uint)c.NumKvHeads));
        Add("attention.key_length", GgufValue.U32((uint)c.HeadDim));
        Add("attention.value_length", GgufValue.U32((uint)c.HeadDim));
        Add("rope.freq_base", GgufValue.F32((float)c.Rope.Theta));
        Add("rope.dimension_count", GgufValue.U32((uint)(int)(c.Rope.PartialRotaryFactor * c.HeadDim)));
        Add(Families.Architecture.For(c).GgufNormEpsKey, GgufValue.F32((float)c.NormEps));
        if (c.Rope.Type == "linear")
        {
            Add("rope.scaling.type", GgufValue.Str("linear"));
            Add("rope.scaling.factor", GgufValue.F32((float)c.Rope.Factor));
        }
        Add("vocab_size", GgufValue.U32((uint)c.VocabSize));
        if (c.Family == ArchitectureFamily.NemotronNas) DeciGguf.PerLayerCounts(c, kv);   // per-layer arrays, 0 = removed
        return kv;
    }

    static void Check(ModelConfig c, string arch, int contextLength, bool ignoreSlidingWindow)
    {
        if (c.HiddenAct != (c.Family == ArchitectureFamily.Phi ? "gelu_new" : "silu"))
            throw new LayerPruneException($"{c.Path}: hidden_act '{c.HiddenAct}' cannot be represented in llama.cpp's {arch} architecture");
        if (c.Rope.Type == "llama3" && arch is not ("llama" or "deci"))
            throw new LayerPruneException($"{c.Path}: RoPE type llama3 is only supported by llama.cpp's llama architecture, not {arch}");
        if (c.Rope.PartialRotaryFactor < 1 && c.Family != ArchitectureFamily.Phi)
            throw new LayerPruneException(
                $"{c.Path}: partial_rotary_factor {c.Rope.PartialRotaryFactor} cannot be represented in llama.cpp's {arch} architecture");
        if (c.Family == ArchitectureFamily.Phi && c.Rope.Type != "default")
            throw new LayerPruneException($"{c.Path}: RoPE type {c.Rope.Type} is not supported for phi2 export");
        // A window of the whole context (or more) never masks anything inside it: exported as full attention.
        // No llama.cpp architecture that runs a Llama block reads a sliding window (docs/gguf.md#sliding-window).
        int? window = c.SlidingWindows.FirstOrDefault(w => w is not null && w < contextLength);
        if (window is not null && !ignoreSlidingWindow)
            throw LayerPruneException.Mentioning(
                $"{c.Path}: sliding_window {window} cannot be represented in llama.cpp's {arch} architecture, which attends over " +
                $"all {contextLength} positions (no llama.cpp architecture for this block reads a sliding window); " +
                "set `IgnoreSlidingWindow` to export anyway, as llama.cpp's own converter does (exact within the first " +
                $"{window} positions)");
    }

    /// <summary>
    /// The llama3 RoPE frequency factors llama.cpp reads from the "rope_freqs.weight" tensor ([head_dim / 2], F32),
    /// computed as convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors does.
    /// </summary>
    public static float[] Llama3RopeFactors(ModelConfig c)
    {
        var r = c.Rope;
        int dim = c.HeadDim;
        double lowWavelen = r.OriginalMaxPositions / r.LowFreqFactor;
        double highWavelen = r.OriginalMaxPositions / r.HighFreqFactor;
        var factors = new float[dim / 2];
        for (int i = 0; i < dim / 2; i++)
        {
            // Python computes freqs in float32 (torch.arange / base ** ...): match that.
            float freq = 1.0f / MathF.Pow((float)r.Theta, (2 * i) / (float)dim);
            double wavelen = 2 * Math.PI / freq;
            if (wavelen < highWavelen) factors[i] = 1;
            else if (wavelen > lowWavelen) factors[i] = (float)r.Factor;
            else
            {
                double smooth = (r.OriginalMaxPositions / wavelen - r.LowFreqFactor) / (r.HighFreqFactor - r.LowFreqFactor);
                factors[i] = (float)(1 / ((1 - smooth) / r.Factor + smooth));
            }
        }
        return factors;
    }

    static int? IntKey(ModelConfig c, string key) =>
        c.Raw[key] is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<int>(out int i) ? i : null;
}
