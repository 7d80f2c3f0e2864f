using LayerPrune.Tests.Cli;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Sweep;

/// <summary>The sweep's strategy and efficiency flags: bad values are one-line usage errors naming the flag (exit 2).</summary>
public class SweepCliFlagsTests
{
    [Theory]
    [InlineData("--seeds", "0,x", "error: --seeds 0,x: expected integers like 0,1,2")]
    [InlineData("--seeds", "1,1", "error: --seeds: give one or more distinct seeds")]
    [InlineData("--calibration", "no-such-file.txt", "error: --calibration no-such-file.txt: file not found")]
    [InlineData("--calibration-chunks", "0", "error: --calibration-chunks: must be at least 1")]
    [InlineData("--efficiency-repeats", "0", "error: --efficiency-repeats 0: must be at least 1")]
    [InlineData("--efficiency-threads", "0", "error: --efficiency-threads: must be at least 1")]
    [InlineData("--generate-tokens", "0", "error: --generate-tokens: must be at least 1")]
    [InlineData("--prompts", "no-such-file.txt", "error: --prompts no-such-file.txt: file not found")]
    [InlineData("--prefix-cache-mb", "-1", "error: --prefix-cache-mb -1: must be at least 0 (0 = no sharing)")]
    public void BadStrategyAndEfficiencyFlagsNameTheFlag(string flag, string value, string message)
    {
        using var tmp = new TempDir();
        var args = new List<string> { "sweep", "--out", tmp["sweep"], "--quiet", "--strategies", "random", "--n", "2", flag, value };
        if (flag.StartsWith("--efficiency-", StringComparison.Ordinal)) args.Add("--efficiency");
        var (code, _, stderr) = CliRunner.Run([.. args]);
        Assert.Equal(2, code);
        Assert.Equal(message, stderr.Trim());
        Assert.False(Directory.Exists(tmp["sweep"]));
    }

    [Fact]
    public void OffloadWithEfficiencyIsRefusedNamingBothFlags()
    {
        using var tmp = new TempDir();
        var (code, _, stderr) = CliRunner.Run("sweep", "--out", tmp["sweep"], "--quiet", "--strategies", "deepest", "--n", "2",
            "--offload", "--efficiency");
        Assert.Equal(2, code);
        Assert.Equal("error: --offload: --efficiency times a resident model; drop one of them", stderr.Trim());
        Assert.False(Directory.Exists(tmp["sweep"]));
    }
}
