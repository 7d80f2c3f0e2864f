using System.Text.Json;
using LayerPrune.Data;
using LayerPrune.Evaluation;
using Xunit;

namespace LayerPrune.Tests.Evaluation;

public class RequestAndMetricTests
{
    private static KjvSentencePiece Tok => KjvSentencePiece.Shared;

    [Fact]
    public void Split_MovesTrailingWhitespaceToContinuation()
    {
        Assert.Equal(("Answer:", " \n A"), LoglikelihoodRequest.SplitTrailingWhitespace("Answer: \n", " A"));
        Assert.Equal(("Answer:", " A"), LoglikelihoodRequest.SplitTrailingWhitespace("Answer:", " A"));
    }

    [Fact]
    public void Build_TrailingSpaceContext_EqualsSpaceInContinuation_WithRealSentencePiece()
    {
        const string ctx = "In the beginning God created the";
        var moved = LoglikelihoodRequest.Build(Tok, ctx + " ", "heaven", addBos: true);
        var plain = LoglikelihoodRequest.Build(Tok, ctx, " heaven", addBos: true);
        Assert.Equal(plain.ContextIds, moved.ContextIds);
        Assert.Equal(plain.ContinuationIds, moved.ContinuationIds);
        // _encode_pair by hand: context = [BOS] + sp(ctx); continuation = ([BOS] + sp(ctx + " heaven"))[len(context):].
        var ctxIds = new[] { 1 }.Concat(Tok.EncodeRaw(ctx)).ToArray();
        var whole = new[] { 1 }.Concat(Tok.EncodeRaw(ctx + " heaven")).ToArray();
        Assert.Equal(ctxIds, moved.ContextIds);
        Assert.Equal(whole[ctxIds.Length..], moved.ContinuationIds);
        Assert.Equal(whole[..ctxIds.Length], ctxIds);            // the context is a prefix here
        Assert.Equal("heaven", Tok.Decode(moved.ContinuationIds).Trim());
        // Same ids as HF/sentencepiece (reference chunk 0 starts with Genesis 1:1): [1, In, the, begin, ning, God, c, reat, ed, the] + [heaven].
        using var refDoc = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestPaths.Fixtures, "reference", "kjv-validation-token-ids.json")));
        var ref0 = refDoc.RootElement.GetProperty("chunks")[0].EnumerateArray().Select(x => x.GetInt32()).Take(11).ToArray();
        Assert.Equal(ref0[..10], moved.ContextIds);
        Assert.Equal(ref0[10..], moved.ContinuationIds);
    }

    [Fact]
    public void Build_NoBos_AndEmptyContext()
    {
        var r = LoglikelihoodRequest.Build(Tok, "And God said", " Let", addBos: false);
        Assert.Equal(Tok.EncodeRaw("And God said"), r.ContextIds);
        Assert.Equal(Tok.EncodeRaw("And God said Let").Skip(r.ContextIds.Length), r.ContinuationIds);
        var e = LoglikelihoodRequest.Build(Tok, "", "Let there be light", addBos: true);
        Assert.Equal([1], e.ContextIds);
        Assert.Equal(Tok.EncodeRaw("Let there be light"), e.ContinuationIds);
    }

    [Fact]
    public void TokenChunks_KjvValidation_MatchesReferenceProtocol()
    {
        var lines = TextCorpus.Read(Path.Combine(TestPaths.Samples, "data", "kjv", "validation.txt")).ToList();
        Assert.Equal(60, lines.Count);                            // 60 chapters (every 20th), no empty lines
        int total = lines.Sum(l => 1 + Tok.EncodeRaw(l).Count);
        Assert.Equal(57_189, total);
        var chunks = TokenChunks.FromLines(lines, Tok, 256, maxChunks: null);
        Assert.Equal(57_189 / 256, chunks.Count);                 // 223 full chunks, tail of 101 dropped
        Assert.All(chunks, c => Assert.Equal(256, c.Length));
        Assert.Equal(1, chunks[0][0]);
        // First 3 chunks against the ids HF/sentencepiece produced (tests/fixtures/reference/kjv-validation-token-ids.json).
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestPaths.Fixtures, "reference", "kjv-validation-token-ids.json")));
        var refChunks = doc.RootElement.GetProperty("chunks").EnumerateArray()
            .Select(c => c.EnumerateArray().Select(x => x.GetInt32()).ToArray()).ToList();
        Assert.Equal(3, refChunks.Count);
        for (int i = 0; i < 3; i++) Assert.Equal(refChunks[i], chunks[i]);
        var limited = TokenChunks.FromLines(lines, Tok, 256, maxChunks: 128);
        Assert.Equal(128, limited.Count);
        Assert.Equal(chunks[127], limited[127]);
    }

    [Fact]
    public void TokenChunks_PerDocument_TruncatesAfterBos()
    {
        var s = TokenChunks.PerDocument(["In the beginning God created the heaven and the earth.", "Amen."], Tok, 5);
        Assert.Equal(2, s.Count);
        Assert.Equal(new[] { 1 }.Concat(Tok.EncodeRaw("In the beginning God created the heaven and the earth.").Take(4)), s[0]);
        Assert.Equal(new[] { 1 }.Concat(Tok.EncodeRaw("Amen.")), s[1]);
    }

    [Fact]
    public void Metrics_AccAccNormAndStderr_HandExample()
    {
        // Choice texts "A" (len 1) and "long answer" (len 11): logprobs -2 vs -5.5 → acc picks 0, acc_norm picks 1 (-0.5 > -2).
        var doc = EvalDoc.FromChoices("q", ["A", "long answer"], gold: 1);
        Assert.Equal((false, true), Metrics.Score(doc, [-2.0, -5.5]));
        Assert.Equal((true, true), Metrics.Score(doc with { Gold = 0 }, [-1.0, -30.0]));   // -1/1 > -30/11
        Assert.Equal(0, Metrics.Argmax([3.0, 3.0, 1.0]));          // ties → first, like np.argmax

        // Scores 1,0,1,1: p = 0.75, sample stderr = sqrt(p(1-p)/(n-1)) = sqrt(0.1875/3) = 0.25.
        Assert.Equal(0.25, Metrics.MeanStderr([1.0, 0, 1, 1]), 12);
        // Pooled over subjects of sizes 4 (se 0.25) and 2 (scores 1,0: se = sqrt(.25/1) = 0.5):
        // var = (3·0.0625·4 + 1·0.25·2) / (6 − 2) = 0.3125; se = sqrt(0.3125 / 6).
        Assert.Equal(Math.Sqrt(0.3125 / 6), Metrics.PooledStderr([0.25, 0.5], [4, 2]), 12);
    }

    [Fact]
    public void Accumulator_MmluMicroAverage_AndResultsJson()
    {
        var acc = new MultipleChoiceAccumulator("mmlu");
        EvalDoc D(string subj, int gold) => EvalDoc.FromChoices("q", MmluTask.Letters, gold, subj);
        double[] pickA = [-1, -2, -3, -4];
        foreach (var g in new[] { 0, 1, 0, 0 }) acc.Add(D("algebra", g), pickA);   // 3/4 right
        foreach (var g in new[] { 0, 3 }) acc.Add(D("botany", g), pickA);          // 1/2 right
        var r = acc.Result();
        Assert.Equal(6, r.Samples);
        Assert.Equal(4.0 / 6, r.Values["acc"], 12);                                 // micro: (3 + 1) / 6, not (0.75 + 0.5) / 2
        Assert.Equal(Math.Sqrt(0.3125 / 6), r.Values["acc_stderr"], 12);
        Assert.Equal(["mmlu_algebra", "mmlu_botany"], r.Subtasks.Select(s => s.Name));
        Assert.Equal(0.75, r.Subtasks[0].Values["acc"]);

        var cfg = new EvalRunConfig("models/x", [TaskSpec.Parse("mmlu:" + Path.Combine(TestPaths.Fixtures, "benchmarks", "mmlu"))], 10, 8, 1234);
        var json = JsonDocument.Parse(ResultsJson.ToJsonString([r], cfg)).RootElement;
        var res = json.GetProperty("results");
        Assert.Equal(4.0 / 6, res.GetProperty("mmlu").GetProperty("acc").GetDouble(), 12);
        Assert.Equal(6, res.GetProperty("mmlu").GetProperty("samples").GetInt32());
        Assert.Equal(2, res.GetProperty("mmlu_botany").GetProperty("samples").GetInt32());
        Assert.Equal(5, json.GetProperty("config").GetProperty("tasks")[0].GetProperty("num_fewshot").GetInt32());
        Assert.Equal(10, json.GetProperty("config").GetProperty("limit").GetInt32());
    }

    [Fact]
    public void GenerationAccumulator_ScoresBothFilters()
    {
        var g = new GenerationAccumulator("gsm8k");
        var doc = new GenerationDoc("p", "a\n#### 1,234", Gsm8kTask.StopSequences);
        g.Add(doc, " so 1234.\n#### 1234\n\nQuestion: #### 9");   // strict 1234 ✓; flexible (after cut) 1234 ✓
        g.Add(doc, " it is $1,234.");                             // strict invalid; flexible "$1,234." → 1234 ✓
        var r = g.Result();
        Assert.Equal(0.5, r.Values["exact_match_strict"]);
        Assert.Equal(1.0, r.Values["exact_match_flexible"]);
        Assert.Equal(0.5, r.Values["exact_match_strict_stderr"], 12);  // sqrt(0.25 / 1)
    }
}
