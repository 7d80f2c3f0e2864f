using LayerPrune.Planning;
using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using LayerPrune.Pruning;
using Spectre.Console;

namespace LayerPrune.Cli.Commands;

/// <summary><c>layerprune eval</c>: tasks (validation loss and lm-evaluation-harness tasks) on one model.</summary>
public static class EvalCommand
{
    /// <summary>The command; its defaults are <see cref="EvalOptions.Default"/>'s.</summary>
    public static Command Create()
    {
        var d = EvalOptions.Default;
        var model = Cli.ModelOption();
        var task = new Option<string[]>("--task", "-t")
        {
            Description = "Task SPEC, repeatable: loss:FILE (validation loss), mc:FILE.jsonl, mmlu:DIR, boolq:FILE, hellaswag:FILE, " +
                          "gsm8k:FILE|DIR (options after commas, e.g. mmlu:DIR,shots=5; gsm8k:test.jsonl,train=train.jsonl); " +
                          "the zero-shot suite: " + SuiteOptions.TaskHelp,
            Required = true,
            AllowMultipleArgumentsPerToken = true,
        };
        var limit = new Option<int?>("--limit") { Description = "Only the first N items (per subject for MMLU)" };
        var batch = new Option<int>("--batch", "-b")
        {
            Description = "Items (or loss chunks) per forward batch",
            DefaultValueFactory = _ => d.BatchSize,
        };
        var seqLen = new Option<int>("--seq-len") { Description = "loss: tokens per chunk", DefaultValueFactory = _ => d.SeqLen };
        var maxChunks = new Option<int>("--max-chunks")
        {
            Description = "loss: first N chunks (0 = all)",
            DefaultValueFactory = _ => d.MaxChunks ?? 0,
        };
        var maxNew = new Option<int>("--max-new-tokens")
        {
            Description = "gsm8k: generation budget per item",
            DefaultValueFactory = _ => d.MaxNewTokens,
        };
        var noReuse = new Option<bool>("--no-prefix-reuse")
        {
            Description = "Score every choice from scratch (as the harness does) instead of sharing the context's KV cache",
        };
        var offload = new Option<bool>("--offload")
        {
            Description = "Stream layers from the checkpoint (layer-major, each layer read once per group of sequences) instead of " +
                          "keeping the model resident; chosen automatically when the resident model does not fit",
        };
        var json = Cli.JsonOption();
        var output = new Option<string?>("--out", "-o") { Description = "Also write the results JSON to this file" };
        var (outputPath, logSamples) = (SuiteOptions.OutputPath(), SuiteOptions.LogSamples());
        var cmd = new Command("eval", "Evaluate a model like lm-evaluation-harness (log-likelihood scoring) and validation loss")
            { model, task, limit, batch, seqLen, maxChunks, maxNew, noReuse, offload, json, output, outputPath, logSamples };
        return cmd.WithAction(p =>
        {
            string dir = Cli.ResolveModel(p, p.GetValue(model)!);
            var specs = p.GetValue(task)!;
            Cli.Require(p.GetValue(batch) >= 1, $"--batch {p.GetValue(batch)}: must be at least 1");
            Cli.Require(p.GetValue(seqLen) >= 2, $"--seq-len {p.GetValue(seqLen)}: must be at least 2");
            Cli.Require(p.GetValue(limit) is null or >= 1, $"--limit {p.GetValue(limit)}: must be at least 1");
            Cli.Require(p.GetValue(maxChunks) >= 0, $"--max-chunks {p.GetValue(maxChunks)}: must be at least 0 (0 = all)");
            Cli.Require(p.GetValue(maxNew) >= 1, $"--max-new-tokens {p.GetValue(maxNew)}: must be at least 1");
            var tasks = specs.Select(EvalTasks.Parse).ToList();
            if (p.GetValue(output) is { } outFile) OutputFile.Check(outFile, "--out"); // before the slow part
            SuiteOptions.Check(p.GetValue(outputPath), p.GetValue(logSamples));
            var tok = Cli.LoadTokenizer(dir);
            // gsm8k generates (KV-cached decoding): it runs on a streamed model too, one layer read per decoding step.
            using var m = Cli.LoadModel(p, dir, p.GetValue(offload), Workload.Evaluate, p.GetValue(batch), p.GetValue(seqLen),
                canOffload: true);
            var options = new EvalOptions
            {
                Limit = p.GetValue(limit),
                BatchSize = p.GetValue(batch),
                SeqLen = p.GetValue(seqLen),
                MaxChunks = p.GetValue(maxChunks) == 0 ? null : p.GetValue(maxChunks),
                MaxNewTokens = p.GetValue(maxNew),
                ReusePrefix = !p.GetValue(noReuse),
            };
            var progress = SpectreProgressSink.ForCli(p.GetValue(Cli.Quiet));
            var prepared = tasks.Select(t => t.Prepare(tok, options)).ToList();
            var scores = prepared.Select(t => t.Score(m, layers: null, progress)).ToList();
            var results = ResultsJson.Build(scores, new EvalRunConfig(Path.GetFullPath(dir), [], options.Limit, options.BatchSize, 0));
            results["config"]!["tasks"] = new JsonArray(specs.Select(s => (JsonNode?)s).ToArray());
            results["protocol"] = ResultsJson.Protocol(prepared);
            // Top-level shortcuts for scripts: the (first) validation loss and its token count.
            if (scores.FirstOrDefault(s => s.Values.ContainsKey(LossTask.MetricName)) is { } loss)
            {
                results[LossTask.MetricName] = loss.Values[LossTask.MetricName];
                results["tokens"] = (long)loss.Values["tokens"];
            }
            if (p.GetValue(output) is { } file) OutputFile.WriteAllText(file, results.ToJsonString(Cli.Indented));
            if (p.GetValue(outputPath) is { } lmDir)
                results["lm_eval_files"] = SuiteOptions.Write(lmDir, prepared, scores, dir, options, p.GetValue(logSamples));
            if (p.GetValue(json))
            {
                Cli.PrintJson(results);
                return 0;
            }
            var table = new Table().AddColumn("task").AddColumn("metric").AddColumn("value").AddColumn("± stderr").AddColumn("n");
            foreach (var s in scores)
                foreach (var (k, v) in s.Values.Where(kv => !kv.Key.EndsWith("_stderr")))
                {
                    string se = s.Values.TryGetValue(k + "_stderr", out var e) ? $"{e:F4}" : "";
                    table.AddRow(Markup.Escape(s.Name), Markup.Escape(k), k == "tokens" ? $"{v:F0}" : $"{v:F4}", se, s.Samples.ToString());
                }
            AnsiConsole.Write(table);
            return 0;
        });
    }
}
