using System.Diagnostics;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Evaluation;
using LayerPrune.Pruning;
using LayerPrune.Pruning.Strategies;
using LayerPrune.Similarity;
using LayerPrune.Tests.Cli;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;
using Xunit.Abstractions;

namespace LayerPrune.Tests.Ablations;

/// <summary>
/// The strategies on the embedded real model. Calibration (greedy, loss-rank, similarity) uses chunks of train.txt;
/// the judged loss is the validation protocol (validation.txt, 256-token chunks). The acceptance run
/// (n = 1…8, 128 validation chunks, 32 calibration chunks, 64 similarity samples; loss-rank checked on all 16 layers)
/// is set by LAYERPRUNE_FULL_ABLATIONS=1; CI runs n = 1…3 with 4 calibration, 16 validation chunks and 16 similarity
/// samples, and checks loss-rank on 3 layers.
/// </summary>
public class KjvStrategyTests(KjvModel kjv, ITestOutputHelper output) : IClassFixture<KjvModel>
{
    static bool Full => Environment.GetEnvironmentVariable("LAYERPRUNE_FULL_ABLATIONS") == "1";

    List<int[]> Calibration(int count) => LayerPrune.Data.TokenChunks.FromLines(LayerPrune.Data.TextCorpus.Read(KjvModel.Train), kjv.Tokenizer, 256, count);

    [Fact]
    public void GreedyIsNoWorseThanTheBestOfSimilarityAndDeepest()
    {
        int maxN = Full ? 8 : 3;
        var validation = kjv.ValidationChunks(Full ? 128 : 16);
        var calibration = Calibration(Full ? 32 : 4);
        var clock = Stopwatch.StartNew();
        using var loss = new CalibrationLoss(kjv.Model, calibration);
        var greedy = GreedyStrategy.Run(loss, maxN);
        output.WriteLine($"greedy to n={maxN} on {calibration.Count} chunks: {clock.Elapsed.TotalSeconds:F1}s wall, cost {greedy.Costs[^1]}, " +
                         $"process CPU {Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds:F0}s");
        var similarity = LayerSimilarity.Compute(kjv.Model, Calibration(Full ? 64 : 16));
        for (int n = 1; n <= maxN; n++)
        {
            var g = greedy.Plan(n);
            double Val(PrunePlan p) => LossEvaluator.Evaluate(kjv.Model, validation, layers: p.Kept).ValidationLoss;
            double lg = Val(g), ls = Val(PrunePlan.FromSimilarity(similarity, n)), ld = Val(PrunePlan.Deepest(n, 16));
            output.WriteLine($"n={n}: greedy {lg:F4} [{string.Join(",", g.Removed)}], similarity {ls:F4}, deepest {ld:F4}");
            Assert.True(lg <= Math.Min(ls, ld) + 0.01, $"n={n}: greedy {lg} > min(similarity {ls}, deepest {ld}) + 0.01");
            // The plan records the order, the loss after each round and the cumulative cost.
            var order = g.Selection!["order"]!.AsArray();
            Assert.Equal(n, order.Count);
            Assert.Equal(greedy.Rounds[n - 1].Loss, (double)order[^1]!["loss"]!);
            int evaluations = 1 + Enumerable.Range(0, n).Sum(r => 16 - r);
            Assert.Equal((long)evaluations * calibration.Count, (long)g.Selection["cost"]!["forward_passes"]!);
        }
        // Rounds are nested and each round's loss is that of the plan it produces.
        double round2 = loss.Loss(greedy.Plan(2).Kept);
        Assert.Equal(greedy.Rounds[1].Loss, round2, 12);
    }

    [Fact]
    public void LossRankLossesAreWhatEvalReportsForEachSingleLayerPrunedCheckpoint()
    {
        int chunks = Full ? 16 : 4;
        var calibration = kjv.ValidationChunks(chunks);
        var clock = Stopwatch.StartNew();
        using var loss = new CalibrationLoss(kjv.Model, calibration);
        var rank = LossRankStrategy.Run(loss);
        output.WriteLine($"loss-rank on {chunks} chunks: {clock.Elapsed.TotalSeconds:F1}s; losses {string.Join(", ", rank.LossWithout.Select(v => v.ToString("F4")))}");
        Assert.Equal(17L * chunks, rank.Cost.ForwardPasses);
        output.WriteLine($"cost {rank.Cost}; process CPU {System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds:F0}s");
        using var tmp = new TempDir();
        using var source = Checkpoint.Open(KjvModel.Dir);
        int[] layers = Full ? Enumerable.Range(0, 16).ToArray() : [0, rank.Ranking[0], 15];
        foreach (int layer in layers.Distinct())
        {
            string dir = tmp[$"without-{layer}"];
            CheckpointPruner.Write(source, PrunePlan.FromLayerSpec(layer.ToString(), 16), dir);
            var (code, stdout, stderr) = CliRunner.Run("eval", "--model", dir, "--task", $"loss:{KjvModel.Validation}", "--max-chunks", chunks.ToString(), "--json", "--quiet");
            Assert.True(code == 0, stderr);
            double eval = (double)JsonNode.Parse(stdout)!["validation_loss"]!;
            Assert.True(Math.Abs(eval - rank.LossWithout[layer]) <= 1e-4, $"layer {layer}: loss-rank {rank.LossWithout[layer]} vs eval {eval}");
        }
        var plan = rank.Plan(4);
        Assert.Equal(rank.Ranking.Take(4).Order(), plan.Removed);
        Assert.Equal(16, plan.Selection!["loss_without_layer"]!.AsArray().Count);
        Assert.True(rank.LossWithout.All(v => v > rank.BaseLoss - 0.05), "removing one layer should not help much");
    }
}
