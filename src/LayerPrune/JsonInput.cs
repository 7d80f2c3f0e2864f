using System.Text.Json;
using System.Text.Json.Nodes;

namespace LayerPrune;

/// <summary>
/// Parses untrusted JSON (config.json, safetensors headers, shard indexes) into a JsonObject eagerly and strictly:
/// duplicate keys and excessive nesting are rejected up front (JsonObject would otherwise throw ArgumentException
/// lazily on first access), and every parse failure becomes one LayerPruneException naming the file.
/// </summary>
public static class JsonInput
{
    /// <summary>Deepest nesting accepted.</summary>
    public const int MaxDepth = 32;

    static readonly System.Text.UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    static readonly JsonDocumentOptions Strict = new() { MaxDepth = MaxDepth, AllowDuplicateProperties = false };

    /// <param name="what">What the JSON is, when it is not the whole file (e.g. "safetensors header"); null for a .json file.</param>
    /// <summary>Parses UTF-8 bytes into an object; one LayerPruneException naming <paramref name="path"/> on any failure.</summary>
    /// <param name="utf8">The JSON bytes.</param>
    /// <param name="path">The file the bytes come from (named in errors).</param>
    public static JsonObject ParseObject(ReadOnlySpan<byte> utf8, string path, string? what)
    {
        string subject = what is null ? "" : what + " ";
        JsonNode? node;
        try
        {
            _ = StrictUtf8.GetCharCount(utf8); // invalid UTF-8 would otherwise surface later, when a string is first read
            node = JsonNode.Parse(utf8, documentOptions: Strict);
            Materialize(node); // JsonObject builds its dictionary and strings lazily; force both here so bad input fails now
        }
        catch (JsonException e) { throw new LayerPruneException($"{path}: {subject}is not valid JSON ({FirstLine(e.Message)})", e); }
        catch (System.Text.DecoderFallbackException e)
        {
            throw new LayerPruneException($"{path}: {subject}is not valid UTF-8 ({FirstLine(e.Message)})", e);
        }
        catch (InvalidOperationException e)
        {
            throw new LayerPruneException($"{path}: {subject}is not valid JSON ({FirstLine(e.Message)})", e);
        }
        catch (ArgumentException e) { throw new LayerPruneException($"{path}: {subject}is not valid JSON ({FirstLine(e.Message)})", e); }
        return node as JsonObject ?? throw new LayerPruneException($"{path}: {subject}is not a JSON object");
    }

    /// <summary>Parses <paramref name="text"/> like the UTF-8 overload.</summary>
    /// <param name="text">The JSON text.</param>
    /// <param name="path">The file the text comes from (named in errors).</param>
    /// <param name="what">What the JSON is, when it is not the whole file; null for a .json file.</param>
    public static JsonObject ParseObject(string text, string path, string? what) =>
        ParseObject(System.Text.Encoding.UTF8.GetBytes(text), path, what);

    /// <summary>Reads and parses a JSON file; I/O failures (a folder named like the file, permissions) become
    /// LayerPruneException.</summary>
    public static JsonObject ReadObject(string path, string? what = null)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LayerPruneException($"{path}: cannot read ({FirstLine(e.Message)})", e);
        }
        return ParseObject(bytes, path, what);
    }

    static void Materialize(JsonNode? n)
    {
        switch (n)
        {
            case JsonObject o: foreach (var (_, v) in o) Materialize(v); break;
            case JsonArray a: foreach (var v in a) Materialize(v); break;
            case JsonValue v when v.GetValueKind() == JsonValueKind.String:
                _ = v.GetValue<string>(); // unescapes now (lone surrogates fail here)
                break;
        }
    }

    /// <summary><paramref name="s"/> up to its first line break.</summary>
    public static string FirstLine(string s) { int i = s.IndexOfAny(['\r', '\n']); return i < 0 ? s : s[..i]; }
}
