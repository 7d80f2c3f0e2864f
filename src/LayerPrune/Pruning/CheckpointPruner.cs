using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling.Families;

namespace LayerPrune.Pruning;

/// <summary>
/// Writes a pruned Hugging Face checkpoint: kept layers renumbered 0…, every other tensor untouched, stored bytes and
/// dtypes copied verbatim (no conversion), sharding kept with a fresh index, config updated, side files copied.
/// </summary>
public static partial class CheckpointPruner
{
    [GeneratedRegex(@"^model\.layers\.(\d+)\.(.+)$")]
    private static partial Regex LayerTensor();

    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Writes the checkpoint of <paramref name="source"/> without the plan's layers into <paramref name="outDir"/>.</summary>
    /// <param name="source">The model to prune (never modified).</param>
    /// <param name="plan">Which layers go.</param>
    /// <param name="outDir">New folder, written through a hidden temp sibling and renamed into place.</param>
    /// <param name="force">Replace an existing <paramref name="outDir"/>.</param>
    /// <param name="maxShardBytes">Shard the output at this size; null = keep the input's sharding.</param>
    /// <param name="onTensorWritten">Called with each output tensor's name once it is written (see SafeTensorsWriter.Write).</param>
    /// <param name="repair">Maps fitted for <paramref name="plan"/> (<see cref="LinearRepair.Fit"/>): their layers' MLP output
    /// projections are written folded, everything else verbatim; prune_plan.json records the repair.</param>
    public static void Write(Checkpoint source, PrunePlan plan, string outDir, bool force = false, long? maxShardBytes = null,
        Action<string>? onTensorWritten = null, LinearRepair? repair = null)
    {
        using var output = OutputFolder.Begin(outDir, force, nameof(outDir), source.Directory);
        Write(source, plan, output, maxShardBytes, onTensorWritten, repair);
    }

    /// <summary>
    /// Writes the pruned checkpoint into <paramref name="output"/>, begun by the caller (who thereby holds the output's lock
    /// from before any slow work, e.g. a similarity pass), and commits it.
    /// </summary>
    public static void Write(Checkpoint source, PrunePlan plan, OutputFolder output, long? maxShardBytes = null,
        Action<string>? onTensorWritten = null, LinearRepair? repair = null)
    {
        var config = source.Config;
        if (plan.OriginalLayers != config.NumLayers)
            throw new LayerPruneException($"plan is for {plan.OriginalLayers} layers but {source.Directory} has {config.NumLayers}");
        var newIndex = plan.Kept.Select((old, @new) => (old, @new)).ToDictionary(p => p.old, p => p.@new);
        if (repair is not null && !repair.Plan.Removed.SequenceEqual(plan.Removed))
            throw new ArgumentException("the repair was fitted for another plan", nameof(repair));
        var folded = repair?.FoldedTensors(source) ?? new Dictionary<string, TorchSharp.torch.Tensor>();

        var tensors = new List<TensorToWrite>();
        foreach (var name in source.WeightMap.Keys)
        {
            var m = LayerTensor().Match(name);
            if (!m.Success) { tensors.Add(TensorToWrite.FromFile(name, source.FileOf(name), name)); continue; }
            int layer = int.Parse(m.Groups[1].Value);
            if (!newIndex.TryGetValue(layer, out int renumbered)) continue;
            string newName = Architecture.LayerPrefix(renumbered) + m.Groups[2].Value;
            tensors.Add(folded.TryGetValue(name, out var f) ? TensorToWrite.FromTensor(newName, f)
                : TensorToWrite.FromFile(newName, source.FileOf(name), name));
        }

        long shardLimit = maxShardBytes ?? (source.IsSharded ? source.Files.Values.Max(f => f.FileLength) : long.MaxValue);
        WriteTensors(output, tensors, shardLimit, source.IsSharded || maxShardBytes is not null, onTensorWritten);
        File.WriteAllText(output.File("config.json"), PrunedConfig(config, plan).ToJsonString(Indented));
        CopySideFiles(source, output);
        var planJson = (plan with { Source = Path.GetFullPath(source.Directory) }).ToJson();
        if (repair is not null) planJson["repair"] = repair.ToJson();
        foreach (var f in folded.Values) f.Dispose();
        File.WriteAllText(output.File("prune_plan.json"), planJson.ToJsonString(Indented));
        File.WriteAllText(output.File("mergekit.yaml"), plan.ToMergekitYaml(Path.GetFullPath(source.Directory), config.StorageDtype));
        output.Commit();
    }

