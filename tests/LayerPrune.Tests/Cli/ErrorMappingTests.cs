using LayerPrune.Healing;
using LayerPrune.Pruning;

namespace LayerPrune.Tests.Cli;

/// <summary>The library names parameters; the CLI (LayerPrune.Cli.Cli) shows them as flags and picks the exit code.</summary>
public class ErrorMappingTests
{
    [Theory]
    [InlineData("n", "--n")]
    [InlineData("seqLen", "--seq-len")]
    [InlineData("MicroBatch", "--micro-batch")]
    [InlineData("EvalEvery", "--eval-every")]
    [InlineData("LearningRate", "--lr")]
    [InlineData("ModelDir", "--model")]
    [InlineData("outDir", "--out")]
    [InlineData("spec", "--layers")]
    [InlineData("--out", "--out")]
    public void FlagOf_MapsParameterNames(string parameter, string flag) => Assert.Equal(flag, LayerPrune.Cli.Cli.FlagOf(parameter));

    [Fact]
    public void LibraryMessageNamesParameters_CliMessageNamesFlags()
    {
        var e = Assert.Throws<LayerPruneException>(() => PrunePlan.Deepest(8, 8));
        Assert.Equal("n", e.ParameterName);
        Assert.Equal("8", e.Value);
        Assert.Equal("n 8: must be between 1 and 7 (the model has 8 layers; at least one must stay)", e.Message);
        Assert.Equal("--n 8: must be between 1 and 7 (the model has 8 layers; at least one must stay)", LayerPrune.Cli.Cli.Describe(e));
        Assert.Equal(2, LayerPrune.Cli.Cli.ExitCodeOf(e));

        var options = new HealOptions { ModelDir = "m", DataPath = "d", OutDir = "o", Batch = 4, MicroBatch = 5 };
        var h = Assert.Throws<LayerPruneException>(options.Validate);
        Assert.Equal("MicroBatch 5: must not exceed Batch 4", h.Message);
        Assert.Equal("--micro-batch 5: must not exceed --batch 4", LayerPrune.Cli.Cli.Describe(h));

        var failure = new LayerPruneException("x.json: not valid JSON");
        Assert.Null(failure.ParameterName);
        Assert.Equal(1, LayerPrune.Cli.Cli.ExitCodeOf(failure));
        Assert.Equal(2, LayerPrune.Cli.Cli.ExitCodeOf(LayerPruneException.Usage("m: model folder not found")));
    }
}
