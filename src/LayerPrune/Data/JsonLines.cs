using System.Text.Json;
using System.Text.Json.Nodes;

namespace LayerPrune.Data;

/// <summary>One JSON object per line (JSONL), streamed; blank lines are skipped; errors name FILE:LINE.</summary>
public static class JsonLines
{
    /// <summary>Yields (1-based line number, object) for every non-blank line of <paramref name="path"/>.</summary>
    public static IEnumerable<(int Line, JsonObject Row)> Read(string path)
    {
        if (!File.Exists(path)) throw new LayerPruneException($"{path}: file not found");
        using var reader = new StreamReader(path, System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        int lineNo = 0;
        string? line;
        while ((line = reader.ReadLine()) != null)
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonNode? node;
            try { node = JsonNode.Parse(line); }
            catch (JsonException e) { throw new LayerPruneException($"{path}:{lineNo}: invalid JSON ({e.Message})", e); }
            if (node is not JsonObject obj) throw new LayerPruneException($"{path}:{lineNo}: expected a JSON object");
            yield return (lineNo, obj);
        }
    }

    /// <summary>A required string field; <paramref name="parent"/> (e.g. "question.") prefixes a nested field's name.</summary>
    public static string GetString(JsonObject row, string field, string path, int line, string parent = "")
    {
        var v = row[field];
        if (v is JsonValue jv && jv.TryGetValue<string>(out var s)) return s;
        throw new LayerPruneException(v is null
            ? $"{path}:{line}: missing string field \"{parent}{field}\""
            : $"{path}:{line}: field \"{parent}{field}\" must be a string, got {v.ToJsonString()}");
    }

    /// <summary>A required integer field; also accepts a string holding an integer (HF hellaswag stores label as "3").</summary>
    public static int GetInt(JsonObject row, string field, string path, int line)
    {
        var v = row[field];
        if (v is JsonValue jv)
        {
            if (jv.TryGetValue<int>(out var i)) return i;
            if (jv.TryGetValue<long>(out var l) && l is >= int.MinValue and <= int.MaxValue) return (int)l;
            if (jv.TryGetValue<double>(out var d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue) return (int)d;
            if (jv.TryGetValue<string>(out var s) && int.TryParse(s.Trim(), System.Globalization.NumberStyles.Integer,
                    System.Globalization.CultureInfo.InvariantCulture, out var p)) return p;
        }
        throw new LayerPruneException(v is null
            ? $"{path}:{line}: missing integer field \"{field}\""
            : $"{path}:{line}: field \"{field}\" must be an integer, got {v.ToJsonString()}");
    }

    /// <summary>A required array-of-strings field; <paramref name="parent"/> prefixes a nested field's name.</summary>
    public static IReadOnlyList<string> GetStringArray(JsonObject row, string field, string path, int line, string parent = "")
    {
        if (row[field] is not JsonArray arr)
            throw new LayerPruneException($"{path}:{line}: missing array field \"{parent}{field}\"");
        var list = new List<string>(arr.Count);
        foreach (var item in arr)
        {
            if (item is JsonValue jv && jv.TryGetValue<string>(out var s)) list.Add(s);
            else throw new LayerPruneException(
                $"{path}:{line}: field \"{parent}{field}\" must hold only strings, got {item?.ToJsonString() ?? "null"}");
        }
        return list;
    }
}
