using LayerPrune.Checkpoints;
using LayerPrune.Planning;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Modeling;

public class MemoryPlannerTests
{
    static ModelConfig Shape(string name) =>
        ModelConfig.Parse(File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "bench", "shapes", name + ".json")), name);

    [Fact]
    public void Llama2_7bInFp32NeedsItsParametersTimesFourAndIsStreamedOn24Gb()
    {
        var c = Shape("llama-2-7b");
        var request = new MemoryRequest { Config = c, ComputeDtype = ScalarType.Float32, Workload = Workload.Similarity,
                                          BatchSize = 4, SeqLen = 64, StorageDtype = "BF16", CanOffload = true };
        var resident = MemoryPlanner.Estimate(request, offload: false);
        // 6,738,415,616 parameters (Llama-2-7B) minus the 32 × 2 × 4096 + 4096 norm weights the estimate leaves out.
        long linearAndEmbedding = 6_738_415_616L - (32 * 2 + 1) * 4096;
        Assert.Equal(linearAndEmbedding * 4, resident.Weights);
        var plan = MemoryPlanner.Plan(request, availableBytes: 24_000_000_000);
        Assert.True(plan.Offload);
        Assert.NotNull(plan.Notice);
        Assert.True(plan.Estimate.Required < 3_000_000_000, $"streamed estimate {plan.Estimate.Required}");
    }

    /// <summary>
    /// Heal (QLoRA, TinyLlama shape, bf16, micro-batch 4 × 128): with activation checkpointing only each layer's input
    /// [B, T, H] is kept plus one layer's intermediates, so the activation estimate drops by exactly
    /// (L − 1) one-layer intermediates + L residual copies − L layer inputs; a budget between the two estimates heals only
    /// with checkpointing, and below both the refusal names the batch as the fix.
    /// </summary>
    [Fact]
    public void HealWithCheckpointingKeepsOneLayersActivationsAndIsRefusedWhenEvenThatDoesNotFit()
    {
        var c = Shape("tinyllama-1.1b");
        var plain = new MemoryRequest { Config = c, ComputeDtype = ScalarType.BFloat16, Workload = Workload.Heal, BatchSize = 4,
                                        SeqLen = 128, StorageDtype = "BF16", Nf4Base = true, LoraRank = 8 };
        var checkpointed = plain with { GradientCheckpointing = true };
        var a = MemoryPlanner.Estimate(plain, offload: false);
        var b = MemoryPlanner.Estimate(checkpointed, offload: false);
        long B = 4, T = 128, H = c.HiddenSize, I = c.IntermediateSize;
        long layer = B * T * (6 * H + 3 * I) * 2 + B * c.NumHeads * T * T * 4;
        Assert.Equal(c.NumLayers * layer - (c.NumLayers * B * T * H * 2 + layer), a.Activations - b.Activations);
        Assert.Equal(a.Weights, b.Weights);
        Assert.Equal(a.Training, b.Training);
        long between = (long)((a.Required + b.Required) / 2 / MemoryPlanner.Headroom);
        Assert.Throws<MemoryPlanException>(() => MemoryPlanner.Plan(plain, availableBytes: between));
        Assert.False(MemoryPlanner.Plan(checkpointed, availableBytes: between).Offload);
        var big = checkpointed with { BatchSize = 64 };
        long tooSmall = (long)(MemoryPlanner.Estimate(big, offload: false).Required / MemoryPlanner.Headroom) - 1;
        var e = Assert.Throws<MemoryPlanException>(() => MemoryPlanner.Plan(big, availableBytes: tooSmall));
        Assert.Equal("batchSize", e.FixParameter);
    }

    /// <summary>
    /// An NF4 heal of TinyLlama in bf16 from a bf16 checkpoint: the 4-bit codes with one fp32 absmax per 64 weights
    /// (22 × 24,772,608 bytes), one layer dequantized for its recompute (44,040,192 bf16 weights) and two dequantize
    /// scratch buffers of the largest projection (5632 × 2048 bf16); the embeddings and head stay mapped.
    /// </summary>
    [Fact]
    public void Nf4HealCountsCodesOneDequantizedLayerAndTheScratchBuffers()
    {
        var c = Shape("tinyllama-1.1b");
        var request = new MemoryRequest { Config = c, ComputeDtype = ScalarType.BFloat16, Workload = Workload.Heal, BatchSize = 4,
                                          SeqLen = 128, StorageDtype = "BF16", Nf4Base = true, LoraRank = 8,
                                          GradientCheckpointing = true };
        var e = MemoryPlanner.Estimate(request, offload: false);
        Assert.Equal(22L * 24_772_608 + 44_040_192L * 2 + 2L * 5632 * 2048 * 2, e.Weights);
        Assert.Equal(2L * 32000 * 2048 * 2, e.MappedWeights);
    }

    [Fact]
    public void Bf16WeightsStoredInBf16AreMappedNotCopied()
    {
        var c = Shape("tinyllama-1.1b");
        var request = new MemoryRequest { Config = c, ComputeDtype = ScalarType.BFloat16, Workload = Workload.Evaluate,
                                          StorageDtype = "BF16" };
        var e = MemoryPlanner.Estimate(request, offload: false);
        Assert.Equal(0, e.Weights);
        Assert.Equal((1_100_048_384L - (22 * 2 + 1) * 2048) * 2, e.MappedWeights);
        Assert.False(MemoryPlanner.Plan(request, availableBytes: 24_000_000_000).Offload);
    }

    [Fact]
    public void RefusalNamesBytesAndTheParameterThatMakesItFit()
    {
        var c = Shape("llama-2-7b");
        var request = new MemoryRequest { Config = c, ComputeDtype = ScalarType.Float32, Workload = Workload.Generate,
                                          StorageDtype = "BF16", CanOffload = false };
        var e = Assert.Throws<MemoryPlanException>(() => MemoryPlanner.Plan(request, availableBytes: 24_000_000_000));
        Assert.Equal("dtype", e.FixParameter);
        Assert.Equal(24_000_000_000, e.AvailableBytes);
        Assert.True(e.NeededBytes > 26_000_000_000);
        Assert.Contains("24.00 GB is available", e.Message);
    }

    [Fact]
    public void CpuFlagsAreParsedFromCpuinfo()
    {
        var flags = CpuFeatures.Parse("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu avx2\n");
        Assert.True(CpuFeatures.HasNativeBf16(flags));
        Assert.False(CpuFeatures.HasNativeBf16(CpuFeatures.Parse("flags : fpu avx2 avx512f\n")));
        Assert.True(CpuFeatures.HasNativeBf16(CpuFeatures.Parse("flags : amx_tile amx_bf16\n")));
    }

    /// <summary>
    /// Replaying frozen outputs keeps B·T·out values per replayed projection and layer, which the heal estimate adds.
    /// TinyLlama (in/out: k, v 2048/256 = 8; down 5632/2048 = 2.75; q, o 1; gate, up 2048/5632): every projection is
    /// 17920 values per token and layer. The default takes ratio groups from the highest while they fit in the NF4 base's
    /// bytes (0.55 GB): all of them at 4 × 128 (0.40 GB), k, v and down at 16 × 256 (2560 values: 0.46 GB; adding q and o
    /// would be 1.2 GB), nothing without NF4 or checkpointing.
    /// </summary>
    [Fact]
    public void FrozenOutputReplay_IsCountedAndChosenByItsSize()
    {
        var c = Shape("tinyllama-1.1b");
        double down = 5632.0 / 2048, gateUp = 2048.0 / 5632;
        Assert.Equal(22L * 4 * 128 * 17920 * 2, MemoryPlanner.FrozenOutputBytes(c, 4, 128, ScalarType.BFloat16, 0));
        Assert.Equal(22L * 4 * 128 * 17920 * 2, MemoryPlanner.FrozenOutputBytes(c, 4, 128, ScalarType.BFloat16, gateUp));
        Assert.Equal(22L * 16 * 256 * 2560 * 2, MemoryPlanner.FrozenOutputBytes(c, 16, 256, ScalarType.BFloat16, down));
        Assert.Equal(22L * 16 * 256 * 512 * 2, MemoryPlanner.FrozenOutputBytes(c, 16, 256, ScalarType.BFloat16, 8));
        long layerParams = 2048L * 2048 * 2 + 2048L * 256 * 2 + 3 * 2048L * 5632;
        Assert.Equal(22 * (layerParams / 2 + layerParams / 64 * 4), MemoryPlanner.Nf4BaseBytes(c));

        var request = new MemoryRequest { Config = c, ComputeDtype = ScalarType.BFloat16, Workload = Workload.Heal, BatchSize = 4,
                                          SeqLen = 128, StorageDtype = "BF16", Nf4Base = true, LoraRank = 8, GradientCheckpointing = true };
        long without = MemoryPlanner.Estimate(request, offload: false).Activations;
        long with = MemoryPlanner.Estimate(request with { ReplayFanRatio = 0 }, offload: false).Activations;
        Assert.Equal(MemoryPlanner.FrozenOutputBytes(c, 4, 128, ScalarType.BFloat16, 0), with - without);

        var o = LayerPrune.Healing.HealOptions.Defaults with { Batch = 4, SeqLen = 128, Dtype = ScalarType.BFloat16 };
        Assert.Equal(gateUp, o.ReplayFanRatio(c));
        Assert.Equal(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], o.ReplayedProjections(c));
        var big = o with { Batch = 16, SeqLen = 256 };
        Assert.Equal(down, big.ReplayFanRatio(c));
        Assert.Equal(["k_proj", "v_proj", "down_proj"], big.ReplayedProjections(c));
        Assert.Equal(0, (big with { ReplayFrozenOutputs = true }).ReplayFanRatio(c));
        Assert.Null((o with { ReplayFrozenOutputs = false }).ReplayFanRatio(c));
        Assert.Null((o with { GradientCheckpointing = false }).ReplayFanRatio(c));
        Assert.Null((o with { Quant = LayerPrune.Healing.BaseQuantization.None }).ReplayFanRatio(c));
        Assert.Empty((o with { Quant = LayerPrune.Healing.BaseQuantization.None }).ReplayedProjections(c));
        // A micro-batch so large that not even k and v fit: nothing is replayed.
        Assert.Null((o with { Batch = 512, SeqLen = 2048 }).ReplayFanRatio(c));
    }
}
