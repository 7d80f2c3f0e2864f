using System.Text.Json.Nodes;
using LayerPrune.Data;

namespace LayerPrune.Evaluation;

/// <summary>
/// BoolQ (<c>boolq:FILE</c>) as lm_eval/tasks/super_glue/boolq/default.yaml: doc_to_text
/// "{passage}\nQuestion: {question}?\nAnswer:", doc_to_choice ["no", "yes"], target delimiter " ", 0-shot.
/// Rows: <c>{question, passage, answer: bool}</c> (google/boolq) or <c>{question, passage, label: 0|1}</c> (super_glue).
/// </summary>
public sealed class BoolqTask(TaskSpec spec) : JsonlChoiceTask(spec)
{
    /// <summary>The <c>boolq</c> kind: 0-shot only.</summary>
    public static readonly TaskKind Kind = new("boolq", s => new BoolqTask(s));

    /// <summary>doc_to_choice.</summary>
    public static readonly string[] Choices = ["no", "yes"];

    /// <summary>doc_to_text.</summary>
    public static string DocToText(string passage, string question) => $"{passage}\nQuestion: {question}?\nAnswer:";

    /// <summary>The first <paramref name="limit"/> items of <paramref name="path"/> (all when null).</summary>
    public static List<EvalDoc> Load(string path, int? limit = null) => Read(path, limit, Doc);

    /// <inheritdoc/>
    protected override EvalDoc ToDoc(JsonObject row, string path, int line) => Doc(row, path, line);

    static EvalDoc Doc(JsonObject row, string path, int line)
    {
        var question = JsonLines.GetString(row, "question", path, line);
        var passage = JsonLines.GetString(row, "passage", path, line);
        int gold;
        if (row["answer"] is JsonValue a && a.TryGetValue<bool>(out var b))
            gold = b ? 1 : 0;
        else if (row["label"] is not null)
            gold = JsonLines.GetInt(row, "label", path, line);
        else
            throw new LayerPruneException($"{path}:{line}: need a boolean \"answer\" or an integer \"label\" (0 = no, 1 = yes)");
        return EvalDoc.FromChoices(DocToText(passage, question), Choices, gold, source: $"{path}:{line}");
    }
}
