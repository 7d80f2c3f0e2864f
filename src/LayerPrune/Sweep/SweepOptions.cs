using LayerPrune.Efficiency;
using LayerPrune.Evaluation;
using LayerPrune.Healing;
using LayerPrune.Pruning;
using LayerPrune.Pruning.Strategies;

namespace LayerPrune.Sweep;

/// <summary>What <see cref="SweepRunner.Run"/> sweeps; the defaults here are the only ones (the CLI reads them).</summary>
public sealed record SweepOptions
{
    /// <summary>Default of <see cref="Samples"/>.</summary>
    public const int DefaultSamples = 64;

    /// <summary>Default of <see cref="SeqLen"/>.</summary>
    public const int DefaultSeqLen = 256;

    /// <summary>Default of <see cref="Batch"/>.</summary>
    public const int DefaultBatch = 8;

    /// <summary>Default of <see cref="CalibrationChunks"/>.</summary>
    public const int DefaultCalibrationChunks = 32;

    /// <summary>The strategies <see cref="Strategies"/> may name (<see cref="PruneStrategies.Names"/>).</summary>
    public static readonly string[] KnownStrategies = [.. PruneStrategies.Names];

    /// <summary>The source model's folder (recorded in the config; the model itself is passed to Run).</summary>
    public required string ModelDir { get; init; }

    /// <summary>Text of the similarity pass.</summary>
    public required string DataPath { get; init; }

    /// <summary>Similarity samples.</summary>
    public int Samples { get; init; } = DefaultSamples;

    /// <summary>Tokens per similarity sample.</summary>
    public int SeqLen { get; init; } = DefaultSeqLen;

    /// <summary>Sequences per similarity forward batch.</summary>
    public int Batch { get; init; } = DefaultBatch;

    /// <summary>Task specs (<see cref="TaskSpec"/>), e.g. "loss:val.txt", "mc:cloze.jsonl".</summary>
    public required IReadOnlyList<string> Tasks { get; init; }

    /// <summary>Strategies, from <see cref="KnownStrategies"/>.</summary>
    public IReadOnlyList<string> Strategies { get; init; } = ["similarity", "deepest", "shallowest"];

    /// <summary>Block sizes to evaluate; null = every n from 1 to L−1.</summary>
    public IReadOnlyList<int>? Ns { get; init; }

    /// <summary>Fractions of the layers instead of <see cref="Ns"/>.</summary>
    public IReadOnlyList<double>? Fractions { get; init; }

    /// <summary>Seed of the random strategy.</summary>
    public int Seed { get; init; }

    /// <summary>Seeds of the random strategy, one row per seed and n (report.md gives mean ± std); null = <see cref="Seed"/>
    /// alone, with rows that record no seed (as before seeds existed).</summary>
    public IReadOnlyList<int>? Seeds { get; init; }

    /// <summary>No strategy removes the final layer (similarity, bi, greedy, loss-rank, shallowest, random; deepest never
    /// does).</summary>
    public bool ProtectLast { get; init; }

    /// <summary>Calibration text or pre-tokenized JSONL of greedy and loss-rank; null = <see cref="DataPath"/>.</summary>
    public string? CalibrationPath { get; init; }

    /// <summary>Chunks of <see cref="SeqLen"/> tokens of the calibration loss (greedy, loss-rank).</summary>
    public int CalibrationChunks { get; init; } = DefaultCalibrationChunks;

    /// <summary>When set, every unhealed variant's decode/prefill speed and memory are measured against the unpruned
    /// model timed in the same call (<see cref="EfficiencyMeter.Measure"/>) and added to its row and the report.</summary>
    public EfficiencyOptions? Efficiency { get; init; }

    /// <summary>libtorch CPU threads while efficiency is measured (restored afterwards); null = the process's setting.</summary>
    public int? EfficiencyThreads { get; init; }

    /// <summary>Output folder (results.json/.csv, report.md, figures); rerunning the same sweep resumes it.</summary>
    public required string OutDir { get; init; }

    /// <summary>Evaluation settings of every task (the validation-loss protocol is <see cref="EvalOptions.Default"/>'s).</summary>
    public EvalOptions Eval { get; init; } = EvalOptions.Default;

    /// <summary>Discard the results of a different sweep found in <see cref="OutDir"/>.</summary>
    public bool Force { get; init; }

    /// <summary>Prompts every variant continues greedily (<see cref="SweepGenerations"/>; e.g.
    /// <see cref="SweepGenerations.DefaultPrompts"/>): the continuations go into the rows and report.md, their degeneration
    /// score into the metric <see cref="SweepGenerations.Column"/>; null = no generations.</summary>
    public IReadOnlyList<string>? Prompts { get; init; }

    /// <summary>Most new tokens per prompt of <see cref="Prompts"/> (stopping at EOS).</summary>
    public int GenerationTokens { get; init; } = SweepGenerations.DefaultMaxNewTokens;

    /// <summary>Bootstrap resamples of the similarity pass's block choice (seeded by <see cref="Seed"/>; in similarity.json,
    /// unstable choices circled on similarity.png); 0 = none.</summary>
    public int Bootstrap { get; init; }

    /// <summary>When set, every pruned variant is also written as a checkpoint, healed (QLoRA) with these settings
    /// (ModelDir/OutDir are filled per variant) and evaluated again as a row with "healed": true.</summary>
    public HealOptions? Heal { get; init; }

    /// <summary>One stage of a sweep split for a cluster (<see cref="SweepStages"/>); null = the whole sweep in this
    /// process.</summary>
    public SweepStage? Stage { get; init; }

    /// <summary>The shard <see cref="SweepStage.Shard"/> runs.</summary>
    public ShardSpec? Shard { get; init; }

    /// <summary>Bytes of residual streams kept to share variants' common first layers (<see cref="SweepPrefixes"/>; the rows
    /// are the same for any value, 0 = no sharing).</summary>
    public long PrefixCacheBytes { get; init; } = SweepPrefixes.DefaultBudgetBytes;

    /// <summary>Units whose variants the sweep evaluates (<see cref="UnitSweep"/>): layer plus attention, mlp and/or sublayer,
    /// all on one axis, removed parameters / decoder parameters; null = whole layers only (the sweep as before units).</summary>
    public IReadOnlyList<PruneUnit>? Units { get; init; }

    /// <summary>Training-free repair methods ("linear", "cosine") whose repaired rows are added beside every pruned variant
    /// (<see cref="SweepRepair"/>; calibration: <see cref="CalibrationPath"/>, <see cref="CalibrationChunks"/>); null = none.</summary>
    public IReadOnlyList<string>? Repair { get; init; }
}
