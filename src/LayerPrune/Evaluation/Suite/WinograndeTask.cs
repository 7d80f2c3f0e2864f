using System.Text.Json.Nodes;
using LayerPrune.Data;

namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// WinoGrande (<c>winogrande:FILE</c>) as lm_eval/tasks/winogrande/default.yaml with preprocess_winogrande.py —
/// partial scoring (Trinh &amp; Le 2018): the options fill the blank in the context, the text after the blank is one
/// shared continuation, and the option whose context gives that continuation the higher log-likelihood is chosen.
/// <code>
/// output_type: multiple_choice          validation_split: validation (winogrande_xl)
/// doc_to_text: !function preprocess_winogrande.doc_to_text      # {"1": 0, "2": 1}[answer]: the gold context's index
/// doc_to_target: !function preprocess_winogrande.doc_to_target  # sentence[sentence.index("_") + 1:].strip()
/// doc_to_choice: !function preprocess_winogrande.doc_to_choice  # [sentence[:idx] + option1, sentence[:idx] + option2]
/// metric_list: acc (mean)               metadata: version 1.0
/// </code>
/// Since doc_to_text is an index, the harness makes the choices the contexts and the target the continuation
/// (target_delimiter " " before it): requests (sentence[:idx] + option, " " + rest).
/// Rows <c>{sentence, option1, option2, answer: "1"|"2"}</c>.
/// </summary>
public sealed class WinograndeTask(TaskSpec spec) : ChoiceSuiteTask(spec)
{
    /// <summary>The <c>winogrande</c> kind.</summary>
    public static readonly TaskKind Kind = SuiteLimits.Kind("winogrande", s => new WinograndeTask(s));

    /// <inheritdoc/>
    public override LmEvalTaskConfig LmEval => new("winogrande", "multiple_choice", 1.0)
    {
        DatasetPath = "winogrande", DatasetName = "winogrande_xl", Split = "validation", NoTestSplit = true,
        DocToText = "!function preprocess_winogrande.doc_to_text", DocToTarget = "!function preprocess_winogrande.doc_to_target",
        DocToChoice = "!function preprocess_winogrande.doc_to_choice", MetricList = [("acc", "mean", true)],
    };

    /// <inheritdoc/>
    protected override bool HasAccNorm => false;

    /// <inheritdoc/>
    public override ChoiceDoc ToDoc(JsonObject row, string path, int line)
    {
        string sentence = JsonLines.GetString(row, "sentence", path, line);
        string[] options = [JsonLines.GetString(row, "option1", path, line), JsonLines.GetString(row, "option2", path, line)];
        string answer = JsonLines.GetString(row, "answer", path, line);
        int gold = answer switch
        {
            "1" => 0,
            "2" => 1,
            _ => throw new LayerPruneException($"{path}:{line}: field \"answer\" must be \"1\" or \"2\", got \"{answer}\""),
        };
        int idx = sentence.IndexOf('_');
        if (idx < 0) throw new LayerPruneException($"{path}:{line}: field \"sentence\" has no blank \"_\"");
        string target = PyText.Strip(sentence[(idx + 1)..]);
        var contexts = options.Select(o => sentence[..idx] + o).ToArray();
        string continuation = " " + target;
        return new ChoiceDoc(contexts, [continuation, continuation], gold, null, row, contexts[gold] + continuation)
        {
            Target = JsonValue.Create(target),
        };
    }
}
