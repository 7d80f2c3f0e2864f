using System.Text.Json.Nodes;
using LayerPrune.Data;

namespace LayerPrune.Evaluation;

/// <summary>
/// BoolQ (<c>boolq:FILE</c>) as lm_eval/tasks/super_glue/boolq/default.yaml: doc_to_text
/// "{passage}\nQuestion: {question}?\nAnswer:", doc_to_choice ["no", "yes"], target delimiter " ", 0-shot.
/// Rows: <c>{question, passage, answer: bool}</c> (google/boolq) or <c>{question, passage, label: 0|1}</c> (super_glue).
/// </summary>
public static class BoolqTask
{
    public static readonly string[] Choices = ["no", "yes"];

    public static string DocToText(string passage, string question) => $"{passage}\nQuestion: {question}?\nAnswer:";

    public static List<EvalDoc> Load(string path, int? limit = null)
    {
        var docs = new List<EvalDoc>();
        foreach (var (line, row) in JsonLines.Read(path))
        {
            if (limit is int l && docs.Count >= l) break;
            var question = JsonLines.GetString(row, "question", path, line);
            var passage = JsonLines.GetString(row, "passage", path, line);
            int gold;
            if (row["answer"] is JsonValue a && a.TryGetValue<bool>(out var b)) gold = b ? 1 : 0;
            else if (row["label"] is not null) gold = JsonLines.GetInt(row, "label", path, line);
            else throw new LayerPruneException($"{path}:{line}: need a boolean \"answer\" or an integer \"label\" (0 = no, 1 = yes)");
            docs.Add(EvalDoc.FromChoices(DocToText(passage, question), Choices, gold, source: $"{path}:{line}"));
        }
        if (docs.Count == 0) throw new LayerPruneException($"{path}: no items");
        return docs;
    }
}
