using System.Text.Json.Nodes;
using LayerPrune.Similarity;

namespace LayerPrune.Pruning;

/// <summary>Which layers go (0-based original indices) and why. Kept layers are renumbered 0… in order.</summary>
/// <param name="Selection">How the strategy chose and what the choice cost (written as prune_plan.json's "selection").</param>
/// <param name="Strategy">Name of the strategy that chose the layers.</param>
/// <param name="OriginalLayers">Layers of the unpruned model.</param>
/// <param name="Removed">Removed layers, 0-based original indices.</param>
/// <param name="Distance">The chosen block's distance, when the strategy measures one.</param>
/// <param name="Source">Where the choice came from (e.g. a similarity.json), when known.</param>
public sealed record PrunePlan(string Strategy, int OriginalLayers, int[] Removed, double? Distance = null, string? Source = null,
                               JsonObject? Selection = null)
{
    /// <summary>Kept layers, 0-based original indices, in order.</summary>
    public int[] Kept => Enumerable.Range(0, OriginalLayers).Except(Removed).ToArray();
    /// <summary>Number of removed layers.</summary>
    public int BlockSize => Removed.Length;
    /// <summary>Fraction of layers removed.</summary>
    public double Fraction => (double)Removed.Length / OriginalLayers;

    /// <summary>
    /// Layers to remove written like "6-9" or "3,5,7" or "2-4,9" (0-based, inclusive ranges). Errors name
    /// <paramref name="spec"/>.
    /// </summary>
    /// <param name="spec">The layer list.</param>
    /// <param name="layers">Layers of the model.</param>
    public static PrunePlan FromLayerSpec(string spec, int layers)
    {
        if (string.IsNullOrWhiteSpace(spec))
            throw LayerPruneException.Invalid(nameof(spec), null, "empty (expected e.g. 6-9 or 3,5,7)");
        LayerPruneException Bad(string problem) => LayerPruneException.Invalid(nameof(spec), $"'{spec}'", problem);
        var removed = new List<int>();
        foreach (var part in spec.Split(',', StringSplitOptions.TrimEntries))
        {
            var bounds = part.Split('-', StringSplitOptions.TrimEntries);
            if (bounds.Length is < 1 or > 2 || !bounds.All(b => int.TryParse(b, out _)))
                throw Bad($"'{part}' is not a layer index or an inclusive range like 6-9");
            int a = int.Parse(bounds[0]);
            int b = bounds.Length == 2 ? int.Parse(bounds[1]) : a;
            if (b < a)
                throw Bad($"range '{part}' is descending");
            for (int i = a; i <= b; i++)
            {
                if (i < 0 || i >= layers)
                    throw Bad($"layer {i} is out of range (the model has layers 0-{layers - 1})");
                if (removed.Contains(i))
                    throw Bad($"layer {i} is listed twice");
                removed.Add(i);
            }
        }
        if (removed.Count >= layers)
            throw Bad($"removes all {layers} layers; at least one must stay");
        return Create("layers", layers, removed);
    }

    /// <summary>A prune_plan.json written by `layerprune prune` (its "removed" layers) for a model of <paramref name="layers"/>
    /// layers.</summary>
    public static PrunePlan FromJsonFile(string planPath, int layers)
    {
        var root = JsonInput.ReadObject(planPath);
        if (root["original_layers"] is JsonValue ov && ov.TryGetValue<int>(out int original) && original != layers)
            throw LayerPruneException.Invalid(nameof(planPath), planPath,
                $"the plan is for a {original}-layer model but the model has {layers} layers");
        if (root["removed"] is not JsonArray removed || removed.Count == 0)
            throw LayerPruneException.Invalid(nameof(planPath), planPath, "no \"removed\" list of layer indices");
        var spec = string.Join(",", removed.Select(n => n is JsonValue v && v.TryGetValue<int>(out int i) ? i.ToString()
            : throw LayerPruneException.Invalid(nameof(planPath), planPath, "\"removed\" must list integer layer indices")));
        return FromLayerSpec(spec, layers) with { Strategy = "plan" };
    }

    static void CheckN(int n, int layers)
    {
        if (n < 1 || n >= layers)
        {
            string problem = $"must be between 1 and {layers - 1} (the model has {layers} layers; at least one must stay)";
            throw LayerPruneException.Invalid(nameof(n), n, problem);
        }
    }

    /// <summary>The paper's simple rule: the n deepest layers except the final one, i.e. L−1−n … L−2.</summary>
    public static PrunePlan Deepest(int n, int layers)
    {
        CheckN(n, layers);
        if (n > layers - 1)
            throw LayerPruneException.Invalid(nameof(n), n, $"the deepest strategy keeps the final layer, so at most {layers - 1}");
        return Create("deepest", layers, Enumerable.Range(layers - 1 - n, n));
    }

    /// <summary>Baseline: remove layers 1…n (layer 0 stays).</summary>
    public static PrunePlan Shallowest(int n, int layers)
    {
        CheckN(n, layers);
        return Create("shallowest", layers, Enumerable.Range(1, n));
    }

    /// <summary>Baseline: a random contiguous block of n layers (seeded).</summary>
    public static PrunePlan RandomBlock(int n, int layers, int seed)
    {
        CheckN(n, layers);
        int start = new Random(seed * 1000003 + n).Next(0, layers - n + 1);
        return Create("random", layers, Enumerable.Range(start, n));
    }

    /// <summary>The paper's method: the block [l*(n), l*(n)+n) minimising the angular distance.</summary>
    public static PrunePlan FromSimilarity(SimilarityResult s, int n)
    {
        CheckN(n, s.Layers);
        var best = s.BestFor(n);
        return Create("similarity", s.Layers, Enumerable.Range(best.Start, n), best.Distance);
    }

    /// <summary>n from a fraction of the layers: round(fraction · L), at least 1.</summary>
    public static int BlockSizeFromFraction(double fraction, int layers)
    {
        if (!(fraction > 0 && fraction < 1))
            throw LayerPruneException.Invalid(nameof(fraction), fraction, "must be strictly between 0 and 1");
        return Math.Clamp((int)Math.Round(fraction * layers, MidpointRounding.AwayFromZero), 1, layers - 1);
    }

    static PrunePlan Create(string strategy, int layers, IEnumerable<int> removed, double? distance = null)
    {
        var r = removed.OrderBy(i => i).ToArray();
        if (r.Length == 0) throw new LayerPruneException("nothing to remove: the plan is empty");
        if (r.Length >= layers) throw new LayerPruneException($"removing {r.Length} of {layers} layers would leave none");
        return new PrunePlan(strategy, layers, r, distance);
    }

    /// <summary>prune_plan.json.</summary>
    public JsonObject ToJson() => new()
    {
        ["indexing"] = "0-based layer indices of the source model; kept layers are renumbered 0.. in order",
        ["strategy"] = Strategy,
        ["source_model"] = Source,
        ["original_layers"] = OriginalLayers,
        ["block_size"] = BlockSize,
        ["fraction_removed"] = Fraction,
        ["removed"] = new JsonArray(Removed.Select(i => (JsonNode?)i).ToArray()),
        ["kept"] = new JsonArray(Kept.Select(i => (JsonNode?)i).ToArray()),
        ["old_to_new"] = new JsonObject(Kept.Select((old, @new) => KeyValuePair.Create(old.ToString(), (JsonNode?)@new))),
        ["angular_distance"] = Distance,
        ["selection"] = Selection?.DeepClone(),
    };

    /// <summary>The kept layers as maximal runs [Start, EndExclusive) of consecutive 0-based indices; never an empty run.</summary>
    public IReadOnlyList<(int Start, int EndExclusive)> KeptRanges()
    {
        var kept = Kept;
        var ranges = new List<(int, int)>();
        for (int i = 0; i < kept.Length;)
        {
            int j = i;
            while (j + 1 < kept.Length && kept[j + 1] == kept[j] + 1) j++;
            ranges.Add((kept[i], kept[j] + 1));
            i = j + 1;
        }
        return ranges;
    }

    /// <summary>The kept layers as half-open slices, e.g. "[0, 18) + [22, 32)" or "[0, 28)" when the block ends at the top.</summary>
    public string KeptSlices() => string.Join(" + ", KeptRanges().Select(r => $"[{r.Start}, {r.EndExclusive})"));

    /// <summary>The same cut as mergekit passthrough slices (layer_range is half-open [start, end)).</summary>
    public string ToMergekitYaml(string modelPath, string? dtype)
    {
        var sb = new System.Text.StringBuilder();
        string removed = string.Join(",", Removed);
        sb.AppendLine($"# LayerPrune: removes layers {removed} (0-based) of {OriginalLayers}; layer_range is half-open [start, end)");
        sb.AppendLine("slices:");
        foreach (var (start, end) in KeptRanges())
        {
            sb.AppendLine("  - sources:");
            sb.AppendLine($"      - model: {modelPath}");
            sb.AppendLine($"        layer_range: [{start}, {end}]");
        }
        sb.AppendLine("merge_method: passthrough");
        if (dtype is not null) sb.AppendLine($"dtype: {dtype}");
        return sb.ToString();
    }
}
