using Xunit;
using LayerPrune.Tokenization;

namespace LayerPrune.Tests.Tokenization;

public sealed class TokenizerLoaderErrorTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("lp-tokerr-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void EmptyDirectoryNamesWhatWasLookedFor()
    {
        var e = Assert.Throws<LayerPruneException>(() => TokenizerLoader.Load(_dir));
        Assert.Equal($"{_dir}: no tokenizer found (looked for tokenizer.json, tokenizer.model, vocab.json + merges.txt)", e.Message);
    }

    [Fact]
    public void MalformedTokenizerJsonReportsTheLine()
    {
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), "{\n  \"model\": {\n    \"type\": \"BPE\",,\n  }\n}");
        var e = Assert.Throws<LayerPruneException>(() => TokenizerLoader.Load(_dir));
        Assert.StartsWith("tokenizer.json: invalid JSON at line 3", e.Message);
    }

    [Fact]
    public void UnsupportedModelTypeIsNamed()
    {
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), """{"model": {"type": "Unigram", "vocab": []}}""");
        var e = Assert.Throws<LayerPruneException>(() => TokenizerLoader.Load(_dir));
        Assert.Equal("tokenizer.json: model type 'Unigram' is not supported (only BPE)", e.Message);
    }

    [Fact]
    public void TruncatedSentencePieceModelIsRejected()
    {
        var bytes = File.ReadAllBytes(TokenizerTestData.Tok("llama2", "tokenizer.model"));
        File.WriteAllBytes(Path.Combine(_dir, "tokenizer.model"), bytes[..1001]);
        var e = Assert.Throws<LayerPruneException>(() => TokenizerLoader.Load(_dir));
        Assert.StartsWith("tokenizer.model: not a valid SentencePiece model", e.Message);
    }

    [Fact]
    public void BadMergesLineAndBadConfigAreNamed()
    {
        File.WriteAllText(Path.Combine(_dir, "vocab.json"), """{"a": 0, "b": 1, "ab": 2, "<s>": 3}""");
        File.WriteAllText(Path.Combine(_dir, "merges.txt"), "#version: 0.2\na b\nab\n");
        Assert.Equal("merges.txt: line 3 is not two tokens separated by one space",
            Assert.Throws<LayerPruneException>(() => TokenizerLoader.Load(_dir)).Message);
        File.WriteAllText(Path.Combine(_dir, "merges.txt"), "a b\nab c\n");
        Assert.Equal("merges.txt: merge 2 'ab c' uses a token that is not in the vocabulary",
            Assert.Throws<LayerPruneException>(() => TokenizerLoader.Load(_dir)).Message);
        File.WriteAllText(Path.Combine(_dir, "merges.txt"), "a b\n");
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """{"add_bos_token": "yes"}""");
        Assert.Equal("tokenizer_config.json: add_bos_token must be true or false",
            Assert.Throws<LayerPruneException>(() => TokenizerLoader.Load(_dir)).Message);
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """{"add_bos_token": true, "bos_token": "<s>"}""");
        File.WriteAllText(Path.Combine(_dir, "config.json"), """{"eos_token_id": [1, 2]}""");
        var tok = TokenizerLoader.Load(_dir);
        Assert.Equal(3, tok.BosId);
        Assert.Equal([1, 2], tok.EosIds); // no eos_token in tokenizer_config: config.json's list
        Assert.Equal([3, 2, 3, 0], tok.Encode("ab<s>a")); // BOS, "ab" merged, "<s>" never split
    }
}
