using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using Spectre.Console;

namespace LayerPrune.Cli.Commands;

public static class EvalCommand
{
    public static Command Create()
    {
        var model = Cli.ModelOption();
        var task = new Option<string[]>("--task", "-t")
        {
            Description = "Task SPEC, repeatable: loss:FILE (validation loss), mc:FILE.jsonl, mmlu:DIR, boolq:FILE, hellaswag:FILE, gsm8k:FILE|DIR " +
                          "(options after commas, e.g. mmlu:DIR,shots=5; gsm8k:test.jsonl,train=train.jsonl)",
            Required = true, AllowMultipleArgumentsPerToken = true,
        };
        var limit = new Option<int?>("--limit") { Description = "Only the first N items (per subject for MMLU)" };
        var batch = new Option<int>("--batch", "-b") { Description = "Items (or loss chunks) per forward batch", DefaultValueFactory = _ => 8 };
        var seqLen = new Option<int>("--seq-len") { Description = "loss: tokens per chunk", DefaultValueFactory = _ => 256 };
        var maxChunks = new Option<int>("--max-chunks") { Description = "loss: first N chunks (0 = all)", DefaultValueFactory = _ => 128 };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "gsm8k: generation budget per item", DefaultValueFactory = _ => 256 };
        var noReuse = new Option<bool>("--no-prefix-reuse") { Description = "Score every choice from scratch (as the harness does) instead of sharing the context's KV cache" };
        var json = Cli.JsonOption();
        var output = new Option<string?>("--out", "-o") { Description = "Also write the results JSON to this file" };
        var cmd = new Command("eval", "Evaluate a model like lm-evaluation-harness (log-likelihood scoring) and validation loss")
            { model, task, limit, batch, seqLen, maxChunks, maxNew, noReuse, json, output };
        return cmd.WithAction(p =>
        {
            string dir = p.GetValue(model)!;
            var specs = p.GetValue(task)!;
            Cli.Require(p.GetValue(batch) >= 1, $"--batch {p.GetValue(batch)}: must be at least 1");
            Cli.Require(p.GetValue(seqLen) >= 2, $"--seq-len {p.GetValue(seqLen)}: must be at least 2");
            Cli.Require(p.GetValue(limit) is null or >= 1, $"--limit {p.GetValue(limit)}: must be at least 1");
            foreach (var s in specs) Evaluator.Validate(s);
            var tok = Cli.LoadTokenizer(dir);
            using var m = Cli.LoadModel(p, dir);
            var options = new EvalOptions
            {
                Limit = p.GetValue(limit), BatchSize = p.GetValue(batch), SeqLen = p.GetValue(seqLen),
                MaxChunks = p.GetValue(maxChunks) == 0 ? null : p.GetValue(maxChunks), MaxNewTokens = p.GetValue(maxNew),
                ReusePrefix = !p.GetValue(noReuse),
            };
            var scores = specs.Select(s => Evaluator.Run(m, tok, s, options)).ToList();
            var results = ResultsJson.Build(scores, new EvalRunConfig(Path.GetFullPath(dir), [], options.Limit, options.BatchSize, 0));
            results["config"]!["tasks"] = new JsonArray(specs.Select(s => (JsonNode?)s).ToArray());
            // Top-level shortcuts for scripts: the loss task's numbers.
            if (scores.FirstOrDefault(s => s.Name == Evaluator.LossKind) is { } loss)
            {
                results["validation_loss"] = loss.Values["validation_loss"];
                results["tokens"] = (long)loss.Values["tokens"];
            }
            if (p.GetValue(output) is { } file) File.WriteAllText(file, results.ToJsonString(Cli.Indented));
            if (p.GetValue(json)) { Cli.PrintJson(results); return 0; }
            var table = new Table().AddColumn("task").AddColumn("metric").AddColumn("value").AddColumn("± stderr").AddColumn("n");
            foreach (var s in scores)
                foreach (var (k, v) in s.Values.Where(kv => !kv.Key.EndsWith("_stderr")))
                    table.AddRow(Markup.Escape(s.Name), Markup.Escape(k), k == "tokens" ? $"{v:F0}" : $"{v:F4}", s.Values.TryGetValue(k + "_stderr", out var se) ? $"{se:F4}" : "", s.Samples.ToString());
            AnsiConsole.Write(table);
            return 0;
        });
    }
}
