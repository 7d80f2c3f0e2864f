using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LayerPrune.Efficiency;
using LayerPrune.Pruning;
using LayerPrune.Pruning.Strategies;

namespace LayerPrune.Sweep;

/// <summary>
/// One evaluated variant of a sweep (a row of results.json / results.csv). JSON and CSV exist only when written:
/// <see cref="ToJson"/>, <see cref="FromJson"/> and <see cref="SweepFiles.ToCsv"/>. To add a field: a property here
/// and one line in each of ToJson, FromJson (and <see cref="FixedKeys"/>) and <see cref="ExtraColumns"/> (or the CSV's
/// fixed columns).
/// </summary>
public sealed record VariantRow
{
    /// <summary>The keys that are fields, not metrics.</summary>
    public static readonly IReadOnlySet<string> FixedKeys =
        new HashSet<string>
        {
            "n", "fraction", "strategy", "removed", "healed", "angular_distance", "seed", "selection_cost", "efficiency",
            "efficiency_reference", "generations", "unit", "removed_sublayers", "removed_parameter_fraction",
            "kv_cache_bytes_per_token",
        };

    /// <summary>The columns <see cref="EfficiencyResult.RowFields"/> gives (derived from <see cref="Efficiency"/>, not
    /// metrics).</summary>
    public static readonly IReadOnlySet<string> EfficiencyKeys = new HashSet<string>
    {
        "decode_tokens_per_second", "prefill_tokens_per_second", "decode_speedup", "prefill_speedup", "weight_bytes",
        "weight_saved_fraction", "kv_cache_bytes", "resident_bytes",
    };

    /// <summary>Strategy; "none" for the unpruned model.</summary>
    public required string Strategy { get; init; }

    /// <summary>Layers removed.</summary>
    public int N { get; init; }

    /// <summary>n / L.</summary>
    public double Fraction { get; init; }

    /// <summary>0-based layer indices of the source model that were removed.</summary>
    public IReadOnlyList<int> Removed { get; init; } = [];

    /// <summary>Whether the variant was healed before evaluation.</summary>
    public bool Healed { get; init; }

    /// <summary>The similarity strategy's angular distance of the removed block; null for other strategies.</summary>
    public double? AngularDistance { get; init; }

    /// <summary>Seed of a random variant when the sweep has <see cref="SweepOptions.Seeds"/>; null otherwise.</summary>
    public int? Seed { get; init; }

    /// <summary>What choosing the layers cost in forward passes, layer forwards and tokens (the strategy's measuring; the
    /// wall-clock seconds are not kept, so rows are reproducible); null for the unpruned and healed rows.</summary>
    public SelectionCost? SelectionCost { get; init; }

    /// <summary>The variant's efficiency measurement (<see cref="SweepOptions.Efficiency"/>); null when not measured.</summary>
    public EfficiencyResult? Efficiency { get; init; }

    /// <summary>The unpruned model timed interleaved with <see cref="Efficiency"/> (its same-run reference).</summary>
    public EfficiencyResult? EfficiencyReference { get; init; }

    /// <summary>The greedy continuation of each of <see cref="SweepOptions.Prompts"/>, in prompt order; null without prompts.
    /// Their degeneration score is the metric <see cref="SweepGenerations.Column"/>.</summary>
    public IReadOnlyList<Generation>? Generations { get; init; }

    /// <summary>In a sweep over units (<see cref="SweepOptions.Units"/>): the unit the variant removed ("layer", "attention",
    /// "mlp", "sublayer"); null for the unpruned row and in sweeps of whole layers alone.</summary>
    public string? Unit { get; init; }

    /// <summary>The attention and MLP sublayers a sublayer variant removed (original layer indices); null otherwise.</summary>
    public IReadOnlyList<Modeling.Sublayer>? RemovedSublayers { get; init; }

    /// <summary>In a sweep over units: removed parameters / decoder parameters (<see cref="RemovedParameters"/>).</summary>
    public double? ParameterFraction { get; init; }

    /// <summary>In a sweep over units: KV-cache bytes per token of the layers that keep attention, in the compute dtype.</summary>
    public long? KvCacheBytesPerToken { get; init; }

    /// <summary>Metric column (e.g. "validation_loss", "mc_acc") → value, in task order.</summary>
    public IReadOnlyDictionary<string, double> Metrics { get; init; } = new OrderedDictionary<string, double>();

    /// <summary>The plot/report series: the strategy, with "+heal" for healed variants.</summary>
    public string Series => IsSublayerUnit(Unit) ? $"{Unit}:{Strategy}" : Strategy + (Healed ? "+heal" : "");

    /// <summary>Identifies the variant within a sweep (resume skips rows whose key is done).</summary>
    public string Key => KeyOf(Strategy, N, Healed, Seed, Unit);

    /// <summary>The key of a (strategy, n, healed, seed) variant; a sublayer unit's key starts with the unit.</summary>
    public static string KeyOf(string strategy, int n, bool healed, int? seed = null, string? unit = null)
    {
        string key = $"{(IsSublayerUnit(unit) ? unit + "/" : "")}{strategy}/{n}/{(healed ? "healed" : "raw")}";
        return seed is int s ? key + "/seed" + s.ToString(CultureInfo.InvariantCulture) : key;
    }

