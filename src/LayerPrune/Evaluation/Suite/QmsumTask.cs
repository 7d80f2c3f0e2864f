using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using LayerPrune.Data;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;

namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// QMSum query-based meeting summarization (<c>qmsum:FILE</c>, the original QMSum JSONL: one meeting per row with
/// general_query_list, specific_query_list and meeting_transcripts), the open-ended generation the paper's rebuttal
/// added. One item per query, general queries first then specific ones, meeting by meeting (281 in the test split).
/// The prompt is the SCROLLS QMSum template of lm_eval/tasks/scrolls/task.py (doc_to_text
/// <c>"{text}\n\nQuestion: {question}\nAnswer:"</c>), the text being the transcript as "speaker: content" lines.
/// As the harness's HFLM.generate_until, the prompt's tokens are cut from the left to max_length − max_gen_toks
/// (max_length: <c>max_length=N</c> or config max_position_embeddings), the cut recorded per item; a transcript longer
/// than the context is cut, never an error. Greedy generation until "\n" (the SCROLLS summary tasks' until) or
/// <c>max_gen_toks=N</c> new tokens (default 128), the text before the first "\n" kept. Metrics: ROUGE-1, ROUGE-2 and
/// ROUGE-L F-measure of the answer against the reference (<see cref="Rouge"/>, stemming on), mean over items with
/// mean_stderr.
/// </summary>
public sealed class QmsumTask(TaskSpec spec) : IEvalTask
{
    /// <summary>The <c>qmsum</c> kind (0-shot).</summary>
    public static readonly TaskKind Kind = SuiteLimits.Kind("qmsum", s => new QmsumTask(s), maxShots: 0,
        options: [new TaskOption("limit", "N"), new TaskOption("max_length", "N"), new TaskOption("max_gen_toks", "N")], generates: true);

    /// <summary>The default generation budget.</summary>
    public const int DefaultMaxGenToks = 128;

    /// <summary>The stop sequence.</summary>
    public const string Until = "\n";

    /// <inheritdoc/>
    public TaskSpec Spec { get; } = spec;

    /// <summary>The YAML-equivalent facts (the harness's scrolls_qmsum reads SCROLLS' copy; ours reads the original file).</summary>
    public LmEvalTaskConfig LmEval => new("qmsum", "generate_until", 2.0)
    {
        DatasetPath = "Yale-LILY/QMSum (original JSONL)", Split = "test",
        DocToText = "{{text}}\n\nQuestion: {{question}}\nAnswer:", DocToTarget = " {{answer}}",
        GenerationKwargs = new JsonObject { ["until"] = new JsonArray(Until), ["max_gen_toks"] = MaxGenToks, ["do_sample"] = false },
        MetricList = [("rouge1", "mean", true), ("rouge2", "mean", true), ("rougeL", "mean", true)],
        Deviation = "query-based items from the original QMSum file (SCROLLS' version prepends the query); ROUGE F-measure per item " +
                    "averaged (SCROLLS aggregates over the corpus); transcript lines \"speaker: content\"",
    };

    int MaxGenToks => Spec.Option("max_gen_toks") is string s
        ? int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 1 ? n
            : throw new LayerPruneException($"task \"{Spec.Text}\": max_gen_toks must be a positive integer, got \"{s}\"")
        : DefaultMaxGenToks;

    /// <summary>One query: its meeting's transcript text, the query, the reference answer, and general or specific.</summary>
    public sealed record Item(JsonObject Doc, string Transcript, string Query, string Answer, string Kind)
    {
        /// <summary>doc_to_text.</summary>
        public string Prompt => $"{Transcript}\n\nQuestion: {Query}\nAnswer:";
    }

    /// <summary>Every query of the file, in order.</summary>
    public static List<Item> Read(string path)
    {
        var items = new List<Item>();
        foreach (var (line, row) in JsonLines.Read(path))
        {
            if (row["meeting_transcripts"] is not JsonArray turns)
                throw new LayerPruneException($"{path}:{line}: missing array field \"meeting_transcripts\"");
            var sb = new StringBuilder();
            foreach (var t in turns)
            {
                if (t is not JsonObject turn) throw new LayerPruneException($"{path}:{line}: \"meeting_transcripts\" must hold objects");
                if (sb.Length > 0) sb.Append('\n');
                sb.Append(JsonLines.GetString(turn, "speaker", path, line, "meeting_transcripts[].")).Append(": ")
                  .Append(JsonLines.GetString(turn, "content", path, line, "meeting_transcripts[]."));
            }
            string transcript = sb.ToString();
            foreach (var kind in new[] { "general", "specific" })
            {
                string field = $"{kind}_query_list";
                if (row[field] is not JsonArray queries) throw new LayerPruneException($"{path}:{line}: missing array field \"{field}\"");
                foreach (var q in queries)
                {
                    if (q is not JsonObject qo) throw new LayerPruneException($"{path}:{line}: \"{field}\" must hold objects");
                    var doc = new JsonObject
                    {
                        ["meeting_line"] = line, ["query_type"] = kind,
                        ["query"] = JsonLines.GetString(qo, "query", path, line, field + "[]."),
                        ["answer"] = JsonLines.GetString(qo, "answer", path, line, field + "[]."),
                    };
                    items.Add(new Item(doc, transcript, doc["query"]!.GetValue<string>(), doc["answer"]!.GetValue<string>(), kind));
                }
            }
        }
        if (items.Count == 0) throw new LayerPruneException($"{path}: no queries");
        return items;
    }

