using System.Globalization;
using System.Text.Json.Nodes;
using LayerPrune.Data;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;

namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// One document of a zero-shot-suite choice task: one (context, continuation) request per choice, as the harness's
/// ConfigurableTask.construct_requests builds them for output_type multiple_choice. Most tasks share one context and
/// differ in the continuation (target_delimiter + choice); WinoGrande's partial scoring has one context per choice and
/// one shared continuation.
/// </summary>
/// <param name="Contexts">Per choice, the context (with the few-shot prefix when there are shots).</param>
/// <param name="Continuations">Per choice, the continuation.</param>
/// <param name="Gold">The index of the correct choice (doc_to_target).</param>
/// <param name="NormLengths">len(choice) in code points for acc_norm; null when the task has no acc_norm.</param>
/// <param name="Doc">The row as read (the samples file's "doc").</param>
/// <param name="ShotText">This document as a few-shot example: its gold context + continuation.</param>
public sealed record ChoiceDoc(IReadOnlyList<string> Contexts, IReadOnlyList<string> Continuations, int Gold,
    IReadOnlyList<int>? NormLengths, JsonObject Doc, string ShotText)
{
    /// <summary>Same context for every choice (the usual case): continuation = delimiter + choice text.</summary>
    public static ChoiceDoc SharedContext(string context, IReadOnlyList<string> choices, int gold, JsonObject doc, string source,
        string delimiter = " ")
    {
        if (choices.Count < 2) throw new LayerPruneException($"{source}: need at least 2 choices, got {choices.Count}");
        if (gold < 0 || gold >= choices.Count)
            throw new LayerPruneException($"{source}: gold index {gold} is outside 0..{choices.Count - 1}");
        return new ChoiceDoc(choices.Select(_ => context).ToArray(), choices.Select(c => delimiter + c).ToArray(), gold,
            choices.Select(PyText.Len).ToArray(), doc, context + delimiter + choices[gold]);
    }

    /// <summary>The samples file's "target" (doc_to_target): the gold index unless the task's target is text.</summary>
    public JsonNode? Target { get; init; }

    /// <summary>The document with <paramref name="prefix"/> (the few-shot examples) before every context.</summary>
    public ChoiceDoc WithPrefix(string prefix) =>
        prefix.Length == 0 ? this : this with { Contexts = Contexts.Select(c => prefix + c).ToArray() };
}

/// <summary>
/// The choice tasks of the zero-shot suite (arc_easy, arc_challenge, piqa, openbookqa, winogrande): rows of a JSONL
/// file → <see cref="ChoiceDoc"/>s; requests tokenized as the harness does (<see cref="LoglikelihoodRequest.Build"/>);
/// acc = argmax of the summed log-likelihoods, acc_norm = argmax of log-likelihood / len(choice); mean_stderr for both.
/// Options: <c>shots=N</c> with <c>train=FILE</c> (the harness's training split): per document N examples drawn as the
/// harness's sampler draws them (<see cref="Shots"/>: Python's random.Random(1234).sample, in document order), each
/// doc_to_text + target delimiter + gold choice, followed by the fewshot delimiter "\n\n"; without a train file the
/// first N rows of the scored file, which are then not scored (a deviation); <c>limit=N</c> (the first N documents of
/// this task alone).
/// </summary>
public abstract class ChoiceSuiteTask(TaskSpec spec) : IEvalTask
{
    /// <summary>Options every suite task takes besides shots=N.</summary>
    public static readonly TaskOption[] SuiteOptions = [new("train", "FILE"), new("limit", "N")];

    /// <inheritdoc/>
    public TaskSpec Spec { get; } = spec;

    /// <summary>The harness's YAML facts for this task.</summary>
    public abstract LmEvalTaskConfig LmEval { get; }

    /// <summary>Whether acc_norm is reported (not for WinoGrande).</summary>
    protected virtual bool HasAccNorm => true;

    /// <summary>The document of row <paramref name="row"/> at 1-based <paramref name="line"/> of <paramref name="path"/>.</summary>
    public abstract ChoiceDoc ToDoc(JsonObject row, string path, int line);

