using System.Text.Json;
using System.Text.Json.Nodes;

namespace LayerPrune;

/// <summary>
/// Parses untrusted JSON (config.json, safetensors headers, shard indexes) into a JsonObject eagerly and strictly:
/// duplicate keys and excessive nesting are rejected up front (JsonObject would otherwise throw ArgumentException
/// lazily on first access), and every parse failure becomes one LayerPruneException naming <paramref name="path"/>.
/// </summary>
public static class JsonInput
{
    public const int MaxDepth = 32;

    static readonly JsonDocumentOptions Strict = new() { MaxDepth = MaxDepth, AllowDuplicateProperties = false };

    /// <param name="what">What the JSON is, when it is not the whole file (e.g. "safetensors header"); null for a .json file.</param>
    public static JsonObject ParseObject(ReadOnlySpan<byte> utf8, string path, string? what)
    {
        string subject = what is null ? "" : what + " ";
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(utf8, documentOptions: Strict);
            Materialize(node); // JsonObject builds its dictionary lazily; force it here so duplicates fail now
        }
        catch (JsonException e) { throw new LayerPruneException($"{path}: {subject}is not valid JSON ({FirstLine(e.Message)})", e); }
        catch (ArgumentException e) { throw new LayerPruneException($"{path}: {subject}is not valid JSON ({FirstLine(e.Message)})", e); }
        return node as JsonObject ?? throw new LayerPruneException($"{path}: {subject}is not a JSON object");
    }

    public static JsonObject ParseObject(string text, string path, string? what) =>
        ParseObject(System.Text.Encoding.UTF8.GetBytes(text), path, what);

    /// <summary>Reads and parses a JSON file; I/O failures (a folder named like the file, permissions) become LayerPruneException.</summary>
    public static JsonObject ReadObject(string path, string? what = null)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new LayerPruneException($"{path}: cannot read ({FirstLine(e.Message)})", e); }
        return ParseObject(bytes, path, what);
    }

    static void Materialize(JsonNode? n)
    {
        switch (n)
        {
            case JsonObject o: foreach (var (_, v) in o) Materialize(v); break;
            case JsonArray a: foreach (var v in a) Materialize(v); break;
        }
    }

    public static string FirstLine(string s) { int i = s.IndexOfAny(['\r', '\n']); return i < 0 ? s : s[..i]; }
}
