using System.Text.Json.Nodes;

namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// What lm-evaluation-harness's task YAML says about a task, recorded under "configs" and "versions" of the results
/// file so that a reader sees the prompt template that was used (the harness writes its TaskConfig there).
/// </summary>
/// <param name="Task">The task name (e.g. "arc_easy").</param>
/// <param name="OutputType">multiple_choice, loglikelihood, loglikelihood_rolling or generate_until.</param>
/// <param name="Version">metadata.version of the YAML.</param>
public sealed record LmEvalTaskConfig(string Task, string OutputType, double Version)
{
    /// <summary>dataset_path (the HF dataset the harness downloads).</summary>
    public string? DatasetPath { get; init; }

    /// <summary>dataset_name (the HF config), or null.</summary>
    public string? DatasetName { get; init; }

    /// <summary>The split scored (test_split, or validation_split when there is no test split).</summary>
    public string? Split { get; init; }

    /// <summary>doc_to_text as the YAML writes it.</summary>
    public string? DocToText { get; init; }

    /// <summary>doc_to_target as the YAML writes it.</summary>
    public string? DocToTarget { get; init; }

    /// <summary>doc_to_choice as the YAML writes it.</summary>
    public string? DocToChoice { get; init; }

    /// <summary>target_delimiter (the harness's default is one space).</summary>
    public string TargetDelimiter { get; init; } = " ";

    /// <summary>The YAML's test_split is null (the scored split is validation_split). The harness's sampler then finds
    /// fewshot_split == test_split (both None) and draws num_fewshot + 1 examples per document
    /// (ContextSampler.get_context), which changes the later draws.</summary>
    public bool NoTestSplit { get; init; }

    /// <summary>fewshot_delimiter (default "\n\n").</summary>
    public string FewshotDelimiter { get; init; } = "\n\n";

    /// <summary>generation_kwargs (generate_until tasks), e.g. until and max_gen_toks.</summary>
    public JsonObject? GenerationKwargs { get; init; }

    /// <summary>metric_list: name, aggregation, higher_is_better.</summary>
    public IReadOnlyList<(string Metric, string Aggregation, bool HigherIsBetter)> MetricList { get; init; } = [];

    /// <summary>How our run differs from the harness's for this task (data layout, shot sampling, ...); empty when not at all.</summary>
    public string? Deviation { get; init; }

    /// <summary>The "configs" entry of the results file for a run with <paramref name="numFewshot"/> shots.</summary>
    public JsonObject ToJson(int numFewshot, string dataFile)
    {
        var metrics = new JsonArray();
        foreach (var (m, agg, hib) in MetricList)
            metrics.Add(new JsonObject { ["metric"] = m, ["aggregation"] = agg, ["higher_is_better"] = hib });
        var o = new JsonObject
        {
            ["task"] = Task,
            ["dataset_path"] = DatasetPath,
            ["dataset_name"] = DatasetName,
            ["test_split"] = Split,
            ["data_file"] = dataFile,
            ["doc_to_text"] = DocToText,
            ["doc_to_target"] = DocToTarget,
            ["doc_to_choice"] = DocToChoice,
            ["description"] = "",
            ["target_delimiter"] = TargetDelimiter,
            ["fewshot_delimiter"] = FewshotDelimiter,
            ["num_fewshot"] = numFewshot,
            ["metric_list"] = metrics,
            ["output_type"] = OutputType,
            ["repeats"] = 1,
            ["metadata"] = new JsonObject { ["version"] = Version },
        };
        if (GenerationKwargs is not null) o["generation_kwargs"] = GenerationKwargs.DeepClone();
        if (Deviation is not null) o["layerprune_deviation"] = Deviation;
        return o;
    }
}

/// <summary>A prepared task that knows its lm-eval YAML (for the results file's configs/versions).</summary>
public interface ILmEvalTask
{
    /// <summary>The YAML facts.</summary>
    LmEvalTaskConfig LmEval { get; }

    /// <summary>Documents in the data file before any limit (lm-eval's n-samples "original").</summary>
    int Documents { get; }
}
