using System.Globalization;

namespace LayerPrune.Evaluation;

/// <summary>
/// A task on the command line: <c>KIND:PATH[,shots=N][,train=FILE][,dev=FILE][,subject=NAME]</c>, KIND one of
/// mc, mmlu, boolq, hellaswag, gsm8k. Default shots: mmlu 5, gsm8k 5, others 0 (only 0-shot is supported for
/// mc/boolq/hellaswag). <c>train=</c> is gsm8k's few-shot file (a gsm8k folder may hold test.jsonl + train.jsonl);
/// <c>dev=</c> and <c>subject=</c> apply to mmlu single-file layouts.
/// </summary>
public sealed record TaskSpec(string Kind, string Path, int NumFewshot, string? TrainPath = null, string? DevPath = null,
    string? Subject = null)
{
    public static readonly string[] Kinds = ["mc", "mmlu", "boolq", "hellaswag", "gsm8k"];

    /// <summary>The spec as written (for the results' config).</summary>
    public string Text { get; init; } = $"{Kind}:{Path}";

    public bool IsGeneration => Kind == "gsm8k";

    public static TaskSpec Parse(string spec)
    {
        int colon = spec.IndexOf(':');
        if (colon <= 0 || colon == spec.Length - 1)
            throw new LayerPruneException($"task \"{spec}\": expected KIND:PATH with KIND one of {string.Join(", ", Kinds)}");
        var kind = spec[..colon].Trim().ToLowerInvariant();
        if (!Kinds.Contains(kind))
            throw new LayerPruneException($"task \"{spec}\": unknown kind \"{kind}\" (supported: {string.Join(", ", Kinds)})");
        var parts = spec[(colon + 1)..].Split(',');
        string path = parts[0];
        int? shots = null; string? train = null, dev = null, subject = null;
        foreach (var opt in parts.Skip(1))
        {
            int eq = opt.IndexOf('=');
            var key = eq > 0 ? opt[..eq].Trim().ToLowerInvariant() : opt.Trim();
            var val = eq > 0 ? opt[(eq + 1)..].Trim() : "";
            switch (key)
            {
                case "shots" when int.TryParse(val, NumberStyles.Integer, CultureInfo.InvariantCulture, out var k) && k >= 0:
                    shots = k; break;
                case "shots": throw new LayerPruneException($"task \"{spec}\": shots must be a non-negative integer, got \"{val}\"");
                case "train" when kind == "gsm8k" && val.Length > 0: train = val; break;
                case "dev" when kind == "mmlu" && val.Length > 0: dev = val; break;
                case "subject" when kind == "mmlu" && val.Length > 0: subject = val; break;
                default:
                    throw new LayerPruneException($"task \"{spec}\": unknown option \"{opt}\" for {kind} (options: shots=N{(kind == "gsm8k" ? ", train=FILE" : kind == "mmlu" ? ", dev=FILE, subject=NAME" : "")})");
            }
        }
        int n = shots ?? (kind is "mmlu" or "gsm8k" ? 5 : 0);
        if (n > 0 && kind is "mc" or "boolq" or "hellaswag")
            throw new LayerPruneException($"task \"{spec}\": {kind} supports only 0-shot");
        if (kind == "gsm8k" && Directory.Exists(path))
        {
            var t = System.IO.Path.Combine(path, "train.jsonl");
            if (train is null && File.Exists(t)) train = t;
            path = System.IO.Path.Combine(path, "test.jsonl");
        }
        if (kind != "mmlu" && !File.Exists(path))
            throw new LayerPruneException($"task \"{spec}\": file not found: {path}");
        if (kind == "mmlu" && !File.Exists(path) && !Directory.Exists(path))
            throw new LayerPruneException($"task \"{spec}\": path not found: {path}");
        foreach (var extra in new[] { train, dev })
            if (extra is not null && !File.Exists(extra)) throw new LayerPruneException($"task \"{spec}\": file not found: {extra}");
        return new TaskSpec(kind, path, n, train, dev, subject) { Text = spec };
    }

    /// <summary>Multiple-choice docs of this task (not for gsm8k). <paramref name="limit"/>: first N items
    /// (per subject for mmlu, like the harness's --limit per subtask).</summary>
    public IReadOnlyList<EvalDoc> LoadDocs(int? limit = null) => Kind switch
    {
        "mc" => McTask.Load(Path, limit),
        "mmlu" => MmluTask.Load(Path, NumFewshot, limit, DevPath, Subject),
        "boolq" => BoolqTask.Load(Path, limit),
        "hellaswag" => HellaswagTask.Load(Path, limit),
        _ => throw new LayerPruneException($"task \"{Text}\" is a generation task; use LoadGenerationDocs"),
    };

    /// <summary>Generation docs (gsm8k only).</summary>
    public IReadOnlyList<GenerationDoc> LoadGenerationDocs(int? limit = null) => Kind == "gsm8k"
        ? Gsm8kTask.Load(Path, TrainPath, NumFewshot, limit)
        : throw new LayerPruneException($"task \"{Text}\" is a multiple-choice task; use LoadDocs");
}