    /// <summary>Whether <paramref name="unit"/> names a sublayer unit (attention, mlp, sublayer).</summary>
    public static bool IsSublayerUnit(string? unit) => unit is not null and not "layer";

    /// <summary>The CSV/JSON columns after the fixed ones: angular_distance, seed, selection cost (when set), the metrics,
    /// then the efficiency fields against the same-run reference (when measured).</summary>
    public IEnumerable<(string Name, double Value)> ExtraColumns()
    {
        if (AngularDistance is double d) yield return ("angular_distance", d);
        if (Seed is int seed) yield return ("seed", seed);
        if (ParameterFraction is double pf) yield return ("removed_parameter_fraction", pf);
        if (KvCacheBytesPerToken is long kv) yield return ("kv_cache_bytes_per_token", kv);
        if (SelectionCost is { } c)
        {
            yield return ("selection_forward_passes", c.ForwardPasses);
            yield return ("selection_layer_forwards", c.LayerForwards);
        }
        foreach (var (k, v) in Metrics) yield return (k, v);
        if (Efficiency is { } e)
            foreach (var (k, v) in e.RowFields(EfficiencyReference ?? e)) yield return (k, v);
    }

    /// <summary>The results.json form: n, fraction, strategy, removed, healed, angular_distance?, metrics (NaN → null).</summary>
    public JsonObject ToJson()
    {
        var o = new JsonObject
        {
            ["n"] = N,
            ["fraction"] = Fraction,
            ["strategy"] = Strategy,
            ["removed"] = new JsonArray(Removed.Select(i => (JsonNode?)i).ToArray()),
            ["healed"] = Healed,
        };
        if (Unit is not null) o["unit"] = Unit;
        if (RemovedSublayers is { } subs)
        {
            JsonArray Of(Modeling.SublayerKind k) => new(subs.Where(x => x.Kind == k).Select(x => (JsonNode?)x.Layer).ToArray());
            o["removed_sublayers"] = new JsonObject
                { ["attention"] = Of(Modeling.SublayerKind.Attention), ["mlp"] = Of(Modeling.SublayerKind.Mlp) };
        }
        foreach (var (k, v) in ExtraColumns())
        {
            if (k.StartsWith("selection_", StringComparison.Ordinal)) continue; // in selection_cost below
            if (k == "seed") o[k] = Seed;
            else if (k == "kv_cache_bytes_per_token") o[k] = KvCacheBytesPerToken;
            else o[k] = double.IsFinite(v) ? v : null;
        }
        if (SelectionCost is { } c)
        {
            var cost = c.ToJson();
            cost.Remove("seconds"); // wall-clock: a resumed sweep's rows must equal an uninterrupted one's
            o["selection_cost"] = cost;
        }
        if (Efficiency is { } e) o["efficiency"] = e.ToJson();
        if (EfficiencyReference is { } r) o["efficiency_reference"] = r.ToJson();
        if (Generations is { } g) o["generations"] = new JsonArray(g.Select(x => (JsonNode?)x.ToJson()).ToArray());
        return o;
    }

    /// <summary>Reads a row written by <see cref="ToJson"/>; every other numeric key is a metric (null → NaN).</summary>
    public static VariantRow FromJson(JsonObject o)
    {
        ArgumentNullException.ThrowIfNull(o);
        var metrics = new OrderedDictionary<string, double>();
        foreach (var (k, v) in o)
            if (!FixedKeys.Contains(k) && !EfficiencyKeys.Contains(k)) metrics[k] = v is null ? double.NaN : (double)v;
        return new VariantRow
        {
            Strategy = (string)o["strategy"]!,
            N = (int)o["n"]!,
            Fraction = (double)o["fraction"]!,
            Removed = o["removed"]!.AsArray().Select(x => (int)x!).ToArray(),
            Healed = (bool)o["healed"]!,
            AngularDistance = o["angular_distance"] is JsonNode d ? (double)d : null,
            Seed = o["seed"] is JsonNode seed ? (int)seed : null,
            SelectionCost = o["selection_cost"] is JsonObject c ? CostFromJson(c) : null,
            Efficiency = o["efficiency"] is JsonObject e ? EfficiencyResult.FromJson(e) : null,
            EfficiencyReference = o["efficiency_reference"] is JsonObject r ? EfficiencyResult.FromJson(r) : null,
            Generations = o["generations"] is JsonArray g ? g.Select(x => Generation.FromJson(x!.AsObject())).ToArray() : null,
            Unit = o["unit"] is JsonNode u ? (string)u! : null,
            RemovedSublayers = o["removed_sublayers"] is JsonObject rs ? SublayersFromJson(rs) : null,
            ParameterFraction = o["removed_parameter_fraction"] is JsonNode pf ? (double)pf : null,
            KvCacheBytesPerToken = o["kv_cache_bytes_per_token"] is JsonNode kv ? (long)kv : null,
            Metrics = metrics,
        };
    }

