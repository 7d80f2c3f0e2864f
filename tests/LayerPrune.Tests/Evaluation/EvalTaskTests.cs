using LayerPrune.Evaluation;
using LayerPrune.Pruning;
using LayerPrune.Tests.Integration;

namespace LayerPrune.Tests.Evaluation;

/// <summary>The task interface: specs → task objects, metric metadata, requests built once and scored per layer subset.</summary>
public class EvalTaskTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    static string Bench(params string[] parts) => Path.Combine([TestPaths.Fixtures, "benchmarks", .. parts]);

    [Fact]
    public void EverySpecKindIsATaskObjectWithItsMetricMetadata()
    {
        Assert.Equal(
            ["loss", "mc", "mmlu", "boolq", "hellaswag", "gsm8k", .. LayerPrune.Evaluation.Suite.SuiteTasks.Kinds.Select(k => k.Name)],
            EvalTasks.Kinds.Select(k => k.Name));
        Assert.IsType<LossTask>(EvalTasks.Parse($"loss:{KjvModel.Validation}"));
        Assert.IsType<McTask>(EvalTasks.Parse($"mc:{KjvModel.Cloze}"));
        Assert.IsType<BoolqTask>(EvalTasks.Parse("boolq:" + Bench("boolq", "validation.jsonl")));
        Assert.IsType<HellaswagTask>(EvalTasks.Parse("hellaswag:" + Bench("hellaswag", "validation.jsonl")));
        Assert.IsType<MmluTask>(EvalTasks.Parse("mmlu:" + Bench("mmlu")));
        var gsm = Assert.IsType<Gsm8kTask>(EvalTasks.Parse("gsm8k:" + Bench("gsm8k")));
        Assert.EndsWith("test.jsonl", gsm.Spec.Path);

        var loss = EvalTasks.Parse($"loss:{KjvModel.Validation}").Prepare(kjv.Tokenizer, EvalOptions.Default);
        var m = Assert.Single(loss.Metrics);
        Assert.Equal(("validation_loss", false, (double?)null), (m.Column, m.HigherIsBetter, m.Chance));
        Assert.Equal("validation loss (nats/token)", m.AxisLabel);

        var mc = EvalTasks.Parse($"mc:{KjvModel.Cloze}").Prepare(kjv.Tokenizer, EvalOptions.Default with { Limit = 10 });
        Assert.Equal(["mc_acc", "mc_acc_norm"], mc.Metrics.Select(x => x.Column));
        Assert.All(mc.Metrics, x => Assert.True(x.HigherIsBetter));
        Assert.All(mc.Metrics, x => Assert.Equal(0.25, x.Chance!.Value, 12)); // 4 choices per cloze item
        Assert.Equal(10, mc.Protocol["items"]);

        // BoolQ has two choices: chance 1/2. gsm8k (generation) has no chance level.
        var boolq = EvalTasks.Parse("boolq:" + Bench("boolq", "validation.jsonl")).Prepare(kjv.Tokenizer, EvalOptions.Default);
        Assert.Equal(0.5, boolq.Metrics[0].Chance!.Value, 12);
        var g = EvalTasks.Parse("gsm8k:" + Bench("gsm8k") + ",shots=1").Prepare(kjv.Tokenizer, EvalOptions.Default with { Limit = 1 });
        Assert.Equal(["gsm8k_exact_match_strict", "gsm8k_exact_match_flexible"], g.Metrics.Select(x => x.Column));
        Assert.All(g.Metrics, x => Assert.Null(x.Chance));
    }

    [Fact]
    public void LossProtocolDefaultIs128ChunksOf256Tokens()
    {
        var d = EvalOptions.Default;
        Assert.Equal((128, 256), (d.MaxChunks, d.SeqLen));
        var loss = EvalTasks.Parse($"loss:{KjvModel.Validation}").Prepare(kjv.Tokenizer, d);
        Assert.Equal(256, loss.Protocol["seq_len"]);
        Assert.Equal(128, loss.Protocol["max_chunks"]);
        Assert.Equal(128, loss.Protocol["chunks"]);
        Assert.Equal(128 * 255, loss.Protocol["tokens"]);
    }

    /// <summary>A task prepared once scores any layer subset: the same numbers as a fresh one-call evaluation.</summary>
    [Fact]
    public void PreparedOnceScoresLayerSubsetsLikeAFreshEvaluation()
    {
        var options = EvalOptions.Default with { MaxChunks = 16, Limit = 12, BatchSize = 16 };
        var loss = EvalTasks.Parse($"loss:{KjvModel.Validation}").Prepare(kjv.Tokenizer, options);
        var mc = EvalTasks.Parse($"mc:{KjvModel.Cloze}").Prepare(kjv.Tokenizer, options);
        var kept = PrunePlan.Deepest(4, 16).Kept;
        foreach (var layers in new[] { null, kept })
        {
            var l = loss.Score(kjv.Model, layers).Values["validation_loss"];
            var fresh = Evaluator.Run(kjv.Model, kjv.Tokenizer, $"loss:{KjvModel.Validation}", options, layers).Values["validation_loss"];
            Assert.Equal(fresh, l);
            var a = mc.Score(kjv.Model, layers).Values["acc"];
            Assert.Equal(Evaluator.Run(kjv.Model, kjv.Tokenizer, $"mc:{KjvModel.Cloze}", options, layers).Values["acc"], a);
        }
        // Removing 4 layers costs loss: the subset really is applied.
        Assert.True(loss.Score(kjv.Model, kept).Values["validation_loss"] > loss.Score(kjv.Model).Values["validation_loss"] + 0.01);
    }

    [Fact]
    public void OptionsNameTheParameterNotAFlag()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => (EvalOptions.Default with { SeqLen = 1 }).Validate());
        Assert.Equal(nameof(EvalOptions.SeqLen), e.ParamName);
        e = Assert.Throws<ArgumentOutOfRangeException>(() => (EvalOptions.Default with { MaxChunks = 0 }).Validate());
        Assert.Equal(nameof(EvalOptions.MaxChunks), e.ParamName);
        Assert.DoesNotContain("--", e.Message);
    }
}
