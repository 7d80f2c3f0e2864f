using System.Text.RegularExpressions;
using LayerPrune.Checkpoints;
using LayerPrune.Pruning;

namespace LayerPrune.Gguf;

/// <summary>
/// `prune --model X.gguf --unit attention|mlp|sublayer` (issue 25): writes a llama-architecture GGUF without the plan's
/// sublayers as llama.cpp's "deci" architecture, as <see cref="GgufExporter"/> writes a sublayer-pruned checkpoint
/// (<see cref="DeciGguf"/>): llama.* keys become deci.*, head_count / head_count_kv / feed_forward_length become per-layer
/// INT32 arrays with 0 where a sublayer was removed (feed_forward_length 1 and a zero FFN where only the MLP went), the
/// removed attention's blk.N.attn_* and MLP's blk.N.ffn_* tensors are left out, layers losing both are dropped and the rest
/// renumbered; every other tensor's bytes are copied verbatim (any tensor type).
/// </summary>
public static partial class GgufSublayerPruner
{
    [GeneratedRegex(@"^blk\.(\d+)\.(.+)$")]
    private static partial Regex BlockTensor();

    /// <summary>The GGUF architecture a sublayer plan can be written from.</summary>
    public const string SourceArchitecture = "llama";

    /// <summary>Throws a one-line error unless <paramref name="path"/> holds a llama-architecture GGUF.</summary>
    public static GgufFile Open(string path)
    {
        var src = GgufFile.Open(path);
        if (src.Architecture != SourceArchitecture)
            throw new LayerPruneException($"{path}: architecture '{src.Architecture}': only llama-architecture GGUF files can lose " +
                "attention or MLP sublayers (llama.cpp's deci graph runs Llama blocks); prune the Hugging Face checkpoint and export it, " +
                "or remove whole layers");
        return src;
    }

    /// <summary>Writes <paramref name="outPath"/> from <paramref name="inPath"/> without the sublayers of <paramref name="plan"/>;
    /// <paramref name="config"/> is the model's config (e.g. of its imported checkpoint), which the plan was made for.</summary>
    public static GgufPruneResult Prune(string inPath, SublayerPlan plan, ModelConfig config, string outPath, bool force)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(config);
        var src = Open(inPath);
        const string from = SourceArchitecture + ".", to = "deci.";
        int layers = src.BlockCount;
        if (plan.OriginalLayers != layers)
            throw LayerPruneException.Usage($"{inPath}: the plan is for {plan.OriginalLayers} layers but llama.block_count is {layers}");
        if (OutputFolder.Canonical(outPath) == OutputFolder.Canonical(inPath))
            throw LayerPruneException.Invalid(nameof(outPath), outPath, "must not be the input file");
        var kept = plan.KeptLayers(config);
        int PerLayer(string key, int layer, int? fallback = null) => src.Get(from + key) switch
        {
            { Value: Array a } => Convert.ToInt32(a.GetValue(layer), System.Globalization.CultureInfo.InvariantCulture),
            { } v => (int)v.AsLong(),
            null => fallback ?? throw new LayerPruneException($"{inPath}: no {from}{key}"),
        };
        int heads0 = PerLayer("attention.head_count", 0);
        long hidden = src.Get(from + "embedding_length")?.AsLong() ?? throw new LayerPruneException($"{inPath}: no {from}embedding_length");
        int[] Arr(Func<(int Layer, bool Attention, bool Mlp), int> f) => kept.Select(f).ToArray();
        var arrays = new Dictionary<string, int[]>
        {
            ["attention.head_count"] = Arr(k => k.Attention ? PerLayer("attention.head_count", k.Layer) : 0),
            ["attention.head_count_kv"] = Arr(k => k.Attention
                ? PerLayer("attention.head_count_kv", k.Layer, PerLayer("attention.head_count", k.Layer)) : 0),
            ["feed_forward_length"] = Arr(k => k.Mlp ? PerLayer("feed_forward_length", k.Layer) : k.Attention ? 1 : 0),
        };

        var metadata = new List<KeyValuePair<string, GgufValue>>();
        foreach (var (key, value) in src.Metadata)
        {
            if (key == "general.architecture") { metadata.Add(new(key, GgufValue.Str("deci"))); continue; }
            if (!key.StartsWith(from, StringComparison.Ordinal)) { metadata.Add(new(key, value)); continue; }
            string rest = key[from.Length..];
            if (rest == "block_count")
                metadata.Add(new(to + rest, new GgufValue(value.Type, Convert.ChangeType(kept.Count, value.Value.GetType(),
                    System.Globalization.CultureInfo.InvariantCulture))));
            else if (arrays.TryGetValue(rest, out var values))
                metadata.Add(new(to + rest, GgufValue.Array(GgufValueType.Int32, values)));
            else if (value.Type == GgufValueType.Array && value.Count == layers)
            {
                var items = (Array)value.Value;
                var cut = Array.CreateInstance(items.GetType().GetElementType()!, kept.Count);
                for (int i = 0; i < kept.Count; i++) cut.SetValue(items.GetValue(kept[i].Layer), i);
                metadata.Add(new(to + rest, GgufValue.Array(value.ElementType, cut)));
            }
            else metadata.Add(new(to + rest, value));
        }
        if (src.Get(from + "attention.head_count_kv") is null)
            metadata.Add(new(to + "attention.head_count_kv", GgufValue.Array(GgufValueType.Int32, arrays["attention.head_count_kv"])));
        // llama.cpp derives the head size from layer 0's head count when these are absent: 0 once layer 0 lost its attention.
        foreach (var k in new[] { "attention.key_length", "attention.value_length" })
            if (src.Get(from + k) is null) metadata.Add(new(to + k, GgufValue.U32((uint)(hidden / heads0))));

        var newIndex = kept.Select((k, n) => (k, n)).ToDictionary(p => p.k.Layer, p => (p.n, p.k.Attention, p.k.Mlp));
        var tensors = new List<GgufTensorToWrite>();
        foreach (var t in src.Tensors)
        {
            string name = t.Name;
            if (BlockTensor().Match(t.Name) is { Success: true } m)
            {
                int layer = int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                if (layer >= layers)
                    throw new LayerPruneException($"{inPath}: tensor '{t.Name}' belongs to a block beyond llama.block_count = {layers}");
                if (!newIndex.TryGetValue(layer, out var k)) continue;
                string part = m.Groups[2].Value;
                if (!k.Attention && part.StartsWith("attn_", StringComparison.Ordinal)) continue;
                if (!k.Mlp && part.StartsWith("ffn_", StringComparison.Ordinal)) continue;
                name = $"blk.{k.n}.{part}";
            }
            var info = t;
            tensors.Add(new GgufTensorToWrite(name, t.Dims, t.Type, s => src.CopyTensor(info, s)));
        }
        foreach (var (k, n) in kept.Select((k, n) => (k, n)))
            if (k.Attention && !k.Mlp) tensors.AddRange(DeciGguf.ZeroFfn(n, hidden));
        GgufWriter.Write(outPath, metadata, tensors, force, src.Alignment);
        return new GgufPruneResult(Path.GetFullPath(outPath), layers, kept.Count, tensors.Count, new FileInfo(outPath).Length);
    }
}
