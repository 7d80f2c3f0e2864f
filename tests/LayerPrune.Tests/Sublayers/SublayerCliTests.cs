using System.Text.Json.Nodes;
using LayerPrune.Tests.Modeling;
using LayerPrune.Tests.Pruning;
using LayerPrune.Tests.Cli;

namespace LayerPrune.Tests.Sublayers;

/// <summary>`prune --unit`: explicit sublayer plans, strategies, and bad input as one-line errors.</summary>
public class SublayerCliTests
{
    [Fact]
    public void PruneUnitAttentionWritesNemotronNasAndRefusesBadInputInOneLine()
    {
        using var g = new GoldenFixture("llama");
        using var tmp = new TempDir();
        var (code, stdout, stderr) = CliRunner.Run("prune", "--model", g.Dir, "--out", tmp["a"], "--unit", "sublayer",
            "--layers", "attention:1,3,mlp:2", "--json", "-q");
        Assert.True(code == 0, stderr);
        var plan = JsonNode.Parse(stdout)!;
        Assert.Equal([1, 3], plan["removed_sublayers"]!["attention"]!.AsArray().Select(n => (int)n!));
        Assert.Equal([2], plan["removed_sublayers"]!["mlp"]!.AsArray().Select(n => (int)n!));
        Assert.Contains("intermediate_size 176", (string?)plan["note"]);
        Assert.Equal("nemotron-nas", (string?)JsonNode.Parse(File.ReadAllText(tmp["a/config.json"]))!["model_type"]);

        // Removing a sublayer the input no longer has.
        (code, _, stderr) = CliRunner.Run("prune", "--model", tmp["a"], "--out", tmp["b"], "--unit", "attention", "--layers", "3");
        Assert.Equal(2, code);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Contains("attention 3 sublayer is already removed", stderr);
        // Listed twice.
        (code, _, stderr) = CliRunner.Run("prune", "--model", g.Dir, "--out", tmp["c"], "--unit", "attention", "--layers", "2,2");
        Assert.Equal(2, code);
        Assert.Contains("attention 2 is listed twice", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        // Unknown unit.
        (code, _, stderr) = CliRunner.Run("prune", "--model", g.Dir, "--out", tmp["d"], "--unit", "heads", "--n", "2");
        Assert.Equal(2, code);
        Assert.Equal("error: --unit 'heads': unknown unit (expected one of layer, attention, mlp, sublayer)", stderr.Trim());
        Assert.False(Directory.Exists(tmp["b"]) || Directory.Exists(tmp["c"]) || Directory.Exists(tmp["d"]));
    }

    [Fact]
    public void RemovingEveryAttentionIsAllowedAndSaysSo()
    {
        using var g = new GoldenFixture("llama");
        using var tmp = new TempDir();
        var (code, stdout, stderr) = CliRunner.Run("prune", "--model", g.Dir, "--out", tmp["free"], "--unit", "attention",
            "--strategy", "random", "--n", "8", "--seed", "1");
        Assert.True(code == 0, stderr);
        Assert.Contains("the model is attention-free", stderr);
        Assert.Contains("8 of 8 layers written as DeciLMForCausalLM", stdout);
        var (gen, _, genErr) = CliRunner.Run("generate", "--model", tmp["free"], "--token-ids", "1,5,9", "--max-new-tokens", "4", "--json");
        Assert.True(gen == 0, genErr);
    }
}
