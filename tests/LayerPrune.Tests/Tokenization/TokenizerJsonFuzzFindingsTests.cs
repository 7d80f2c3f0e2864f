using LayerPrune.Tokenization;

namespace LayerPrune.Tests.Tokenization;

/// <summary>tokenizer.json inputs the fuzzer (issue 27) found crashing the reader: each is now one line or loads.</summary>
public sealed class TokenizerJsonFuzzFindingsTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("lp-tokjson-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    const string Model = "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}";

    LayerPruneException Refused(string json)
    {
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), json);
        var e = Assert.Throws<LayerPruneException>(() => TokenizerLoader.Load(_dir));
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith("tokenizer.json: ", e.Message);
        return e;
    }

    [Fact]
    public void InvalidSplitRegexIsOneLine() => Assert.Contains("Split regex is invalid", Refused(
        $$"""{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\p{l}+"}, "behavior": "Isolated"}, {{Model}}}""").Message);

    [Fact]
    public void PreTokenizerStepAsNormalizerIsOneLine() => Assert.Contains("normalizer type 'Split'", Refused(
        $$"""{"normalizer": {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Isolated"}, {{Model}}}""").Message);

    [Fact]
    public void AnIdGivenTwiceDecodesAsItsFirstToken()
    {
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"),
            """{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 1}, "merges": []}}""");
        var tok = TokenizerLoader.Load(_dir);
        Assert.Equal([0, 1], tok.Encode("ab"));
        Assert.Equal("ab", tok.Decode([0, 1]));
    }
}
