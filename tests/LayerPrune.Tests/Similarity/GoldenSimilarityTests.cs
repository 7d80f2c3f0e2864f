using LayerPrune.Modeling;
using LayerPrune.Similarity;
using LayerPrune.Tests.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Similarity;

public class GoldenSimilarityTests
{
    /// <summary>
    /// d(x, x) is exactly 0; HF's fp32 reference holds acos(1 − k·2⁻²⁴)/π rounding noise there (1.1e-4 for one ulp, 1.9e-4 for
    /// three: arccos has infinite slope at 1). We compute in fp64 and report the true 0, so the diagonal is compared
    /// against that noise bound; every off-diagonal entry (the ones block selection uses) must match to 1e-5.
    /// </summary>
    public const double DiagonalTolerance = 2e-4;

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void AngularDistanceMatrixMatchesHf(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var model = CausalLM.Load(g.Dir);
        var row0 = g["input_ids"][0].data<long>().Select(x => (int)x).ToArray();
        var result = LayerSimilarity.Compute(model, [row0]);
        var expected = g["angular_distance_last_token"].to(ScalarType.Float64).data<double>().ToArray();
        int n = model.NumLayers + 1;
        for (int a = 0; a < n; a++) for (int b = 0; b < n; b++)
            Assert.True(Math.Abs(result.Matrix[a, b] - expected[a * n + b]) <= (a == b ? DiagonalTolerance : 1e-5), $"{arch} D[{a},{b}] = {result.Matrix[a, b]} vs HF {expected[a * n + b]}");
    }

    [Fact]
    public void OffloadedStreamingGivesTheSameMatrixAsResident()
    {
        using var g = new GoldenFixture("llama");
        var samples = g.TwoSamples();
        using var resident = CausalLM.Load(g.Dir);
        using var offloaded = CausalLM.Load(g.Dir, offload: true);
        var a = LayerSimilarity.Compute(resident, samples, batchSize: 1, blockInfluence: true); // two batches: layer-major streaming interleaves them
        var b = LayerSimilarity.Compute(offloaded, samples, batchSize: 1, blockInfluence: true);
        Assert.Equal(a.Matrix.Cast<double>(), b.Matrix.Cast<double>());
        Assert.Equal(a.BlockInfluence, b.BlockInfluence);
    }

    [Fact]
    public void PaddedBatchEqualsOneSampleAtATime()
    {
        using var g = new GoldenFixture("mistral");
        var samples = g.TwoSamples();
        using var model = CausalLM.Load(g.Dir);
        var batched = LayerSimilarity.Compute(model, samples, batchSize: 2);
        var single = LayerSimilarity.Compute(model, samples, batchSize: 1);
        foreach (var (x, y) in batched.Matrix.Cast<double>().Zip(single.Matrix.Cast<double>())) Assert.InRange(Math.Abs(x - y), 0, 1e-6);
    }

    [Fact]
    public void BestBlockIsTheArgminOfEachDiagonal()
    {
        var m = new double[5, 5];
        for (int a = 0; a < 5; a++) for (int b = 0; b < 5; b++) m[a, b] = Math.Abs(a - b) * 0.1 + (a == 2 ? -0.05 : 0);
        var r = new SimilarityResult { Matrix = m, Samples = 1 };
        var best = r.Best();
        Assert.Equal(3, best.Count);                       // n = 1..L-1 with L = 4
        Assert.Equal(new BestBlock(1, 2, 3, 0.05), best[0] with { Distance = Math.Round(best[0].Distance, 10) });
        Assert.Equal(2, best[1].Start);
        Assert.Throws<LayerPruneException>(() => r.BestFor(4));
    }
}
