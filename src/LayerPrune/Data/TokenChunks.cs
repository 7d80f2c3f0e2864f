using LayerPrune.Tokenization;

namespace LayerPrune.Data;

/// <summary>Turns documents into fixed-length token samples.</summary>
public static class TokenChunks
{
    /// <summary>
    /// The validation-loss protocol: each line is one document; token ids = for each line [BOS] + tokenizer(line)
    /// (BOS only when <see cref="ITextTokenizer.BosId"/> is set; no EOS), all lines concatenated in file order; cut into
    /// consecutive non-overlapping chunks of <paramref name="seqLen"/> tokens starting at 0, drop the incomplete tail,
    /// keep the first <paramref name="maxChunks"/> (all when null). Stops tokenizing once enough chunks exist.
    /// </summary>
    public static List<int[]> FromLines(IEnumerable<string> lines, ITextTokenizer tok, int seqLen, int? maxChunks = null)
    {
        if (seqLen < 1) throw new LayerPruneException($"sequence length must be at least 1, got {seqLen}");
        if (maxChunks is < 0) throw new LayerPruneException($"max chunks must be non-negative, got {maxChunks}");
        var chunks = new List<int[]>();
        var buffer = new List<int>(seqLen * 2);
        if (maxChunks == 0) return chunks;
        foreach (var line in lines)
        {
            if (tok.BosId is int bos) buffer.Add(bos);
            buffer.AddRange(tok.EncodeRaw(line));
            int taken = 0;
            while (buffer.Count - taken >= seqLen)
            {
                chunks.Add(buffer.GetRange(taken, seqLen).ToArray());
                taken += seqLen;
                if (maxChunks is int m && chunks.Count >= m) return chunks;
            }
            if (taken > 0) buffer.RemoveRange(0, taken);
        }
        return chunks;
    }

    /// <summary>One sample per document: [BOS] + ids (BOS only when the tokenizer has one), truncated to
    /// <paramref name="seqLen"/>.</summary>
    public static List<int[]> PerDocument(IEnumerable<string> docs, ITextTokenizer tok, int seqLen)
    {
        if (seqLen < 1) throw new LayerPruneException($"sequence length must be at least 1, got {seqLen}");
        var samples = new List<int[]>();
        foreach (var doc in docs)
        {
            var ids = new List<int>();
            if (tok.BosId is int bos) ids.Add(bos);
            ids.AddRange(tok.EncodeRaw(doc));
            if (ids.Count > seqLen) ids.RemoveRange(seqLen, ids.Count - seqLen);
            if (ids.Count > 0) samples.Add(ids.ToArray());
        }
        return samples;
    }
}
