using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Data;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Sweep;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Sweep;

/// <summary>`sweep --repair linear`: repaired rows beside the unrepaired ones, applied in memory without touching the other
/// variants' weights, equal to evaluating the written repaired checkpoint, resumable, and compared in report.md.</summary>
public class SweepRepairTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    [Fact]
    public void RepairedRowsMatchTheWrittenCheckpointLeaveOtherVariantsAloneAndResume()
    {
        using var tmp = new TempDir();
        var options = new SweepOptions
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 8, SeqLen = 128,
            Tasks = [$"loss:{KjvModel.Validation}"], Strategies = ["deepest"], Ns = [2, 4], OutDir = tmp["sweep"],
            Eval = new EvalOptions { MaxChunks = 4, BatchSize = 4 }, Repair = ["linear"], CalibrationPath = KjvModel.Train,
            CalibrationChunks = 8,
        };
        var result = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        var rows = result.Rows;
        Assert.Equal(5, rows.Count); // unpruned + 2 sizes, each unrepaired and linear
        var chunks = TokenChunks.FromLines(TextCorpus.Read(KjvModel.Validation), kjv.Tokenizer, 256, 4);
        var calib = PreTokenized.LossChunks(KjvModel.Train, kjv.Tokenizer, 128, 8);
        foreach (var s in new[] { "deepest" })
            foreach (int n in new[] { 2, 4 })
            {
                var raw = rows.Single(r => r.Strategy == s && r.N == n);
                var lin = rows.Single(r => r.Strategy == s + "+linear" && r.N == n);
                Assert.Equal(raw.Removed, lin.Removed);
                // unrepaired rows are the plain in-memory prune (the repaired variants before them left no trace)
                double plain = LossEvaluator.Evaluate(kjv.Model, chunks, 4, PrunePlan.FromLayerSpec(string.Join(",", raw.Removed), 16).Kept).ValidationLoss;
                Assert.True(Math.Abs(plain - raw.Metrics["validation_loss"]) < 1e-6, $"{s} n={n}: {plain} vs {raw.Metrics["validation_loss"]}");
                // repaired rows equal the written repaired checkpoint (folded in fp64, stored in bf16 as the checkpoint:
                // the in-memory fold stays fp32, hence the tolerance)
                var plan = PrunePlan.FromLayerSpec(string.Join(",", raw.Removed), 16);
                using (var fit = LinearRepair.Fit(kjv.Model, plan, calib))
                using (var src = Checkpoint.Open(KjvModel.Dir))
                    CheckpointPruner.Write(src, plan, tmp[$"{s}{n}"], repair: fit);
                using (var written = CausalLM.Load(tmp[$"{s}{n}"]))
                {
                    double w = LossEvaluator.Evaluate(written, chunks, 4).ValidationLoss;
                    Assert.True(Math.Abs(w - lin.Metrics["validation_loss"]) < 2e-3, $"{s} n={n}: written {w} vs in memory {lin.Metrics["validation_loss"]}");
                }
                Assert.Equal(8, lin.SelectionCost!.ForwardPasses);
            }
        // the loaded weights are the checkpoint's again
        using (var src = Checkpoint.Open(KjvModel.Dir))
            for (int i = 0; i < 16; i++)
            {
                using var stored = src.Load($"model.layers.{i}.mlp.down_proj.weight");
                Assert.True(kjv.Model.Layer(i).Tensors().Single(t => t.name == "mlp.down_proj.weight").tensor
                    .allclose(stored.to(TorchSharp.torch.ScalarType.Float32), 0, 0), $"layer {i}'s down_proj was changed");
            }
        string report = File.ReadAllText(Path.Combine(tmp["sweep"], "report.md"));
        Assert.Contains("## Repair without training", report);
        Assert.Contains("| deepest | validation_loss |", report);

        // killed after the third row: the rerun fills in the rest and gives identical rows
        string resultsPath = Path.Combine(tmp["sweep"], "results.json");
        var full = JsonNode.Parse(File.ReadAllText(resultsPath))!.AsObject();
        var cut = (JsonObject)full.DeepClone();
        var kept = cut["rows"]!.AsArray().Take(3).Select(r => r!.DeepClone()).ToArray();
        cut["rows"] = new JsonArray(kept);
        File.WriteAllText(resultsPath, cut.ToJsonString());
        SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        var resumed = JsonNode.Parse(File.ReadAllText(resultsPath))!.AsObject();
        Assert.True(JsonNode.DeepEquals(full["rows"], resumed["rows"]), "resumed rows differ");
    }
    /// <summary>Plans that remove layer 0 have no repaired rows (nothing precedes the cut): report.md says which and why, also
    /// after a resume; variants whose plans keep layer 0 get theirs. The random strategy's seeded block gives both.</summary>
    [Fact]
    public void PlansRemovingLayerZeroHaveNoRepairedRowAndTheReportSaysWhy()
    {
        using var tmp = new TempDir();
        int zero = Enumerable.Range(0, 1000).First(s => PrunePlan.RandomBlock(2, 16, s).Removed[0] == 0);
        int other = Enumerable.Range(0, 1000).First(s => PrunePlan.RandomBlock(2, 16, s).Removed[0] > 0);
        var options = new SweepOptions
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 4, SeqLen = 64,
            Tasks = [$"loss:{KjvModel.Validation}"], Strategies = ["random"], Seeds = [zero, other], Ns = [2], OutDir = tmp["sweep"],
            Eval = new EvalOptions { MaxChunks = 2, BatchSize = 2 }, Repair = ["linear"], CalibrationPath = KjvModel.Train,
            CalibrationChunks = 8,   // 512 tokens > H = 256
        };
        var rows = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options).Rows;
        Assert.Equal(0, rows.Single(r => r.Strategy == "random" && r.Seed == zero).Removed[0]);
        Assert.Equal(other, rows.Single(r => r.Strategy == "random+linear").Seed);
        string expected = $"No linear rows for random n = 2 (seed {zero}): their plans remove layer 0, so no kept layer precedes the cut";
        Assert.Contains(expected, File.ReadAllText(Path.Combine(tmp["sweep"], "report.md")));
        Assert.Equal("", SweepRepair.SkippedNote(options, rows.Where(r => r.Seed != zero).ToList()));
        File.Delete(Path.Combine(tmp["sweep"], "report.md"));
        SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);   // resumed: every row is done, the note is derived again
        Assert.Contains(expected, File.ReadAllText(Path.Combine(tmp["sweep"], "report.md")));
    }
}
