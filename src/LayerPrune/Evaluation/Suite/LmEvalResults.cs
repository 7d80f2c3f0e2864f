using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LayerPrune.Pruning;

namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// Results in lm-evaluation-harness's file layout (lm_eval/evaluator.py + loggers/evaluation_tracker.py), so that tools
/// that read the harness's output read ours:
/// <code>
/// DIR/MODEL_SANITIZED/results_DATE.json   { "results": { "arc_easy": { "alias": "arc_easy", "acc,none": .., "acc_stderr,none": .., .. } },
///                                          "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
///                                          "n-samples": { "arc_easy": { "original": 2376, "effective": 2376 } }, "config", "date" }
/// DIR/MODEL_SANITIZED/samples_TASK_DATE.jsonl   one <see cref="SampleRecords"/> line per document (with --log-samples;
///                                               the suite's tasks, which keep them in <see cref="TaskScore.Records"/>)
/// </code>
/// Metric keys are "METRIC,FILTER" with the filter "none"; a metric without a standard error has "N/A" as its stderr, as
/// the harness writes it. MODEL_SANITIZED is the model path with runs of <c>"&lt;&gt;:/\|?*[]</c> replaced by "__", DATE the
/// ISO time with ':' → '-'.
/// </summary>
public static partial class LmEvalResults
{
    [GeneratedRegex(@"[""<>:/\|\\?\*\[\]]+")] private static partial Regex Unsafe();

    /// <summary>The harness's model_name_sanitized.</summary>
    public static string Sanitize(string model) => Unsafe().Replace(model, "__");

    /// <summary>The results document.</summary>
    /// <param name="tasks">The prepared tasks, in the order of <paramref name="scores"/>.</param>
    /// <param name="scores">Their scores.</param>
    /// <param name="model">The model path as given.</param>
    /// <param name="options">The run's settings.</param>
    /// <param name="date">When the run finished.</param>
    public static JsonObject Build(IReadOnlyList<IPreparedTask> tasks, IReadOnlyList<TaskScore> scores, string model,
        EvalOptions options, DateTimeOffset date)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        ArgumentNullException.ThrowIfNull(scores);
        ArgumentNullException.ThrowIfNull(options);
        if (tasks.Count != scores.Count) throw new ArgumentException("one score per task");
        JsonObject results = new(), groups = new(), configs = new(), versions = new(), nshot = new(), hib = new(), nsamples = new();
        for (int t = 0; t < tasks.Count; t++)
        {
            var task = tasks[t];
            var score = scores[t];
            var lm = (task as ILmEvalTask)?.LmEval;
            results[score.Name] = Entry(score, lm);
            foreach (var sub in score.Subtasks) results[sub.Name] = Entry(sub, null);
            groups[score.Name] = new JsonArray(score.Subtasks.Select(s => (JsonNode?)s.Name).ToArray());
            configs[score.Name] = lm?.ToJson(task.Spec.NumFewshot, task.Spec.Path) ?? new JsonObject
            {
                ["task"] = score.Name, ["data_file"] = task.Spec.Path, ["num_fewshot"] = task.Spec.NumFewshot,
                ["layerprune_spec"] = task.Spec.Text,
            };
            versions[score.Name] = lm is null ? null : lm.Version;
            nshot[score.Name] = task.Spec.NumFewshot;
            var better = new JsonObject();
            if (lm is not null) foreach (var (m, _, h) in lm.MetricList) better[m] = h;
            else foreach (var m in task.Metrics) better[m.Key] = m.HigherIsBetter;
            hib[score.Name] = better;
            int original = (task as ILmEvalTask)?.Documents ?? score.Samples;
            nsamples[score.Name] = new JsonObject { ["original"] = original, ["effective"] = score.Samples };
        }
        return new JsonObject
        {
            ["results"] = results,
            ["group_subtasks"] = groups,
            ["configs"] = configs,
            ["versions"] = versions,
            ["n-shot"] = nshot,
            ["higher_is_better"] = hib,
            ["n-samples"] = nsamples,
            ["config"] = new JsonObject
            {
                ["model"] = "layerprune",
                ["model_args"] = $"pretrained={model}",
                ["batch_size"] = options.BatchSize,
                ["limit"] = options.Limit,
                ["bootstrap_iters"] = Bootstrap.DefaultIters,
            },
            ["layerprune_protocol"] = ResultsJson.Protocol(tasks),
            ["model_name"] = model,
            ["model_name_sanitized"] = Sanitize(model),
            ["date"] = date.ToUnixTimeMilliseconds() / 1000.0,
        };
    }

    /// <summary>
    /// Writes the results file (and with <paramref name="logSamples"/> one samples file per task) under
    /// <paramref name="dir"/>/MODEL_SANITIZED/, each atomically; returns the paths written.
    /// </summary>
    public static List<string> Write(string dir, IReadOnlyList<IPreparedTask> tasks, IReadOnlyList<TaskScore> scores, string model,
        EvalOptions options, bool logSamples, DateTimeOffset? date = null)
    {
        var when = date ?? DateTimeOffset.Now;
        var folder = Path.Combine(dir, Sanitize(model));
        Directory.CreateDirectory(folder);
        string stamp = when.ToString("yyyy-MM-ddTHH-mm-ss.ffffff", CultureInfo.InvariantCulture);
        var written = new List<string>();
        var doc = Build(tasks, scores, model, options, when);
        string results = Path.Combine(folder, $"results_{stamp}.json");
        OutputFile.WriteAllText(results, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        written.Add(results);
        if (!logSamples) return written;
        // One file per task (MMLU: per subject, as the harness) that keeps per-document records (not loss).
        foreach (var s in scores.SelectMany(s => s.Subtasks.Prepend(s)).Where(s => s.Records.Count > 0))
        {
            string file = Path.Combine(folder, $"samples_{s.Name}_{stamp}.jsonl");
            OutputFile.Write(file, tmp =>
            {
                using var w = new StreamWriter(tmp, false, new UTF8Encoding(false));
                foreach (var r in s.Records) w.Write(r.ToJsonString() + "\n");
            });
            written.Add(file);
        }
        return written;
    }

    static JsonObject Entry(TaskScore s, LmEvalTaskConfig? lm)
    {
        var o = new JsonObject { ["alias"] = s.Name };
        var names = s.Values.Keys.Where(k => !k.EndsWith("_stderr", StringComparison.Ordinal)).ToList();
        foreach (var k in names)
        {
            var v = s.Values[k];
            o[$"{k},none"] = double.IsFinite(v) ? v : null;
            bool isMetric = lm is null || lm.MetricList.Any(m => m.Metric == k);
            if (!isMetric) continue;
            o[$"{k}_stderr,none"] = s.Values.TryGetValue(k + "_stderr", out var se) && double.IsFinite(se) ? se : "N/A";
        }
        return o;
    }
}
