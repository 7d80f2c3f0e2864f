using LayerPrune.Data;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Pruning.Strategies;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Sublayers;

/// <summary>The sublayer strategies on the embedded model (samples/kjv-llama-16l) and the golden Phi fixture.</summary>
public class SublayerStrategyTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    static double Cos(Tensor a, Tensor b) =>
        ((a * b).sum(-1) / (a.norm(-1) * b.norm(-1))).sum().item<double>();

    /// <summary>LLM-Drop scores recomputed with <see cref="PlainForward"/> (float64, plain tensor ops).</summary>
    static Dictionary<Sublayer, double> PlainScores(string dir, IReadOnlyList<int[]> samples)
    {
        var sums = new Dictionary<Sublayer, double>();
        long tokens = 0;
        foreach (var s in samples)
        {
            using var logits = PlainForward.Logits(dir, s.Select(x => (long)x).ToArray(), new HashSet<int>(), new HashSet<int>(),
                (layer, attention, input, output) =>
                {
                    var key = new Sublayer(layer, attention ? SublayerKind.Attention : SublayerKind.Mlp);
                    sums[key] = sums.GetValueOrDefault(key) + Cos(input, output);
                });
            tokens += s.Length;
        }
        return sums.ToDictionary(kv => kv.Key, kv => kv.Value / tokens);
    }

    [Fact]
    public void SimilarityScoresOfEverySublayerEqualAPlainRecomputation()
    {
        var samples = TokenChunks.FromLines(TextCorpus.Read(KjvModel.Validation), kjv.Tokenizer, 64, 3);
        var got = SublayerStrategies.Similarity(kjv.Model, samples, batchSize: 2);
        var expected = PlainScores(KjvModel.Dir, samples);
        Assert.Equal(32, got.Scores.Count);
        Assert.Equal(expected.Keys.OrderBy(s => s.Layer).ThenBy(s => s.Kind), got.Scores.Keys.OrderBy(s => s.Layer).ThenBy(s => s.Kind));
        foreach (var (s, v) in expected) Assert.True(Math.Abs(got.Scores[s] - v) <= 1e-5, $"{s}: {got.Scores[s]} vs {v}");
        // Not a constant: the scores spread (attention sublayers of a trained model change the stream by different amounts).
        Assert.True(expected.Values.Max() - expected.Values.Min() > 0.05);
    }

    [Fact]
    public void PhiScoresUseTheSharedInputOfTheParallelBlock()
    {
        using var g = new GoldenFixture("phi");
        using var model = CausalLM.Load(g.Dir);
        var samples = g.TwoSamples();
        var got = SublayerStrategies.Similarity(model, samples, batchSize: 1);
        var expected = PlainScores(g.Dir, samples);
        foreach (var (s, v) in expected) Assert.True(Math.Abs(got.Scores[s] - v) <= 1e-5, $"{s}: {got.Scores[s]} vs {v}");
    }

    /// <summary>Mean next-token cross-entropy over <paramref name="chunks"/> with <paramref name="mask"/> skipped (full forwards).</summary>
    static double Loss(CausalLM model, IReadOnlyList<int[]> chunks, SublayerMask mask)
    {
        using var _ = no_grad();
        double total = 0;
        long count = 0;
        foreach (var c in chunks)
        {
            using var scope = NewDisposeScope();
            var ids = tensor(c.Select(x => (long)x).ToArray(), [1, c.Length]);
            var logp = model.Forward(ids, options: new ForwardOptions { Skip = mask })[0].narrow(0, 0, c.Length - 1).log_softmax(-1);
            var nll = -logp.gather(1, ids[0].narrow(0, 1, c.Length - 1).unsqueeze(1));
            total += nll.to(ScalarType.Float64).sum().item<double>();
            count += c.Length - 1;
        }
        return total / count;
    }

    [Fact]
    public void GreedyOnAttentionIsNoWorseThanSimilarityOrDeepest()
    {
        var chunks = TokenChunks.FromLines(TextCorpus.Read(KjvModel.Train), kjv.Tokenizer, 64, 4);
        var samples = TokenChunks.FromLines(TextCorpus.Read(KjvModel.Validation), kjv.Tokenizer, 64, 4);
        var inputs = new StrategyInputs
            { Model = kjv.Model, CalibrationChunks = () => chunks, SimilaritySamples = () => samples, BatchSize = 4 };
        var greedy = SublayerStrategies.Prepare("greedy", PruneUnit.Attention, inputs, 4);
        var similarity = SublayerStrategies.Prepare("similarity", PruneUnit.Attention, inputs, 4);
        var deepest = SublayerStrategies.Prepare("deepest", PruneUnit.Attention, inputs, 4);
        for (int n = 1; n <= 4; n++)
        {
            var g = greedy(n);
            Assert.Equal(n, g.Removed.Length);
            Assert.All(g.Removed, s => Assert.Equal(SublayerKind.Attention, s.Kind));
            double gl = Loss(kjv.Model, chunks, g.Mask);
            // The loss greedy reports (prefix reuse) is the loss of a full forward of its plan.
            Assert.InRange(Math.Abs((double)g.Selection!["calibration_loss"]! - gl), 0, 1e-4);
            double best = Math.Min(Loss(kjv.Model, chunks, similarity(n).Mask), Loss(kjv.Model, chunks, deepest(n).Mask));
            Assert.True(gl <= best + 0.01, $"n = {n}: greedy {gl} vs best of similarity/deepest {best}");
        }
        Assert.Equal([14, 13], deepest(2).AttentionLayers.OrderDescending());   // the last layer (15) is kept
    }

    [Fact]
    public void DeepestAndRandomAtTheSublayerUnit()
    {
        var inputs = new StrategyInputs { Model = kjv.Model, Seed = 3 };
        var deepest = SublayerStrategies.Prepare("deepest", PruneUnit.Sublayer, inputs, 3)(3);
        Assert.Equal(["mlp 14", "attention 14", "mlp 13"], deepest.Removed.OrderByDescending(s => s.Layer).ThenByDescending(s => s.Kind)
            .Select(s => s.ToString()));
        var r1 = SublayerStrategies.Prepare("random", PruneUnit.Mlp, inputs, 5)(5);
        var r2 = SublayerStrategies.Prepare("random", PruneUnit.Mlp, inputs, 5)(5);
        Assert.Equal(r1.Removed, r2.Removed);
        Assert.All(r1.Removed, s => Assert.Equal(SublayerKind.Mlp, s.Kind));
        var other = SublayerStrategies.Prepare("random", PruneUnit.Mlp, inputs with { Seed = 4 }, 5)(5);
        Assert.NotEqual(r1.Removed, other.Removed);
        var all = SublayerStrategies.Prepare("deepest", PruneUnit.Attention, inputs, 15)(15);
        Assert.False(all.AttentionFree(kjv.Model.Config));   // deepest keeps the last layer's attention
        var every = SublayerStrategies.Prepare("random", PruneUnit.Attention, inputs, 16)(16);
        Assert.True(every.AttentionFree(kjv.Model.Config));
        Assert.Contains("attention-free", every.AttentionFreeNote(kjv.Model.Config));
    }
}
