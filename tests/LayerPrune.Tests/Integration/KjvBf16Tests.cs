using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Similarity;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Integration;

/// <summary>
/// Issue 14: what bf16 compute (the CPU default where the CPU has native bf16) keeps on the real model, against the same
/// HF fp32 references KjvReferenceTests holds fp32 to. Documented tolerance (docs/benchmarks.md, "bf16 on the CPU"):
/// validation loss within 2e-3 of fp32, l*(n) identical for every n, cloze accuracy within 2 items of 284/300.
/// </summary>
public sealed class KjvBf16Tests : IClassFixture<KjvModel>, IDisposable
{
    readonly KjvModel kjv;
    readonly CausalLM bf16;

    public KjvBf16Tests(KjvModel kjv)
    {
        this.kjv = kjv;
        bf16 = CausalLM.Load(KjvModel.Dir, dtype: ScalarType.BFloat16);
    }

    [Fact]
    public void ValidationLossIsWithin2e3OfHfFp32()
    {
        // The fp32 value is HF's reference: our fp32 equals it to 1e-3 (KjvReferenceTests), so one pass is enough here.
        double fp32 = (double)kjv.Reference["validation_loss"]!["value"]!;
        double half = LossEvaluator.Evaluate(bf16, kjv.ValidationChunks(128)).ValidationLoss;
        Assert.InRange(half - fp32, -2e-3, 2e-3);
    }

    [Fact]
    public void BlockChoiceIsIdenticalForEveryN()
    {
        var result = LayerSimilarity.Compute(bf16, kjv.ValidationChunks(64));
        var expected = kjv.Reference["angular_distance"]!["value"]!.AsArray();
        for (int n = 1; n < 16; n++)
        {
            int hfBest = Enumerable.Range(0, 17 - n).MinBy(l => (double)expected[l]![l + n]!);
            Assert.Equal(hfBest, result.BestFor(n).Start);
        }
    }

    [Fact]
    public void ClozeAccuracyIsWithinTwoItemsOf284()
    {
        var docs = McTask.Load(KjvModel.Cloze, 300);
        var requests = docs.Select(d => (IReadOnlyList<LoglikelihoodRequest>)d.Continuations
            .Select(c => LoglikelihoodRequest.Build(kjv.Tokenizer, d.Context, c, addBos: true)).ToList()).ToList();
        var scores = new LoglikelihoodScorer(bf16, batchSize: 16).Score(requests);
        var acc = new MultipleChoiceAccumulator("mc");
        for (int i = 0; i < docs.Count; i++)
            acc.Add(docs[i], scores[i]);
        double correct = acc.Result().Values["acc"] * 300;
        Assert.InRange(correct, 282 - 1e-6, 286 + 1e-6);
    }

    public void Dispose() => bf16.Dispose();
}
