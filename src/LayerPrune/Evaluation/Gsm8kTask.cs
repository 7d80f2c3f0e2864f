using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LayerPrune.Data;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;

namespace LayerPrune.Evaluation;

/// <summary>
/// GSM8K (<c>gsm8k:FILE</c>) as lm_eval/tasks/gsm8k/gsm8k.yaml (version 3): generate_until with
/// doc_to_text "Question: {question}\nAnswer:", k-shot examples doc_to_text + " " + answer + "\n\n",
/// until ["Question:", "&lt;/s&gt;", "&lt;|im_end|&gt;"]; filters "strict-match" (regex "#### (\-?[0-9\.\,]+)", first
/// match) and "flexible-extract" (regex "(-?[$0-9.,]{2,})|(-?[0-9]+)", last match), fallback "[invalid]"; exact_match
/// with ignore_case and regexes_to_ignore [",", "\$", "(?s).*#### ", "\.$"] applied to prediction and reference.
/// Deviation: the shots are the first k rows of the train file (the harness samples them at random from train);
/// without a train file they are the first k rows of the test file itself, which are then not scored.
/// <c>limit=N</c> keeps the first N items of this task alone (before <see cref="EvalOptions.Limit"/>, which applies to
/// every task), so a sweep can score a few GSM8K items beside full multiple-choice sets.
/// </summary>
public sealed partial class Gsm8kTask(TaskSpec spec) : IEvalTask
{
    /// <summary>The <c>gsm8k</c> kind: 5-shot by default; a folder means its test.jsonl (+ train.jsonl as train=).</summary>
    public static readonly TaskKind Kind = new("gsm8k", s => new Gsm8kTask(s))
    {
        DefaultShots = 5, MaxShots = int.MaxValue, Generates = true, Resolve = ResolveFolder,
        Options = [new TaskOption("train", "FILE"), new TaskOption("limit", "N")],
    };

    /// <summary>The harness's generation_kwargs.until.</summary>
    public static readonly string[] StopSequences = ["Question:", "</s>", "<|im_end|>"];

    /// <summary>The filters' answer when nothing matches.</summary>
    public const string Fallback = "[invalid]";

    /// <inheritdoc/>
    public TaskSpec Spec { get; } = spec;

    /// <summary>The items; <paramref name="limit"/> keeps the first N.</summary>
    public IReadOnlyList<GenerationDoc> LoadDocs(int? limit = null) => Load(Spec.Path, Spec.TrainPath, Spec.NumFewshot, limit);