    /// <summary>Every document of a file, in order.</summary>
    public List<ChoiceDoc> ReadAll(string path)
    {
        var docs = JsonLines.Read(path).Select(r => ToDoc(r.Row, path, r.Line)).ToList();
        if (docs.Count == 0) throw new LayerPruneException($"{path}: no items");
        return docs;
    }

    /// <summary>The scored documents with their few-shot prefix, and the number of documents in the file.</summary>
    public (List<ChoiceDoc> Docs, int Documents) LoadDocs(int? limit = null)
    {
        var all = ReadAll(Spec.Path);
        int documents = all.Count;
        int k = Spec.NumFewshot;
        int? n = SuiteLimits.Combine(Spec, limit);
        if (k > 0 && Spec.TrainPath is string train)
        {
            var rows = ReadAll(train);
            int need = k + (LmEval.NoTestSplit ? 1 : 0);
            if (rows.Count < need) throw new LayerPruneException($"{train}: {k}-shot {Spec.Kind} draws {need} rows, found {rows.Count}");
            var draws = Shots(rows, k, LmEval.NoTestSplit, (n is int m ? all.Take(m) : all).ToList());
            return (draws.Select(d => d.Doc.WithPrefix(string.Concat(d.Shots.Select(s => s.ShotText + LmEval.FewshotDelimiter))))
                .ToList(), documents);
        }
        string prefix = "";
        if (k > 0)
        {
            if (all.Count <= k)
                throw new LayerPruneException($"{Spec.Path}: {k}-shot without train=FILE needs more than {k} rows, found {all.Count}");
            prefix = string.Concat(all.Take(k).Select(s => s.ShotText + LmEval.FewshotDelimiter));
            all = all.Skip(k).ToList();
        }
        var docs = (n is int l ? all.Take(l) : all).Select(d => d.WithPrefix(prefix)).ToList();
        return (docs, documents);
    }

    /// <summary>
    /// The harness's default few-shot sampler (lm_eval/api/samplers.py ContextSampler with the task's fewshot_rnd,
    /// random.Random(1234) — the default fewshot seed): for each scored document in order, <c>rnd.sample(fewshot_docs,
    /// n_samples)</c> with n_samples = k, or k + 1 when the YAML has no test_split (<paramref name="drawExtra"/>), then
    /// the draws that are not the document itself, at most k of them.
    /// </summary>
    public static List<(ChoiceDoc Doc, List<ChoiceDoc> Shots)> Shots(IReadOnlyList<ChoiceDoc> pool, int k, bool drawExtra,
        IReadOnlyList<ChoiceDoc> docs, long seed = 1234)
    {
        int draw = k + (drawExtra ? 1 : 0);
        if (pool.Count < draw)
            throw new LayerPruneException($"{k}-shot needs {draw} few-shot rows to draw from, found {pool.Count}");
        var rnd = new PyRandom(seed);
        return docs.Select(d => (d, rnd.Sample(pool.Count, draw).Select(i => pool[i])
            .Where(s => !JsonNode.DeepEquals(s.Doc, d.Doc)).Take(k).ToList())).ToList();
    }

