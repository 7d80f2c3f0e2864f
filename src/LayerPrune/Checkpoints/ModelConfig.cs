using System.Text.Json;
using System.Text.Json.Nodes;
using LayerPrune.Modeling.Families;

namespace LayerPrune.Checkpoints;

/// <summary>The decoder families LayerPrune models (HF model_type).</summary>
public enum ArchitectureFamily
{
    /// <summary>model_type "llama".</summary>
    Llama,
    /// <summary>model_type "mistral" (sliding window).</summary>
    Mistral,
    /// <summary>model_type "qwen2" (qkv biases).</summary>
    Qwen2,
    /// <summary>model_type "phi" (Phi-2: parallel attention/MLP, partial RoPE).</summary>
    Phi,
    /// <summary>model_type "nemotron-nas" (DeciLMForCausalLM: Llama blocks whose attention or FFN may be absent).</summary>
    NemotronNas,
}

/// <summary>RoPE settings from either the classic keys (rope_theta, rope_scaling) or transformers ≥ 5 rope_parameters.</summary>
public sealed record RopeSettings(double Theta, string Type, double Factor, double LowFreqFactor, double HighFreqFactor,
                                  int OriginalMaxPositions, double PartialRotaryFactor);

/// <summary>The parts of a Hugging Face config.json the model code needs; the raw JSON is kept for pruning.</summary>
public sealed class ModelConfig
{
    /// <summary>Supported config.json model_type values and their families (see <see cref="Architecture.ByModelType"/>).</summary>
    public static readonly IReadOnlyDictionary<string, ArchitectureFamily> SupportedModelTypes =
        Architecture.ByModelType.ToDictionary(kv => kv.Key, kv => kv.Value.Family);

    /// <summary>The config.json object as read (pruning rewrites a copy).</summary>
    public required JsonObject Raw { get; init; }
    /// <summary>The config.json path (named in every error).</summary>
    public required string Path { get; init; }
    /// <summary>config.json model_type, e.g. "llama".</summary>
    public required string ModelType { get; init; }
    /// <summary>The family of <see cref="ModelType"/>; its descriptor is Architecture.For(this).</summary>
    public required ArchitectureFamily Family { get; init; }
    /// <summary>hidden_size (H).</summary>
    public required int HiddenSize { get; init; }
    /// <summary>intermediate_size (MLP width I).</summary>
    public required int IntermediateSize { get; init; }
    /// <summary>num_hidden_layers.</summary>
    public required int NumLayers { get; init; }
    /// <summary>num_attention_heads.</summary>
    public required int NumHeads { get; init; }
    /// <summary>num_key_value_heads (defaults to num_attention_heads).</summary>
    public required int NumKvHeads { get; init; }
    /// <summary>head_dim (defaults to hidden_size / num_attention_heads).</summary>
    public required int HeadDim { get; init; }
    /// <summary>vocab_size (V).</summary>
    public required int VocabSize { get; init; }
    /// <summary>The norm epsilon (key per family: rms_norm_eps or layer_norm_eps; default 1e-5).</summary>
    public required double NormEps { get; init; }
    /// <summary>Rotary embedding settings.</summary>
    public required RopeSettings Rope { get; init; }
    /// <summary>tie_word_embeddings: lm_head shares embed_tokens.</summary>
    public required bool TieWordEmbeddings { get; init; }
    /// <summary>Whether attention projections have biases (family default or attention_bias).</summary>
    public required bool AttentionBias { get; init; }
    /// <summary>Whether MLP projections have biases (family default or mlp_bias).</summary>
    public required bool MlpBias { get; init; }
    /// <summary>hidden_act (family default when absent).</summary>
    public required string HiddenAct { get; init; }
    /// <summary>Per layer: the sliding window (keys with q − k ≥ window are masked) or null for full attention.</summary>
    public required int?[] SlidingWindows { get; init; }
    /// <summary>bos_token_id, if given.</summary>
    public int? BosTokenId { get; init; }
    /// <summary>eos_token_id (one or a list).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>pad_token_id, if given.</summary>
    public int? PadTokenId { get; init; }
    /// <summary>dtype (or torch_dtype) the checkpoint was saved in, if given.</summary>
    public string? StorageDtype { get; init; }
    /// <summary>Per layer: whether it has an attention sublayer (null: all do; Nemotron-NAS block_configs).</summary>
    public bool[]? AttentionPresent { get; init; }
    /// <summary>Per layer: whether it has an MLP sublayer (null: all do).</summary>
    public bool[]? MlpPresent { get; init; }

