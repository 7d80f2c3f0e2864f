using System.Globalization;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling;

namespace LayerPrune.Pruning;

/// <summary>What is removed: whole layers (the paper), attention sublayers, MLP sublayers, or both kinds ranked together.</summary>
public enum PruneUnit
{
    /// <summary>Whole decoder layers (default).</summary>
    Layer,
    /// <summary>Attention sublayers only.</summary>
    Attention,
    /// <summary>MLP sublayers only.</summary>
    Mlp,
    /// <summary>Attention and MLP sublayers ranked together.</summary>
    Sublayer,
}

/// <summary>Parsing and naming of <see cref="PruneUnit"/>.</summary>
public static class PruneUnits
{
    /// <summary>The names: layer, attention, mlp, sublayer.</summary>
    public static readonly IReadOnlyList<string> Names = ["layer", "attention", "mlp", "sublayer"];

    /// <summary>The unit named <paramref name="name"/>; throws naming <paramref name="parameter"/> for anything else.</summary>
    public static PruneUnit Parse(string name, string parameter = "unit") => name.Trim().ToLowerInvariant() switch
    {
        "layer" => PruneUnit.Layer,
        "attention" or "attn" => PruneUnit.Attention,
        "mlp" or "ffn" => PruneUnit.Mlp,
        "sublayer" => PruneUnit.Sublayer,
        _ => throw LayerPruneException.Invalid(parameter, $"'{name}'", $"unknown unit (expected one of {string.Join(", ", Names)})"),
    };

    /// <summary>"layer", "attention", "mlp" or "sublayer".</summary>
    public static string Name(this PruneUnit u) => Names[(int)u];

    /// <summary>The sublayers of <paramref name="c"/> that <paramref name="unit"/> may remove (those the model has), by layer.</summary>
    public static IReadOnlyList<Sublayer> Candidates(ModelConfig c, PruneUnit unit)
    {
        var list = new List<Sublayer>();
        for (int i = 0; i < c.NumLayers; i++)
        {
            if (unit is PruneUnit.Attention or PruneUnit.Sublayer && c.HasAttention(i)) list.Add(new(i, SublayerKind.Attention));
            if (unit is PruneUnit.Mlp or PruneUnit.Sublayer && c.HasMlp(i)) list.Add(new(i, SublayerKind.Mlp));
        }
        return list;
    }
}

/// <summary>
/// Which attention and MLP sublayers go (0-based original layer indices) and why. A layer that loses both (or whose remaining
/// sublayers all go) is a removed layer: the written checkpoint drops it and renumbers the rest.
/// </summary>
/// <param name="Strategy">Name of the strategy that chose.</param>
/// <param name="Unit">The unit the strategy ranked.</param>
/// <param name="OriginalLayers">Layers of the source model.</param>
/// <param name="Removed">Removed sublayers, by layer then attention before MLP.</param>
/// <param name="Selection">How the strategy chose and what it cost.</param>
public sealed record SublayerPlan(string Strategy, PruneUnit Unit, int OriginalLayers, Sublayer[] Removed, JsonObject? Selection = null)
{
    /// <summary>The removed sublayers as a mask for <see cref="ForwardOptions.Skip"/>.</summary>
    public SublayerMask Mask => SublayerMask.Of(Removed);

