using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using Spectre.Console;

namespace LayerPrune.Cli.Commands;

public static class InfoCommand
{
    public static Command Create()
    {
        var model = Cli.ModelOption();
        var json = Cli.JsonOption();
        var cmd = new Command("info", "Architecture, layers, parameters, storage dtype and memory of a model (reads only headers)") { model, json };
        return cmd.WithAction(p =>
        {
            using var ckpt = Checkpoint.Open(p.GetValue(model)!);
            var info = Describe(ckpt);
            if (p.GetValue(json)) { Cli.PrintJson(info); return 0; }
            var table = new Table().AddColumn("property").AddColumn("value");
            foreach (var (k, v) in info) table.AddRow(Markup.Escape(k), Markup.Escape(v?.ToJsonString().Trim('"') ?? "null"));
            AnsiConsole.Write(table);
            return 0;
        });
    }

    public static JsonObject Describe(Checkpoint ckpt)
    {
        var c = ckpt.Config;
        long parameters = ckpt.ParameterCount, bytes = ckpt.StorageBytes;
        var dtypes = ckpt.WeightMap.Keys.Select(n => ckpt.Info(n).Dtype).GroupBy(d => d).OrderByDescending(g => g.Count()).Select(g => g.Key);
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
            ["rope"] = $"{c.Rope.Type}, theta {c.Rope.Theta}" + (c.Rope.PartialRotaryFactor < 1 ? $", partial {c.Rope.PartialRotaryFactor}" : ""),
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

    public static string Human(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F1} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:F1} KiB",
        _ => $"{bytes} B",
    };
}