    /// <summary>Whether layer <paramref name="layer"/> has its attention.</summary>
    public bool HasAttention(int layer) => AttentionPresent?[layer] ?? true;
    /// <summary>Whether layer <paramref name="layer"/> has its MLP.</summary>
    public bool HasMlp(int layer) => MlpPresent?[layer] ?? true;

    /// <summary>Upper bounds far above any real model; they keep hostile configs from allocating per-layer arrays of billions.</summary>
    public const int MaxLayers = 4096, MaxDimension = 1 << 24;

    /// <summary>Reads and parses &lt;modelDir&gt;/config.json.</summary>
    public static ModelConfig Load(string modelDir)
    {
        if (!Directory.Exists(modelDir)) throw LayerPruneException.Usage($"{modelDir}: model folder not found");
        string path = System.IO.Path.Combine(modelDir, "config.json");
        if (!File.Exists(path)) throw new LayerPruneException($"{path}: missing (a Hugging Face model folder needs config.json)");
        return Parse(JsonInput.ReadObject(path), path);
    }

    /// <summary>Parses config.json text (all failures are LayerPruneException naming <paramref name="path"/>).</summary>
    public static ModelConfig Parse(string json, string path) => Parse(JsonInput.ParseObject(json, path, null), path);

    /// <summary>Parses a config.json object (all failures are LayerPruneException naming <paramref name="path"/>).</summary>
    public static ModelConfig Parse(JsonObject raw, string path)
    {
        string modelType = Str(raw, "model_type", path) ?? throw Missing(path, "model_type");
        if (!Architecture.ByModelType.TryGetValue(modelType, out var arch))
            throw new LayerPruneException(
                $"{path}: unsupported model_type '{modelType}' (supported: {string.Join(", ", SupportedModelTypes.Keys)})");
        var family = arch.Family;
        int hidden = Int(raw, "hidden_size", path) ?? throw Missing(path, "hidden_size");
        int layers = Int(raw, "num_hidden_layers", path) ?? throw Missing(path, "num_hidden_layers");
        int heads = Int(raw, "num_attention_heads", path) ?? throw Missing(path, "num_attention_heads");
        // Nemotron-NAS: kv heads and FFN width per block (block_configs), the globals are null.
        var blocks = family == ArchitectureFamily.NemotronNas && layers is > 0 and <= MaxLayers && hidden > 0 && heads > 0
            ? NemotronNasConfig.Read(raw, path, layers, heads, hidden) : null;
        int kvHeads = blocks?.KvHeads ?? Int(raw, "num_key_value_heads", path) ?? heads;
        int headDim = Int(raw, "head_dim", path) ?? hidden / Math.Max(heads, 1);
        int vocab = Int(raw, "vocab_size", path) ?? throw Missing(path, "vocab_size");
        int inter = blocks is { IntermediateSize: > 0 } ? blocks.IntermediateSize
            : blocks is not null ? Int(raw, "intermediate_size", path) ?? 1
            : Int(raw, "intermediate_size", path) ?? throw Missing(path, "intermediate_size");
        foreach (var (name, v) in new[] { ("hidden_size", hidden), ("num_hidden_layers", layers), ("num_attention_heads", heads),
                     ("num_key_value_heads", kvHeads), ("head_dim", headDim), ("vocab_size", vocab), ("intermediate_size", inter) })
        {
            int limit = name == "num_hidden_layers" ? MaxLayers : MaxDimension;
            if (v <= 0) throw new LayerPruneException($"{path}: {name} must be positive (got {v})");
            if (v > limit) throw new LayerPruneException($"{path}: {name} {v} is implausibly large (limit {limit})");
        }
        if (heads % kvHeads != 0)
            throw new LayerPruneException($"{path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");

        // Sliding windows: Mistral applies `sliding_window` to every layer; Qwen2 only with use_sliding_window and per layer_types.
        int? window = Int(raw, "sliding_window", path);
        if (window is <= 0) throw new LayerPruneException($"{path}: sliding_window must be positive (got {window})");
        var windows = new int?[layers];
        var layerTypes = raw["layer_types"] as JsonArray;
        bool typesValid = layerTypes is null
            || (layerTypes.Count == layers && layerTypes.All(t => t is JsonValue v && v.TryGetValue<string>(out _)));
        if (!typesValid)
            throw new LayerPruneException($"{path}: 'layer_types' must list one string per layer ({layers})");
        for (int i = 0; i < layers; i++)
        {
            bool sliding = family switch
            {
                ArchitectureFamily.Mistral => window is not null,
                ArchitectureFamily.Qwen2 => window is not null && Bool(raw, "use_sliding_window") == true &&
                                            (layerTypes is null
                                                ? i >= (Int(raw, "max_window_layers", path) ?? layers)
                                                : layerTypes[i]!.GetValue<string>() == "sliding_attention"),
                _ => false,
            };
            windows[i] = sliding ? window : blocks?.Windows[i];
        }

        return new ModelConfig
        {
            Raw = raw, Path = path, ModelType = modelType, Family = family,
            HiddenSize = hidden, IntermediateSize = inter, NumLayers = layers, NumHeads = heads, NumKvHeads = kvHeads,
            HeadDim = headDim, VocabSize = vocab,
            NormEps = Double(raw, arch.NormEpsKey, path) ?? 1e-5,
            Rope = ParseRope(raw, path),
            TieWordEmbeddings = Bool(raw, "tie_word_embeddings") ?? false,
            AttentionBias = arch.AttentionBias(Bool(raw, "attention_bias")),
            MlpBias = arch.MlpBias(Bool(raw, "mlp_bias")),
            HiddenAct = Str(raw, "hidden_act", path) ?? arch.DefaultHiddenAct,
            SlidingWindows = windows,
            BosTokenId = Int(raw, "bos_token_id", path),
            EosTokenIds = IntList(raw, "eos_token_id", path),
            PadTokenId = Int(raw, "pad_token_id", path),
            StorageDtype = Str(raw, "dtype", path) ?? Str(raw, "torch_dtype", path),
            AttentionPresent = blocks?.Attention,
            MlpPresent = blocks?.Mlp,
        };
    }