    /// <summary>Validated plan: every sublayer exists in <paramref name="c"/> and is named once.</summary>
    public static SublayerPlan Create(string strategy, PruneUnit unit, ModelConfig c, IEnumerable<Sublayer> removed,
        JsonObject? selection = null, string parameter = "plan")
    {
        var list = new List<Sublayer>();
        foreach (var s in removed)
        {
            if (s.Layer < 0 || s.Layer >= c.NumLayers)
                throw LayerPruneException.Invalid(parameter, s.ToString(), $"layer {s.Layer} is out of range (the model has layers " +
                                                                           $"0-{c.NumLayers - 1})");
            bool present = s.Kind == SublayerKind.Attention ? c.HasAttention(s.Layer) : c.HasMlp(s.Layer);
            if (!present)
                throw LayerPruneException.Invalid(parameter, s.ToString(), $"the {s} sublayer is already removed in {c.Path}");
            if (list.Contains(s)) throw LayerPruneException.Invalid(parameter, s.ToString(), $"{s} is listed twice");
            list.Add(s);
        }
        if (list.Count == 0) throw LayerPruneException.Invalid(parameter, null, "nothing to remove: the plan is empty");
        var plan = new SublayerPlan(strategy, unit, c.NumLayers, list.OrderBy(s => s.Layer).ThenBy(s => s.Kind).ToArray(), selection);
        if (plan.KeptLayers(c).Count == 0)
            throw LayerPruneException.Invalid(parameter, null, "removes every sublayer of every layer; at least one must stay");
        return plan;
    }

    /// <summary>
    /// Sublayers written like "attention:1,3,mlp:2" or "attention:1-3" (a prefix holds for the items after it); with
    /// <paramref name="unit"/> attention or mlp the prefix may be left out ("1,3"). Errors name <paramref name="parameter"/>.
    /// </summary>
    public static SublayerPlan FromSpec(string spec, PruneUnit unit, ModelConfig c, string parameter = "layers")
    {
        if (unit == PruneUnit.Layer) throw new ArgumentException("a sublayer plan needs a sublayer unit", nameof(unit));
        if (string.IsNullOrWhiteSpace(spec))
            throw LayerPruneException.Invalid(parameter, null, "empty (expected e.g. attention:1,3,mlp:2)");
        SublayerKind? kind = unit switch { PruneUnit.Attention => SublayerKind.Attention, PruneUnit.Mlp => SublayerKind.Mlp, _ => null };
        var removed = new List<Sublayer>();
        foreach (var raw in spec.Split(',', StringSplitOptions.TrimEntries))
        {
            string item = raw;
            int colon = item.IndexOf(':');
            if (colon >= 0)
            {
                var k = PruneUnits.Parse(item[..colon], parameter);
                if (k is PruneUnit.Layer or PruneUnit.Sublayer)
                    throw LayerPruneException.Invalid(parameter, $"'{raw}'", "a sublayer is attention:N or mlp:N");
                if (unit != PruneUnit.Sublayer && k != unit)
                    throw LayerPruneException.Invalid(parameter, $"'{raw}'", $"names {k.Name()} sublayers but the unit is {unit.Name()}");
                kind = k == PruneUnit.Attention ? SublayerKind.Attention : SublayerKind.Mlp;
                item = item[(colon + 1)..];
            }
            if (kind is not SublayerKind known)
                throw LayerPruneException.Invalid(parameter, $"'{raw}'", "with unit sublayer name the kind: attention:N or mlp:N");
            var bounds = item.Split('-', StringSplitOptions.TrimEntries);
            if (bounds.Length is < 1 or > 2 || !bounds.All(b => int.TryParse(b, NumberStyles.None, CultureInfo.InvariantCulture, out _)))
                throw LayerPruneException.Invalid(parameter, $"'{raw}'", "is not a layer index or an inclusive range like 1-3");
            int a = int.Parse(bounds[0], CultureInfo.InvariantCulture);
            int b = bounds.Length == 2 ? int.Parse(bounds[1], CultureInfo.InvariantCulture) : a;
            if (b < a) throw LayerPruneException.Invalid(parameter, $"'{raw}'", "the range is descending");
            for (int i = a; i <= b; i++) removed.Add(new Sublayer(i, known));
        }
        return Create("layers", unit, c, removed, parameter: parameter);
    }

