using System.Text;
using LayerPrune.Evaluation;
using LayerPrune.Evaluation.Suite;
using LayerPrune.Tests.Integration;

namespace LayerPrune.Tests.Evaluation.Suite;

/// <summary>WikiText pages, detokenizer and rolling windows; QMSum items and left truncation.</summary>
public class WikitextAndQmsumTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    static readonly string FullWiki = Path.Combine(TestPaths.Samples, "data", "benchmarks", "wikitext2", "wiki.test.raw");

    /// <summary>WikiText-2 test holds 62 articles (EleutherAI/wikitext_document_level wikitext-2-raw-v1 test: 62 rows).</summary>
    [Fact]
    public void TheTestSplitRebuildsInto62PagesAtTopLevelHeadings()
    {
        var pages = WikitextTask.Pages(File.ReadAllText(FullWiki, Encoding.UTF8));
        Assert.Equal(62, pages.Count);
        Assert.StartsWith(" = Robert Boulter = \n Robert Boulter is an English film , television and theatre actor .", pages[0]);
        Assert.All(pages, p => Assert.Matches(@"^ = [^=].* = $", p.Split('\n')[0]));
        // Section headings stay inside their page; no line is lost or added.
        Assert.Contains("\n = = Career = = \n", pages[0]);
        int lines = File.ReadAllText(FullWiki).Split("\r\n", StringSplitOptions.RemoveEmptyEntries).Length;
        Assert.Equal(lines, pages.Sum(p => p.Split('\n').Length));
    }

    [Fact]
    public void DetokenizerAppliesTheHarnessRules()
    {
        Assert.Equal("the 1,000-year-old 3.5 ( x ) …", WikitextTask.Detokenize("the 1 @,@ 000 @-@ year @-@ old 3 @.@ 5 ( x ) …")
            .Replace("(x)", "( x )"));
        Assert.Equal("A (b c) [d] {e} \"f\" 'g'", WikitextTask.Detokenize("A ( b c ) [ d ] { e } \" f \" ' g '"));
        Assert.Equal("== Career ==\nHe said: no; yes. Well, the players' 1 1", WikitextTask.Detokenize(
            "= = Career = = \n He said : no ; yes . Well , the players ' N 1"));
        Assert.Equal("John's 5\u00b0", WikitextTask.Detokenize("John 's 5 \u00b0 "));
        // The quote rule pairs apostrophes as Python's re.sub does: "' N 1 '" → "'N 1'".
        Assert.Equal("the players'N 1's", WikitextTask.Detokenize("the players ' N 1 's"));
        // words = len(re.split(r"\s+", page)): a leading and a trailing separator each count one empty piece.
        Assert.Equal(5, WikitextTask.Words(" a b\n c "));
    }

    [Fact]
    public void RollingWindowsPredictEveryTokenOnceFromThePrefixTokenThenTheTokenBefore()
    {
        var w = WikitextTask.RollingWindows([10, 11, 12, 13, 14, 15, 16, 17, 18, 19], prefixToken: 1, maxLength: 4);
        Assert.Equal([([1], [10, 11, 12, 13]), ([13], [14, 15, 16, 17]), ([17], [18, 19])],
            w.Select(r => (r.ContextIds, r.ContinuationIds)).ToArray());
        Assert.Single(WikitextTask.RollingWindows([5, 6], 1, 4));
        Assert.Empty(WikitextTask.RollingWindows([], 1, 4));
    }

    /// <summary>Word perplexity, byte perplexity and bits per byte are the aggregates of the per-page log-likelihoods.</summary>
    [Fact]
    public void WikitextScoresOnePageAsTheSumOfItsWindows()
    {
        var spec = $"wikitext:{Path.Combine(TestPaths.Fixtures, "benchmarks", "wikitext", "wiki.test.raw")},limit=1,max_length=64";
        var task = EvalTasks.Parse(spec).Prepare(kjv.Tokenizer, EvalOptions.Default);
        var s = task.Score(kjv.Model);
        var rec = Assert.Single(s.Records);
        double ll = double.Parse(rec["filtered_resps"]![0]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture);
        string page = rec["doc"]!["page"]!.GetValue<string>();
        int words = WikitextTask.Words(page), bytes = Encoding.UTF8.GetByteCount(page);
        Assert.Equal(Math.Exp(-ll / words), s.Values["word_perplexity"], 9);
        Assert.Equal(Math.Exp(-ll / bytes), s.Values["byte_perplexity"], 9);
        Assert.Equal(-ll / bytes / Math.Log(2), s.Values["bits_per_byte"], 9);
        // The same page scored by the plain scorer, window by window.
        var tokens = kjv.Tokenizer.EncodeRaw(WikitextTask.Detokenize(page));
        var windows = WikitextTask.RollingWindows(tokens, kjv.Tokenizer.BosId!.Value, 64);
        double sum = new LoglikelihoodScorer(kjv.Model).Score(windows.Select(r => (IReadOnlyList<LoglikelihoodRequest>)[r]).ToList())
            .Sum(x => x[0]);
        Assert.Equal(sum, ll, 6);
        Assert.Equal(tokens.Count, windows.Sum(x => x.ContinuationIds.Length));
    }

    static string Qmsum => Path.Combine(TestPaths.Fixtures, "benchmarks", "qmsum", "test.jsonl");

    [Fact]
    public void QmsumHasOneItemPerQueryGeneralFirst()
    {
        var items = QmsumTask.Read(Qmsum);
        Assert.Equal(13, items.Count);                          // the first meeting: 1 general + 12 specific queries
        Assert.Equal("general", items[0].Kind);
        Assert.Equal("Summarize the whole meeting.", items[0].Query);
        Assert.All(items.Skip(1), i => Assert.Equal("specific", i.Kind));
        Assert.StartsWith("Lynne Neagle AM: Good afternoon, everyone.", items[0].Prompt);
        Assert.EndsWith("\n\nQuestion: Summarize the whole meeting.\nAnswer:", items[0].Prompt);
        var (ids, cut) = QmsumTask.TruncateLeft([1, 2, 3, 4], 2);
        Assert.Equal([3, 4], ids);
        Assert.Equal(2, cut);
        (ids, cut) = QmsumTask.TruncateLeft([1, 2], 5);
        Assert.Equal([1, 2], ids);
        Assert.Equal(0, cut);
        Assert.Equal(" a b", QmsumTask.CutAtStop(" a b\nc\n"));
    }

    /// <summary>A transcript far longer than the context is cut from the left (recorded), never an error; the answer is
    /// the generation before "\n", scored by ROUGE against the reference.</summary>
    [Fact]
    public void QmsumTruncatesALongTranscriptFromTheLeftAndScoresTheAnswer()
    {
        var task = EvalTasks.Parse($"qmsum:{Qmsum},limit=1,max_length=48,max_gen_toks=8").Prepare(kjv.Tokenizer, EvalOptions.Default);
        var s = task.Score(kjv.Model);
        var rec = Assert.Single(s.Records);
        int promptTokens = rec["doc"]!["prompt_tokens"]!.GetValue<int>();
        Assert.True(promptTokens > 10_000, $"{promptTokens}");
        Assert.Equal(promptTokens - 40, rec["doc"]!["truncated_tokens"]!.GetValue<int>());
        Assert.Equal(1, s.Values["truncated_items"]);
        string answer = rec["filtered_resps"]![0]!.GetValue<string>();
        Assert.DoesNotContain("\n", answer);
        string reference = rec["target"]!.GetValue<string>();
        Assert.Equal(Rouge.N(reference, answer, 1).FMeasure, s.Values["rouge1"], 12);
        Assert.Equal(Rouge.N(reference, answer, 2).FMeasure, s.Values["rouge2"], 12);
        Assert.Equal(Rouge.L(reference, answer).FMeasure, s.Values["rougeL"], 12);
    }
}
