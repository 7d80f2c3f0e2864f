using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using LayerPrune.Sweep;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Sweep;

public class SweepTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    /// <summary>
    /// HF transformers measured the validation loss of the real model with layers 6–9 and 6–13 removed
    /// (tests/fixtures/reference/kjv-llama-16l-healing-hf-peft.json, val_loss_before_heal, 128×256 protocol):
    /// the sweep's in-memory variants must reproduce both within 1e-3, and resume without recomputing.
    /// </summary>
    [Fact]
    public void SimilarityVariantsMatchHfLossesAndRerunSkipsFinishedWork()
    {
        using var tmp = new TempDir();
        var hf = JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.Fixtures, "reference", "kjv-llama-16l-healing-hf-peft.json")))!;
        var options = new SweepOptions
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 64, SeqLen = 256,
            Tasks = [$"loss:{KjvModel.Validation}", $"mc:{KjvModel.Cloze}"], Strategies = ["similarity", "deepest"], Ns = [4, 8],
            OutDir = tmp["sweep"], Eval = new EvalOptions { MaxChunks = 128, Limit = 20, BatchSize = 16 },
        };
        var result = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        var rows = result.Rows;
        Assert.Equal(5, rows.Count); // unpruned + 2 strategies × 2 sizes
        VariantRow Row(string s, int n) => rows.Single(r => r.Strategy == s && r.N == n);
        Assert.InRange(Row("none", 0).Metrics["validation_loss"], 2.9413 - 1e-3, 2.9413 + 1e-3);
        foreach (var (key, n) in new[] { ("n4", 4), ("n8", 8) })
        {
            var row = Row("similarity", n);
            Assert.Equal(hf[key]!["drop"]!.AsArray().Select(x => (int)x!), row.Removed);
            Assert.InRange(row.Metrics["validation_loss"] - (double)hf[key]!["val_loss_before_heal"]!, -1e-3, 1e-3);
            Assert.Equal(n / 16.0, row.Fraction);
        }
        Assert.Equal([7, 8, 9, 10, 11, 12, 13, 14], Row("deepest", 8).Removed);
        Assert.True(Row("none", 0).Metrics["mc_acc"] >= Row("deepest", 8).Metrics["mc_acc"]);
        foreach (var f in new[] { "results.json", "results.csv", "report.md", "similarity.png", "validation_loss.png", "mc_acc.png" })
            Assert.True(File.Exists(Path.Combine(options.OutDir, f)), f);

        // Rerun: every variant is already there, so nothing is evaluated (a changed row would show up as a difference).
        var before = File.ReadAllText(Path.Combine(options.OutDir, "results.json"));
        var started = DateTime.UtcNow;
        SweepRunner.Run(kjv.Model, kjv.Tokenizer, options);
        Assert.Equal(before, File.ReadAllText(Path.Combine(options.OutDir, "results.json")));
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(5));
        // A different sweep into the same folder is refused.
        Assert.Throws<LayerPruneException>(() => SweepRunner.Run(kjv.Model, kjv.Tokenizer, options with { Ns = [2] }));
    }

    [Fact]
    public void HealedVariantsArePrunedHealedAndEvaluatedAsTheirOwnRows()
    {
        using var tmp = new TempDir();
        var options = new SweepOptions
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 8, SeqLen = 128,
            Tasks = [$"loss:{KjvModel.Validation}"], Strategies = ["deepest"], Ns = [8], OutDir = tmp["sweep"],
            Eval = new EvalOptions { MaxChunks = 8, BatchSize = 8 },
            Heal = new LayerPrune.Healing.HealOptions
            {
                ModelDir = "", OutDir = "", DataPath = KjvModel.Train, Steps = 6, Batch = 4, SeqLen = 128, LearningRate = 2e-3,
                Quant = LayerPrune.Healing.BaseQuantization.None, SaveEvery = 3,
            },
        };
        var rows = SweepRunner.Run(kjv.Model, kjv.Tokenizer, options).Rows;
        Assert.Equal(3, rows.Count); // unpruned, deepest n=8, deepest n=8 healed
        var raw = rows.Single(r => r.Strategy == "deepest" && !r.Healed);
        var healed = rows.Single(r => r.Healed);
        Assert.Equal(raw.Removed, healed.Removed);
        Assert.True(healed.Metrics["validation_loss"] < raw.Metrics["validation_loss"] - 0.05,
            $"healing 6 steps should lower the loss: {raw.Metrics["validation_loss"]} → {healed.Metrics["validation_loss"]}");
        Assert.True(File.Exists(Path.Combine(options.OutDir, "variants", "deepest-n8", "healed", "merged", "model.safetensors")));
        Assert.Contains("deepest+heal", File.ReadAllText(Path.Combine(options.OutDir, "report.md")));
    }
}
