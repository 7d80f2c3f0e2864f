using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using Spectre.Console;

namespace LayerPrune.Cli.Commands;

/// <summary>`layerprune info`: what a checkpoint holds.</summary>
public static class InfoCommand
{
    /// <summary>The `info` command.</summary>
    public static Command Create()
    {
        var model = Cli.ModelOption();
        var json = Cli.JsonOption();
        var cmd = new Command("info", "Architecture, layers, parameters, storage dtype and memory of a model (reads only headers)")
            { model, json };
        return cmd.WithAction(p =>
        {
            string path = p.GetValue(model)!;
            // GGUF files (issue 16) are described from their header; hub ids resolve to their snapshot (issue 27).
            bool gguf = LayerPrune.Hub.ModelSource.IsGguf(path);
            if (!gguf) path = Cli.ResolveModel(p, path);
            using var ckpt = gguf ? null : Checkpoint.Open(path);
            var info = gguf ? DescribeGguf(LayerPrune.Gguf.GgufFile.Open(path)) : Describe(ckpt!);
            if (p.GetValue(json)) { Cli.PrintJson(info); return 0; }
            var table = new Table().AddColumn("property").AddColumn("value");
            foreach (var (k, v) in info) table.AddRow(Markup.Escape(k), Markup.Escape(v?.ToJsonString().Trim('"') ?? "null"));
            AnsiConsole.Write(table);
            return 0;
        });
    }

    /// <summary>The checkpoint's architecture, size and tensors as <c>info --json</c> prints them.</summary>
    public static JsonObject Describe(Checkpoint ckpt)
    {
        var c = ckpt.Config;
        long parameters = ckpt.ParameterCount, bytes = ckpt.StorageBytes;
        var dtypes = ckpt.WeightMap.Keys.Select(n => ckpt.Info(n).Dtype).GroupBy(d => d).OrderByDescending(g => g.Count())
            .Select(g => g.Key);
        var o = new JsonObject
        {
            ["model"] = Path.GetFullPath(ckpt.Directory),
            ["architecture"] = (c.Raw["architectures"] as JsonArray)?[0]?.GetValue<string>() ?? c.ModelType,
            ["model_type"] = c.ModelType,
            ["layers"] = c.NumLayers,
            ["hidden_size"] = c.HiddenSize,
            ["intermediate_size"] = c.IntermediateSize,
            ["attention_heads"] = c.NumHeads,
            ["kv_heads"] = c.NumKvHeads,
            ["head_dim"] = c.HeadDim,
            ["vocab_size"] = c.VocabSize,
            ["tied_embeddings"] = c.TieWordEmbeddings,
            ["rope"] = $"{c.Rope.Type}, theta {c.Rope.Theta}"
                + (c.Rope.PartialRotaryFactor < 1 ? $", partial {c.Rope.PartialRotaryFactor}" : ""),
            ["sliding_window"] = c.SlidingWindows.FirstOrDefault(w => w is not null),
            ["parameters"] = parameters,
            ["storage_dtype"] = string.Join(",", dtypes),
            ["storage_bytes"] = bytes,
            ["storage"] = Human(bytes),
            ["memory_fp32"] = Human(parameters * 4),
            ["memory_bf16"] = Human(parameters * 2),
            ["files"] = ckpt.Files.Count,
            ["sharded"] = ckpt.IsSharded,
        };
        string plan = Path.Combine(ckpt.Directory, "prune_plan.json");
        if (File.Exists(plan) && JsonNode.Parse(File.ReadAllText(plan)) is JsonObject pj)
            o["pruned_from"] = $"{pj["source_model"]} ({pj["original_layers"]} layers, removed {pj["removed"]?.ToJsonString()})";
        return o;
    }

    /// <summary>A GGUF file's architecture, layers, dimensions, tensor types and size.</summary>
    public static JsonObject DescribeGguf(LayerPrune.Gguf.GgufFile f)
    {
        string arch = f.Architecture;
        long? Key(string k) => f.Get($"{arch}.{k}") is { Type: not LayerPrune.Gguf.GgufValueType.Array } v ? v.AsLong() : null;
        var types = f.Tensors.GroupBy(t => t.Type).OrderByDescending(g => g.Count()).Select(g => $"{g.Key}×{g.Count()}");
        return new JsonObject
        {
            ["model"] = Path.GetFullPath(f.Path),
            ["format"] = $"GGUF v{f.Version}",
            ["architecture"] = arch,
            ["name"] = f.Get("general.name")?.Value as string,
            ["layers"] = f.BlockCount,
            ["hidden_size"] = Key("embedding_length"),
            ["intermediate_size"] = Key("feed_forward_length"),
            ["attention_heads"] = Key("attention.head_count"),
            ["kv_heads"] = Key("attention.head_count_kv"),
            ["context_length"] = Key("context_length"),
            ["vocab_size"] = f.Get("tokenizer.ggml.tokens")?.Count ?? Key("vocab_size"),
            ["tokenizer"] = f.Get("tokenizer.ggml.model")?.Value as string,
            ["parameters"] = f.Tensors.Sum(t => t.NumElements),
            ["tensors"] = f.Tensors.Count,
            ["tensor_types"] = string.Join(", ", types),
            ["file_type"] = f.Get("general.file_type")?.AsLong(),
            ["storage_bytes"] = f.FileLength,
            ["storage"] = Human(f.FileLength),
        };
    }

    /// <summary>A byte count in B / KiB / MiB / GiB.</summary>
    public static string Human(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F1} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:F1} KiB",
        _ => $"{bytes} B",
    };
}