    /// <summary>A prune_plan.json with "removed_sublayers" (written by a sublayer prune) for the model of <paramref name="c"/>.</summary>
    public static SublayerPlan FromJson(JsonObject root, string planPath, ModelConfig c)
    {
        if (root["original_layers"] is JsonValue ov && ov.TryGetValue<int>(out int original) && original != c.NumLayers)
            throw LayerPruneException.Invalid(nameof(planPath), planPath,
                $"the plan is for a {original}-layer model but the model has {c.NumLayers} layers");
        var unit = root["unit"] is JsonValue u && u.TryGetValue<string>(out var us)
            ? PruneUnits.Parse(us, nameof(planPath)) : PruneUnit.Sublayer;
        if (root["removed_sublayers"] is not JsonObject removed)
            throw LayerPruneException.Invalid(nameof(planPath), planPath, "no \"removed_sublayers\" object");
        IEnumerable<Sublayer> Read(string key, SublayerKind kind) => removed[key] switch
        {
            null => [],
            JsonArray a => a.Select(n => n is JsonValue v && v.TryGetValue<int>(out int i) ? new Sublayer(i, kind)
                : throw LayerPruneException.Invalid(nameof(planPath), planPath, $"\"removed_sublayers.{key}\" must list layer indices")),
            _ => throw LayerPruneException.Invalid(nameof(planPath), planPath, $"\"removed_sublayers.{key}\" must be a list"),
        };
        var list = Read("attention", SublayerKind.Attention).Concat(Read("mlp", SublayerKind.Mlp)).ToList();
        return Create("plan", unit, c, list, parameter: nameof(planPath));
    }

    /// <summary>Per original layer whether its attention / MLP stays, for the layers that keep at least one sublayer.</summary>
    public IReadOnlyList<(int Layer, bool Attention, bool Mlp)> KeptLayers(ModelConfig c)
    {
        var mask = Mask;
        var kept = new List<(int, bool, bool)>();
        for (int i = 0; i < OriginalLayers; i++)
        {
            bool a = c.HasAttention(i) && !mask.SkipsAttention(i), m = c.HasMlp(i) && !mask.SkipsMlp(i);
            if (a || m) kept.Add((i, a, m));
        }
        return kept;
    }

    /// <summary>Whether no kept layer of <paramref name="c"/> has an attention sublayer left.</summary>
    public bool AttentionFree(ModelConfig c) => KeptLayers(c).All(k => !k.Attention);

    /// <summary>The one-line note for an attention-free result, or null.</summary>
    public string? AttentionFreeNote(ModelConfig c) => AttentionFree(c)
        ? "every attention sublayer is removed: the model is attention-free (each position sees only itself; no KV cache)"
        : null;

    /// <summary>Removed attention layers, ascending.</summary>
    public int[] AttentionLayers => Removed.Where(s => s.Kind == SublayerKind.Attention).Select(s => s.Layer).ToArray();
    /// <summary>Removed MLP layers, ascending.</summary>
    public int[] MlpLayers => Removed.Where(s => s.Kind == SublayerKind.Mlp).Select(s => s.Layer).ToArray();

    /// <summary>"attention 1, 3; mlp 2".</summary>
    public string Describe() => NemotronNasConfig.Describe(AttentionLayers, MlpLayers);

    /// <summary>prune_plan.json of a sublayer prune.</summary>
    public JsonObject ToJson(ModelConfig c)
    {
        var kept = KeptLayers(c);
        JsonArray Ints(IEnumerable<int> xs) => new(xs.Select(i => (JsonNode?)i).ToArray());
        return new JsonObject
        {
            ["indexing"] = "0-based layer indices of the source model; layers keeping a sublayer are renumbered 0.. in order",
            ["strategy"] = Strategy,
            ["unit"] = Unit.Name(),
            ["original_layers"] = OriginalLayers,
            ["removed_sublayers"] = new JsonObject { ["attention"] = Ints(AttentionLayers), ["mlp"] = Ints(MlpLayers) },
            ["removed_layers"] = Ints(Enumerable.Range(0, OriginalLayers).Except(kept.Select(k => k.Layer))),
            ["kept"] = Ints(kept.Select(k => k.Layer)),
            ["attention_free"] = AttentionFree(c),
            ["selection"] = Selection?.DeepClone(),
        };
    }
}
