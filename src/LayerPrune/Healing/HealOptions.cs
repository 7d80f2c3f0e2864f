using System.Diagnostics.CodeAnalysis;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling.Families;
using LayerPrune.Reporting;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>Everything one heal run needs. Defaults are the "plain" recipe; <see cref="Defaults"/> shows them.</summary>
public sealed record HealOptions
{
    /// <summary>Options with empty paths: the one place the default hyper-parameters are read from (e.g. by the CLI).</summary>
    public static HealOptions Defaults { get; } = new(string.Empty, string.Empty, string.Empty);

    /// <summary>Options to fill with an object initializer (the paths are required).</summary>
    public HealOptions() { }

    [SetsRequiredMembers]
    HealOptions(string modelDir, string dataPath, string outDir)
    {
        ModelDir = modelDir;
        DataPath = dataPath;
        OutDir = outDir;
    }

    /// <summary>The model folder (its tokenizer, and the base weights unless a model is passed to <see cref="HealSession"/>).</summary>
    public required string ModelDir { get; init; }
    /// <summary>Training corpus (.txt / .jsonl / .parquet), packed like TokenChunks.FromLines.</summary>
    public required string DataPath { get; init; }
    /// <summary>Output folder: adapters, merged/ checkpoint, train log and summary (written atomically).</summary>
    public required string OutDir { get; init; }
    /// <summary>Validation text for periodic loss (its first <see cref="EvalChunks"/> chunks); null = none.</summary>
    public string? EvalDataPath { get; init; }

    /// <summary>Optimizer steps.</summary>
    public int Steps { get; init; } = 300;
    /// <summary>Sequences per optimizer step.</summary>
    public int Batch { get; init; } = 16;
    /// <summary>Sequences per forward/backward pass (gradient accumulation); null = <see cref="Batch"/>.</summary>
    public int? MicroBatch { get; init; }
    /// <summary>Tokens per training sequence.</summary>
    public int SeqLen { get; init; } = 256;
    /// <summary>LoRA rank r.</summary>
    public int Rank { get; init; } = 8;
    /// <summary>LoRA alpha (scaling = alpha / r).</summary>
    public double Alpha { get; init; } = 16;
    /// <summary>LoRA dropout probability.</summary>
    public double Dropout { get; init; } = 0.05;
    /// <summary>Peak learning rate (AdamW, linear warmup, cosine decay to 0).</summary>
    public double LearningRate { get; init; } = 3e-4;
    /// <summary>Linear warmup steps.</summary>
    public int Warmup { get; init; }
    /// <summary>Base weights: NF4 (QLoRA) or unquantized.</summary>
    public BaseQuantization Quant { get; init; } = BaseQuantization.Nf4;
    /// <summary>NF4 double quantization of the block scales.</summary>
    public bool DoubleQuant { get; init; }
    /// <summary>
    /// Activation checkpointing per decoder layer (recompute each layer in backward): training memory of one layer's
    /// activations instead of all layers', for about one more forward pass of compute. Same results (see docs/healing.md).
    /// </summary>
    public bool GradientCheckpointing { get; init; } = true;
    /// <summary>
    /// Streamed heal: the frozen base layers are not kept resident but read from the checkpoint mapping per use (once in the
    /// forward pass, once for the recompute in backward, per micro-batch); the LoRA adapters and their AdamW state stay
    /// resident. Memory of one layer's weights instead of all of them, same results (see docs/healing.md). Needs
    /// <see cref="GradientCheckpointing"/> and <see cref="Quant"/> none (an NF4 base is resident in 4 bits already).
    /// </summary>
    public bool Offload { get; init; }
    /// <summary>
    /// An NF4 heal with checkpointing keeps frozen matmuls' outputs of the forward pass and replays them in the recompute
    /// (<see cref="Modeling.GradientCheckpointing.ReplayFanRatio"/>): same results, less compute per step, for
    /// <see cref="Planning.MemoryPlanner.FrozenOutputBytes"/> of memory. true: every projection; false: none; null: the
    /// projections that save the most work per value kept, as many as fit in the NF4 base's own bytes
    /// (<see cref="Planning.MemoryPlanner.AutoReplayFanRatio"/>: all of them at small micro-batches).
    /// </summary>
    public bool? ReplayFrozenOutputs { get; init; }

    /// <summary>
    /// The <see cref="Modeling.GradientCheckpointing.ReplayFanRatio"/> of this run on <paramref name="c"/> (null: nothing
    /// replayed; 0: every projection).
    /// </summary>
    public double? ReplayFanRatio(ModelConfig c) =>
        Quant != BaseQuantization.Nf4 || !GradientCheckpointing || Offload || ReplayFrozenOutputs == false ? null
        : ReplayFrozenOutputs == true ? 0
        : Planning.MemoryPlanner.AutoReplayFanRatio(c, EffectiveMicroBatch, SeqLen, Dtype);

