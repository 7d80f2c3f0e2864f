using Xunit;
using System.Diagnostics;
using LayerPrune.Tokenization;
using static LayerPrune.Tests.Tokenization.TokenizerTestData;

namespace LayerPrune.Tests.Tokenization;

public class SentencePieceTests
{
    [Theory]
    [InlineData("llama2")]
    [InlineData("mistral")]
    public void ReferenceCasesMatchSentencePiece(string model)
    {
        var tok = model == "llama2" ? Llama2 : TokenizerLoader.Load(Tok(model));
        var cases = ReferenceCases(model);
        Assert.Equal(12, cases.Count);
        var failures = cases.Where(c => !tok.EncodeRaw(c.Text).SequenceEqual(c.Ids))
            .Select(c => $"{c.Text}: expected {Show(c.Ids)} got {Show(tok.EncodeRaw(c.Text))}").ToList();
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.Equal(32000, tok.VocabSize);
        Assert.Equal(1, tok.BosId);
        Assert.Equal([2], tok.EosIds);
    }

    /// <summary>SentencePiece breaks equal-score merges towards the leftmost pair; ML.Tokenizers 2.0.1 does not.</summary>
    [Fact]
    public void EqualScoreMergesGoLeftmost()
    {
        // "▁xxxxx…": reference [921 "▁x", 14633 "xxxx" ×9, 12353 "xxx"].
        var ids = Llama2.EncodeRaw(new string('x', 40));
        Assert.Equal([921, 14633, 14633, 14633, 14633, 14633, 14633, 14633, 14633, 14633, 12353], ids);
    }

    [Fact]
    public void LlamaCppSpmVectorsMatch()
    {
        var cases = Vectors("llama-spm");
        Assert.Equal(46, cases.Count);
        var failures = cases.Where(c => !Llama2.EncodeRaw(c.Text).SequenceEqual(c.Ids))
            .Select(c => $"{c.Text}: expected {Show(c.Ids)} got {Show(Llama2.EncodeRaw(c.Text))}").ToList();
        Assert.True(failures.Count == 0, $"{failures.Count}/{cases.Count} differ:\n" + string.Join("\n", failures));
    }

    [Fact]
    public void EncodeAddsBosByDefaultAndDecodeRoundTrips()
    {
        var tok = Llama2; // no tokenizer_config.json: HF LlamaTokenizer defaults (add_bos_token true, add_eos_token false)
        Assert.True(tok.AddsBos);
        Assert.Equal([1, 15043, 3186], tok.Encode("Hello world"));
        foreach (var c in ReferenceCases("llama2"))
            Assert.Equal(c.Text, tok.Decode(tok.Encode(c.Text)));
        Assert.Equal("Hello world", tok.Decode([1, 15043, 3186, 2]));
    }

    [Fact]
    public void Llama2LoadsFast()
    {
        var sw = Stopwatch.StartNew();
        var tok = TokenizerLoader.Load(Tok("llama2"));
        tok.EncodeRaw("warm up");
        sw.Stop();
        Assert.True(sw.ElapsedMilliseconds < 1000, $"load took {sw.ElapsedMilliseconds} ms");
    }
}
