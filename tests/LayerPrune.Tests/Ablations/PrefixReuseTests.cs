using LayerPrune.Modeling;
using LayerPrune.Pruning.Strategies;
using LayerPrune.Tests.Modeling;

namespace LayerPrune.Tests.Ablations;

public class PrefixReuseTests
{
    [Theory]
    [InlineData("llama")]
    [InlineData("mistral")]
    public void ReusedPrefixesGiveBitIdenticalGreedyAndLossRankResults(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var model = CausalLM.Load(g.Dir);
        var ids = g.TwoSamples().SelectMany(s => s).ToArray();
        var chunks = Enumerable.Range(0, 5).Select(i => ids[(i * 8)..(i * 8 + 8)]).ToList();   // 5 chunks of 8: two batches of 3
        using var reused = new CalibrationLoss(model, chunks, batchSize: 3);
        using var plain = new CalibrationLoss(model, chunks, batchSize: 3, reusePrefix: false);
        var a = GreedyStrategy.Run(reused, 5);
        var b = GreedyStrategy.Run(plain, 5);
        Assert.Equal(b.Rounds, a.Rounds);                                  // records: same layers, same losses to the bit
        Assert.Equal(b.Costs.Select(c => c.ForwardPasses), a.Costs.Select(c => c.ForwardPasses));
        Assert.True(a.Costs[^1].LayerForwards < b.Costs[^1].LayerForwards, "prefix reuse runs fewer layers");
        var r = LossRankStrategy.Run(reused);
        var s = LossRankStrategy.Run(plain);
        Assert.Equal(s.LossWithout, r.LossWithout);
        Assert.Equal(a.Rounds[0].Loss, r.LossWithout.Min());               // greedy's first round is loss-rank's best
    }
}
