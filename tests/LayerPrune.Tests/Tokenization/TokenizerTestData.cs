using Xunit;
using System.Text.Json;
using LayerPrune.Tokenization;

namespace LayerPrune.Tests.Tokenization;

/// <summary>Fixture readers and cached tokenizers shared by the tokenizer tests.</summary>
internal static class TokenizerTestData
{
    public static string Tok(params string[] parts) => Path.Combine([TestPaths.Fixtures, "tokenizers", .. parts]);

    private static readonly Lazy<TextTokenizer> Llama2Lazy = new(() => TokenizerLoader.Load(Tok("llama2")));
    private static readonly Lazy<TextTokenizer> Gpt2Lazy = new(() => TokenizerLoader.Load(Tok("gpt2")));
    private static readonly Lazy<TextTokenizer> Qwen2Lazy = new(() => TokenizerLoader.Load(Tok("qwen2")));
    public static TextTokenizer Llama2 => Llama2Lazy.Value;
    public static TextTokenizer Gpt2 => Gpt2Lazy.Value;
    public static TextTokenizer Qwen2 => Qwen2Lazy.Value;

    public sealed record Case(string Text, int[] Ids);

    /// <summary>reference.json: {"cases": [{"text", "ids", "pieces"}]} produced by SentencePiece 0.1.97.</summary>
    public static List<Case> ReferenceCases(string model)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Tok(model, "reference.json")));
        return doc.RootElement.GetProperty("cases").EnumerateArray()
            .Select(c => new Case(c.GetProperty("text").GetString()!, c.GetProperty("ids").EnumerateArray().Select(i => i.GetInt32()).ToArray()))
            .ToList();
    }

    /// <summary>llama.cpp tests/test-tokenizer-0: inputs separated by "\n__ggml_vocab_test__\n", one line of ids per input.</summary>
    public static List<Case> Vectors(string name)
    {
        string inp = File.ReadAllText(Tok("vectors", name + ".inp"));
        var texts = inp.Split("\n__ggml_vocab_test__\n").ToList();
        if (texts[^1].Length == 0) texts.RemoveAt(texts.Count - 1);
        var lines = File.ReadAllLines(Tok("vectors", name + ".out"));
        Assert.Equal(texts.Count, lines.Length);
        return texts.Select((t, i) => new Case(t, lines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray())).ToList();
    }

    public static string Show(IEnumerable<int> ids) => "[" + string.Join(", ", ids) + "]";
}
