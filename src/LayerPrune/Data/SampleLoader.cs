using LayerPrune.Tokenization;

namespace LayerPrune.Data;

/// <summary>Token samples for similarity and healing-validation passes.</summary>
public static class SampleLoader
{
    /// <summary>
    /// A .txt file is chunked exactly as the validation-loss protocol (lines → [BOS]+ids concatenated → consecutive
    /// chunks of seqLen; the first <paramref name="samples"/>); JSONL / Parquet rows (field "text") are one sample each,
    /// truncated to seqLen (the last real token of each is what similarity reads). Pre-tokenized JSONL
    /// (<see cref="PreTokenized"/>) is read verbatim, one sample per row, truncated to seqLen; then <paramref name="tok"/>
    /// may be null and ids are checked against <paramref name="vocabSize"/> when given.
    /// </summary>
    public static List<int[]> Load(string path, ITextTokenizer? tok, int samples, int seqLen, int? vocabSize = null)
    {
        if (samples < 1)
            throw LayerPruneException.Invalid(nameof(samples), samples, "must be at least 1");
        if (seqLen < 2)
            throw LayerPruneException.Invalid(nameof(seqLen), seqLen, "must be at least 2");
        if (PreTokenized.IsPreTokenized(path))
        {
            var rows = PreTokenized.Samples(path, samples, seqLen, vocabSize);
            return rows.Count > 0 ? rows : throw new LayerPruneException($"{path}: no samples");
        }
        ArgumentNullException.ThrowIfNull(tok);
        var result = IsPlainText(path)
            ? TokenChunks.FromLines(TextCorpus.Read(path), tok, seqLen, samples)
            : TokenChunks.PerDocument(TextCorpus.Read(path).Take(samples), tok, seqLen);
        if (result.Count == 0)
            throw new LayerPruneException($"{path}: no samples (empty, or shorter than one sequence of {seqLen} tokens)");
        return result;
    }

    /// <summary>Whether <paramref name="path"/> is plain text (.txt / .text), chunked rather than read by rows.</summary>
    public static bool IsPlainText(string path) => Path.GetExtension(path).ToLowerInvariant() is ".txt" or ".text";
}
