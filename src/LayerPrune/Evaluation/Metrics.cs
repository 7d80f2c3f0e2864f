namespace LayerPrune.Evaluation;

/// <summary>Per-item scores and aggregates as lm_eval/api/metrics.py computes them.</summary>
public static class Metrics
{
    /// <summary>np.argmax: index of the first maximum (a NaN, as in numpy, wins).</summary>
    public static int Argmax(IReadOnlyList<double> xs)
    {
        if (xs.Count == 0) throw new ArgumentException("argmax of an empty list");
        int best = 0;
        for (int i = 0; i < xs.Count; i++)
        {
            if (double.IsNaN(xs[i])) return i;
            if (xs[i] > xs[best]) best = i;
        }
        return best;
    }

    /// <summary>acc (argmax of summed logprobs) and acc_norm (argmax of logprob / len(choice text)) for one item.</summary>
    public static (bool Acc, bool AccNorm) Score(EvalDoc doc, IReadOnlyList<double> logprobs)
    {
        if (logprobs.Count != doc.Continuations.Count)
            throw new ArgumentException($"{logprobs.Count} logprobs for {doc.Continuations.Count} continuations");
        var norm = new double[logprobs.Count];
        for (int i = 0; i < norm.Length; i++) norm[i] = logprobs[i] / doc.NormLengths[i];
        return (Argmax(logprobs) == doc.Gold, Argmax(norm) == doc.Gold);
    }

    /// <summary>Arithmetic mean; NaN for an empty list.</summary>
    public static double Mean(IReadOnlyList<double> xs) => xs.Count == 0 ? double.NaN : xs.Sum() / xs.Count;

    /// <summary>sample_stddev (Bessel-corrected): sqrt(Σ(x-μ)² / (n-1)).</summary>
    public static double SampleStddev(IReadOnlyList<double> xs)
    {
        if (xs.Count < 2) return double.NaN;
        double mu = Mean(xs), ss = 0;
        foreach (var x in xs) ss += (x - mu) * (x - mu);
        return Math.Sqrt(ss / (xs.Count - 1));
    }

    /// <summary>mean_stderr = sample_stddev / sqrt(n); for 0/1 scores with mean p this is sqrt(p(1-p)/(n-1)).</summary>
    public static double MeanStderr(IReadOnlyList<double> xs) => SampleStddev(xs) / Math.Sqrt(xs.Count);

    /// <summary>pooled_sample_stderr, the stderr of a size-weighted group (harness MMLU group):
    /// sqrt( Σ (n_i-1) n_i se_i² / (Σn_i - k) / Σn_i ).</summary>
    public static double PooledStderr(IReadOnlyList<double> stderrs, IReadOnlyList<int> sizes)
    {
        if (stderrs.Count != sizes.Count) throw new ArgumentException("stderrs and sizes differ in length");
        double num = 0;
        long total = 0;
        for (int i = 0; i < sizes.Count; i++)
        {
            num += (sizes[i] - 1) * stderrs[i] * stderrs[i] * sizes[i];
            total += sizes[i];
        }
        return Math.Sqrt(num / (total - sizes.Count) / total);
    }
}

/// <summary>Aggregated scores of one task or subtask.</summary>
/// <param name="Name">Task name (e.g. "mmlu", "mmlu_abstract_algebra", "boolq", "gsm8k").</param>
/// <param name="Samples">Number of scored items.</param>
/// <param name="Values">Metric name → value, e.g. acc, acc_stderr, acc_norm, acc_norm_stderr.</param>
public sealed record TaskScore(string Name, int Samples, IReadOnlyDictionary<string, double> Values)
{
    /// <summary>Per-subject scores (MMLU); empty otherwise.</summary>
    public IReadOnlyList<TaskScore> Subtasks { get; init; } = [];

