using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;

namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// WikiText-2 document-level perplexity (<c>wikitext:wiki.test.raw</c>) as lm_eval/tasks/wikitext/wikitext.yaml with
/// preprocess_wikitext.py:
/// <code>
/// dataset_path: EleutherAI/wikitext_document_level   dataset_name: wikitext-2-raw-v1   test_split: test
/// output_type: loglikelihood_rolling
/// doc_to_text: ""
/// doc_to_target: !function preprocess_wikitext.wikitext_detokenizer
/// process_results: !function preprocess_wikitext.process_results   # words = len(re.split(r"\s+", page)), bytes = len(page.encode())
/// metric_list: word_perplexity, byte_perplexity (weighted_perplexity), bits_per_byte (bits_per_byte)   metadata: version 2.0
/// </code>
/// Pages (<see cref="Pages"/>): the raw file is cut before every top-level heading line " = Title = " (one '=' on each
/// side, "= =" section headings stay inside the page), each page being its lines joined by "\n", as the
/// wikitext_document_level builder does; WikiText-2 test has 62. Each detokenized page is scored as the harness's
/// loglikelihood_rolling: its tokens (no BOS) in disjoint windows of the model's context (max_position_embeddings, or
/// <c>max_length=N</c>), the first window predicted from the prefix token (BOS, else EOS), each later one from the
/// token before it (get_rolling_token_windows with context_len 1). word_perplexity = exp(−Σll / Σwords),
/// byte_perplexity = exp(−Σll / Σbytes), bits_per_byte = −Σll / Σbytes / ln 2; the words and bytes are counted on the page
/// before detokenization. The harness has no stderr for these ("N/A").
/// </summary>
public sealed partial class WikitextTask(TaskSpec spec) : IEvalTask
{
    /// <summary>The <c>wikitext</c> kind (0-shot).</summary>
    public static readonly TaskKind Kind = SuiteLimits.Kind("wikitext", s => new WikitextTask(s), maxShots: 0,
        options: [new TaskOption("limit", "N"), new TaskOption("max_length", "N")]);

    /// <inheritdoc/>
    public TaskSpec Spec { get; } = spec;

    /// <summary>The YAML facts.</summary>
    public static LmEvalTaskConfig LmEval { get; } = new("wikitext", "loglikelihood_rolling", 2.0)
    {
        DatasetPath = "EleutherAI/wikitext_document_level", DatasetName = "wikitext-2-raw-v1", Split = "test", DocToText = "",
        DocToTarget = "!function preprocess_wikitext.wikitext_detokenizer",
        MetricList = [("word_perplexity", "weighted_perplexity", false), ("byte_perplexity", "weighted_perplexity", false),
            ("bits_per_byte", "bits_per_byte", false)],
    };

    [GeneratedRegex(@"/' [0-9]/")] private static partial Regex Apostrophe();
    [GeneratedRegex(@"\(\s*([^\)]*?)\s*\)")] private static partial Regex Parens();
    [GeneratedRegex(@"\[\s*([^\]]*?)\s*\]")] private static partial Regex Brackets();
    [GeneratedRegex(@"{\s*([^}]*?)\s*}")] private static partial Regex Braces();
    [GeneratedRegex("\"\\s*([^\"]*?)\\s*\"")] private static partial Regex Quotes();
    [GeneratedRegex(@"'\s*([^']*?)\s*'")] private static partial Regex SingleQuotes();
    [GeneratedRegex(@"\s+")] private static partial Regex Whitespace();

    /// <summary>
    /// The pages of a raw WikiText file (CRLF or LF): a line whose text, with "= = =" → "===" and "= =" → "==" and
    /// stripped, starts with "= " and ends with " =" opens a new page; pages with only whitespace are dropped.
    /// </summary>
    public static List<string> Pages(string raw)
    {
        var lines = raw.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        if (lines.Length > 0 && lines[^1].Length == 0) lines = lines[..^1];
        var pages = new List<string>();
        var current = new List<string>();
        void Flush()
        {
            var page = string.Join("\n", current);
            if (!string.IsNullOrWhiteSpace(page)) pages.Add(page);
            current.Clear();
        }
        foreach (var line in lines)
        {
            var r = Data.PyText.Strip(line.Replace("= = =", "===", StringComparison.Ordinal)
                .Replace("= =", "==", StringComparison.Ordinal));
            if (r.StartsWith("= ", StringComparison.Ordinal) && r.EndsWith(" =", StringComparison.Ordinal)) Flush();
            current.Add(line);
        }
        Flush();
        return pages;
    }

