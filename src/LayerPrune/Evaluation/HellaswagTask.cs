using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LayerPrune.Data;

namespace LayerPrune.Evaluation;

/// <summary>
/// HellaSwag (<c>hellaswag:FILE</c>) as lm_eval/tasks/hellaswag (utils.process_docs): query =
/// preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()), choices = preprocess(ending), target
/// delimiter " ", 0-shot; acc and acc_norm. Accepts the raw HF layout (activity_label, ctx_a, ctx_b, endings, label)
/// and a preprocessed layout <c>{ctx, endings, label}</c> whose ctx is already "activity_label: context" (then
/// preprocess(ctx) is the query; the harness's capitalisation of ctx_b cannot be redone there since ctx_a/ctx_b are
/// not separated).
/// </summary>
public sealed partial class HellaswagTask(TaskSpec spec) : JsonlChoiceTask(spec)
{
    /// <summary>The <c>hellaswag</c> kind: 0-shot only.</summary>
    public static readonly TaskKind Kind = new("hellaswag", s => new HellaswagTask(s));

    [GeneratedRegex(@"\[.*?\]")]
    private static partial Regex Bracketed();

    /// <summary>The harness's preprocess: strip, " [title]" → ". ", drop "[...]" (non-greedy),
    /// "  " → " " (once, left to right).</summary>
    public static string Preprocess(string text)
    {
        text = PyText.Strip(text);
        text = text.Replace(" [title]", ". ", StringComparison.Ordinal);
        text = Bracketed().Replace(text, "");
        return text.Replace("  ", " ", StringComparison.Ordinal);
    }

    /// <summary>The query of the raw layout.</summary>
    public static string Query(string activityLabel, string ctxA, string ctxB) =>
        Preprocess(activityLabel + ": " + ctxA + " " + PyText.Capitalize(ctxB));

    /// <summary>The first <paramref name="limit"/> items of <paramref name="path"/> (all when null).</summary>
    public static List<EvalDoc> Load(string path, int? limit = null) => Read(path, limit, Doc);

    /// <inheritdoc/>
    protected override EvalDoc ToDoc(JsonObject row, string path, int line) => Doc(row, path, line);

    static EvalDoc Doc(JsonObject row, string path, int line)
    {
        bool raw = row["ctx_a"] is not null || row["activity_label"] is not null;
        string query = raw
            ? Query(JsonLines.GetString(row, "activity_label", path, line), JsonLines.GetString(row, "ctx_a", path, line),
                JsonLines.GetString(row, "ctx_b", path, line))
            : Preprocess(JsonLines.GetString(row, "ctx", path, line));
        var choices = JsonLines.GetStringArray(row, "endings", path, line).Select(Preprocess).ToArray();
        int gold = JsonLines.GetInt(row, "label", path, line);
        // The samples file's doc is the row after utils.process_docs, which adds query, choices and gold.
        var doc = row.DeepClone().AsObject();
        doc["query"] = query;
        doc["choices"] = new JsonArray(choices.Select(c => (JsonNode?)c).ToArray());
        doc["gold"] = gold;
        return EvalDoc.FromChoices(query, choices, gold, source: $"{path}:{line}") with { Row = doc };
    }
}