    static Modeling.Sublayer[] SublayersFromJson(JsonObject o) =>
        (o["attention"]?.AsArray() ?? []).Select(x => new Modeling.Sublayer((int)x!, Modeling.SublayerKind.Attention))
        .Concat((o["mlp"]?.AsArray() ?? []).Select(x => new Modeling.Sublayer((int)x!, Modeling.SublayerKind.Mlp)))
        .OrderBy(x => x.Layer).ThenBy(x => x.Kind).ToArray();

    /// <summary>Reads <see cref="Pruning.Strategies.SelectionCost.ToJson"/>'s output; without "seconds" (a row's form,
    /// which leaves the wall-clock time out) Seconds is NaN.</summary>
    public static SelectionCost CostFromJson(JsonObject c)
    {
        ArgumentNullException.ThrowIfNull(c);
        double seconds = c["seconds"] is JsonNode s ? (double)s : double.NaN;
        return new SelectionCost((long)c["forward_passes"]!, (long)c["layer_forwards"]!, (long)c["tokens"]!, seconds);
    }
}

/// <summary>The result of a sweep: its config, what each task measured, and the rows.</summary>
/// <param name="Config">The sweep's settings as recorded in results.json (compared on resume).</param>
/// <param name="Protocol">Per task spec: what exactly was measured (chunks, seq_len, tokens; items, num_fewshot).</param>
/// <param name="Rows">The variants, unpruned first, in evaluation order.</param>
public sealed record SweepResult(JsonObject Config, JsonObject Protocol, IReadOnlyList<VariantRow> Rows)
{
    /// <summary>The row of (strategy, n, healed); throws when absent.</summary>
    public VariantRow Row(string strategy, int n, bool healed = false) =>
        Rows.Single(r => r.Strategy == strategy && r.N == n && r.Healed == healed && !VariantRow.IsSublayerUnit(r.Unit));

    /// <summary>The results.json document: { config, protocol, rows }.</summary>
    public JsonObject ToJson() => new()
    {
        ["config"] = Config.DeepClone(),
        ["protocol"] = Protocol.DeepClone(),
        ["rows"] = new JsonArray(Rows.Select(r => (JsonNode?)r.ToJson()).ToArray()),
    };
}

/// <summary>results.json / results.csv: written atomically (temp file + rename).</summary>
public static class SweepFiles
{
    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Writes OUT/results.json and OUT/results.csv.</summary>
    public static void Write(string outDir, SweepResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        OutputFile.WriteAllText(Path.Combine(outDir, "results.json"), result.ToJson().ToJsonString(Indented));
        OutputFile.WriteAllText(Path.Combine(outDir, "results.csv"), ToCsv(result.Rows));
    }

    /// <summary>The rows of a results.json document and its config; null when the file is absent.</summary>
    public static (JsonObject? Config, List<VariantRow> Rows)? Read(string path)
    {
        if (!File.Exists(path)) return null;
        JsonObject? doc;
        try
        {
            doc = JsonNode.Parse(File.ReadAllText(path)) as JsonObject;
        }
        catch (JsonException e)
        {
            throw new LayerPruneException($"{path}: not valid JSON ({e.Message})", e);
        }
        return doc is null ? (null, []) : (doc["config"] as JsonObject, Rows(doc, path));
    }

    /// <summary>The typed rows of a parsed results.json document (none when it has no "rows" array).</summary>
    public static List<VariantRow> Rows(JsonObject doc, string path)
    {
        ArgumentNullException.ThrowIfNull(doc);
        if (doc["rows"] is not JsonArray rows) return [];
        try
        {
            return rows.Select(r => VariantRow.FromJson(r!.AsObject())).ToList();
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new LayerPruneException($"{path}: a row is not a sweep result ({e.Message})", e);
        }
    }

    /// <summary>strategy,n,fraction,removed,healed, then every extra column in order of first appearance.</summary>
    public static string ToCsv(IReadOnlyList<VariantRow> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var extra = rows.SelectMany(r => r.ExtraColumns().Select(c => c.Name)).Distinct().ToList();
        bool units = rows.Any(r => r.Unit is not null); // a sweep over units: its unit and sublayers after "healed"
        var sb = new StringBuilder("strategy,n,fraction,removed,healed," + (units ? "unit,removed_sublayers," : "")
            + string.Join(",", extra) + "\n");
        foreach (var r in rows)
        {
            var removed = string.Join(" ", r.Removed);
            string healed = r.Healed ? "true" : "false";
            sb.Append(CultureInfo.InvariantCulture, $"{r.Strategy},{r.N},{r.Fraction:R},{removed},{healed}");
            if (units) // "attention:13 mlp:14"
                sb.Append(',').Append(r.Unit).Append(',')
                  .Append(string.Join(" ", r.RemovedSublayers?.Select(x => $"{Modeling.Sublayer.KindName(x.Kind)}:{x.Layer}") ?? []));
            var values = r.ExtraColumns().ToDictionary(c => c.Name, c => c.Value);
            foreach (var m in extra)
                sb.Append(',').Append(values.TryGetValue(m, out var v) && double.IsFinite(v) ? JsonValue.Create(v).ToJsonString() : "");
            sb.Append('\n');
        }
        return sb.ToString();
    }
}
