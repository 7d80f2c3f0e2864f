using System.Text.Json;
using System.Text.Json.Nodes;

namespace LayerPrune.Evaluation;

/// <summary>What a run was (recorded under "config").</summary>
public sealed record EvalRunConfig(string ModelPath, IReadOnlyList<TaskSpec> Tasks, int? Limit, int BatchSize, int Seed);

/// <summary>
/// lm-evaluation-harness-shaped results file, kept simple:
/// <code>
/// { "results": { "&lt;task&gt;": { "acc": .., "acc_stderr": .., "acc_norm": .., "acc_norm_stderr": .., "samples": n },
///                "mmlu_&lt;subject&gt;": { ... } },
///   "config": { "model": .., "tasks": [{ "spec": .., "kind": .., "path": .., "num_fewshot": .. }],
///               "limit": .. | null, "batch_size": .., "seed": .. } }
/// </code>
/// Metric keys are plain (the harness writes "acc,none" / "acc_stderr,none"); gsm8k has exact_match_strict and
/// exact_match_flexible (the harness's "exact_match,strict-match" / "exact_match,flexible-extract") and their _stderr.
/// MMLU subjects appear as separate entries after the group, as in the harness. NaN (e.g. stderr of 1 sample) → null.
/// </summary>
public static class ResultsJson
{
    /// <summary>The results document of <paramref name="scores"/> (see the class summary).</summary>
    public static JsonObject Build(IEnumerable<TaskScore> scores, EvalRunConfig config)
    {
        var results = new JsonObject();
        foreach (var s in scores)
        {
            results[s.Name] = Entry(s);
            foreach (var sub in s.Subtasks) results[sub.Name] = Entry(sub);
        }
        var tasks = new JsonArray();
        foreach (var t in config.Tasks)
            tasks.Add(new JsonObject
            {
                ["spec"] = t.Text, ["kind"] = t.Kind, ["path"] = t.Path, ["num_fewshot"] = t.NumFewshot,
            });
        return new JsonObject
        {
            ["results"] = results,
            ["config"] = new JsonObject
            {
                ["model"] = config.ModelPath, ["tasks"] = tasks, ["limit"] = config.Limit,
                ["batch_size"] = config.BatchSize, ["seed"] = config.Seed,
            },
        };
    }

    /// <summary>Per task (by its spec as written): what exactly was measured (<see cref="IPreparedTask.Protocol"/>),
    /// e.g. <c>{"loss:val.txt": {"seq_len": 256, "max_chunks": 128, "chunks": 128, "tokens": 32640}}</c>.</summary>
    public static JsonObject Protocol(IEnumerable<IPreparedTask> tasks)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        var o = new JsonObject();
        foreach (var t in tasks)
        {
            var entry = new JsonObject();
            foreach (var (k, v) in t.Protocol) entry[k] = v;
            o[t.Spec.Text] = entry;
        }
        return o;
    }

    /// <summary><see cref="Build"/>, indented.</summary>
    public static string ToJsonString(IEnumerable<TaskScore> scores, EvalRunConfig config) =>
        Build(scores, config).ToJsonString(new JsonSerializerOptions { WriteIndented = true });

    private static JsonObject Entry(TaskScore s)
    {
        var o = new JsonObject();
        foreach (var (k, v) in s.Values) o[k] = double.IsFinite(v) ? v : null;
        o["samples"] = s.Samples;
        return o;
    }
}
