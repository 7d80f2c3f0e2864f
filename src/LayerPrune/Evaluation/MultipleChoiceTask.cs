using System.Text.Json.Nodes;
using LayerPrune.Data;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;

namespace LayerPrune.Evaluation;

/// <summary>
/// A log-likelihood multiple-choice task as lm-evaluation-harness scores it: each item's choices are
/// (context, continuation) requests; acc = argmax of the summed log-probabilities, acc_norm = argmax after dividing
/// by the choice's length. Subclasses only load their items (<see cref="LoadDocs"/>).
/// </summary>
public abstract class MultipleChoiceTask(TaskSpec spec) : IEvalTask
{
    /// <inheritdoc/>
    public TaskSpec Spec { get; } = spec;

    /// <summary>The items; <paramref name="limit"/> keeps the first N (per subject where there are subjects).</summary>
    public abstract IReadOnlyList<EvalDoc> LoadDocs(int? limit = null);

    /// <inheritdoc/>
    public IPreparedTask Prepare(ITextTokenizer tokenizer, EvalOptions options)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        var docs = LoadDocs(options.Limit);
        bool addBos = tokenizer.AddsBos;
        var requests = docs.Select(d => (IReadOnlyList<LoglikelihoodRequest>)d.Continuations
            .Select(c => LoglikelihoodRequest.Build(tokenizer, d.Context, c, addBos)).ToList()).ToList();
        return new Prepared(Spec, docs, requests, options);
    }

    sealed class Prepared(TaskSpec spec, IReadOnlyList<EvalDoc> docs, List<IReadOnlyList<LoglikelihoodRequest>> requests,
        EvalOptions options) : IPreparedTask
    {
        /// <inheritdoc/>
        public TaskSpec Spec => spec;

        /// <inheritdoc/>
        public IReadOnlyList<MetricInfo> Metrics { get; } = ChanceMetrics(spec.Kind, docs);

        /// <inheritdoc/>
        public IReadOnlyDictionary<string, double> Protocol { get; } = new Dictionary<string, double>
        {
            ["items"] = docs.Count,
            ["num_fewshot"] = spec.NumFewshot,
        };

        /// <inheritdoc/>
        public TaskScore Score(CausalLM model, IReadOnlyList<int>? layers = null, IProgressSink? progress = null)
        {
            ArgumentNullException.ThrowIfNull(model);
            using var p = ProgressReporter.Start(spec.Kind, docs.Count, "items", progress ?? NullProgressSink.Instance, clock: null);
            var scorer = new LoglikelihoodScorer(model, options.BatchSize, layers);
            var scores = scorer.ScoreDetailed(requests, options.ReusePrefix, n => p.Advance(n));
            var acc = new MultipleChoiceAccumulator(spec.Kind);
            for (int i = 0; i < docs.Count; i++) acc.Add(docs[i], scores[i].Select(x => x.LogProb).ToArray());
            return WithRecords(acc.Result(), docs, scores);
        }

        /// <summary>
        /// The score with lm-eval's per-document samples records (--log-samples): one per document, doc_id counted per
        /// task; with subjects (MMLU) the records go to the subtasks (the harness writes samples_mmlu_SUBJECT_*.jsonl,
        /// doc_id counted per subject).
        /// </summary>
        static TaskScore WithRecords(TaskScore score, IReadOnlyList<EvalDoc> docs, List<Loglikelihood[]> results)
        {
            var records = new Dictionary<string, List<JsonObject>>();
            for (int i = 0; i < docs.Count; i++)
            {
                var d = docs[i];
                string key = d.Subject is null ? score.Name : $"{score.Name}_{d.Subject}";
                if (!records.TryGetValue(key, out var list)) records[key] = list = [];
                var (isAcc, isAccNorm) = Evaluation.Metrics.Score(d, results[i].Select(x => x.LogProb).ToArray());
                var metrics = new Dictionary<string, double> { ["acc"] = isAcc ? 1 : 0, ["acc_norm"] = isAccNorm ? 1 : 0 };
                list.Add(Suite.SampleRecords.Loglikelihood(list.Count, d.Row ?? new JsonObject(), JsonValue.Create(d.Gold),
                    d.Continuations.Select(c => (d.Context, c)).ToList(), results[i], metrics));
            }
            if (score.Subtasks.Count == 0) return score with { Records = records.GetValueOrDefault(score.Name) ?? [] };
            var subtasks = score.Subtasks.Select(s => s with { Records = records.GetValueOrDefault(s.Name) ?? [] }).ToList();
            return score with { Subtasks = subtasks };
        }

        /// <summary>acc and acc_norm; chance = the mean over items of 1 / number of choices.</summary>
        static MetricInfo[] ChanceMetrics(string task, IReadOnlyList<EvalDoc> docs)
        {
            double chance = docs.Average(d => 1.0 / d.Continuations.Count);
            return [MetricInfo.Accuracy(task, "acc", chance), MetricInfo.Accuracy(task, "acc_norm", chance)];
        }
    }
}

/// <summary>
/// A multiple-choice task read from JSONL, one item per row (mc, boolq, hellaswag): subclasses turn a row into an
/// <see cref="EvalDoc"/>; reading, the limit and the empty-file check live here.
/// </summary>
public abstract class JsonlChoiceTask(TaskSpec spec) : MultipleChoiceTask(spec)
{
    /// <summary>The item of row <paramref name="row"/> at 1-based <paramref name="line"/> of <paramref name="path"/>.</summary>
    protected abstract EvalDoc ToDoc(JsonObject row, string path, int line);

    /// <inheritdoc/>
    public override IReadOnlyList<EvalDoc> LoadDocs(int? limit = null) => Read(Spec.Path, limit, ToDoc);

    /// <summary>The first <paramref name="limit"/> rows of <paramref name="path"/> (all when null) as items.</summary>
    protected static List<EvalDoc> Read(string path, int? limit, Func<JsonObject, string, int, EvalDoc> toDoc)
    {
        var docs = new List<EvalDoc>();
        foreach (var (line, row) in JsonLines.Read(path))
        {
            if (limit is int l && docs.Count >= l) break;
            var doc = toDoc(row, path, line);
            docs.Add(doc.Row is null ? doc with { Row = row } : doc);
        }
        if (docs.Count == 0) throw new LayerPruneException($"{path}: no items");
        return docs;
    }
}
