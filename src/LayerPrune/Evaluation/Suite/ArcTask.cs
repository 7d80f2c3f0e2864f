using System.Text.Json.Nodes;
using LayerPrune.Data;

namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// ARC (<c>arc_easy:FILE</c>, <c>arc_challenge:FILE</c>) as lm_eval/tasks/arc/arc_easy.yaml (arc_challenge.yaml
/// includes it and changes only the dataset name):
/// <code>
/// output_type: multiple_choice          test_split: test
/// doc_to_text: "Question: {{question}}\nAnswer:"
/// doc_to_target: "{{choices.label.index(answerKey)}}"
/// doc_to_choice: "{{choices.text}}"
/// metric_list: acc (mean), acc_norm (mean)      metadata: version 1.0
/// </code>
/// Rows: AI2's own form <c>{id, question: {stem, choices: [{text, label}]}, answerKey}</c> or HF's flat form
/// <c>{id, question, choices: {text: [..], label: [..]}, answerKey}</c>.
/// </summary>
public sealed class ArcTask(TaskSpec spec) : ChoiceSuiteTask(spec)
{
    /// <summary>The <c>arc_easy</c> kind.</summary>
    public static readonly TaskKind EasyKind = SuiteLimits.Kind("arc_easy", s => new ArcTask(s));

    /// <summary>The <c>arc_challenge</c> kind.</summary>
    public static readonly TaskKind ChallengeKind = SuiteLimits.Kind("arc_challenge", s => new ArcTask(s));

    /// <inheritdoc/>
    public override LmEvalTaskConfig LmEval => new(Spec.Kind, "multiple_choice", 1.0)
    {
        DatasetPath = "allenai/ai2_arc", DatasetName = Spec.Kind == "arc_easy" ? "ARC-Easy" : "ARC-Challenge", Split = "test",
        DocToText = "Question: {{question}}\nAnswer:", DocToTarget = "{{choices.label.index(answerKey)}}",
        DocToChoice = "{{choices.text}}", MetricList = [("acc", "mean", true), ("acc_norm", "mean", true)],
    };

    /// <summary>doc_to_text.</summary>
    public static string DocToText(string question) => $"Question: {question}\nAnswer:";

    /// <inheritdoc/>
    public override ChoiceDoc ToDoc(JsonObject row, string path, int line)
    {
        var (question, texts, labels) = Read(row, path, line);
        string key = JsonLines.GetString(row, "answerKey", path, line);
        int gold = labels.IndexOf(key);
        if (gold < 0)
            throw new LayerPruneException($"{path}:{line}: answerKey \"{key}\" is not one of the labels {string.Join(", ", labels)}");
        return ChoiceDoc.SharedContext(DocToText(question), texts, gold, row, $"{path}:{line}");
    }

    /// <summary>(question, choice texts, choice labels) from either layout; a missing field is named with its path.</summary>
    public static (string Question, List<string> Texts, List<string> Labels) Read(JsonObject row, string path, int line,
        string flatQuestion = "question")
    {
        if (row["question"] is JsonObject q)
        {
            string stem = JsonLines.GetString(q, "stem", path, line, "question.");
            if (q["choices"] is not JsonArray arr)
                throw new LayerPruneException($"{path}:{line}: missing array field \"question.choices\"");
            var texts = new List<string>();
            var labels = new List<string>();
            foreach (var c in arr)
            {
                if (c is not JsonObject co) throw new LayerPruneException($"{path}:{line}: \"question.choices\" must hold objects");
                texts.Add(JsonLines.GetString(co, "text", path, line, "question.choices[]."));
                labels.Add(JsonLines.GetString(co, "label", path, line, "question.choices[]."));
            }
            return (stem, texts, labels);
        }
        string question = JsonLines.GetString(row, flatQuestion, path, line);
        if (row["choices"] is not JsonObject ch) throw new LayerPruneException($"{path}:{line}: missing object field \"choices\"");
        return (question, JsonLines.GetStringArray(ch, "text", path, line, "choices.").ToList(),
            JsonLines.GetStringArray(ch, "label", path, line, "choices.").ToList());
    }
}
