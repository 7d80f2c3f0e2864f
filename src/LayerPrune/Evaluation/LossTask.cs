using LayerPrune.Data;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;

namespace LayerPrune.Evaluation;

/// <summary>
/// Validation loss (<c>loss:FILE</c>): the text (.txt lines, or .jsonl/.parquet "text" rows) as one token stream
/// cut into <see cref="EvalOptions.MaxChunks"/> chunks of <see cref="EvalOptions.SeqLen"/> tokens
/// (<see cref="TokenChunks.FromLines"/>), mean next-token cross-entropy over all their predictions
/// (<see cref="LossEvaluator"/>). The defaults (128 × 256) are the protocol of the reference numbers.
/// </summary>
public sealed class LossTask(TaskSpec spec) : IEvalTask
{
    /// <summary>The <c>loss</c> kind: no shots, no options.</summary>
    public static readonly TaskKind Kind = new("loss", s => new LossTask(s));

    /// <summary>The metric's key and column.</summary>
    public const string MetricName = "validation_loss";

    /// <inheritdoc/>
    public TaskSpec Spec { get; } = spec;

    /// <inheritdoc/>
    public IPreparedTask Prepare(ITextTokenizer tokenizer, EvalOptions options)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        var chunks = TokenChunks.FromLines(TextCorpus.Read(Spec.Path), tokenizer, options.SeqLen, options.MaxChunks);
        if (chunks.Count == 0)
            throw new LayerPruneException(
                $"{Spec.Path}: no chunks: the text is shorter than one sequence of {options.SeqLen} tokens (SeqLen)");
        return new Prepared(Spec, chunks, options);
    }

    sealed class Prepared(TaskSpec spec, List<int[]> chunks, EvalOptions options) : IPreparedTask
    {
        /// <inheritdoc/>
        public TaskSpec Spec => spec;

        /// <inheritdoc/>
        public IReadOnlyList<MetricInfo> Metrics { get; } = [MetricInfo.Loss(MetricName, "validation loss (nats/token)")];

        /// <inheritdoc/>
        public IReadOnlyDictionary<string, double> Protocol { get; } = Describe(chunks, options);

        /// <inheritdoc/>
        public TaskScore Score(CausalLM model, IReadOnlyList<int>? layers = null, IProgressSink? progress = null)
        {
            ArgumentNullException.ThrowIfNull(model);
            using var p = ProgressReporter.Start("loss", chunks.Count, "chunks", progress ?? NullProgressSink.Instance, clock: null);
            var r = LossEvaluator.Evaluate(model, chunks, options.BatchSize, layers, n => p.Advance(n));
            return new TaskScore(spec.Kind, r.Chunks, new Dictionary<string, double>
            {
                [MetricName] = r.ValidationLoss,
                ["perplexity"] = r.Perplexity,
                ["tokens"] = r.Tokens,
            });
        }

        /// <summary>seq_len, max_chunks (when limited), the chunks used and the predicted tokens (chunks × (seq_len − 1)).</summary>
        static Dictionary<string, double> Describe(List<int[]> chunks, EvalOptions o)
        {
            var d = new Dictionary<string, double> { ["seq_len"] = o.SeqLen };
            if (o.MaxChunks is int m) d["max_chunks"] = m;
            d["chunks"] = chunks.Count;
            d["tokens"] = chunks.Count * (long)(o.SeqLen - 1);
            return d;
        }
    }
}
