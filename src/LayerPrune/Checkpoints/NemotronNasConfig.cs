using System.Globalization;
using System.Text.Json.Nodes;

namespace LayerPrune.Checkpoints;

/// <summary>
/// The Nemotron-NAS layout (HF DeciLMForCausalLM, config.json model_type "nemotron-nas"): a Llama model whose
/// <c>block_configs</c> list says per layer whether its attention and FFN exist. Keys as in the model's remote code
/// (configuration_decilm.py, block_config.py), vLLM's nemotron_nas.py and llama.cpp's convert_hf_to_gguf.py DeciModel:
/// <c>attention: {no_op, replace_with_linear, n_heads_in_group}</c> (kv heads = heads / n_heads_in_group) and
/// <c>ffn: {no_op, replace_with_linear, ffn_mult}</c> (width = round_up(int(2·ffn_mult·H/3), 256)); a removed sublayer has
/// no tensors, its norm included. A width that rule cannot give is written as <c>ffn.intermediate_size</c> (the field of
/// the newer ModelOpt block configs, read by vLLM when ffn_mult is absent).
/// </summary>
public static class NemotronNasConfig
{
    /// <summary>config.json model_type of the layout.</summary>
    public const string ModelType = "nemotron-nas";
    /// <summary>The HF class.</summary>
    public const string ArchitectureName = "DeciLMForCausalLM";
    /// <summary>Where HF finds the remote code (the public Nemotron-51B repository's files, as its own config.json names them).</summary>
    public const string RemoteCodeRepo = "nvidia/Llama-3_1-Nemotron-51B-Instruct";

    /// <summary>What block_configs say, per layer, plus the values every present sublayer shares.</summary>
    /// <param name="Attention">Per layer: the attention exists.</param>
    /// <param name="Mlp">Per layer: the FFN exists.</param>
    /// <param name="KvHeads">num_attention_heads / n_heads_in_group (num_attention_heads when no attention exists).</param>
    /// <param name="IntermediateSize">The FFN width (0 when no FFN exists).</param>
    /// <param name="Windows">Per layer: attention.window_length (a sliding window) or null.</param>
    public sealed record Blocks(bool[] Attention, bool[] Mlp, int KvHeads, int IntermediateSize, int?[] Windows);

    /// <summary>round_up(int(2·ffn_mult·H/3), 256): DeciLM's _ffn_mult_to_intermediate_size.</summary>
    public static int FfnMultToIntermediateSize(double ffnMult, int hidden)
    {
        int size = (int)(2 * ffnMult * hidden / 3);
        return size % 256 == 0 ? size : size + 256 - size % 256;
    }

    /// <summary>
    /// An ffn_mult (rounded to 6 decimals, as block_config.py stores it) that gives <paramref name="intermediate"/>, or null
    /// when no ffn_mult can (the width is not a multiple of 256).
    /// </summary>
    public static double? FfnMultFor(int intermediate, int hidden)
    {
        if (intermediate <= 0 || intermediate % 256 != 0) return null;
        double m = Math.Round(1.5 * intermediate / hidden, 6);
        for (int k = 0; k < 3; k++, m = Math.Round(m + 1e-6, 6))
            if (FfnMultToIntermediateSize(m, hidden) == intermediate) return m;
        return null;
    }

    /// <summary>Reads block_configs of <paramref name="raw"/> (<paramref name="path"/> named in every error).</summary>
    public static Blocks Read(JsonObject raw, string path, int layers, int heads, int hidden)
    {
        if (raw["block_configs"] is not JsonArray list || list.Count != layers)
            throw new LayerPruneException($"{path}: 'block_configs' must list one block per layer ({layers})");
        var attention = new bool[layers];
        var mlp = new bool[layers];
        var windows = new int?[layers];
        var groups = new SortedSet<int>();
        var widths = new SortedSet<int>();
        for (int i = 0; i < layers; i++)
        {
            string at = $"{path}: block_configs[{i}]";
            var block = list[i] as JsonObject ?? throw new LayerPruneException($"{at} is not an object");
            var a = block["attention"] as JsonObject ?? throw new LayerPruneException($"{at}.attention is missing");
            var f = block["ffn"] as JsonObject ?? throw new LayerPruneException($"{at}.ffn is missing");
            foreach (var (name, sub) in new[] { ("attention", a), ("ffn", f) })
            {
                if (Bool(sub, "replace_with_linear"))
                    throw new LayerPruneException($"{at}.{name}.replace_with_linear: linear-replacement blocks are not supported " +
                                                  "(LayerPrune reads no_op and full blocks only)");
                foreach (var key in new[] { "sparsify", "num_sink_tokens", "moe", "mamba", "llama4" })
                    if (sub[key] is not null)
                        throw new LayerPruneException($"{at}.{name}.{key}: not supported (LayerPrune reads no_op and full blocks only)");
            }
            attention[i] = !Bool(a, "no_op");
            mlp[i] = !Bool(f, "no_op");
            if (attention[i])
            {
                int g = Int(a, "n_heads_in_group")
                    ?? throw new LayerPruneException($"{at}.attention.n_heads_in_group is missing (needed for an attention block)");
                if (g <= 0 || heads % g != 0)
                    throw new LayerPruneException($"{at}.attention.n_heads_in_group {g} does not divide num_attention_heads {heads}");
                groups.Add(g);
                windows[i] = Int(a, "window_length");
                if (windows[i] is <= 0) throw new LayerPruneException($"{at}.attention.window_length must be positive");
            }
            if (mlp[i])
            {
                int width = f["ffn_mult"] is JsonValue mv && mv.TryGetValue<double>(out double mult)
                    ? FfnMultToIntermediateSize(Math.Round(mult, 6), hidden)
                    : Int(f, "intermediate_size")
                      ?? throw new LayerPruneException($"{at}.ffn needs ffn_mult or intermediate_size (it is not a no_op)");
                if (width <= 0) throw new LayerPruneException($"{at}.ffn gives a width of {width}");
                widths.Add(width);
            }
        }
        if (groups.Count > 1)
            throw new LayerPruneException($"{path}: layers use different n_heads_in_group ({string.Join(", ", groups)}); " +
                                          "LayerPrune supports one value for all attention blocks");
        if (widths.Count > 1)
            throw new LayerPruneException($"{path}: layers use different FFN widths ({string.Join(", ", widths)}); " +
                                          "LayerPrune supports one width for all FFN blocks");
        return new Blocks(attention, mlp, groups.Count == 0 ? heads : heads / groups.Min, widths.Count == 0 ? 0 : widths.Min, windows);
    }