    /// <summary>The harness's left truncation: the last <paramref name="keep"/> tokens; returns them and how many were cut.</summary>
    public static (int[] Ids, int Cut) TruncateLeft(IReadOnlyList<int> ids, int keep)
    {
        int cut = Math.Max(0, ids.Count - keep);
        return (ids.Skip(cut).ToArray(), cut);
    }

    /// <summary>The text before the first stop sequence.</summary>
    public static string CutAtStop(string text)
    {
        int i = text.IndexOf(Until, StringComparison.Ordinal);
        return i < 0 ? text : text[..i];
    }

    /// <inheritdoc/>
    public IPreparedTask Prepare(ITextTokenizer tokenizer, EvalOptions options)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        var all = Read(Spec.Path);
        int? n = SuiteLimits.Combine(Spec, options.Limit);
        var items = n is int l ? all.Take(l).ToList() : all;
        var prompts = items.Select(i => tokenizer.Encode(i.Prompt).ToArray()).ToList();
        return new Prepared(this, items, all.Count, prompts, tokenizer);
    }

    sealed class Prepared(QmsumTask task, List<Item> items, int documents, List<int[]> prompts, ITextTokenizer tok)
        : IPreparedTask, ILmEvalTask
    {
        public TaskSpec Spec => task.Spec;
        public LmEvalTaskConfig LmEval => task.LmEval;
        public int Documents => documents;

        public IReadOnlyList<MetricInfo> Metrics { get; } =
        [
            MetricInfo.Accuracy("qmsum", "rouge1", null), MetricInfo.Accuracy("qmsum", "rouge2", null),
            MetricInfo.Accuracy("qmsum", "rougeL", null),
        ];

        public IReadOnlyDictionary<string, double> Protocol { get; } = new Dictionary<string, double>
        {
            ["items"] = items.Count, ["documents"] = documents, ["num_fewshot"] = 0, ["max_gen_toks"] = task.MaxGenToks,
            ["prompt_tokens_mean"] = prompts.Average(p => (double)p.Length),
        };

        public TaskScore Score(CausalLM model, IReadOnlyList<int>? layers = null, IProgressSink? progress = null)
        {
            ArgumentNullException.ThrowIfNull(model);
            int maxGen = task.MaxGenToks;
            int maxLength = WikitextTask.MaxLength(task.Spec, model);
            if (maxLength - maxGen < 1)
                throw new LayerPruneException(
                    $"task \"{task.Spec.Text}\": max_gen_toks {maxGen} leaves no room for the prompt in {maxLength} positions");
            using var p = ProgressReporter.Start("qmsum", items.Count, "items", progress ?? NullProgressSink.Instance, clock: null);
            var r1 = new double[items.Count];
            var r2 = new double[items.Count];
            var rl = new double[items.Count];
            var records = new List<JsonObject>();
            int truncated = 0;
            long cutTokens = 0;
            for (int i = 0; i < items.Count; i++)
            {
                var (ids, cut) = TruncateLeft(prompts[i], maxLength - maxGen);
                truncated += cut > 0 ? 1 : 0;
                cutTokens += cut;
                var result = TextGenerator.Generate(model, ids, new GenerationOptions
                {
                    MaxNewTokens = maxGen, Greedy = true, Layers = layers,
                    ShouldStop = g => tok.Decode(g).Contains(Until, StringComparison.Ordinal),
                });
                string raw = tok.Decode(result.TokenIds.Skip(result.PromptLength));
                string answer = CutAtStop(raw);
                var target = Rouge.Tokenize(items[i].Answer);
                var pred = Rouge.Tokenize(answer);
                r1[i] = Rouge.N(target, pred, 1).FMeasure;
                r2[i] = Rouge.N(target, pred, 2).FMeasure;
                rl[i] = Rouge.L(target, pred).FMeasure;
                var doc = items[i].Doc.DeepClone().AsObject();
                doc["prompt_tokens"] = prompts[i].Length;
                doc["truncated_tokens"] = cut;
                var args = new JsonArray(new JsonArray(items[i].Prompt,
                    new JsonObject { ["until"] = new JsonArray(Until), ["max_gen_toks"] = maxGen, ["do_sample"] = false }));
                records.Add(SampleRecords.Build(i, doc, items[i].Answer, args, new JsonArray(new JsonArray(raw)), new JsonArray(answer),
                    items[i].Prompt, new Dictionary<string, double> { ["rouge1"] = r1[i], ["rouge2"] = r2[i], ["rougeL"] = rl[i] }));
                p.Advance();
            }
            return new TaskScore("qmsum", items.Count, new Dictionary<string, double>
            {
                ["rouge1"] = Evaluation.Metrics.Mean(r1), ["rouge1_stderr"] = Evaluation.Metrics.MeanStderr(r1),
                ["rouge2"] = Evaluation.Metrics.Mean(r2), ["rouge2_stderr"] = Evaluation.Metrics.MeanStderr(r2),
                ["rougeL"] = Evaluation.Metrics.Mean(rl), ["rougeL_stderr"] = Evaluation.Metrics.MeanStderr(rl),
                ["truncated_items"] = truncated, ["truncated_tokens_mean"] = cutTokens / (double)items.Count,
            }) { Records = records };
        }
    }
}