    /// <inheritdoc/>
    public IPreparedTask Prepare(ITextTokenizer tokenizer, EvalOptions options)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        int? own = Spec.Option("limit") is string l ? int.Parse(l, System.Globalization.CultureInfo.InvariantCulture) : null;
        var docs = LoadDocs(own is int k && options.Limit is int g ? Math.Min(k, g) : own ?? options.Limit);
        var prompts = docs.Select(d => tokenizer.Encode(d.Prompt)).ToList();
        return new Prepared(Spec, tokenizer, docs, prompts, options.MaxNewTokens);
    }

    static TaskSpec ResolveFolder(TaskSpec s)
    {
        if (s.Option("limit") is string l && !(int.TryParse(l, System.Globalization.NumberStyles.None,
                System.Globalization.CultureInfo.InvariantCulture, out int n) && n >= 1))
            throw new LayerPruneException($"task \"{s.Text}\": limit must be a positive integer, got \"{l}\"");
        if (!Directory.Exists(s.Path)) return s;
        var options = new Dictionary<string, string>(s.Options);
        string train = System.IO.Path.Combine(s.Path, "train.jsonl");
        if (!options.ContainsKey("train") && File.Exists(train)) options["train"] = train;
        return s with { Path = System.IO.Path.Combine(s.Path, "test.jsonl"), Options = options };
    }

    sealed class Prepared(TaskSpec spec, ITextTokenizer tok, IReadOnlyList<GenerationDoc> docs, List<IReadOnlyList<int>> prompts,
        int maxNewTokens) : IPreparedTask
    {
        /// <inheritdoc/>
        public TaskSpec Spec => spec;

        /// <inheritdoc/>
        public IReadOnlyList<MetricInfo> Metrics { get; } =
            [MetricInfo.Accuracy(spec.Kind, "exact_match_strict", null), MetricInfo.Accuracy(spec.Kind, "exact_match_flexible", null)];

        /// <inheritdoc/>
        public IReadOnlyDictionary<string, double> Protocol { get; } = new Dictionary<string, double>
        {
            ["items"] = docs.Count,
            ["num_fewshot"] = spec.NumFewshot,
            ["max_new_tokens"] = maxNewTokens,
        };

        /// <inheritdoc/>
        public TaskScore Score(CausalLM model, IReadOnlyList<int>? layers = null, IProgressSink? progress = null)
        {
            ArgumentNullException.ThrowIfNull(model);
            var acc = new GenerationAccumulator(spec.Kind);
            var generations = new string[docs.Count];
            using var p = ProgressReporter.Start(spec.Kind, docs.Count, "items", progress ?? NullProgressSink.Instance, clock: null);
            for (int i = 0; i < docs.Count; i++)
            {
                var doc = docs[i];
                var result = TextGenerator.Generate(model, prompts[i], new GenerationOptions
                {
                    MaxNewTokens = maxNewTokens,
                    Greedy = true,
                    Layers = layers,
                    ShouldStop = ids => doc.StopSequences.Any(tok.Decode(ids).Contains),
                });
                generations[i] = tok.Decode(result.TokenIds.Skip(result.PromptLength));
                acc.Add(doc, generations[i]);
                p.Advance();
            }
            return acc.Result() with { Records = Records(docs, generations) };
        }
    }

    /// <summary>
    /// lm-eval's samples records of a generate_until task with two filters (evaluator.py): for each filter in turn
    /// (strict-match, then flexible-extract) one record per document: arguments [[prompt, generation_kwargs]], resps
    /// [[the generation cut at the stop sequences]], filtered_resps [the filter's answer], filter, exact_match.
    /// </summary>
    public static List<JsonObject> Records(IReadOnlyList<GenerationDoc> docs, IReadOnlyList<string> generations)
    {
        var records = new List<JsonObject>();
        (string, Func<string, string>)[] filters = [("strict-match", StrictMatch), ("flexible-extract", FlexibleExtract)];
        foreach (var (filter, extract) in filters)
            for (int i = 0; i < docs.Count; i++)
            {
                var d = docs[i];
                string text = TruncateAtStop(generations[i], d.StopSequences), answer = extract(text);
                var kwargs = new JsonObject
                {
                    ["until"] = new JsonArray(d.StopSequences.Select(x => (JsonNode?)x).ToArray()),
                    ["do_sample"] = false, ["temperature"] = 0.0,
                };
                var r = Suite.SampleRecords.Build(i, d.Row ?? new JsonObject(), d.Target,
                    new JsonArray(new JsonArray(d.Prompt, kwargs)),
                    new JsonArray(new JsonArray(text)),
                    new JsonArray(answer), d.Prompt,
                    new Dictionary<string, double> { ["exact_match"] = IsCorrect(answer, d.Target) ? 1 : 0 });
                r["filter"] = filter;
                records.Add(r);
            }
        return records;
    }

    [GeneratedRegex(@"#### (\-?[0-9\.\,]+)")] private static partial Regex Strict();
    [GeneratedRegex(@"(-?[$0-9.,]{2,})|(-?[0-9]+)")] private static partial Regex Flexible();
    [GeneratedRegex(@"(?s).*#### ")] private static partial Regex UpToHashes();
    [GeneratedRegex(@"\.$")] private static partial Regex TrailingPeriod();

    /// <summary>doc_to_text: "Question: {question}\nAnswer:".</summary>
    public static string DocToText(string question) => $"Question: {question}\nAnswer:";

    /// <summary>The k-shot prompt: each shot as doc_to_text + " " + answer + "\n\n", then the question.</summary>
    public static string BuildPrompt(string question, IReadOnlyList<(string Question, string Answer)> shots)
    {
        var sb = new System.Text.StringBuilder();
        foreach (var (q, a) in shots) sb.Append(DocToText(q)).Append(' ').Append(a).Append("\n\n");
        return sb.Append(DocToText(question)).ToString();
    }

    /// <summary>Rows {question, answer} of a GSM8K JSONL file.</summary>
    public static List<(string Question, string Answer)> ReadRows(string path)
    {
        var rows = new List<(string, string)>();
        foreach (var (line, row) in JsonLines.Read(path))
            rows.Add((JsonLines.GetString(row, "question", path, line), JsonLines.GetString(row, "answer", path, line)));
        if (rows.Count == 0) throw new LayerPruneException($"{path}: no items");
        return rows;
    }

    /// <summary>The items of <paramref name="path"/> with their k-shot prompts (see the class summary for the shots).</summary>
    public static List<GenerationDoc> Load(string path, string? trainPath = null, int numFewshot = 5, int? limit = null)
    {
        var test = ReadRows(path);
        List<(string Question, string Answer)> shots;
        if (trainPath is not null)
        {
            var train = ReadRows(trainPath);
            if (train.Count < numFewshot)
                throw new LayerPruneException($"{trainPath}: {numFewshot}-shot GSM8K needs {numFewshot} rows, found {train.Count}");
            shots = train.Take(numFewshot).ToList();
        }
        else
        {
            if (test.Count <= numFewshot)
                throw new LayerPruneException(
                    $"{path}: {numFewshot}-shot GSM8K without a train file needs more than {numFewshot} rows, found {test.Count}");
            shots = test.Take(numFewshot).ToList();
            test = test.Skip(numFewshot).ToList();
        }
        var items = limit is int l ? test.Take(l) : test;
        return items.Select(t => new GenerationDoc(BuildPrompt(t.Question, shots), t.Answer, StopSequences)
        {
            Row = new JsonObject { ["question"] = t.Question, ["answer"] = t.Answer },
        }).ToList();
    }

    /// <summary>The harness's until handling (HFLM.generate_until): cut the generation at the first occurrence of
    /// each stop sequence in turn (<c>s = s.split(term)[0]</c>).</summary>
    public static string TruncateAtStop(string generated, IReadOnlyList<string> stops)
    {
        foreach (var term in stops)
        {
            if (term.Length == 0) continue;
            int i = generated.IndexOf(term, StringComparison.Ordinal);
            if (i >= 0) generated = generated[..i];
        }
        return generated;
    }

    /// <summary>"strict-match": first "#### N" (group 1), stripped; "[invalid]" when absent.</summary>
    public static string StrictMatch(string response)
    {
        var m = Strict().Match(response);
        return m.Success ? PyText.Strip(m.Groups[1].Value) : Fallback;
    }

    /// <summary>"flexible-extract": the last match of "(-?[$0-9.,]{2,})|(-?[0-9]+)", its first non-empty group, stripped.</summary>
    public static string FlexibleExtract(string response)
    {
        var ms = Flexible().Matches(response);
        if (ms.Count == 0) return Fallback;
        var m = ms[^1];
        var g = m.Groups[1].Success && m.Groups[1].Length > 0 ? m.Groups[1].Value
            : m.Groups[2].Success && m.Groups[2].Length > 0 ? m.Groups[2].Value : Fallback;
        return PyText.Strip(g);
    }

    /// <summary>exact_match normalisation: remove ",", "$", everything through the last "#### ", one trailing "."; lower case.</summary>
    public static string Normalize(string s)
    {
        s = s.Replace(",", "", StringComparison.Ordinal).Replace("$", "", StringComparison.Ordinal);
        s = UpToHashes().Replace(s, "");
        s = TrailingPeriod().Replace(s, "");
        return s.ToLowerInvariant();
    }

    /// <summary>exact_match of an extracted answer against the reference (the full gsm8k answer).</summary>
    public static bool IsCorrect(string extracted, string target) => Normalize(extracted) == Normalize(target);
}
