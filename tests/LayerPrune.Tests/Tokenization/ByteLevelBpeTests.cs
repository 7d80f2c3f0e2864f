using Xunit;
using LayerPrune.Tokenization;
using static LayerPrune.Tests.Tokenization.TokenizerTestData;

namespace LayerPrune.Tests.Tokenization;

public class ByteLevelBpeTests
{
    [Fact]
    public void LlamaCppGpt2VectorsMatch()
    {
        var tok = Gpt2;
        Assert.StartsWith("vocab.json + merges.txt (GPT-2", tok.Kind);
        var cases = Vectors("gpt-2");
        Assert.Equal(46, cases.Count);
        var failures = cases.Where(c => !tok.EncodeRaw(c.Text).SequenceEqual(c.Ids))
            .Select(c => $"{c.Text}: expected {Show(c.Ids)} got {Show(tok.EncodeRaw(c.Text))}").ToList();
        Assert.True(failures.Count == 0, $"{failures.Count}/{cases.Count} differ:\n" + string.Join("\n", failures));
        // Byte-level BPE is lossless.
        foreach (var c in cases) Assert.Equal(c.Text, tok.Decode(c.Ids));
    }

    [Fact]
    public void Gpt2SpecialTokensWithoutTokenizerConfig()
    {
        var tok = Gpt2; // GPT2Tokenizer defaults: bos = eos = "<|endoftext|>" (50256 in vocab.json), no BOS added
        Assert.Equal(50256, tok.BosId);
        Assert.Equal([50256], tok.EosIds);
        Assert.False(tok.AddsBos);
        Assert.Equal(50257, tok.VocabSize);
        // vocab.json: "Hello" 15496, "Ġworld" 995; the special token is never split.
        Assert.Equal([15496, 995, 50256, 15496], tok.Encode("Hello world<|endoftext|>Hello"));
        Assert.Equal("Hello world", tok.Decode([15496, 995, 50256]));
    }

    public static readonly string[] TrickyTexts =
    [
        "Hello world", "", " ", "   leading and trailing   ", "tabs\tand\nnewlines\r\n\n",
        "naïve café — déjà vu", "emoji 🦙 and 中文 text", "🦙abc x🦙y 𝒜𝒷𝒸 𠀀𠀁", "Ünïcödé NFC: e\u0301 vs é",
        "I'm sure you'll see they've it's WE'RE", "3.14159 and 1234567", "<|im_start|>user\nhi<|im_end|>\n",
        "```csharp\nvar x = 1;\n```", "\u200b zero width\u00a0nbsp",
    ];
    public static TheoryData<string> TrickyStrings => new(TrickyTexts);

    [Theory]
    [MemberData(nameof(TrickyStrings))]
    public void Qwen2RoundTrips(string text)
    {
        var tok = Qwen2;
        var ids = tok.EncodeRaw(text);
        // Qwen2Tokenizer normalizes to NFC, so that is what comes back.
        Assert.Equal(text.Normalize(System.Text.NormalizationForm.FormC), TokenizerDecodeKeepingAdded(tok, ids));
        Assert.All(ids, id => Assert.InRange(id, 0, tok.VocabSize - 1));
    }

    // <|im_start|>/<|im_end|> are special (skipped by Decode); put their text back for the round trip.
    private static string TokenizerDecodeKeepingAdded(TextTokenizer tok, IReadOnlyList<int> ids) =>
        string.Concat(Split(ids).Select(run => run.Special switch
        {
            151643 => "<|endoftext|>", 151644 => "<|im_start|>", 151645 => "<|im_end|>", _ => tok.Decode(run.Ids),
        }));

    private static IEnumerable<(int Special, List<int> Ids)> Split(IReadOnlyList<int> ids)
    {
        var run = new List<int>();
        foreach (int id in ids)
        {
            if (id < 151643) { run.Add(id); continue; }
            if (run.Count > 0) { yield return (-1, run); run = []; }
            yield return (id, []);
        }
        if (run.Count > 0) yield return (-1, run);
    }

    [Fact]
    public void Qwen2IdsCheckedByHandAgainstVocabJson()
    {
        var tok = Qwen2;
        Assert.StartsWith("vocab.json + merges.txt (Qwen2", tok.Kind);
        Assert.Null(tok.BosId); // "bos_token": null
        Assert.False(tok.AddsBos);
        Assert.Equal([151643], tok.EosIds);
        Assert.Equal(151643, tok.PadId);
        Assert.Equal(151646, tok.VocabSize);
        // vocab.json: "Hello" 9707, "Ġworld" 1879, "!" 0, "ĠHello" 21927, "1" 16, "2" 17, "3" 18, "ĊĊ" 271.
        Assert.Equal([9707, 1879, 0], tok.Encode("Hello world!"));
        Assert.Equal([21927, 220, 16, 17, 18], tok.Encode(" Hello 123")); // Qwen2 splits digits one by one
        Assert.Equal([151644, 9707, 151645, 271], tok.Encode("<|im_start|>Hello<|im_end|>\n\n"));
        Assert.Equal("Hello world!", tok.Decode([151643, 9707, 1879, 0, 151643]));
    }
}
