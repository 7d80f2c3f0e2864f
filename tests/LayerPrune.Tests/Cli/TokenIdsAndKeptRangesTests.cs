using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LayerPrune.Pruning;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Cli;

/// <summary>Pre-tokenized input needs no tokenizer; kept-layer ranges are never printed empty.</summary>
public class TokenIdsAndKeptRangesTests
{
    static string Golden => Path.Combine(TestPaths.Fixtures, "golden", "llama"); // config + safetensors, no tokenizer files

    [Fact]
    public void GenerateWithTokenIdsNeedsNoTokenizer()
    {
        Assert.False(File.Exists(Path.Combine(Golden, "tokenizer.json")) || File.Exists(Path.Combine(Golden, "tokenizer.model")));
        var (code, stdout, stderr) = CliRunner.Run(
            "generate", "--model", Golden, "--token-ids", "1,2,3", "--max-new-tokens", "4", "--json");
        Assert.True(code == 0, stderr);
        var j = JsonNode.Parse(stdout)!;
        var ids = j["token_ids"]!.AsArray().Select(x => (int)x!).ToArray();
        Assert.Equal([1, 2, 3], ids[..3]);
        Assert.Equal(7, ids.Length);
        Assert.Equal(3, (int)j["prompt_tokens"]!);
        Assert.Null(j["text"]);       // no tokenizer: no text
        Assert.Null(j["completion"]);
        Assert.All(ids, id => Assert.InRange(id, 0, 511));
        // Plain output: the ids (the same greedy continuation).
        var (code2, stdout2, stderr2) = CliRunner.Run("generate", "--model", Golden, "--token-ids", "1,2,3", "--max-new-tokens", "4");
        Assert.True(code2 == 0, stderr2);
        Assert.Equal(string.Join(",", ids), stdout2.Trim());
        // (Text in still needs a tokenizer and says so: BadInputTests, "no tokenizer files".)
    }

    [Fact]
    public void PruneWithoutASimilarityPassNeedsNoTokenizer()
    {
        // The other commands that take no text (info, prune --layers / deepest / shallowest / random) never load one.
        using var t = new TempDir();
        var (code, _, stderr) = CliRunner.Run(
            "prune", "--model", Golden, "--out", t["deep"], "--n", "2", "--strategy", "deepest", "--quiet");
        Assert.True(code == 0, stderr);
        Assert.Equal(6, LayerPrune.Checkpoints.ModelConfig.Load(t["deep"]).NumLayers);
    }

    [Theory]
    [InlineData(16, "0-1", "[2, 16)")]         // block at the bottom: no [0, 0)
    [InlineData(16, "14-15", "[0, 14)")]       // block at the top: no [16, 16)
    [InlineData(32, "18-21", "[0, 18) + [22, 32)")]
    [InlineData(22, "18-21", "[0, 18)")]       // the reported case: was "[0, 18) + [22, 22)"
    [InlineData(8, "1,3,5", "[0, 1) + [2, 3) + [4, 5) + [6, 8)")]
    public void KeptSlicesListOnlyNonEmptyRanges(int layers, string removed, string expected)
    {
        var plan = PrunePlan.FromLayerSpec(removed, layers);
        Assert.Equal(expected, plan.KeptSlices());
        Assert.Equal(plan.Kept, plan.KeptRanges().SelectMany(r => Enumerable.Range(r.Start, r.EndExclusive - r.Start)));
    }

    [Fact]
    public void SimilarityTablePrintsNoEmptyRange()
    {
        using var t = new TempDir();
        var (code, stdout, stderr) = CliRunner.Run("similarity", "--model", KjvModel.Dir, "--data", KjvModel.Validation, "--samples", "4",
            "--seq-len", "32", "--out", t["sim"], "--quiet");
        Assert.True(code == 0, stderr);
        var rows = stdout.Split('\n').Where(l => Regex.IsMatch(l, @"^│\s*\d+\s*│")).ToList();
        Assert.Equal(15, rows.Count); // n = 1…15
        foreach (var row in rows)
        {
            Assert.DoesNotMatch(@"\[(\d+), \1\)", row);
            // The slices cover exactly the layers not removed: removed "a..b" → [0, a) + [b+1, 16) without empty parts.
            var m = Regex.Match(row, @"│\s*(\d+)\.\.(\d+)\s*│");
            var plan = PrunePlan.FromLayerSpec($"{m.Groups[1].Value}-{m.Groups[2].Value}", 16);
            Assert.Contains($"│ {plan.KeptSlices()} ", row);
        }
        // n = 15 removes all but one layer: one slice only (it was "[0, 1) + [16, 16)" or "[0, 0) + [15, 16)").
        Assert.Matches(@"^│ 15 │.*│ \[\d+, \d+\)\s+│$", rows[^1].TrimEnd());
    }
}
