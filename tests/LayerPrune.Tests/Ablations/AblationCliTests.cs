using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Tests.Cli;
using LayerPrune.Tests.Modeling;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Ablations;

/// <summary>similarity --metric/--bootstrap/--protect-last and prune's new strategies on the tiny golden Llama, fed pre-tokenized ids.</summary>
public class AblationCliTests
{
    static string PreTokenized(TempDir tmp, GoldenFixture g)
    {
        string path = tmp["ids.jsonl"];
        File.WriteAllLines(path, g.TwoSamples().Select(s => $"{{\"input_ids\": [{string.Join(",", s)}]}}"));
        return path;
    }

    [Fact]
    public void SimilarityWritesTheCkaMatrixAndASeededBootstrap()
    {
        using var g = new GoldenFixture("llama");
        using var tmp = new TempDir();
        string ids = PreTokenized(tmp, g);
        JsonNode Run(string outName, params string[] extra)
        {
            var (code, stdout, stderr) = CliRunner.Run(["similarity", "--model", g.Dir, "--data", ids, "--out", tmp[outName], "--json", "-q", .. extra]);
            Assert.True(code == 0, stderr);
            return JsonNode.Parse(stdout)!;
        }
        var cka = Run("cka", "--metric", "cka", "--protect-last");
        Assert.Equal(9, cka["cka"]!["matrix"]!.AsArray().Count);
        Assert.Equal("cka", (string)cka["chosen"]!["metric"]!);
        var chosen = cka["chosen"]!["best"]!.AsArray();
        Assert.Equal(6, chosen.Count);                                        // n = 1 … L−2 with the final layer protected
        Assert.All(chosen, b => Assert.True((int)b!["end_exclusive"]! <= 7));
        Assert.True(File.Exists(tmp["cka/similarity_cka.png"]));

        var a = Run("boot-a", "--bootstrap", "40", "--seed", "3");
        var b = Run("boot-b", "--bootstrap", "40", "--seed", "3");
        var perN = a["bootstrap"]!["per_n"]!.AsArray();
        Assert.Equal(7, perN.Count);
        Assert.True(JsonNode.DeepEquals(a["bootstrap"], b["bootstrap"]), "same seed, same bootstrap");
        foreach (var c in perN)
        {
            double f = (double)c!["argmin_frequency"]!;
            Assert.InRange(f, 0, 1);
            var ci = c["distance_ci95"]!.AsArray();
            Assert.True((double)ci[0]! <= (double)ci[1]!);
            // With two samples every resample is {0,0}, {1,1} or {0,1}: the interval spans the per-sample distances.
            Assert.Equal((int)c["start"]!, (int)a["best"]![(int)c["n"]! - 1]!["start"]!);
        }
        var (bad, _, err) = CliRunner.Run("similarity", "--model", g.Dir, "--data", ids, "--out", tmp["x"], "--metric", "cka", "--bootstrap", "5");
        Assert.Equal(2, bad);
        Assert.Contains("--bootstrap", err);
    }

    [Theory]
    [InlineData("greedy")]
    [InlineData("loss-rank")]
    [InlineData("bi")]
    public void PruneRecordsHowTheStrategyChoseAndWhatItCost(string strategy)
    {
        using var g = new GoldenFixture("llama");
        using var tmp = new TempDir();
        string ids = PreTokenized(tmp, g);
        var (code, stdout, stderr) = CliRunner.Run("prune", "--model", g.Dir, "--out", tmp["out"], "--n", "2", "--strategy", strategy, "--data", ids,
                                                   "--seq-len", "8", "--calibration-chunks", "4", "--protect-last", "--json", "-q");
        Assert.True(code == 0, stderr);
        var plan = JsonNode.Parse(File.ReadAllText(tmp["out/prune_plan.json"]))!;
        var removed = plan["removed"]!.AsArray().Select(x => (int)x!).ToArray();
        Assert.Equal(2, removed.Length);
        Assert.DoesNotContain(7, removed);                                     // --protect-last
        var selection = plan["selection"]!;
        Assert.True((bool)selection["protect_last"]!);
        long passes = (long)selection["cost"]!["forward_passes"]!;
        switch (strategy)
        {
            case "greedy":
                Assert.Equal(removed, selection["order"]!.AsArray().Select(o => (int)o!["removed"]!).Order());
                Assert.Equal((1 + 7 + 6) * 4L, passes);                        // base + 7 candidates + 6 candidates, 4 chunks each
                break;
            case "loss-rank":
                var losses = selection["loss_without_layer"]!.AsArray();
                Assert.Null(losses[7]);                                         // the protected layer is never evaluated
                Assert.Equal((1 + 7) * 4L, passes);
                // The recorded loss of each removed layer is the loss of the model without it on the same chunks.
                var chunks = LayerPrune.Data.PreTokenized.Chunks(ids, 8, 4);
                using (var model = CausalLM.Load(g.Dir))
                    foreach (int layer in removed)
                        Assert.Equal((double)losses[layer]!, LossEvaluator.Evaluate(model, chunks, layers: Enumerable.Range(0, 8).Where(i => i != layer).ToList()).ValidationLoss, 10);
                break;
            default:
                Assert.Equal(2, passes);                                        // one similarity pass over the two samples
                Assert.Equal(8, selection["block_influence"]!.AsArray().Count);
                break;
        }
        Assert.Equal(strategy, (string)plan["strategy"]!);
    }
}