    /// <inheritdoc/>
    public IPreparedTask Prepare(ITextTokenizer tokenizer, EvalOptions options)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        var (docs, documents) = LoadDocs(options.Limit);
        var requests = docs.Select(d => (IReadOnlyList<LoglikelihoodRequest>)d.Contexts
            .Select((c, i) => LoglikelihoodRequest.Build(tokenizer, c, d.Continuations[i], tokenizer.AddsBos)).ToList()).ToList();
        return new Prepared(this, docs, documents, requests, options);
    }

    sealed class Prepared(ChoiceSuiteTask task, List<ChoiceDoc> docs, int documents,
        List<IReadOnlyList<LoglikelihoodRequest>> requests, EvalOptions options) : IPreparedTask, ILmEvalTask
    {
        public TaskSpec Spec => task.Spec;
        public LmEvalTaskConfig LmEval => task.LmEval;
        public int Documents => documents;

        public IReadOnlyList<MetricInfo> Metrics { get; } = MetricsOf(task, docs);

        public IReadOnlyDictionary<string, double> Protocol { get; } = new Dictionary<string, double>
        {
            ["items"] = docs.Count, ["documents"] = documents, ["num_fewshot"] = task.Spec.NumFewshot,
        };

        public TaskScore Score(CausalLM model, IReadOnlyList<int>? layers = null, IProgressSink? progress = null)
        {
            ArgumentNullException.ThrowIfNull(model);
            string name = task.Spec.Kind;
            using var p = ProgressReporter.Start(name, docs.Count, "items", progress ?? NullProgressSink.Instance, clock: null);
            var scorer = new LoglikelihoodScorer(model, options.BatchSize, layers);
            var results = scorer.ScoreDetailed(requests, options.ReusePrefix, n => p.Advance(n));
            var acc = new double[docs.Count];
            var accNorm = new double[docs.Count];
            var records = new List<JsonObject>(docs.Count);
            for (int i = 0; i < docs.Count; i++)
            {
                var d = docs[i];
                var ll = results[i].Select(r => r.LogProb).ToArray();
                acc[i] = Evaluation.Metrics.Argmax(ll) == d.Gold ? 1 : 0;
                var metrics = new Dictionary<string, double> { ["acc"] = acc[i] };
                if (task.HasAccNorm && d.NormLengths is { } lens)
                {
                    accNorm[i] = Evaluation.Metrics.Argmax(ll.Select((x, c) => x / lens[c]).ToArray()) == d.Gold ? 1 : 0;
                    metrics["acc_norm"] = accNorm[i];
                }
                records.Add(SampleRecords.Loglikelihood(i, d.Doc, d.Target ?? JsonValue.Create(d.Gold),
                    d.Contexts.Select((c, k) => (c, d.Continuations[k])).ToList(), results[i], metrics));
            }
            var values = new Dictionary<string, double>
            {
                ["acc"] = Evaluation.Metrics.Mean(acc), ["acc_stderr"] = Evaluation.Metrics.MeanStderr(acc),
            };
            if (task.HasAccNorm)
            {
                values["acc_norm"] = Evaluation.Metrics.Mean(accNorm);
                values["acc_norm_stderr"] = Evaluation.Metrics.MeanStderr(accNorm);
            }
            return new TaskScore(name, docs.Count, values) { Records = records };
        }

        static MetricInfo[] MetricsOf(ChoiceSuiteTask task, List<ChoiceDoc> docs)
        {
            double chance = docs.Average(d => 1.0 / d.Contexts.Count);
            var acc = MetricInfo.Accuracy(task.Spec.Kind, "acc", chance);
            return task.HasAccNorm ? [acc, MetricInfo.Accuracy(task.Spec.Kind, "acc_norm", chance)] : [acc];
        }
    }
}

/// <summary>The <c>limit=N</c> option of the suite tasks (and its check at parse time).</summary>
public static class SuiteLimits
{
    /// <summary>The task's own limit=N combined with the run's limit (the smaller), or null for all.</summary>
    public static int? Combine(TaskSpec spec, int? runLimit)
    {
        int? own = spec.Option("limit") is string l ? int.Parse(l, CultureInfo.InvariantCulture) : null;
        return own is int a && runLimit is int b ? Math.Min(a, b) : own ?? runLimit;
    }

    /// <summary>TaskKind.Resolve hook: refuses a limit that is not a positive integer.</summary>
    public static TaskSpec Check(TaskSpec s)
    {
        if (s.Option("limit") is string l && !(int.TryParse(l, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 1))
            throw new LayerPruneException($"task \"{s.Text}\": limit must be a positive integer, got \"{l}\"");
        return s;
    }

    /// <summary>A kind of the suite: the options train=FILE and limit=N, shots up to <paramref name="maxShots"/>.</summary>
    public static TaskKind Kind(string name, Func<TaskSpec, IEvalTask> create, int maxShots = int.MaxValue,
        IReadOnlyList<TaskOption>? options = null, bool generates = false) =>
        new(name, create)
        {
            MaxShots = maxShots, Options = options ?? ChoiceSuiteTask.SuiteOptions, Resolve = Check, Generates = generates,
        };
}
