using LayerPrune.Checkpoints;
using LayerPrune.Modeling.Families;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>Everything one `layerprune heal` run needs. Defaults are the "plain" recipe.</summary>
public sealed record HealOptions
{
    public required string ModelDir { get; init; }
    /// <summary>Training corpus (.txt / .jsonl / .parquet), packed like TokenChunks.FromLines.</summary>
    public required string DataPath { get; init; }
    public required string OutDir { get; init; }
    public string? EvalDataPath { get; init; }

    public int Steps { get; init; } = 300;
    /// <summary>Sequences per optimizer step.</summary>
    public int Batch { get; init; } = 16;
    /// <summary>Sequences per forward/backward pass (gradient accumulation); null = <see cref="Batch"/>.</summary>
    public int? MicroBatch { get; init; }
    public int SeqLen { get; init; } = 256;
    public int Rank { get; init; } = 8;
    public double Alpha { get; init; } = 16;
    public double Dropout { get; init; } = 0.05;
    public double LearningRate { get; init; } = 3e-4;
    public int Warmup { get; init; }
    public BaseQuantization Quant { get; init; } = BaseQuantization.Nf4;
    public bool DoubleQuant { get; init; }
    /// <summary>Target module suffixes; null = every attention + MLP projection of the family.</summary>
    public IReadOnlyList<string>? Targets { get; init; }
    public int EvalEvery { get; init; } = 50;
    public int EvalChunks { get; init; } = 32;
    public int SaveEvery { get; init; } = 50;
    public long Seed { get; init; }
    public bool Resume { get; init; }
    public bool Force { get; init; }
    public string Recipe { get; init; } = "plain";
    public Device? Device { get; init; }
    public ScalarType Dtype { get; init; } = ScalarType.Float32;
    /// <summary>Test hook: behave as if interrupted after this many optimizer steps of this process (checkpoint written, no outputs).</summary>
    public int? StopAfterSteps { get; init; }

    public int EffectiveMicroBatch => MicroBatch ?? Batch;

    /// <summary>Throws a usage error (naming the flag) for any out-of-range value.</summary>
    public void Validate()
    {
        static void Need(bool ok, string message) { if (!ok) throw LayerPruneException.Usage(message); }
        Need(Steps >= 1, $"--steps {Steps}: must be at least 1");
        Need(Batch >= 1, $"--batch {Batch}: must be at least 1");
        Need(MicroBatch is null or >= 1, $"--micro-batch {MicroBatch}: must be at least 1");
        Need(MicroBatch is null || MicroBatch <= Batch, $"--micro-batch {MicroBatch}: must not exceed --batch {Batch}");
        Need(SeqLen >= 2, $"--seq-len {SeqLen}: must be at least 2");
        Need(Rank >= 1, $"--rank {Rank}: must be at least 1");
        Need(Alpha > 0 && double.IsFinite(Alpha), $"--alpha {Alpha}: must be positive");
        Need(Dropout >= 0 && Dropout < 1, $"--dropout {Dropout}: must be in [0, 1)");
        Need(LearningRate > 0 && double.IsFinite(LearningRate), $"--lr {LearningRate}: must be positive");
        Need(Warmup >= 0 && Warmup <= Steps, $"--warmup {Warmup}: must be between 0 and --steps {Steps}");
        Need(EvalEvery >= 1, $"--eval-every {EvalEvery}: must be at least 1");
        Need(EvalChunks >= 1, $"--eval-chunks {EvalChunks}: must be at least 1");
        Need(SaveEvery >= 1, $"--save-every {SaveEvery}: must be at least 1");
        Need(Targets is null || (Targets.Count > 0 && Targets.All(t => t.Length > 0)), "--targets: give a comma-separated list of module names, e.g. q_proj,v_proj");
        Need(!DoubleQuant || Quant == BaseQuantization.Nf4, "--double-quant: needs --quant nf4");
        Need(Recipe is "plain" or "paper", $"--recipe {Recipe}: expected plain or paper");
    }
}

/// <summary>Default hyper-parameters: "plain" (LoRA r8/α16 on all projections) and "paper" (Gromov et al. 2024, App. A.1).</summary>
public static class HealRecipes
{
    /// <summary>All attention and MLP projections of a family (PEFT names; see <see cref="Architecture.AllLinearTargets"/>).</summary>
    public static IReadOnlyList<string> AllLinear(ArchitectureFamily family) => Architecture.For(family).AllLinearTargets;

    /// <summary>The MLP projections only (the paper heals the FFN blocks; see <see cref="Architecture.FfnTargets"/>).</summary>
    public static IReadOnlyList<string> FfnOnly(ArchitectureFamily family) => Architecture.For(family).FfnTargets;

    /// <summary>
    /// The paper's per-model LR and rank (App. A.1), recognised by family and hidden size (which pruning keeps):
    /// Llama hidden 4096 → Llama-2-7B (3e-4, r2), 5120 → 13B (3e-4, r64), 8192 → 70B (3e-5, r8); Qwen2 → Qwen-7B/14B
    /// (3e-4, r64); Mistral → Mistral-7B (3e-6, r4); Phi → Phi-2 (2e-4, r64). Anything else: the fallback (3e-4, r8).
    /// The table lives in each family's <see cref="Architecture.PaperSettings"/>.
    /// </summary>
    public static (double Lr, int Rank, string Matched) PaperModelSettings(ModelConfig config)
    {
        var s = Architecture.For(config).PaperSettings(config.HiddenSize);
        return (s.Lr, s.Rank, s.Matched);
    }

    /// <summary>
    /// The recipe's defaults applied to <paramref name="o"/> (callers then override what the user gave explicitly).
    /// paper: FFN-only targets, α = r, 100 warmup steps (capped at --steps), cosine decay, batch 16, dropout 0.05.
    /// </summary>
    public static HealOptions Apply(HealOptions o, ModelConfig config)
    {
        if (o.Recipe != "paper") return o with { Targets = o.Targets ?? AllLinear(config.Family) };
        var (lr, rank, _) = PaperModelSettings(config);
        return o with
        {
            Targets = FfnOnly(config.Family), Rank = rank, Alpha = rank, LearningRate = lr,
            Warmup = Math.Min(100, o.Steps), Batch = 16, Dropout = 0.05,
        };
    }
}

/// <summary>transformers get_cosine_schedule_with_warmup (num_cycles 0.5) as an absolute learning rate.</summary>
public static class LrSchedule
{
    /// <summary>
    /// LR used for optimizer step <paramref name="step"/> (0-based): step &lt; warmup → lr·step/max(1, warmup);
    /// else lr·max(0, 0.5·(1 + cos(π·progress))), progress = (step − warmup)/max(1, total − warmup).
    /// </summary>
    public static double Cosine(double lr, int step, int warmup, int total)
    {
        if (step < warmup) return lr * step / Math.Max(1, warmup);
        double progress = (double)(step - warmup) / Math.Max(1, total - warmup);
        return lr * Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * progress)));
    }
}