    /// <summary>Per-document records in lm-eval's samples layout (doc_id, doc, target, arguments, resps, ...), for
    /// --log-samples; empty for tasks that do not keep them.</summary>
    public IReadOnlyList<System.Text.Json.Nodes.JsonObject> Records { get; init; } = [];
}

/// <summary>Collects per-item multiple-choice results and aggregates them (MMLU: per subject + size-weighted group).</summary>
public sealed class MultipleChoiceAccumulator(string taskName)
{
    private readonly List<(string? Subject, double Acc, double AccNorm)> _items = [];

    /// <summary>Items added so far.</summary>
    public int Count => _items.Count;

    /// <summary>Scores one item from its choices' log-likelihoods.</summary>
    public void Add(EvalDoc doc, IReadOnlyList<double> logprobs)
    {
        var (acc, accNorm) = Metrics.Score(doc, logprobs);
        _items.Add((doc.Subject, acc ? 1 : 0, accNorm ? 1 : 0));
    }

    /// <summary>Without subjects: mean and mean_stderr over items. With subjects: per subject
    /// ("{task}_{subject}") as above, and the task = micro average (aggregate_subtask_metrics with
    /// weight_by_size) with pooled_sample_stderr, as the harness's mmlu group.</summary>
    public TaskScore Result()
    {
        if (_items.Count == 0) throw new InvalidOperationException($"{taskName}: no results");
        if (_items.All(i => i.Subject is null)) return Score(taskName, _items);
        var subs = _items.GroupBy(i => i.Subject ?? "").OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => Score($"{taskName}_{g.Key}", g.ToList())).ToList();
        var sizes = subs.Select(s => s.Samples).ToArray();
        var values = new Dictionary<string, double>();
        foreach (var m in new[] { "acc", "acc_norm" })
        {
            values[m] = subs.Sum(s => s.Values[m] * s.Samples) / sizes.Sum();
            values[m + "_stderr"] = Metrics.PooledStderr(subs.Select(s => s.Values[m + "_stderr"]).ToArray(), sizes);
        }
        return new TaskScore(taskName, _items.Count, values) { Subtasks = subs };
    }

    private static TaskScore Score(string name, List<(string? Subject, double Acc, double AccNorm)> items)
    {
        var acc = items.Select(i => i.Acc).ToArray();
        var norm = items.Select(i => i.AccNorm).ToArray();
        return new TaskScore(name, items.Count, new Dictionary<string, double>
        {
            ["acc"] = Metrics.Mean(acc), ["acc_stderr"] = Metrics.MeanStderr(acc),
            ["acc_norm"] = Metrics.Mean(norm), ["acc_norm_stderr"] = Metrics.MeanStderr(norm),
        });
    }
}

/// <summary>Collects GSM8K generations: exact_match under both filters.</summary>
public sealed class GenerationAccumulator(string taskName)
{
    private readonly List<double> _strict = [], _flexible = [];

    /// <summary>Adds one raw generation (it is cut at the stop sequences first).</summary>
    public void Add(GenerationDoc doc, string generated)
    {
        var text = Gsm8kTask.TruncateAtStop(generated, doc.StopSequences);
        _strict.Add(Gsm8kTask.IsCorrect(Gsm8kTask.StrictMatch(text), doc.Target) ? 1 : 0);
        _flexible.Add(Gsm8kTask.IsCorrect(Gsm8kTask.FlexibleExtract(text), doc.Target) ? 1 : 0);
    }

    /// <summary>exact_match under both filters, with mean_stderr.</summary>
    public TaskScore Result()
    {
        if (_strict.Count == 0) throw new InvalidOperationException($"{taskName}: no results");
        return new TaskScore(taskName, _strict.Count, new Dictionary<string, double>
        {
            ["exact_match_strict"] = Metrics.Mean(_strict), ["exact_match_strict_stderr"] = Metrics.MeanStderr(_strict),
            ["exact_match_flexible"] = Metrics.Mean(_flexible), ["exact_match_flexible_stderr"] = Metrics.MeanStderr(_flexible),
        });
    }
}
