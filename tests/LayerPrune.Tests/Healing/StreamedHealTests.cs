using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Healing;
using LayerPrune.Modeling;
using LayerPrune.Planning;
using LayerPrune.Tests.Cli;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Healing;

/// <summary>
/// Streamed heal (<see cref="HealOptions.Offload"/>): the frozen base is read from the checkpoint per use, the adapters stay
/// resident; it trains exactly what the resident heal with checkpointing trains.
/// </summary>
public sealed class StreamedHealTests(HealFixture fx) : IClassFixture<HealFixture>
{
    /// <summary>Runs a session to the end, step by step; returns the steps and the layer reads of each step.</summary>
    static (List<HealStep> Steps, List<long> Reads, HealResult Result, bool NoLayerResident) Drive(HealOptions o)
    {
        using var session = HealSession.Open(o);
        var steps = new List<HealStep>();
        var reads = new List<long>();
        var model = session.Model;
        bool noneResident = Enumerable.Range(0, model.NumLayers).All(i => model.Model.Layers[i] is null);
        while (!session.IsFinished)
        {
            long before = model.LayerReads;
            steps.Add(session.Step());
            reads.Add(model.LayerReads - before);
        }
        return (steps, reads, session.Export(), noneResident);
    }

    /// <summary>
    /// 2-layer kjv model in fp32, 6 steps of 4 × 32 tokens in micro-batches of 2, dropout 0.05, validation every 3 steps:
    /// the streamed run gives the resident (checkpointed) run's loss at every step within 1e-6, the same validation and
    /// merged-model losses, and the same adapters within 1e-5. The streamed run really streams: no layer is resident, and
    /// every step without validation reads each layer exactly twice per micro-batch (forward, recompute in backward), while
    /// the resident run reads none.
    /// </summary>
    [Fact]
    public void StreamedHeal_EqualsResidentWithCheckpointing_AndReadsEachLayerPerUse()
    {
        string a = fx.NewOut(), b = fx.NewOut();
        var o = fx.Options(fx.Fp32, a);
        var resident = Drive(o);
        var streamed = Drive(o with { OutDir = b, Offload = true });

        Assert.True(streamed.NoLayerResident, "the streamed model must keep no decoder layer resident");
        Assert.False(resident.NoLayerResident);
        Assert.All(resident.Reads, r => Assert.Equal(0, r));
        int layers = 2, microBatches = o.Batch / o.EffectiveMicroBatch;
        for (int s = 0; s < streamed.Steps.Count; s++)
        {
            // A validation step also streams the eval chunks: one more read of each layer (one group of batches).
            long expected = 2L * layers * microBatches + (streamed.Steps[s].ValLoss is null ? 0 : layers);
            Assert.Equal(expected, streamed.Reads[s]);
            Assert.Equal(resident.Steps[s].TrainLoss, streamed.Steps[s].TrainLoss, 1e-6);
        }
        // The losses move (training happens), so agreeing on them is not vacuous.
        Assert.True(Math.Abs(resident.Steps[^1].TrainLoss - resident.Steps[0].TrainLoss) > 1e-3);
        Assert.Equal(resident.Result.FinalValLoss!.Value, streamed.Result.FinalValLoss!.Value, 1e-6);
        Assert.Equal(resident.Result.MergedValLoss!.Value, streamed.Result.MergedValLoss!.Value, 1e-6);
        var ra = HealingTestUtil.ReadAll(Path.Combine(a, "adapter_model.safetensors"));
        var rb = HealingTestUtil.ReadAll(Path.Combine(b, "adapter_model.safetensors"));
        double largestB = ra.Where(kv => kv.Key.Contains("lora_B")).Max(kv => { using var m = kv.Value.abs().max(); return m.ToDouble(); });
        Assert.True(largestB > 1e-4, $"lora_B stayed ~0 ({largestB}): the comparison would not see a difference");
        double diff = HealingTestUtil.MaxDiff(ra, rb);
        Assert.True(diff <= 1e-5, $"adapters differ by {diff}");
        var mergedA = HealingTestUtil.ReadAll(Path.Combine(a, "merged", Checkpoint.SingleFile));
        double merged = HealingTestUtil.MaxDiff(mergedA, HealingTestUtil.ReadAll(Path.Combine(b, "merged", Checkpoint.SingleFile)));
        Assert.True(merged <= 1e-5, $"merged checkpoints differ by {merged}");
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(b, "heal_summary.json")))!;
        Assert.True(summary["offload"]!.GetValue<bool>());
    }

    /// <summary>
    /// A streamed run stopped after 3 of 6 steps and resumed streamed ends with the adapters of an uninterrupted resident
    /// run (the checkpoint does not depend on the mode), within 1e-5.
    /// </summary>
    [Fact]
    public void StreamedHeal_InterruptedAndResumed_EqualsResident()
    {
        string a = fx.NewOut(), b = fx.NewOut();
        var o = fx.Options(fx.Fp32, a) with { EvalDataPath = null };
        Healer.Run(o);
        var streamed = o with { OutDir = b, Offload = true };
        var first = Healer.Run(streamed, onStep: s => s.Step < 3);
        Assert.False(first.Completed);
        var second = Healer.Run(streamed with { Resume = true });
        Assert.True(second.Completed);
        double diff = HealingTestUtil.MaxDiff(HealingTestUtil.ReadAll(Path.Combine(a, "adapter_model.safetensors")), HealingTestUtil.ReadAll(Path.Combine(b, "adapter_model.safetensors")));
        Assert.True(diff <= 1e-5, $"adapters differ by {diff}");
    }

    /// <summary>
    /// An NF4 heal opened from a folder reads and quantizes one layer at a time (bf16 checkpoint, fp32 compute: never every
    /// layer in fp32 at once): the model ends resident with every layer read exactly once, to be quantized (the offloaded
    /// open reads no layer data: Checkpoint.Open validates names, shapes and dtypes from the headers), and the run gives
    /// the adapters and losses of the same heal on a model loaded resident first (within 1e-6).
    /// </summary>
    [Fact]
    public void Nf4Heal_QuantizesLayerByLayer_SameAsResidentLoad()
    {
        string a = fx.NewOut(), b = fx.NewOut();
        var o = fx.Options(fx.Bf16, a) with { Quant = BaseQuantization.Nf4, Steps = 4 };
        HealResult viaResident;
        using (var model = CausalLM.Load(fx.Bf16))
        using (var session = HealSession.Open(model, o))
        {
            Assert.Equal(0, model.LayerReads);
            viaResident = session.Run();
        }
        HealResult layerByLayer;
        using (var session = HealSession.Open(o with { OutDir = b }))
        {
            Assert.False(session.Model.Offloaded);
            Assert.Equal(2, session.Model.LayerReads); // the 2-layer model, each layer read once
            Assert.All(session.Model.NamedLinears(), l => Assert.NotNull(l.linear.Quantized));
            layerByLayer = session.Run();
        }
        Assert.Equal(viaResident.FinalTrainLoss!.Value, layerByLayer.FinalTrainLoss!.Value, 1e-6);
        Assert.Equal(viaResident.FinalValLoss!.Value, layerByLayer.FinalValLoss!.Value, 1e-6);
        double diff = HealingTestUtil.MaxDiff(HealingTestUtil.ReadAll(Path.Combine(a, "adapter_model.safetensors")), HealingTestUtil.ReadAll(Path.Combine(b, "adapter_model.safetensors")));
        Assert.True(diff <= 1e-6, $"adapters differ by {diff}");
    }

    /// <summary>Offload streams an unquantized base with checkpointing; other combinations are refused naming the parameter.</summary>
    [Fact]
    public void Offload_NeedsQuantNoneAndCheckpointing()
    {
        var o = fx.Options(fx.Fp32, fx.NewOut()) with { Offload = true };
        var nf4 = Assert.Throws<LayerPruneException>(() => (o with { Quant = BaseQuantization.Nf4 }).Validate());
        Assert.Contains("Offload", nf4.Message);
        Assert.Contains("Quant", nf4.Message);
        var plain = Assert.Throws<LayerPruneException>(() => (o with { GradientCheckpointing = false }).Validate());
        Assert.Contains("GradientCheckpointing", plain.Message);
    }

    /// <summary>
    /// Llama-2-7B shape, LoRA on an fp32 base (--quant none), 1 × 32 tokens, 24 GB: resident (27 GB of weights) does not fit,
    /// streamed (one layer resident) does, so the plan streams and says so; an NF4 plan that does not fit names the streamed
    /// heal as the fix, one on an fp32 compute dtype counts one fp32 layer (quantized as read), not all; and below the
    /// streamed estimate the heal is refused with the numbers.
    /// </summary>
    [Fact]
    public void Planner_StreamsAnFp32LoraHealOf7bOn24Gb()
    {
        var c = ModelConfig.Parse(File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "bench", "shapes", "llama-2-7b.json")), "llama-2-7b");
        var r = new MemoryRequest
        {
            Config = c, ComputeDtype = ScalarType.Float32, Workload = Workload.Heal, BatchSize = 1, SeqLen = 32,
            StorageDtype = "BF16", LoraRank = 8, GradientCheckpointing = true, CanOffload = true,
        };
        var resident = MemoryPlanner.Estimate(r, offload: false);
        var streamed = MemoryPlanner.Estimate(r, offload: true);
        Assert.True(resident.Required > 24_000_000_000, MemoryPlanner.Gb(resident.Required));
        Assert.True(streamed.Required < 4_000_000_000, MemoryPlanner.Gb(streamed.Required));
        var plan = MemoryPlanner.Plan(r, availableBytes: 24_000_000_000);
        Assert.True(plan.Offload);
        Assert.Contains("streaming", plan.Notice);
        Assert.False(MemoryPlanner.Plan(r, availableBytes: 64_000_000_000).Offload);
        Assert.True(MemoryPlanner.Plan(r, forceOffload: true, availableBytes: 64_000_000_000).Offload);

        // bf16 (so that the dtype is not the fix): the NF4 base (3.8 GB) is larger than one streamed bf16 layer.
        var nf4 = r with { ComputeDtype = ScalarType.BFloat16, Nf4Base = true, CanOffload = false };
        long nf4Only = (long)(MemoryPlanner.Estimate(nf4, offload: false).Required / MemoryPlanner.Headroom) - 1;
        var streamedBf16 = MemoryPlanner.Estimate(nf4 with { Nf4Base = false, CanOffload = true }, offload: true);
        Assert.True(streamedBf16.Required < nf4Only * MemoryPlanner.Headroom, MemoryPlanner.Gb(streamedBf16.Required));
        Assert.Equal("offload", Assert.Throws<MemoryPlanException>(() => MemoryPlanner.Plan(nf4, availableBytes: nf4Only)).FixParameter);

        // NF4 on an fp32 compute dtype: layers are read and quantized one at a time, never all in fp32 (25.9 GB): NF4 codes,
        // fp32 embeddings and head and one fp32 layer fit on 24 GB.
        var nf4Fp32 = r with { Nf4Base = true, CanOffload = false };
        Assert.True(MemoryPlanner.Estimate(nf4Fp32, offload: false).Weights < 6_000_000_000);
        Assert.False(MemoryPlanner.Plan(nf4Fp32, availableBytes: 24_000_000_000).Offload);

        long tooLittle = (long)(streamed.Required / MemoryPlanner.Headroom) - 1;
        var e = Assert.Throws<MemoryPlanException>(() => MemoryPlanner.Plan(r, availableBytes: tooLittle));
        Assert.Equal(streamed.Required, e.NeededBytes);
    }

    /// <summary>
    /// `heal --offload --quant none` streams (heal_summary.json says offload) and gives the resident CLI run's adapters;
    /// `--offload` with NF4 is a usage error naming both flags.
    /// </summary>
    [Fact]
    public void Cli_HealOffload()
    {
        string a = fx.NewOut(), b = fx.NewOut();
        string[] common = ["heal", "--model", fx.Fp32, "--data", fx.Train, "--steps", "2", "--batch", "2", "--seq-len", "32",
            "--rank", "4", "--quant", "none", "--device", "cpu", "--dtype", "fp32", "--quiet", "--json"];
        var (code, _, err) = CliRunner.Run([.. common, "--out", a]);
        Assert.True(code == 0, err);
        (code, var stdout, err) = CliRunner.Run([.. common, "--out", b, "--offload"]);
        Assert.True(code == 0, err);
        Assert.True(JsonNode.Parse(stdout)!["offload"]!.GetValue<bool>());
        double diff = HealingTestUtil.MaxDiff(HealingTestUtil.ReadAll(Path.Combine(a, "adapter_model.safetensors")), HealingTestUtil.ReadAll(Path.Combine(b, "adapter_model.safetensors")));
        Assert.True(diff <= 1e-5, $"adapters differ by {diff}");
        (code, _, err) = CliRunner.Run("heal", "--model", fx.Fp32, "--data", fx.Train, "--out", fx.NewOut(), "--steps", "1",
            "--quant", "nf4", "--offload");
        Assert.Equal(2, code);
        Assert.Contains("--offload", err);
        Assert.Contains("--quant none", err);
    }
}
