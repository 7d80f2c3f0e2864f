using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;

namespace LayerPrune.Sweep;

/// <summary>One prompt's greedy continuation in a sweep row: the decoded new text and its token ids (the prompt excluded,
/// an EOS included when generated), as <c>generate --json</c> reports them in "completion" and after the prompt's ids.</summary>
/// <param name="Completion">The decoded new tokens.</param>
/// <param name="TokenIds">The new token ids.</param>
public sealed record Generation(string Completion, IReadOnlyList<int> TokenIds)
{
    /// <summary>The results.json form: { completion, token_ids }.</summary>
    public JsonObject ToJson() => new()
    {
        ["completion"] = Completion,
        ["token_ids"] = new JsonArray(TokenIds.Select(i => (JsonNode?)i).ToArray()),
    };

    /// <summary>Reads <see cref="ToJson"/>'s output.</summary>
    public static Generation FromJson(JsonObject o)
    {
        ArgumentNullException.ThrowIfNull(o);
        return new Generation((string)o["completion"]!, o["token_ids"]!.AsArray().Select(x => (int)x!).ToArray());
    }
}

/// <summary>
/// The sweep's qualitative check: a fixed set of prompts continued greedily by every variant, and the degeneration score
/// of the continuations (<see cref="RepeatedNgramRate"/>), so that the collapse of open-ended generation can be set
/// beside the QA and loss curves.
/// </summary>
public static class SweepGenerations
{
    /// <summary>Default of <see cref="SweepOptions.GenerationTokens"/>.</summary>
    public const int DefaultMaxNewTokens = 48;

    /// <summary>The n of the degeneration score's n-grams.</summary>
    public const int NgramOrder = 3;

    /// <summary>The metric column of the degeneration score.</summary>
    public const string Column = "degeneration";

    /// <summary>Openings of King James Bible verses (the embedded kjv-llama-16l's training domain); the default prompts.</summary>
    public static readonly IReadOnlyList<string> DefaultPrompts =
    [
        "In the beginning God created",
        "And God said",
        "The LORD is my shepherd;",
        "And it came to pass, when",
        "Blessed are the",
        "Now the serpent was",
        "For God so loved the world,",
        "And Jesus answered and said unto them,",
    ];

    /// <summary>The degeneration score as a sweep metric: lower is better, 0.1 absolute tolerance, normalized as the
    /// share of distinct n-grams ((1 − v) / (1 − unpruned)).</summary>
    public static MetricInfo Metric { get; } = new(Column,
        new MetricSpec(Column, false, 0.1, ToleranceKind.Absolute) { Normalization = Normalization.Complement }, null,
        $"degeneration: repeated {NgramOrder}-gram rate of greedy continuations");

    /// <summary>The prompts of a file: one per non-blank line (trailing whitespace removed). A missing or empty file is a
    /// <see cref="LayerPruneException"/> naming it.</summary>
    public static IReadOnlyList<string> ReadPrompts(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new LayerPruneException($"{path}: prompts file not found");
        var prompts = File.ReadAllLines(path).Select(l => l.TrimEnd()).Where(l => l.Length > 0).ToList();
        if (prompts.Count == 0) throw new LayerPruneException($"{path}: no prompts (expected one prompt per line)");
        return prompts;
    }

    /// <summary>Greedy continuations of every prompt (ids as <see cref="ITextTokenizer.Encode"/> gives them, BOS included
    /// where the tokenizer adds it) by <paramref name="model"/> running only <paramref name="layers"/> (null = all), at most
    /// <paramref name="maxNewTokens"/> tokens each, stopping at EOS: exactly what <c>generate --prompt P</c> produces.</summary>
    public static IReadOnlyList<Generation> Run(CausalLM model, ITextTokenizer tok, IReadOnlyList<IReadOnlyList<int>> prompts,
        int maxNewTokens, IReadOnlyList<int>? layers)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tok);
        ArgumentNullException.ThrowIfNull(prompts);
        var result = new List<Generation>();
        foreach (var prompt in prompts)
        {
            var g = TextGenerator.Generate(model, prompt, new GenerationOptions
            {
                MaxNewTokens = maxNewTokens,
                Greedy = true,
                Layers = layers,
            });
            var ids = g.TokenIds.Skip(g.PromptLength).ToArray();
            result.Add(new Generation(tok.Decode(ids), ids));
        }
        return result;
    }

    /// <summary>
    /// The repeated n-gram rate of one token sequence (seq-rep-n of Welleck et al. 2019): of its T − n + 1 n-grams (token
    /// windows at every position), the share that repeats an earlier one = 1 − distinct / total. 0 = no n-gram occurs twice,
    /// → 1 = one n-gram over and over. NaN when the sequence has fewer than n tokens.
    /// </summary>
    public static double RepeatedNgramRate(IReadOnlyList<int> tokens, int n = NgramOrder)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (n < 1) throw new ArgumentOutOfRangeException(nameof(n), n, "must be at least 1");
        int total = tokens.Count - n + 1;
        if (total < 1) return double.NaN;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < total; i++)
            seen.Add(string.Join(',', Enumerable.Range(i, n).Select(k => tokens[k])));
        return 1.0 - (double)seen.Count / total;
    }

    /// <summary>A variant's degeneration score: the mean of <see cref="RepeatedNgramRate"/> over its continuations that have
    /// at least n tokens (NaN when none has).</summary>
    public static double Degeneration(IEnumerable<IReadOnlyList<int>> continuations, int n = NgramOrder)
    {
        ArgumentNullException.ThrowIfNull(continuations);
        var rates = continuations.Select(c => RepeatedNgramRate(c, n)).Where(double.IsFinite).ToList();
        return rates.Count == 0 ? double.NaN : rates.Average();
    }
}
