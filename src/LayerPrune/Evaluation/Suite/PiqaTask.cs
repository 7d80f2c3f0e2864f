using System.Text.Json.Nodes;
using LayerPrune.Data;

namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// PIQA (<c>piqa:FILE</c>) as lm_eval/tasks/piqa/piqa.yaml:
/// <code>
/// output_type: multiple_choice          validation_split: validation (the labelled split scored)
/// doc_to_text: "Question: {{goal}}\nAnswer:"
/// doc_to_target: label
/// doc_to_choice: "{{[sol1, sol2]}}"
/// metric_list: acc (mean), acc_norm (mean)      metadata: version 1.0
/// </code>
/// Rows <c>{goal, sol1, sol2, label: 0|1}</c>.
/// </summary>
public sealed class PiqaTask(TaskSpec spec) : ChoiceSuiteTask(spec)
{
    /// <summary>The <c>piqa</c> kind.</summary>
    public static readonly TaskKind Kind = SuiteLimits.Kind("piqa", s => new PiqaTask(s));

    /// <inheritdoc/>
    public override LmEvalTaskConfig LmEval => new("piqa", "multiple_choice", 1.0)
    {
        DatasetPath = "baber/piqa", Split = "validation", NoTestSplit = true, DocToText = "Question: {{goal}}\nAnswer:",
        DocToTarget = "label",
        DocToChoice = "{{[sol1, sol2]}}", MetricList = [("acc", "mean", true), ("acc_norm", "mean", true)],
    };

    /// <inheritdoc/>
    public override ChoiceDoc ToDoc(JsonObject row, string path, int line) => ChoiceDoc.SharedContext(
        $"Question: {JsonLines.GetString(row, "goal", path, line)}\nAnswer:",
        [JsonLines.GetString(row, "sol1", path, line), JsonLines.GetString(row, "sol2", path, line)],
        JsonLines.GetInt(row, "label", path, line), row, $"{path}:{line}");
}