    /// <summary>preprocess_wikitext.wikitext_detokenizer, rule for rule.</summary>
    public static string Detokenize(string s)
    {
        s = s.Replace("s '", "s'", StringComparison.Ordinal);
        s = Apostrophe().Replace(s, "/'[0-9]/");
        s = s.Replace(" @-@ ", "-", StringComparison.Ordinal).Replace(" @,@ ", ",", StringComparison.Ordinal)
            .Replace(" @.@ ", ".", StringComparison.Ordinal);
        s = s.Replace(" : ", ": ", StringComparison.Ordinal).Replace(" ; ", "; ", StringComparison.Ordinal)
            .Replace(" . ", ". ", StringComparison.Ordinal).Replace(" ! ", "! ", StringComparison.Ordinal)
            .Replace(" ? ", "? ", StringComparison.Ordinal).Replace(" , ", ", ", StringComparison.Ordinal);
        s = Parens().Replace(s, "($1)");
        s = Brackets().Replace(s, "[$1]");
        s = Braces().Replace(s, "{$1}");
        s = Quotes().Replace(s, "\"$1\"");
        s = SingleQuotes().Replace(s, "'$1'");
        s = s.Replace("= = = =", "====", StringComparison.Ordinal).Replace("= = =", "===", StringComparison.Ordinal)
            .Replace("= =", "==", StringComparison.Ordinal);
        s = s.Replace(" \u00b0 ", "\u00b0", StringComparison.Ordinal);
        s = s.Replace(" \n", "\n", StringComparison.Ordinal).Replace("\n ", "\n", StringComparison.Ordinal);
        s = s.Replace(" N ", " 1 ", StringComparison.Ordinal).Replace(" 's", "'s", StringComparison.Ordinal);
        return s;
    }

    /// <summary>len(re.split(r"\s+", page)): the pieces between whitespace runs, empty ends included.</summary>
    public static int Words(string page) => Whitespace().Split(page).Length;

    /// <summary>get_rolling_token_windows(tokens, prefix, maxLength, context_len=1) + make_disjoint_window:
    /// (context, continuation) pairs that predict every token once.</summary>
    public static List<LoglikelihoodRequest> RollingWindows(IReadOnlyList<int> tokens, int prefixToken, int maxLength)
    {
        var windows = new List<LoglikelihoodRequest>();
        if (tokens.Count == 0) return windows;
        int first = Math.Min(maxLength, tokens.Count);
        windows.Add(new LoglikelihoodRequest([prefixToken], tokens.Take(first).ToArray()));
        for (int predicted = first; predicted < tokens.Count;)
        {
            int len = Math.Min(tokens.Count - predicted, maxLength);
            windows.Add(new LoglikelihoodRequest([tokens[predicted - 1]], tokens.Skip(predicted).Take(len).ToArray()));
            predicted += len;
        }
        return windows;
    }

    /// <summary>The scoring window: <c>max_length=N</c>, else config max_position_embeddings (the harness's HFLM
    /// max_length), else 2048 (its default).</summary>
    public static int MaxLength(TaskSpec spec, CausalLM model)
    {
        if (spec.Option("max_length") is string s)
            return int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 2 ? n
                : throw new LayerPruneException($"task \"{spec.Text}\": max_length must be an integer of at least 2, got \"{s}\"");
        return model.Config.Raw["max_position_embeddings"] is JsonValue v && v.TryGetValue<int>(out int m) && m >= 2 ? m : 2048;
    }

