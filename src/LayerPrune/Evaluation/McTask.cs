using System.Text.Json.Nodes;
using LayerPrune.Data;

namespace LayerPrune.Evaluation;

/// <summary>
/// Generic multiple choice (<c>mc:FILE</c>): JSONL rows <c>{"context": str, "choices": [str], "label": int}</c>.
/// Requests are (context, choice) with the choices used verbatim (they carry their own leading space, so the
/// target delimiter is empty); acc_norm divides by the length of the choice as written.
/// </summary>
public sealed class McTask(TaskSpec spec) : JsonlChoiceTask(spec)
{
    /// <summary>The <c>mc</c> kind: 0-shot only.</summary>
    public static readonly TaskKind Kind = new("mc", s => new McTask(s));

    /// <summary>The first <paramref name="limit"/> items of <paramref name="path"/> (all when null).</summary>
    public static List<EvalDoc> Load(string path, int? limit = null) => Read(path, limit, Doc);

    /// <inheritdoc/>
    protected override EvalDoc ToDoc(JsonObject row, string path, int line) => Doc(row, path, line);

    static EvalDoc Doc(JsonObject row, string path, int line) => EvalDoc.FromChoices(
        JsonLines.GetString(row, "context", path, line),
        JsonLines.GetStringArray(row, "choices", path, line),
        JsonLines.GetInt(row, "label", path, line), subject: null, targetDelimiter: "", source: $"{path}:{line}");
}
