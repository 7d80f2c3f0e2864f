using LayerPrune.Checkpoints;

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
/// Per family: the llama.cpp architecture name, the metadata keys llama.cpp reads for it, and the tensor names its
/// converter (convert_hf_to_gguf.py + gguf-py tensor_mapping.py) writes. Llama and Mistral → "llama" (q/k rows
/// permuted for llama.cpp's interleaved RoPE), Qwen2 → "qwen2", Phi → "phi2" (both NeoX RoPE, no permutation).
/// </summary>
public static class GgufTensorNames
{
    /// <summary>llama.cpp's architecture name (general.architecture) for a family.</summary>
    public static string Architecture(ArchitectureFamily family) => family switch
    {
        ArchitectureFamily.Llama or ArchitectureFamily.Mistral => "llama",
        ArchitectureFamily.Qwen2 => "qwen2",
        ArchitectureFamily.Phi => "phi2",
        _ => throw new LayerPruneException($"GGUF export: architecture family {family} has no llama.cpp equivalent"),
    };

    /// <summary>The per-layer GGUF tensor-name prefix ("blk.N.").</summary>
    public static string BlockPrefix(int layer) => $"blk.{layer}.";

    /// <summary>The tensors to export, in file order: token embedding, each block's tensors, final norm, output head.</summary>
    /// <param name="c">The model's config.</param>
    /// <param name="contains">Whether the checkpoint stores an HF tensor (optional biases, untied lm_head).</param>
    public static IEnumerable<GgufTensorMapping> Tensors(ModelConfig c, Func<string, bool> contains)
    {
        yield return new("model.embed_tokens.weight", "token_embd.weight");
        for (int i = 0; i < c.NumLayers; i++)
            foreach (var m in Layer(c, i))
                if (contains(m.HfName)) yield return m;
        if (c.Family == ArchitectureFamily.Phi)
        {
            yield return new("model.final_layernorm.weight", "output_norm.weight");
            yield return new("model.final_layernorm.bias", "output_norm.bias");
            yield return new("lm_head.weight", "output.weight");
            yield return new("lm_head.bias", "output.bias");
            yield break;
        }
        yield return new("model.norm.weight", "output_norm.weight");
        // Tied embeddings: llama.cpp falls back to token_embd.weight when output.weight is absent.
        if (!c.TieWordEmbeddings && contains("lm_head.weight")) yield return new("lm_head.weight", "output.weight");
    }

    static IEnumerable<GgufTensorMapping> Layer(ModelConfig c, int i)
    {
        string hf = $"model.layers.{i}.", g = BlockPrefix(i);
        bool llamaArch = Architecture(c.Family) == "llama";
        GgufTensorMapping M(string h, string n, bool qk = false, int heads = 0) =>
            new(hf + h, g + n, qk && llamaArch ? GgufPermute.Heads : GgufPermute.None, heads);
        if (c.Family == ArchitectureFamily.Phi)
        {
            foreach (var s in new[] { "weight", "bias" })
            {
                yield return M($"input_layernorm.{s}", $"attn_norm.{s}");
            }
            foreach (var (h, n) in new[] { ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                                           ("self_attn.dense", "attn_output"), ("mlp.fc1", "ffn_up"), ("mlp.fc2", "ffn_down") })
                foreach (var s in new[] { "weight", "bias" })
                    yield return M($"{h}.{s}", $"{n}.{s}");
            yield break;
        }
        yield return M("input_layernorm.weight", "attn_norm.weight");
        foreach (var s in new[] { "weight", "bias" })
        {
            yield return M($"self_attn.q_proj.{s}", $"attn_q.{s}", qk: true, heads: c.NumHeads);
            yield return M($"self_attn.k_proj.{s}", $"attn_k.{s}", qk: true, heads: c.NumKvHeads);
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

    /// <summary>
    /// The architecture hyper-parameters llama.cpp reads ({arch}.block_count, context/embedding/feed-forward lengths,
    /// head counts, RoPE, norm epsilon). Throws for variants llama.cpp cannot represent.
    /// </summary>
    /// <param name="c">The model's config.</param>
    /// <param name="ignoreSlidingWindow">Export a sliding-window model anyway (llama.cpp's own converter silently drops it).</param>
    public static List<KeyValuePair<string, GgufValue>> Hyperparameters(ModelConfig c, bool ignoreSlidingWindow)
    {
        string arch = Architecture(c.Family);
        Check(c, arch, ignoreSlidingWindow);
        int contextLength = IntKey(c, "max_position_embeddings") ?? IntKey(c, "n_positions") ?? 2048;
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
        if (c.Family == ArchitectureFamily.Phi) Add("attention.layer_norm_epsilon", GgufValue.F32((float)c.NormEps));
        else Add("attention.layer_norm_rms_epsilon", GgufValue.F32((float)c.NormEps));
        if (c.Rope.Type == "linear")
        {
            Add("rope.scaling.type", GgufValue.Str("linear"));
            Add("rope.scaling.factor", GgufValue.F32((float)c.Rope.Factor));
        }
        Add("vocab_size", GgufValue.U32((uint)c.VocabSize));
        return kv;
    }

    static void Check(ModelConfig c, string arch, bool ignoreSlidingWindow)
    {
        if (c.HiddenAct != (c.Family == ArchitectureFamily.Phi ? "gelu_new" : "silu"))
            throw new LayerPruneException($"{c.Path}: hidden_act '{c.HiddenAct}' cannot be represented in llama.cpp's {arch} architecture");
        if (c.Rope.Type == "llama3" && arch != "llama")
            throw new LayerPruneException($"{c.Path}: RoPE type llama3 is only supported by llama.cpp's llama architecture, not {arch}");
        if (c.Rope.PartialRotaryFactor < 1 && c.Family != ArchitectureFamily.Phi)
            throw new LayerPruneException(
                $"{c.Path}: partial_rotary_factor {c.Rope.PartialRotaryFactor} cannot be represented in llama.cpp's {arch} architecture");
        if (c.Family == ArchitectureFamily.Phi && c.Rope.Type != "default")
            throw new LayerPruneException($"{c.Path}: RoPE type {c.Rope.Type} is not supported for phi2 export");
        int? window = c.SlidingWindows.FirstOrDefault(w => w is not null);
        if (window is not null && !ignoreSlidingWindow)
            throw new LayerPruneException($"{c.Path}: sliding_window {window} cannot be represented in llama.cpp's {arch} architecture " +
                $"(llama.cpp would attend beyond {window} tokens); pass --ignore-sliding-window to export anyway, " +
                "as llama.cpp's own converter does");
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
