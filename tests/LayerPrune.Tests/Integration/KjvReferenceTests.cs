using LayerPrune.Evaluation;
using LayerPrune.Pruning;
using LayerPrune.Similarity;

namespace LayerPrune.Tests.Integration;

/// <summary>The real model against the numbers HF transformers computed with the same protocols (fp32).</summary>
public class KjvReferenceTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    [Fact]
    public void ValidationLossMatchesHf()
    {
        var r = LossEvaluator.Evaluate(kjv.Model, kjv.ValidationChunks(128));
        double hf = (double)kjv.Reference["validation_loss"]!["value"]!;
        Assert.Equal(128 * 255, r.Tokens);
        Assert.InRange(r.ValidationLoss, hf - 1e-3, hf + 1e-3); // 2.9413
    }

    [Fact]
    public void AngularDistanceMatrixMatchesHfAndPicksLayers6To13ForN8()
    {
        var result = LayerSimilarity.Compute(kjv.Model, kjv.ValidationChunks(64));
        var expected = kjv.Reference["angular_distance"]!["value"]!.AsArray();
        for (int a = 0; a <= 16; a++)
            for (int b = 0; b <= 16; b++)
            {
                double hf = (double)expected[a]![b]!;
                // Diagonal: exactly 0 here; HF's fp32 acos(1 − ulp) noise there (see GoldenSimilarityTests.DiagonalTolerance).
                Assert.True(Math.Abs(result.Matrix[a, b] - hf) <= (a == b ? 2e-4 : 1e-4), $"D[{a},{b}] = {result.Matrix[a, b]} vs HF {hf}");
            }
        // l*(n) from HF's own matrix equals ours for every n.
        for (int n = 1; n < 16; n++)
        {
            int hfBest = Enumerable.Range(0, 17 - n).MinBy(l => (double)expected[l]![l + n]!);
            Assert.Equal(hfBest, result.BestFor(n).Start);
        }
        Assert.Equal([6, 7, 8, 9, 10, 11, 12, 13], PrunePlan.FromSimilarity(result, 8).Removed);
    }

    /// <summary>
    /// acc must equal HF's 284/300 exactly. Per-choice log-likelihoods: our fp32 equals an fp64 run of the same model to
    /// 1e-4 (measured 9e-6), while HF's reference (fp32 on an H100) differs from that fp64 value by up to 4.2e-3 on rows
    /// 1–20 — reduced-precision GPU matmuls on their side — so against HF we assert 5e-3 and document the 1e-3 target as
    /// unreachable for an exact implementation.
    /// </summary>
    [Fact]
    public void ClozeAccuracyAndLogLikelihoodsMatchHf()
    {
        var docs = McTask.Load(KjvModel.Cloze, 300);
        var requests = docs.Select(d => (IReadOnlyList<LoglikelihoodRequest>)d.Continuations.Select(c => LoglikelihoodRequest.Build(kjv.Tokenizer, d.Context, c, addBos: true)).ToList()).ToList();
        var scores = new LoglikelihoodScorer(kjv.Model, batchSize: 16).Score(requests);
        var acc = new MultipleChoiceAccumulator("mc");
        for (int i = 0; i < docs.Count; i++) acc.Add(docs[i], scores[i]);
        Assert.Equal(284.0 / 300, acc.Result().Values["acc"], 9);

        var expected = kjv.Reference["choice_loglikelihoods_first20"]!["value"]!.AsArray();
        using var fp64 = LayerPrune.Modeling.CausalLM.Load(KjvModel.Dir, dtype: TorchSharp.torch.ScalarType.Float64);
        var exact = new LoglikelihoodScorer(fp64, batchSize: 16).Score(requests.Take(20).ToList());
        for (int i = 0; i < 20; i++)
            for (int c = 0; c < 4; c++)
            {
                Assert.InRange(scores[i][c] - exact[i][c], -1e-4, 1e-4);
                Assert.InRange(scores[i][c] - (double)expected[i]![c]!, -5e-3, 5e-3);
            }
    }

    [Fact]
    public void PrefixReuseGivesTheSameScoresAsScoringFromScratch()
    {
        var docs = McTask.Load(KjvModel.Cloze, 12);
        var requests = docs.Select(d => (IReadOnlyList<LoglikelihoodRequest>)d.Continuations.Select(c => LoglikelihoodRequest.Build(kjv.Tokenizer, d.Context, c, addBos: true)).ToList()).ToList();
        var scorer = new LoglikelihoodScorer(kjv.Model, batchSize: 5);
        var reused = scorer.Score(requests, reusePrefix: true);
        var scratch = scorer.Score(requests, reusePrefix: false);
        for (int i = 0; i < docs.Count; i++)
            for (int c = 0; c < 4; c++) Assert.InRange(reused[i][c] - scratch[i][c], -2e-4, 2e-4);
    }
}
