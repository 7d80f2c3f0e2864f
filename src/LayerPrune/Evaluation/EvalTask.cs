using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;

namespace LayerPrune.Evaluation;

/// <summary>
/// An evaluation task (validation loss, MMLU, BoolQ, ...) for one <see cref="TaskSpec"/>. <see cref="Prepare"/> loads
/// and tokenizes the data once; the prepared task then scores any number of models or layer subsets.
/// Add a task: one class implementing this interface (or deriving from <see cref="MultipleChoiceTask"/> or
/// <see cref="JsonlChoiceTask"/>) and one <see cref="EvalTasks.Register"/> call with its <see cref="TaskKind"/>.
/// </summary>
public interface IEvalTask
{
    /// <summary>The parsed spec (kind, path, shots, options).</summary>
    TaskSpec Spec { get; }

    /// <summary>Loads the items and builds their requests (token ids) once.</summary>
    IPreparedTask Prepare(ITextTokenizer tokenizer, EvalOptions options);
}

/// <summary>A task whose requests are built: scores a model, or a subset of its layers, and aggregates the metrics.</summary>
public interface IPreparedTask
{
    /// <summary>The spec this task was prepared from.</summary>
    TaskSpec Spec { get; }

    /// <summary>The metrics the sweep records and the report judges, with their direction and chance level.</summary>
    IReadOnlyList<MetricInfo> Metrics { get; }

    /// <summary>What exactly is measured (e.g. chunks, seq_len, tokens; items, num_fewshot), for the result files.</summary>
    IReadOnlyDictionary<string, double> Protocol { get; }

    /// <summary>Scores <paramref name="model"/> with only <paramref name="layers"/> run (original 0-based indices;
    /// null = all) and aggregates. Progress goes to <paramref name="progress"/> (null: nowhere).</summary>
    TaskScore Score(CausalLM model, IReadOnlyList<int>? layers = null, IProgressSink? progress = null);
}

/// <summary>One metric of a task, as the sweep, plots and report read it.</summary>
/// <param name="Key">Its key in <see cref="TaskScore.Values"/> (e.g. "acc", "validation_loss").</param>
/// <param name="Report">Column name in sweep results (e.g. "mc_acc"), direction and tolerance for report.md.</param>
/// <param name="Chance">The chance level (random guessing), drawn on plots; null when there is none.</param>
/// <param name="AxisLabel">The y-axis label of its plot.</param>
public sealed record MetricInfo(string Key, MetricSpec Report, double? Chance, string AxisLabel)
{
    /// <summary>The column name in sweep rows, results.csv and the plot file name.</summary>
    public string Column => Report.Name;

    /// <summary>Whether a larger value is better (accuracy) or worse (loss).</summary>
    public bool HigherIsBetter => Report.HigherIsBetter;

    /// <summary>An accuracy-like metric of task <paramref name="task"/>: column "TASK_KEY", higher is better.</summary>
    public static MetricInfo Accuracy(string task, string key, double? chance)
    {
        string column = $"{task}_{key}";
        return new MetricInfo(key, MetricSpec.Accuracy(column), chance, column.Replace('_', ' '));
    }

    /// <summary>A loss-like metric: column = <paramref name="key"/>, lower is better.</summary>
    public static MetricInfo Loss(string key, string axisLabel) => new(key, MetricSpec.Loss(key), null, axisLabel);
}

/// <summary>Settings shared by all tasks. The defaults here are the only ones: the CLI and the sweep read them.</summary>
public sealed record EvalOptions
{
    /// <summary>The defaults (the 128 × 256 validation-loss protocol of the reference numbers).</summary>
    public static EvalOptions Default { get; } = new();

    /// <summary>Only the first N items (per subject for MMLU); null = all.</summary>
    public int? Limit { get; init; }

    /// <summary>Items (or loss chunks) per forward batch.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>Validation loss: tokens per chunk.</summary>
    public int SeqLen { get; init; } = 256;

    /// <summary>Validation loss: the first N chunks; null = all.</summary>
    public int? MaxChunks { get; init; } = 128;

    /// <summary>Generation tasks: the token budget per item.</summary>
    public int MaxNewTokens { get; init; } = 256;

    /// <summary>Run the common prefix of a question's choices once (KV cache) instead of once per choice.</summary>
    public bool ReusePrefix { get; init; } = true;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first invalid property.</summary>
    public void Validate()
    {
        if (Limit is < 1) throw new ArgumentOutOfRangeException(nameof(Limit), Limit, "must be at least 1");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "must be at least 1");
        if (SeqLen < 2) throw new ArgumentOutOfRangeException(nameof(SeqLen), SeqLen, "must be at least 2");
        if (MaxChunks is < 1) throw new ArgumentOutOfRangeException(nameof(MaxChunks), MaxChunks, "must be at least 1 (null = all)");
        if (MaxNewTokens < 1) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "must be at least 1");
    }
}
