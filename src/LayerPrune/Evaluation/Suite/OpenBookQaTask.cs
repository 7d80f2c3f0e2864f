using System.Text.Json.Nodes;
using LayerPrune.Data;

namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// OpenBookQA (<c>openbookqa:FILE</c>) as lm_eval/tasks/openbookqa/openbookqa.yaml:
/// <code>
/// output_type: multiple_choice          test_split: test
/// doc_to_text: question_stem
/// doc_to_target: "{{choices.label.index(answerKey.lstrip())}}"
/// doc_to_choice: "{{choices.text}}"
/// metric_list: acc (mean), acc_norm (mean)      metadata: version 1.0
/// </code>
/// Rows: AI2's form <c>{id, question: {stem, choices: [{text, label}]}, answerKey}</c> or HF's
/// <c>{id, question_stem, choices: {text, label}, answerKey}</c>.
/// </summary>
public sealed class OpenBookQaTask(TaskSpec spec) : ChoiceSuiteTask(spec)
{
    /// <summary>The <c>openbookqa</c> kind.</summary>
    public static readonly TaskKind Kind = SuiteLimits.Kind("openbookqa", s => new OpenBookQaTask(s));

    /// <inheritdoc/>
    public override LmEvalTaskConfig LmEval => new("openbookqa", "multiple_choice", 1.0)
    {
        DatasetPath = "openbookqa", DatasetName = "main", Split = "test", DocToText = "question_stem",
        DocToTarget = "{{choices.label.index(answerKey.lstrip())}}", DocToChoice = "{{choices.text}}",
        MetricList = [("acc", "mean", true), ("acc_norm", "mean", true)],
    };

    /// <inheritdoc/>
    public override ChoiceDoc ToDoc(JsonObject row, string path, int line)
    {
        var (stem, texts, labels) = ArcTask.Read(row, path, line, flatQuestion: "question_stem");
        string key = PyText.LStrip(JsonLines.GetString(row, "answerKey", path, line));
        int gold = labels.IndexOf(key);
        if (gold < 0)
            throw new LayerPruneException($"{path}:{line}: answerKey \"{key}\" is not one of the labels {string.Join(", ", labels)}");
        return ChoiceDoc.SharedContext(stem, texts, gold, row, $"{path}:{line}");
    }
}