    /// <summary>
    /// config.json of <paramref name="source"/> (a Llama-family config) rewritten as Nemotron-NAS for the kept
    /// <paramref name="layers"/> (original indices), each with its attention/FFN present or not. Returns the config and a
    /// one-line note when the FFN width is not expressible by ffn_mult.
    /// </summary>
    public static (JsonObject Config, string? Note) Write(ModelConfig source, IReadOnlyList<(int Layer, bool Attention, bool Mlp)> layers)
    {
        var c = (JsonObject)source.Raw.DeepClone();
        int heads = source.NumHeads, group = heads / source.NumKvHeads, hidden = source.HiddenSize, width = source.IntermediateSize;
        double? mult = FfnMultFor(width, hidden);
        string? note = mult is null
            ? $"FFN width {width} is not round_up(int(2·ffn_mult·{hidden}/3), 256) for any ffn_mult (not a multiple of 256): " +
              $"written as ffn.intermediate_size {width} (vLLM reads it; the Nemotron-51B remote code and llama.cpp's converter need " +
              "ffn_mult and refuse the file)"
            : null;
        var blocks = new JsonArray();
        foreach (var (layer, attention, mlp) in layers)
        {
            var a = new JsonObject
                { ["no_op"] = !attention, ["replace_with_linear"] = false, ["n_heads_in_group"] = attention ? group : null };
            if (source.SlidingWindows[layer] is int window && attention) a["window_length"] = window;
            var f = new JsonObject { ["no_op"] = !mlp, ["replace_with_linear"] = false };
            if (mlp && mult is double m) f["ffn_mult"] = m;
            else if (mlp) f["intermediate_size"] = width;
            else f["ffn_mult"] = null;
            blocks.Add(new JsonObject { ["attention"] = a, ["ffn"] = f });
        }
        c["architectures"] = new JsonArray(ArchitectureName);
        c["model_type"] = ModelType;
        c["auto_map"] = new JsonObject
        {
            ["AutoConfig"] = $"{RemoteCodeRepo}--configuration_decilm.DeciLMConfig",
            ["AutoModelForCausalLM"] = $"{RemoteCodeRepo}--modeling_decilm.DeciLMForCausalLM",
        };
        c["num_hidden_layers"] = layers.Count;
        c["block_configs"] = blocks;
        // DeciLMConfig sets these to None (per block now); Mistral's window moved to attention.window_length.
        foreach (var key in new[] { "intermediate_size", "num_key_value_heads", "sliding_window", "layer_types", "max_window_layers",
                                    "use_sliding_window" })
            c.Remove(key);
        if (source.AttentionBias) c["attention_bias"] = true;
        // The remote code is built on transformers 4.44's LlamaConfig, which reads rope_theta / rope_scaling, not rope_parameters.
        if (c["rope_parameters"] is JsonObject rp)
        {
            c["rope_theta"] = source.Rope.Theta;
            if (source.Rope.Type != "default")
            {
                var scaling = (JsonObject)rp.DeepClone();
                scaling.Remove("rope_theta");
                c["rope_scaling"] = scaling;
            }
        }
        return (c, note);
    }

    static bool Bool(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue<bool>(out bool b) && b;

    static int? Int(JsonObject o, string key) => o[key] switch
    {
        JsonValue v when v.TryGetValue<int>(out int i) => i,
        JsonValue v when v.TryGetValue<double>(out double d) && d == Math.Floor(d) => (int)d,
        _ => null,
    };

    /// <summary>For messages: "attention 1, 3; mlp 2".</summary>
    internal static string Describe(IEnumerable<int> attention, IEnumerable<int> mlp) =>
        string.Join("; ", new[] { ("attention", attention.ToList()), ("mlp", mlp.ToList()) }.Where(p => p.Item2.Count > 0)
            .Select(p => $"{p.Item1} {string.Join(", ", p.Item2.Select(i => i.ToString(CultureInfo.InvariantCulture)))}"));
}