    /// <summary>The pruned config.json: num_hidden_layers and every per-layer list (layer_types, …) follow the kept layers.</summary>
    public static JsonObject PrunedConfig(ModelConfig config, PrunePlan plan)
    {
        var c = (JsonObject)config.Raw.DeepClone();
        c["num_hidden_layers"] = plan.Kept.Length;
        foreach (var key in c.Select(kv => kv.Key).ToList())
            if (c[key] is JsonArray a && a.Count == config.NumLayers && key != "architectures")
                c[key] = new JsonArray(plan.Kept.Select(i => a[i]?.DeepClone()).ToArray());
        // Qwen2 without layer_types: layers ≥ max_window_layers use the sliding window; keep each kept layer's kind.
        bool qwenWindows = config.Family == ArchitectureFamily.Qwen2 && c["layer_types"] is null;
        if (qwenWindows && c["max_window_layers"] is JsonValue mw && mw.TryGetValue<int>(out int maxWindow))
            c["max_window_layers"] = plan.Kept.Count(i => i < maxWindow);
        return c;
    }

    internal static void WriteTensors(OutputFolder output, List<TensorToWrite> tensors, long shardLimit, bool sharded,
        Action<string>? onWritten)
    {
        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        if (!sharded)
        {
            SafeTensorsWriter.Write(output.File(Checkpoint.SingleFile), tensors, meta, onWritten);
            return;
        }
        // Greedy packing in name order (as HF's split_torch_state_dict_into_shards does by insertion order).
        var shards = new List<List<TensorToWrite>> { new() };
        long current = 0;
        foreach (var t in tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
        {
            if (current > 0 && current + t.ByteLength > shardLimit) { shards.Add(new()); current = 0; }
            shards[^1].Add(t); current += t.ByteLength;
        }
        var weightMap = new JsonObject();
        for (int s = 0; s < shards.Count; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            SafeTensorsWriter.Write(output.File(file), shards[s], meta, onWritten);
            foreach (var t in shards[s]) weightMap[t.Name] = file;
        }
        var index = new JsonObject
        {
            ["metadata"] = new JsonObject { ["total_size"] = tensors.Sum(t => t.ByteLength) },
            ["weight_map"] = new JsonObject(weightMap.OrderBy(kv => kv.Key, StringComparer.Ordinal)
                .Select(kv => KeyValuePair.Create(kv.Key, kv.Value?.DeepClone()))),
        };
        File.WriteAllText(output.File(Checkpoint.IndexFile), index.ToJsonString(Indented));
    }

    /// <summary>Tokenizer, generation config and other small files; never weights, the old index, or pickles.</summary>
    internal static void CopySideFiles(Checkpoint source, OutputFolder output)
    {
        var skip = new HashSet<string>(source.Files.Keys) { "config.json", Checkpoint.IndexFile, "prune_plan.json", "mergekit.yaml" };
        foreach (var path in Directory.EnumerateFiles(source.Directory))
        {
            string name = Path.GetFileName(path);
            bool weights = name.EndsWith(".safetensors") || name.EndsWith(".bin") || name.EndsWith(".pt") || name.EndsWith(".pth");
            if (skip.Contains(name) || weights)
                continue;
            File.Copy(path, output.File(name));
        }
    }
}
