using LayerPrune.Fuzz;

namespace LayerPrune.Tests.Robustness;

/// <summary>A short run of the bench/LayerPrune.Fuzz mutation fuzzer: every parser input must succeed or throw LayerPruneException.</summary>
public class FuzzSmokeTests
{
    [Fact]
    public void TwoThousandMutatedInputsCauseNoCrashHangOrBlowUp()
    {
        var log = new StringWriter();
        var r = Fuzzer.Run(2000, seed: 12345, log);
        Assert.Equal(2000, r.Inputs);
        Assert.True(r.Failures == 0, log.ToString());
        Assert.All(r.PerTarget.Values, n => Assert.True(n > 50, $"a target got only {n} inputs"));
    }
}
