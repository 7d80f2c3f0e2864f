using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;
using LayerPrune.Tokenization;
using static LayerPrune.Tests.Tokenization.TokenizerTestData;

namespace LayerPrune.Tests.Tokenization;

/// <summary>tokenizer.json files written from the fixture vocabularies must encode like the other load paths.</summary>
public sealed class TokenizerJsonTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("lp-tokjson-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, JsonObject tokenizerJson, JsonObject? tokenizerConfig = null)
    {
        string dir = Path.Combine(_dir, name);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tokenizerJson.ToJsonString());
        if (tokenizerConfig != null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), tokenizerConfig.ToJsonString());
        return dir;
    }

    private static JsonObject VocabObject(string file) => JsonNode.Parse(File.ReadAllText(file))!.AsObject();
    private static IEnumerable<string> MergeLines(string file) =>
        File.ReadLines(file).Where((l, i) => l.Length > 0 && !(i == 0 && l.StartsWith("#version")));

    private static void AssertSameEncoding(ITextTokenizer expected, ITextTokenizer actual, IEnumerable<string> texts)
    {
        var diffs = texts.Where(t => !expected.EncodeRaw(t).SequenceEqual(actual.EncodeRaw(t)))
            .Select(t => $"{t}: {Show(expected.EncodeRaw(t))} vs {Show(actual.EncodeRaw(t))}").ToList();
        Assert.True(diffs.Count == 0, string.Join("\n", diffs));
    }

    [Fact]
    public void Gpt2ByteLevelTokenizerJsonMatchesVocabMerges()
    {
        var json = new JsonObject
        {
            ["added_tokens"] = new JsonArray(new JsonObject { ["id"] = 50256, ["content"] = "<|endoftext|>", ["special"] = true }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["post_processor"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = false, ["use_regex"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false,
                ["vocab"] = VocabObject(Tok("gpt2", "vocab.json")),
                ["merges"] = new JsonArray(MergeLines(Tok("gpt2", "merges.txt")).Select(l => (JsonNode)JsonValue.Create(l)!).ToArray()),
            },
        };
        var tok = TokenizerLoader.Load(Write("gpt2", json));
        Assert.StartsWith("tokenizer.json (BPE, byte-level)", tok.Kind);
        var cases = Vectors("gpt-2");
        foreach (var c in cases) Assert.Equal(c.Ids, tok.EncodeRaw(c.Text));
        AssertSameEncoding(Gpt2, tok, cases.Select(c => c.Text).Append("a<|endoftext|>b"));
        Assert.Equal(cases[^1].Text, tok.Decode(cases[^1].Ids));
        Assert.Empty(tok.PrefixIds); // no template, no tokenizer_config
    }

    [Fact]
    public void Qwen2SplitByteLevelTokenizerJsonMatchesVocabMerges()
    {
        // Qwen2's tokenizer.json layout: NFC normalizer, Sequence[Split(regex), ByteLevel(use_regex false)], merges as pairs.
        var added = new JsonArray(new[] { (151643, "<|endoftext|>"), (151644, "<|im_start|>"), (151645, "<|im_end|>") }
            .Select(t => (JsonNode)new JsonObject { ["id"] = t.Item1, ["content"] = t.Item2, ["special"] = true }).ToArray());
        var json = new JsonObject
        {
            ["added_tokens"] = added,
            ["normalizer"] = new JsonObject { ["type"] = "NFC" },
            ["pre_tokenizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = ByteLevel.Qwen2Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["vocab"] = VocabObject(Tok("qwen2", "vocab.json")),
                ["merges"] = new JsonArray(MergeLines(Tok("qwen2", "merges.txt"))
                    .Select(l => (JsonNode)new JsonArray(l[..l.IndexOf(' ')], l[(l.IndexOf(' ') + 1)..])).ToArray()),
            },
        };
        var cfg = new JsonObject { ["eos_token"] = "<|endoftext|>", ["bos_token"] = null, ["pad_token"] = "<|endoftext|>" };
        var tok = TokenizerLoader.Load(Write("qwen2", json, cfg));
        var texts = Vectors("gpt-2").Select(c => c.Text).Concat(ByteLevelBpeTests.TrickyTexts);
        AssertSameEncoding(Qwen2, tok, texts);
        Assert.Equal(Qwen2.VocabSize, tok.VocabSize);
        Assert.Equal([151643], tok.EosIds);
        Assert.Null(tok.BosId);
    }

    /// <summary>Llama-2's HF tokenizer.json layout (as transformers' LlamaConverter writes it) from the SentencePiece model:
    /// merges ordered by the merged piece's score, byte fallback, Prepend/Replace normalizer, BOS template.</summary>
    private static JsonObject LlamaStyleJson(bool metaspacePreTokenizer)
    {
        var sp = SentencePieceModel.Load(Tok("llama2", "tokenizer.model"));
        var vocab = new JsonObject();
        for (int i = 0; i < sp.VocabSize; i++) vocab[sp.IdToPiece(i)] = i;
        // transformers SentencePieceExtractor: every split of a piece into two pieces is a merge, ranked by the piece's score.
        var merges = new List<(float Score, int Left, int Right, string L, string R)>();
        for (int i = 0; i < sp.VocabSize; i++)
        {
            if (!sp.IsNormal(i)) continue;
            string p = sp.IdToPiece(i);
            for (int k = 1; k < p.Length; k++)
                if (!char.IsLowSurrogate(p[k]) && sp.TryGetId(p[..k], out int l) && sp.TryGetId(p[k..], out int r) && sp.IsNormal(l) && sp.IsNormal(r))
                    merges.Add((sp.Score(i), l, r, p[..k], p[k..]));
        }
        var ordered = merges.OrderByDescending(m => m.Score).ThenBy(m => m.Left).ThenBy(m => m.Right);
        var json = new JsonObject
        {
            ["added_tokens"] = new JsonArray(new[] { (0, "<unk>"), (1, "<s>"), (2, "</s>") }
                .Select(t => (JsonNode)new JsonObject { ["id"] = t.Item1, ["content"] = t.Item2, ["special"] = true }).ToArray()),
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
                ["special_tokens"] = new JsonObject { ["<s>"] = new JsonObject { ["id"] = "<s>", ["ids"] = new JsonArray(1), ["tokens"] = new JsonArray("<s>") } },
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["unk_token"] = "<unk>", ["fuse_unk"] = true, ["byte_fallback"] = true,
                ["vocab"] = vocab,
                ["merges"] = new JsonArray(ordered.Select(m => (JsonNode)JsonValue.Create(m.L + " " + m.R)!).ToArray()),
            },
        };
        if (metaspacePreTokenizer)
        {
            json["normalizer"] = null;
            json["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "\u2581", ["prepend_scheme"] = "first", ["split"] = false };
        }
        else
        {
            json["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = "\u2581" },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "\u2581" }),
            };
            json["pre_tokenizer"] = null;
        }
        return json;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MetaspaceTokenizerJsonMatchesSentencePiece(bool metaspacePreTokenizer)
    {
        var tok = TokenizerLoader.Load(Write(metaspacePreTokenizer ? "llama-metaspace" : "llama-prepend", LlamaStyleJson(metaspacePreTokenizer)));
        Assert.Equal("tokenizer.json (BPE)", tok.Kind);
        Assert.True(tok.AddsBos); // from the TemplateProcessing post-processor
        Assert.Equal([1], tok.PrefixIds);
        // "<s>" is an added (special) token here, as in HF. HF's Metaspace pre-tokenizer does not prepend "▁" to text
        // that already starts with a space, unlike SentencePiece: " a" gives "▁a" there, "▁▁a" in SentencePiece.
        bool Comparable(string t) => !t.Contains("<s>") && !(metaspacePreTokenizer && t.StartsWith(' '));
        var refCases = ReferenceCases("llama2").Where(c => Comparable(c.Text)).ToList();
        Assert.Equal(metaspacePreTokenizer ? 9 : 11, refCases.Count);
        foreach (var c in refCases) Assert.Equal(c.Ids, tok.EncodeRaw(c.Text));
        AssertSameEncoding(Llama2, tok, Vectors("llama-spm").Select(c => c.Text).Where(Comparable));
        if (metaspacePreTokenizer) Assert.Equal([8236, 2913], tok.EncodeRaw(" leading space")); // "▁leading", "▁space"
        // Added tokens are never split. After one, the Prepend normalizer adds "▁" again (15043 "▁Hello"); Metaspace's
        // prepend_scheme "first" does not (10994 "Hello").
        Assert.Equal([1, 1, metaspacePreTokenizer ? 10994 : 15043], tok.Encode("<s>Hello"));
        foreach (var c in refCases) Assert.Equal(c.Text, tok.Decode(tok.Encode(c.Text)));
    }

    [Fact]
    public void TokenizerConfigOverridesTemplateAndNamesTokensAsObjects()
    {
        var cfg = new JsonObject
        {
            ["add_bos_token"] = false, ["add_eos_token"] = true,
            ["bos_token"] = new JsonObject { ["content"] = "<s>", ["lstrip"] = false },
            ["eos_token"] = new JsonObject { ["content"] = "</s>" },
            ["pad_token"] = "<unk>",
        };
        var tok = TokenizerLoader.Load(Write("llama-cfg", LlamaStyleJson(false), cfg));
        Assert.False(tok.AddsBos);
        Assert.True(tok.AddsEos);
        Assert.Equal(0, tok.PadId);
        Assert.Equal([15043, 3186, 2], tok.Encode("Hello world"));
    }
}
