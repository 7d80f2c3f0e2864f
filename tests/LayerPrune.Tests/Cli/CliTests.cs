using System.Text.Json.Nodes;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Cli;

/// <summary>The documented CLI contracts, through the real executable.</summary>
public class CliTests
{
    [Fact]
    public void InfoJsonDescribesTheModel()
    {
        var (code, stdout, _) = CliRunner.Run("info", "--model", KjvModel.Dir, "--json");
        Assert.Equal(0, code);
        var info = JsonNode.Parse(stdout)!;
        Assert.Equal(16, (int)info["layers"]!);
        Assert.Equal("LlamaForCausalLM", (string)info["architecture"]!);
        Assert.Equal(12_656_896, (long)info["parameters"]!);
        Assert.Equal("BF16", (string)info["storage_dtype"]!);
    }

    [Fact]
    public void GenerateJsonHasPromptPlusNewTokensAndReadableText()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", KjvModel.Dir, "--prompt", "And God said", "--max-new-tokens", "12", "--greedy", "--json");
        Assert.True(code == 0, stderr);
        var j = JsonNode.Parse(stdout)!;
        var ids = j["token_ids"]!.AsArray().Select(x => (int)x!).ToArray();
        Assert.Equal(1, ids[0]);                                     // BOS, per tokenizer_config add_bos_token
        Assert.Equal((int)j["prompt_tokens"]! + 12, ids.Length);
        Assert.StartsWith("And God said", (string)j["text"]!);
        Assert.Matches(@"^And God said( [A-Za-z,;:.']+){5,}", (string)j["text"]!); // words, not byte soup
        var (code2, stdout2, _) = CliRunner.Run("generate", "--model", KjvModel.Dir, "--token-ids", string.Join(",", ids.Take((int)j["prompt_tokens"]!)), "--max-new-tokens", "12", "--json");
        Assert.Equal(0, code2);
        Assert.Equal(ids, JsonNode.Parse(stdout2)!["token_ids"]!.AsArray().Select(x => (int)x!).ToArray()); // greedy by default
    }

    [Fact]
    public void EvalLossJsonMatchesHf()
    {
        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", KjvModel.Dir, "--task", $"loss:{KjvModel.Validation}", "--max-chunks", "128", "--json", "--quiet");
        Assert.True(code == 0, stderr);
        var j = JsonNode.Parse(stdout)!;
        Assert.InRange((double)j["validation_loss"]!, 2.9413 - 1e-3, 2.9413 + 1e-3);
        Assert.Equal(128 * 255, (long)j["tokens"]!);
        Assert.Equal("", stderr);                                    // --quiet: no progress lines
    }

    [Fact]
    public void SimilarityAndPruneWriteTheirFilesWithZeroBasedIndices()
    {
        using var tmp = new TempDir();
        var (code, _, stderr) = CliRunner.Run("similarity", "--model", KjvModel.Dir, "--data", KjvModel.Validation, "--samples", "16", "--out", tmp["sim"], "--metric", "bi", "-q");
        Assert.True(code == 0, stderr);
        var sim = JsonNode.Parse(File.ReadAllText(tmp["sim/similarity.json"]))!;
        Assert.Equal(17, sim["matrix"]!.AsArray().Count);
        var best = sim["best"]!.AsArray();
        Assert.Equal(15, best.Count);
        foreach (var b in best) Assert.Equal((int)b!["start"]! + (int)b["n"]!, (int)b["end_exclusive"]!);
        Assert.Equal(16, sim["block_influence"]!["values"]!.AsArray().Count);
        Assert.True(new FileInfo(tmp["sim/similarity.png"]).Length > 10_000);
        Assert.StartsWith("n,start,end_exclusive,distance,is_best", File.ReadAllText(tmp["sim/similarity.csv"]));

        var (pcode, pout, perr) = CliRunner.Run("prune", "--model", KjvModel.Dir, "--out", tmp["deep"], "--n", "4", "--strategy", "deepest", "--json");
        Assert.True(pcode == 0, perr);
        Assert.Equal([11, 12, 13, 14], JsonNode.Parse(pout)!["removed"]!.AsArray().Select(x => (int)x!));
        Assert.Contains("layer_range: [0, 11]", File.ReadAllText(tmp["deep/mergekit.yaml"]));
        Assert.True(File.Exists(tmp["deep/tokenizer.model"]));
        var (icode, iout, _) = CliRunner.Run("info", "--model", tmp["deep"], "--json");
        Assert.Equal(0, icode);
        var info = JsonNode.Parse(iout)!;
        Assert.Equal(12, (int)info["layers"]!);
        Assert.True((long)info["storage_bytes"]! < 25_313_792);
        // The existing output is refused without --force (exit code 2, one line).
        var (rcode, _, rerr) = CliRunner.Run("prune", "--model", KjvModel.Dir, "--out", tmp["deep"], "--n", "4", "--strategy", "deepest");
        Assert.Equal(2, rcode);
        Assert.Single(rerr.Trim().Split('\n'));
        Assert.Contains("already exists", rerr);
    }
}