    static RopeSettings ParseRope(JsonObject raw, string path)
    {
        // transformers ≥ 5: rope_parameters {rope_theta, rope_type, factor, ...}; older: rope_theta + rope_scaling {type|rope_type, ...}.
        var p = raw["rope_parameters"] as JsonObject ?? raw["rope_scaling"] as JsonObject;
        double theta = (p is null ? null : Double(p, "rope_theta", path)) ?? Double(raw, "rope_theta", path) ?? 10000.0;
        string type = (p is null ? null : Str(p, "rope_type", path) ?? Str(p, "type", path)) ?? "default";
        if (type is not ("default" or "llama3" or "linear"))
            throw new LayerPruneException($"{path}: unsupported RoPE type '{type}' (supported: default, linear, llama3)");
        double partial = (p is null ? null : Double(p, "partial_rotary_factor", path)) ?? Double(raw, "partial_rotary_factor", path) ?? 1.0;
        return new RopeSettings(theta, type,
            Factor: (p is null ? null : Double(p, "factor", path)) ?? 1.0,
            LowFreqFactor: (p is null ? null : Double(p, "low_freq_factor", path)) ?? 1.0,
            HighFreqFactor: (p is null ? null : Double(p, "high_freq_factor", path)) ?? 4.0,
            OriginalMaxPositions: (p is null ? null : Int(p, "original_max_position_embeddings", path)) ?? 8192,
            PartialRotaryFactor: partial);
    }

    static LayerPruneException Missing(string path, string key) => new($"{path}: required key '{key}' is missing");

    static string? Str(JsonObject o, string key, string path) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        var other => throw new LayerPruneException($"{path}: '{key}' must be a string (got {other.ToJsonString()})"),
    };
    static int? Int(JsonObject o, string key, string path) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<int>(out var i) => i,
        JsonValue v when v.TryGetValue<double>(out var d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue => (int)d,
        var other => throw new LayerPruneException($"{path}: '{key}' must be an integer (got {other.ToJsonString()})"),
    };
    static int[] IntList(JsonObject o, string key, string path) => o[key] switch
    {
        null => [],
        JsonArray a => a.Select(x => x is JsonValue v && v.TryGetValue<int>(out int i) ? i : throw NotIntList(path, key, a)).ToArray(),
        JsonValue v when v.TryGetValue<int>(out int id) => [id],
        var other => throw NotIntList(path, key, other),
    };
    static LayerPruneException NotIntList(string path, string key, JsonNode node) =>
        new($"{path}: '{key}' must be an integer or a list of integers (got {node.ToJsonString()})");
    static double? Double(JsonObject o, string key, string path) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<double>(out var d) => d,
        var other => throw new LayerPruneException($"{path}: '{key}' must be a number (got {other.ToJsonString()})"),
    };
    static bool? Bool(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue<bool>(out var b) ? b : null;
}
