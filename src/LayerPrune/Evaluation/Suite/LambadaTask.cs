using System.Text.Json.Nodes;
using LayerPrune.Data;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;

namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// LAMBADA, OpenAI's detokenized test set (<c>lambada_openai:FILE</c>), as lm_eval/tasks/lambada/lambada_openai.yaml:
/// <code>
/// output_type: loglikelihood            test_split: test
/// doc_to_text: "{{text.split(' ')[:-1]|join(' ')}}"
/// doc_to_target: "{{' '+text.split(' ')[-1]}}"
/// metric_list: perplexity (aggregation perplexity, lower is better), acc (mean)      metadata: version 1.0
/// </code>
/// For loglikelihood the request is (doc_to_text, doc_to_target) with no delimiter added. acc is is_greedy: every
/// token of the last word is the argmax of the model's logits; perplexity = exp(−mean log P(last word | text)), its
/// stderr bootstrapped (<see cref="Bootstrap"/>). Rows <c>{text}</c>.
/// </summary>
public sealed class LambadaTask(TaskSpec spec) : IEvalTask
{
    /// <summary>The <c>lambada_openai</c> kind (0-shot, as the harness's YAML has no few-shot split).</summary>
    public static readonly TaskKind Kind = SuiteLimits.Kind("lambada_openai", s => new LambadaTask(s), maxShots: 0,
        options: [new TaskOption("limit", "N")]);

    /// <inheritdoc/>
    public TaskSpec Spec { get; } = spec;

    /// <summary>The YAML facts.</summary>
    public static LmEvalTaskConfig LmEval { get; } = new("lambada_openai", "loglikelihood", 1.0)
    {
        DatasetPath = "EleutherAI/lambada_openai", DatasetName = "default", Split = "test",
        DocToText = "{{text.split(' ')[:-1]|join(' ')}}", DocToTarget = "{{' '+text.split(' ')[-1]}}",
        MetricList = [("perplexity", "perplexity", false), ("acc", "mean", true)],
    };

    /// <summary>(context, continuation) of one text: the words but the last, and " " + the last word (split on ' ').</summary>
    public static (string Context, string Continuation) Split(string text)
    {
        int cut = text.LastIndexOf(' ');
        return cut < 0 ? ("", " " + text) : (text[..cut], " " + text[(cut + 1)..]);
    }

    /// <summary>Every row of the file as (row, context, continuation).</summary>
    public static List<(JsonObject Row, string Context, string Continuation)> Read(string path)
    {
        var docs = new List<(JsonObject, string, string)>();
        foreach (var (line, row) in JsonLines.Read(path))
        {
            var (c, k) = Split(JsonLines.GetString(row, "text", path, line));
            docs.Add((row, c, k));
        }
        if (docs.Count == 0) throw new LayerPruneException($"{path}: no items");
        return docs;
    }

    /// <inheritdoc/>
    public IPreparedTask Prepare(ITextTokenizer tokenizer, EvalOptions options)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        var all = Read(Spec.Path);
        int? n = SuiteLimits.Combine(Spec, options.Limit);
        var docs = n is int l ? all.Take(l).ToList() : all;
        var requests = docs.Select(d => (IReadOnlyList<LoglikelihoodRequest>)
            [LoglikelihoodRequest.Build(tokenizer, d.Context, d.Continuation, tokenizer.AddsBos)]).ToList();
        return new Prepared(Spec, docs, all.Count, requests, options);
    }

    sealed class Prepared(TaskSpec spec, List<(JsonObject Row, string Context, string Continuation)> docs, int documents,
        List<IReadOnlyList<LoglikelihoodRequest>> requests, EvalOptions options) : IPreparedTask, ILmEvalTask
    {
        public TaskSpec Spec => spec;
        public LmEvalTaskConfig LmEval => LambadaTask.LmEval;
        public int Documents => documents;

        public IReadOnlyList<MetricInfo> Metrics { get; } =
        [
            MetricInfo.Accuracy(spec.Kind, "acc", null),
            new("perplexity", MetricSpec.Loss($"{spec.Kind}_perplexity"), null, "LAMBADA perplexity (last word)"),
        ];

        public IReadOnlyDictionary<string, double> Protocol { get; } = new Dictionary<string, double>
        {
            ["items"] = docs.Count, ["documents"] = documents, ["num_fewshot"] = 0, ["bootstrap_iters"] = Bootstrap.DefaultIters,
        };

        public TaskScore Score(CausalLM model, IReadOnlyList<int>? layers = null, IProgressSink? progress = null)
        {
            ArgumentNullException.ThrowIfNull(model);
            using var p = ProgressReporter.Start(spec.Kind, docs.Count, "items", progress ?? NullProgressSink.Instance, clock: null);
            var results = new LoglikelihoodScorer(model, options.BatchSize, layers).ScoreDetailed(requests, options.ReusePrefix,
                n => p.Advance(n));
            var lls = results.Select(r => r[0].LogProb).ToArray();
            var acc = results.Select(r => r[0].IsGreedy ? 1.0 : 0.0).ToArray();
            var records = docs.Select((d, i) => SampleRecords.Loglikelihood(i, d.Row, JsonValue.Create(d.Continuation),
                [(d.Context, d.Continuation)], results[i], new Dictionary<string, double> { ["perplexity"] = lls[i], ["acc"] = acc[i] }))
                .ToList();
            return new TaskScore(spec.Kind, docs.Count, new Dictionary<string, double>
            {
                ["perplexity"] = Bootstrap.Perplexity(lls),
                ["perplexity_stderr"] = Bootstrap.Stderr(lls, Bootstrap.Perplexity),
                ["acc"] = Evaluation.Metrics.Mean(acc),
                ["acc_stderr"] = Evaluation.Metrics.MeanStderr(acc),
            }) { Records = records };
        }
    }
}
