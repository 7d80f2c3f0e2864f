using LayerPrune.Data;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;

namespace LayerPrune.Evaluation;

public sealed record EvalOptions
{
    public int? Limit { get; init; }
    public int BatchSize { get; init; } = 8;
    public int SeqLen { get; init; } = 256;
    public int? MaxChunks { get; init; } = 128;
    public int MaxNewTokens { get; init; } = 256;
    /// <summary>Original layers to run (in-memory pruning); null = all.</summary>
    public IReadOnlyList<int>? Layers { get; init; }
    public bool ReusePrefix { get; init; } = true;
}

/// <summary>Runs task specs (loss:FILE and the harness tasks of <see cref="TaskSpec"/>) on one model.</summary>
public static class Evaluator
{
    public const string LossKind = "loss";

    /// <summary>Validates a spec before any model work (so a typo fails in milliseconds, not after loading).</summary>
    public static void Validate(string spec)
    {
        if (spec.StartsWith(LossKind + ":", StringComparison.OrdinalIgnoreCase))
        {
            string path = spec[(LossKind.Length + 1)..];
            if (!File.Exists(path)) throw new LayerPruneException($"task \"{spec}\": file not found: {path}");
        }
        else TaskSpec.Parse(spec);
    }

    public static TaskScore Run(CausalLM model, ITextTokenizer tok, string spec, EvalOptions o)
    {
        if (spec.StartsWith(LossKind + ":", StringComparison.OrdinalIgnoreCase))
        {
            string path = spec[(LossKind.Length + 1)..];
            var chunks = TokenChunks.FromLines(TextCorpus.Read(path), tok, o.SeqLen, o.MaxChunks);
            using var p = ProgressReporter.Start("loss", chunks.Count, "chunks", NullProgressSink.Instance);
            var r = LossEvaluator.Evaluate(model, chunks, o.BatchSize, o.Layers, n => p.Advance(n));
            return new TaskScore(LossKind, r.Chunks, new Dictionary<string, double>
            {
                ["validation_loss"] = r.ValidationLoss, ["perplexity"] = r.Perplexity, ["tokens"] = r.Tokens,
            });
        }
        var task = TaskSpec.Parse(spec);
        if (task.IsGeneration) return RunGeneration(model, tok, task, o);
        var docs = task.LoadDocs(o.Limit);
        bool addBos = tok.AddsBos;
        var requests = docs.Select(d => (IReadOnlyList<LoglikelihoodRequest>)d.Continuations.Select(c => LoglikelihoodRequest.Build(tok, d.Context, c, addBos)).ToList()).ToList();
        using var progress = ProgressReporter.Start(task.Kind, docs.Count, "items", NullProgressSink.Instance);
        var scores = new LoglikelihoodScorer(model, o.BatchSize, o.Layers).Score(requests, o.ReusePrefix, n => progress.Advance(n));
        var acc = new MultipleChoiceAccumulator(task.Kind);
        for (int i = 0; i < docs.Count; i++) acc.Add(docs[i], scores[i]);
        return acc.Result();
    }

    static TaskScore RunGeneration(CausalLM model, ITextTokenizer tok, TaskSpec task, EvalOptions o)
    {
        var docs = task.LoadGenerationDocs(o.Limit);
        var acc = new GenerationAccumulator(task.Kind);
        using var progress = ProgressReporter.Start(task.Kind, docs.Count, "items", NullProgressSink.Instance);
        foreach (var doc in docs)
        {
            var prompt = tok.Encode(doc.Prompt);
            var result = TextGenerator.Generate(model, prompt, new GenerationOptions
            {
                MaxNewTokens = o.MaxNewTokens, Greedy = true, Layers = o.Layers,
                ShouldStop = ids => doc.StopSequences.Any(tok.Decode(ids).Contains),
            });
            acc.Add(doc, tok.Decode(result.TokenIds.Skip(result.PromptLength)));
            progress.Advance();
        }
        return acc.Result();
    }
}
