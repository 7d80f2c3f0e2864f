using LayerPrune.Data;

namespace LayerPrune.Evaluation;

/// <summary>
/// Generic multiple choice (<c>mc:FILE</c>): JSONL rows <c>{"context": str, "choices": [str], "label": int}</c>.
/// Requests are (context, choice) with the choices used verbatim (they carry their own leading space, so the
/// target delimiter is empty); acc_norm divides by the length of the choice as written.
/// </summary>
public static class McTask
{
    public static List<EvalDoc> Load(string path, int? limit = null)
    {
        var docs = new List<EvalDoc>();
        foreach (var (line, row) in JsonLines.Read(path))
        {
            if (limit is int l && docs.Count >= l) break;
            var src = $"{path}:{line}";
            docs.Add(EvalDoc.FromChoices(
                JsonLines.GetString(row, "context", path, line),
                JsonLines.GetStringArray(row, "choices", path, line),
                JsonLines.GetInt(row, "label", path, line), subject: null, targetDelimiter: "", source: src));
        }
        if (docs.Count == 0) throw new LayerPruneException($"{path}: no items");
        return docs;
    }
}
