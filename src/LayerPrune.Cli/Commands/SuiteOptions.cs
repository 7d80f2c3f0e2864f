using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using LayerPrune.Evaluation.Suite;

namespace LayerPrune.Cli.Commands;

/// <summary>The eval options of the zero-shot suite: lm-eval result files (--output-path) and samples (--log-samples).</summary>
public static class SuiteOptions
{
    /// <summary>The suite's task specs for --task help.</summary>
    public const string TaskHelp = "arc_easy:FILE, arc_challenge:FILE, piqa:FILE, openbookqa:FILE, winogrande:FILE (options shots=N, " +
        "train=FILE, limit=N), lambada_openai:FILE, wikitext:wiki.test.raw (limit=N, max_length=N), qmsum:FILE (limit=N, max_length=N)";

    /// <summary>--output-path DIR.</summary>
    public static Option<string?> OutputPath() => new("--output-path")
    {
        Description = "Also write lm-evaluation-harness's results file, DIR/MODEL/results_DATE.json (\"results\": {TASK: " +
                      "{\"acc,none\", \"acc_stderr,none\", ...}}, configs, versions, n-shot, n-samples), for tools that " +
                      "read lm-eval output",
    };

    /// <summary>--log-samples.</summary>
    public static Option<bool> LogSamples() => new("--log-samples")
    {
        Description = "With --output-path: also write lm-eval's per-document records, DIR/MODEL/samples_TASK_DATE.jsonl (doc_id, doc, " +
                      "target, arguments as [context, continuation] pairs, resps, filtered_resps and the document's metrics)",
    };

    /// <summary>Checks the two options before any model work.</summary>
    public static void Check(string? outputPath, bool logSamples)
    {
        Cli.Require(!logSamples || outputPath is not null, "--log-samples: needs --output-path DIR");
        if (outputPath is null) return;
        Cli.Require(!File.Exists(outputPath), $"--output-path {outputPath}: is a file; give a folder");
        var parent = Path.GetDirectoryName(Path.GetFullPath(outputPath));
        Cli.Require(parent is not null && Directory.Exists(parent), $"--output-path {outputPath}: folder {parent} does not exist");
    }

    /// <summary>Writes the files; returns their paths for the command's JSON.</summary>
    public static JsonArray Write(string dir, IReadOnlyList<IPreparedTask> tasks, IReadOnlyList<TaskScore> scores, string model,
        EvalOptions options, bool logSamples) =>
        new(LmEvalResults.Write(dir, tasks, scores, model, options, logSamples).Select(f => (JsonNode?)f).ToArray());
}