    /// <inheritdoc/>
    public IPreparedTask Prepare(ITextTokenizer tokenizer, EvalOptions options)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        var all = Pages(File.ReadAllText(Spec.Path, Encoding.UTF8));
        if (all.Count == 0) throw new LayerPruneException($"{Spec.Path}: no pages");
        int? n = SuiteLimits.Combine(Spec, options.Limit);
        var pages = n is int l ? all.Take(l).ToList() : all;
        int prefix = tokenizer.BosId ?? (tokenizer.EosIds.Count > 0 ? tokenizer.EosIds[0]
            : throw new LayerPruneException("wikitext: the tokenizer has neither BOS nor EOS for the first window's prefix token"));
        var docs = pages.Select(p => new Page(p, Detokenize(p), tokenizer.EncodeRaw(Detokenize(p)).ToArray())).ToList();
        return new Prepared(Spec, docs, all.Count, prefix, options);
    }

    /// <summary>One page: as read, detokenized, and its tokens.</summary>
    sealed record Page(string Raw, string Text, int[] Tokens);

    sealed class Prepared(TaskSpec spec, List<Page> pages, int documents, int prefix, EvalOptions options) : IPreparedTask, ILmEvalTask
    {
        public TaskSpec Spec => spec;
        public LmEvalTaskConfig LmEval => WikitextTask.LmEval;
        public int Documents => documents;

        public IReadOnlyList<MetricInfo> Metrics { get; } =
        [
            new("word_perplexity", MetricSpec.Loss("wikitext_word_perplexity"), null, "WikiText-2 word perplexity"),
            new("bits_per_byte", MetricSpec.Loss("wikitext_bits_per_byte"), null, "WikiText-2 bits per byte"),
        ];

        public IReadOnlyDictionary<string, double> Protocol { get; } = new Dictionary<string, double>
        {
            ["items"] = pages.Count, ["documents"] = documents, ["num_fewshot"] = 0,
            ["tokens"] = pages.Sum(p => (long)p.Tokens.Length), ["words"] = pages.Sum(p => (long)Words(p.Raw)),
            ["bytes"] = pages.Sum(p => (long)Encoding.UTF8.GetByteCount(p.Raw)),
        };

        public TaskScore Score(CausalLM model, IReadOnlyList<int>? layers = null, IProgressSink? progress = null)
        {
            ArgumentNullException.ThrowIfNull(model);
            int maxLength = MaxLength(spec, model);
            var windows = pages.Select(p => RollingWindows(p.Tokens, prefix, maxLength)).ToList();
            var items = windows.SelectMany(w => w.Select(r => (IReadOnlyList<LoglikelihoodRequest>)[r])).ToList();
            using var p = ProgressReporter.Start(spec.Kind, items.Count, "windows", progress ?? NullProgressSink.Instance, clock: null);
            var results = new LoglikelihoodScorer(model, options.BatchSize, layers).ScoreDetailed(items, reusePrefix: false,
                n => p.Advance(n));
            double sumLl = 0;
            long words = 0, bytes = 0;
            var records = new List<JsonObject>();
            int k = 0;
            for (int i = 0; i < pages.Count; i++)
            {
                double ll = 0;
                for (int w = 0; w < windows[i].Count; w++) ll += results[k++][0].LogProb;
                int pw = Words(pages[i].Raw), pb = Encoding.UTF8.GetByteCount(pages[i].Raw);
                sumLl += ll;
                words += pw;
                bytes += pb;
                var doc = new JsonObject { ["page"] = pages[i].Raw };
                var metrics = new Dictionary<string, double>
                {
                    ["word_perplexity"] = Math.Exp(-ll / pw), ["byte_perplexity"] = Math.Exp(-ll / pb),
                    ["bits_per_byte"] = -ll / pb / Math.Log(2),
                };
                var rec = SampleRecords.Build(i, doc, pages[i].Text, new JsonArray(new JsonArray(pages[i].Text)),
                    new JsonArray(new JsonArray(SampleRecords.PyFloat(ll))), new JsonArray(SampleRecords.PyFloat(ll)), pages[i].Text,
                    metrics);
                // The harness's per-document values are the (loglikelihood, count) pairs its aggregations take.
                rec["word_perplexity"] = new JsonArray(ll, pw);
                rec["byte_perplexity"] = new JsonArray(ll, pb);
                rec["bits_per_byte"] = new JsonArray(ll, pb);
                records.Add(rec);
            }
            return new TaskScore(spec.Kind, pages.Count, new Dictionary<string, double>
            {
                ["word_perplexity"] = Math.Exp(-sumLl / words),
                ["byte_perplexity"] = Math.Exp(-sumLl / bytes),
                ["bits_per_byte"] = -sumLl / bytes / Math.Log(2),
                ["max_length"] = maxLength,
                ["tokens"] = pages.Sum(x => (long)x.Tokens.Length),
            }) { Records = records };
        }
    }
}