    /// <summary>The projections whose outputs this run replays (HF names, e.g. k_proj, v_proj, down_proj).</summary>
    public IReadOnlyList<string> ReplayedProjections(ModelConfig c) => ReplayFanRatio(c) is double ratio
        ? Planning.MemoryPlanner.ReplayedProjections(c, ratio).Select(p => p.Name).ToList()
        : [];
    /// <summary>Target module suffixes; null = every attention + MLP projection of the family.</summary>
    public IReadOnlyList<string>? Targets { get; init; }
    /// <summary>Validation loss every this many steps (and at the last).</summary>
    public int EvalEvery { get; init; } = 50;
    /// <summary>Validation chunks of <see cref="SeqLen"/> tokens.</summary>
    public int EvalChunks { get; init; } = 32;
    /// <summary>Resumable checkpoint every this many steps.</summary>
    public int SaveEvery { get; init; } = 50;
    /// <summary>Seed of LoRA init, dropout and data order.</summary>
    public long Seed { get; init; }
    /// <summary>Continue an interrupted run from OUT.partial/ when it holds a checkpoint.</summary>
    public bool Resume { get; init; }
    /// <summary>Replace an existing output (and discard an interrupted run).</summary>
    public bool Force { get; init; }
    /// <summary>"plain" or "paper" (see <see cref="HealRecipes"/>).</summary>
    public string Recipe { get; init; } = "plain";
    /// <summary>Compute device; null = CPU.</summary>
    public Device? Device { get; init; }
    /// <summary>Compute dtype of the base weights.</summary>
    public ScalarType Dtype { get; init; } = ScalarType.Float32;
    /// <summary>Where progress goes (one "heal" reporter counting steps); null = nowhere.</summary>
    public IProgressSink? Progress { get; init; }

    /// <summary><see cref="MicroBatch"/>, or <see cref="Batch"/> when not set.</summary>
    public int EffectiveMicroBatch => MicroBatch ?? Batch;

    /// <summary>Throws <see cref="LayerPruneException.Invalid"/> naming the property for any out-of-range value.</summary>
    public void Validate()
    {
        Need(Steps >= 1, nameof(Steps), Steps, "must be at least 1");
        Need(Batch >= 1, nameof(Batch), Batch, "must be at least 1");
        Need(MicroBatch is null or >= 1, nameof(MicroBatch), MicroBatch, "must be at least 1");
        Need(MicroBatch is null || MicroBatch <= Batch, nameof(MicroBatch), MicroBatch, $"must not exceed `{nameof(Batch)}` {Batch}");
        Need(SeqLen >= 2, nameof(SeqLen), SeqLen, "must be at least 2");
        Need(Rank >= 1, nameof(Rank), Rank, "must be at least 1");
        Need(Alpha > 0 && double.IsFinite(Alpha), nameof(Alpha), Alpha, "must be positive");
        Need(Dropout >= 0 && Dropout < 1, nameof(Dropout), Dropout, "must be in [0, 1)");
        Need(LearningRate > 0 && double.IsFinite(LearningRate), nameof(LearningRate), LearningRate, "must be positive");
        Need(Warmup >= 0 && Warmup <= Steps, nameof(Warmup), Warmup, $"must be between 0 and `{nameof(Steps)}` {Steps}");
        Need(EvalEvery >= 1, nameof(EvalEvery), EvalEvery, "must be at least 1");
        Need(EvalChunks >= 1, nameof(EvalChunks), EvalChunks, "must be at least 1");
        Need(SaveEvery >= 1, nameof(SaveEvery), SaveEvery, "must be at least 1");
        bool targetsOk = Targets is null || (Targets.Count > 0 && Targets.All(t => t.Length > 0));
        Need(targetsOk, nameof(Targets), null, "give a comma-separated list of module names, e.g. q_proj,v_proj");
        Need(!DoubleQuant || Quant == BaseQuantization.Nf4, nameof(DoubleQuant), null, $"needs `{nameof(Quant)}` nf4");
        Need(Recipe is "plain" or "paper", nameof(Recipe), Recipe, "expected plain or paper");
        Need(!Offload || GradientCheckpointing, nameof(Offload), null,
            $"needs `{nameof(GradientCheckpointing)}` (a streamed layer is read again for its backward pass)");
        Need(!Offload || Quant == BaseQuantization.None, nameof(Offload), null,
            $"streams an unquantized base: needs `{nameof(Quant)}` none (an NF4 base is kept resident in 4 bits)");
        Need(ReplayFrozenOutputs != true || (Quant == BaseQuantization.Nf4 && GradientCheckpointing), nameof(ReplayFrozenOutputs),
            null, $"replays the NF4 matmuls in the recompute: needs `{nameof(Quant)}` nf4 and `{nameof(GradientCheckpointing)}`");
    }

    static void Need(bool ok, string parameter, object? value, string problem)
    {
        if (!ok)
            throw LayerPruneException.Invalid(parameter, value, problem);
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
    /// paper: FFN-only targets, α = r, 100 warmup steps (capped at Steps), cosine decay, batch 16, dropout 0.05.
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
