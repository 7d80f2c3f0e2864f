using System.Text.Json;
using System.Text.Json.Nodes;
using LayerPrune.Modeling;
using LayerPrune.Pruning;

namespace LayerPrune.Sweep;

/// <summary>
/// The sweep's shared prefixes (issue 30): a <see cref="PrefixCache"/> attached to the model while variants are evaluated,
/// so that each residual stream shared by several variants' first layers is computed once, and the decoder-layer
/// forwards each row spent, in OUT/<see cref="FileName"/> beside the rows (which stay exactly as without the cache):
/// per row key the layer forwards run and those the cache saved, and the sweep's totals and fraction saved.
/// A layer forward is one decoder layer applied to one sequence (as <see cref="Pruning.Strategies.SelectionCost"/>
/// counts them). Validation loss and multiple-choice / loglikelihood scoring (context and choices, with their KV cache)
/// share; generations are counted but not shared.
/// </summary>
public sealed class SweepPrefixes : IDisposable
{
    /// <summary>The file beside results.json.</summary>
    public const string FileName = "layer_forwards.json";

    /// <summary>Default budget of stored residual streams.</summary>
    public const long DefaultBudgetBytes = 512L << 20;

    readonly CausalLM _model;
    readonly PrefixCache _cache;
    readonly string _path;
    readonly JsonObject _rows;
    long _forwards0, _saved0;

    SweepPrefixes(CausalLM model, long budgetBytes, string outDir, bool resumed)
    {
        _model = model;
        _cache = new PrefixCache(budgetBytes);
        _path = Path.Combine(outDir, FileName);
        _rows = resumed ? Read(_path) : [];
        model.PrefixCache = _cache;
    }

    /// <summary>Attaches a cache of <paramref name="budgetBytes"/> to <paramref name="model"/> until disposed.</summary>
    public static SweepPrefixes Attach(CausalLM model, long budgetBytes, string outDir, bool resumed) =>
        new(model, budgetBytes, outDir, resumed);

    /// <summary>Starts counting a row.</summary>
    public void BeginRow() => (_forwards0, _saved0) = (_cache.LayerForwards, _cache.LayerForwardsSaved);

    /// <summary>Records the layer forwards since <see cref="BeginRow"/> under <paramref name="key"/> and rewrites the file.</summary>
    public void EndRow(string key)
    {
        long run = _cache.LayerForwards - _forwards0, saved = _cache.LayerForwardsSaved - _saved0;
        _rows[key] = new JsonObject { ["layer_forwards"] = run, ["layer_forwards_saved"] = saved };
        long total = 0, totalSaved = 0;
        foreach (var (_, row) in _rows)
        {
            total += (long)row!["layer_forwards"]!;
            totalSaved += (long)row["layer_forwards_saved"]!;
        }
        var json = new JsonObject
        {
            ["layer_forwards"] = total,
            ["layer_forwards_without_prefix_reuse"] = total + totalSaved,
            ["fewer_fraction"] = total + totalSaved == 0 ? 0.0 : Math.Round((double)totalSaved / (total + totalSaved), 4),
            ["budget_bytes"] = _cache.BudgetBytes,
            ["peak_bytes"] = _cache.PeakBytes, // of this process (a resumed sweep: since it resumed)
            ["rows"] = _rows.DeepClone(),
        };
        OutputFile.WriteAllText(_path, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// One line on the layer forwards of the sweep in <paramref name="outDir"/> (run, without prefix reuse, fraction fewer);
    /// null when it has no <see cref="FileName"/>.
    /// </summary>
    public static string? Summary(string outDir)
    {
        try
        {
            string path = Path.Combine(outDir, FileName);
            if (!File.Exists(path) || JsonNode.Parse(File.ReadAllText(path)) is not JsonObject o) return null;
            long run = (long)o["layer_forwards"]!, without = (long)o["layer_forwards_without_prefix_reuse"]!;
            return $"decoder-layer forwards: {run:N0} ({without:N0} without shared prefixes, "
                + $"{(without == 0 ? 0 : 100.0 * (without - run) / without):F1} % fewer; {FileName})";
        }
        catch (Exception e) when (e is JsonException or NullReferenceException or InvalidOperationException or FormatException)
        {
            return null;
        }
    }

    static JsonObject Read(string path)
    {
        try
        {
            return File.Exists(path) && JsonNode.Parse(File.ReadAllText(path))?["rows"] is JsonObject rows
                ? (JsonObject)rows.DeepClone()
                : [];
        }
        catch (JsonException)
        {
            return []; // informational only: a damaged file loses the counts of earlier rows, not the sweep
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (ReferenceEquals(_model.PrefixCache, _cache)) _model.PrefixCache = null;
        _cache.Dispose();
    }
}
