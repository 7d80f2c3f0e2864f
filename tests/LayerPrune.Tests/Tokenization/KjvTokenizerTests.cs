using Xunit;
using System.Text.Json;
using LayerPrune.Tokenization;

namespace LayerPrune.Tests.Tokenization;

/// <summary>The kjv sample's tokenizer against tests/fixtures/reference/kjv-validation-token-ids.json (from sentencepiece).</summary>
public class KjvTokenizerTests
{
    [Fact]
    public void ValidationProtocolTokenIdsMatchReference()
    {
        var tok = TokenizerLoader.Load(Path.Combine(TestPaths.Samples, "kjv-llama-16l"));
        Assert.Equal(1, tok.BosId);
        Assert.True(tok.AddsBos);
        Assert.Equal(2048, tok.VocabSize);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestPaths.Fixtures, "reference", "kjv-validation-token-ids.json")));
        var root = doc.RootElement;
        int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();

        // Protocol: per line of validation.txt, [BOS] + sp.encode(line), no EOS, all concatenated.
        var lines = File.ReadAllLines(Path.Combine(TestPaths.Samples, "data", "kjv", "validation.txt"));
        var all = new List<int>();
        foreach (var line in lines) all.AddRange(tok.Encode(line));
        Assert.Equal(root.GetProperty("total_tokens").GetInt32(), all.Count);
        Assert.Equal(57189, all.Count);
        Assert.Equal(Ints(root.GetProperty("first_line_ids")), tok.Encode(lines[0]));
        var chunks = root.GetProperty("chunks").EnumerateArray().Select(Ints).ToList();
        Assert.Equal(3, chunks.Count);
        for (int c = 0; c < chunks.Count; c++)
            Assert.Equal(chunks[c], all.Skip(c * 256).Take(256));
        Assert.Equal(lines[0], tok.Decode(tok.Encode(lines[0])));
    }
}
