using System.Text.Json.Nodes;
using LayerPrune.Tokenization;

namespace LayerPrune.Data;

/// <summary>
/// Pre-tokenized data: JSONL rows <c>{"input_ids": [1, 523, 88, ...]}</c>, used verbatim (no tokenizer, no BOS added),
/// so the same calibration set can be fed to every tool. A .jsonl/.json/.ndjson file is pre-tokenized when its first row
/// has an <c>input_ids</c> field.
/// </summary>
public static class PreTokenized
{
    /// <summary>The field that holds a row's token ids.</summary>
    public const string Field = "input_ids";

    /// <summary>True when <paramref name="path"/> is JSONL whose first row has an <see cref="Field"/> field.</summary>
    public static bool IsPreTokenized(string path)
    {
        if (Path.GetExtension(path).ToLowerInvariant() is not (".jsonl" or ".json" or ".ndjson")) return false;
        if (!File.Exists(path)) return false;
        foreach (var (_, row) in JsonLines.Read(path)) return row.ContainsKey(Field);
        return false;
    }

    /// <summary>
    /// Every row's ids in file order. Errors name FILE:LINE: a missing or empty array, a non-integer, a negative id, or
    /// an id ≥ <paramref name="vocabSize"/> (when given).
    /// </summary>
    public static IEnumerable<int[]> Read(string path, int? vocabSize = null)
    {
        foreach (var (line, row) in JsonLines.Read(path))
        {
            if (row[Field] is not JsonArray arr)
                throw new LayerPruneException(
                    $"{path}:{line}: missing array field \"{Field}\" (pre-tokenized rows look like {{\"{Field}\": [1, 523, 88]}})");
            if (arr.Count == 0) throw new LayerPruneException($"{path}:{line}: \"{Field}\" is empty");
            var ids = new int[arr.Count];
            for (int i = 0; i < arr.Count; i++)
            {
                if (arr[i] is not JsonValue v || !v.TryGetValue<long>(out long id) || id is < 0 or > int.MaxValue)
                    throw new LayerPruneException(
                        $"{path}:{line}: \"{Field}\"[{i}] must be a non-negative integer, got {arr[i]?.ToJsonString() ?? "null"}");
                if (vocabSize is int V && id >= V)
                    throw new LayerPruneException($"{path}:{line}: \"{Field}\"[{i}] = {id} is outside the model's vocabulary (size {V})");
                ids[i] = (int)id;
            }
            yield return ids;
        }
    }

    /// <summary>One sample per row (the first <paramref name="samples"/>), truncated to <paramref name="seqLen"/>.</summary>
    public static List<int[]> Samples(string path, int samples, int seqLen, int? vocabSize = null) =>
        Read(path, vocabSize).Take(samples).Select(ids => ids.Length > seqLen ? ids[..seqLen] : ids).ToList();

    /// <summary>
    /// The loss protocol on pre-tokenized rows: all rows concatenated in file order (verbatim: nothing added), cut into
    /// consecutive chunks of <paramref name="seqLen"/>, incomplete tail dropped, the first <paramref name="maxChunks"/> kept.
    /// Rows of exactly seqLen ids therefore come back unchanged, one chunk each.
    /// </summary>
    public static List<int[]> Chunks(string path, int seqLen, int? maxChunks = null, int? vocabSize = null)
    {
        if (seqLen < 1) throw new LayerPruneException($"sequence length must be at least 1, got {seqLen}");
        var chunks = new List<int[]>();
        var buffer = new List<int>(seqLen * 2);
        foreach (var ids in Read(path, vocabSize))
        {
            if (maxChunks is int m && chunks.Count >= m) break;
            buffer.AddRange(ids);
            int taken = 0;
            while (buffer.Count - taken >= seqLen && !(maxChunks is int m2 && chunks.Count >= m2))
            {
                chunks.Add(buffer.GetRange(taken, seqLen).ToArray());
                taken += seqLen;
            }
            buffer.RemoveRange(0, taken);
        }
        return chunks;
    }

    /// <summary>
    /// Loss / calibration chunks from any supported file: pre-tokenized JSONL via <see cref="Chunks"/>, otherwise text
    /// through <see cref="TokenChunks.FromLines"/> (which needs <paramref name="tok"/>).
    /// </summary>
    public static List<int[]> LossChunks(string path, ITextTokenizer? tok, int seqLen, int? maxChunks = null, int? vocabSize = null)
    {
        if (IsPreTokenized(path)) return NonEmpty(Chunks(path, seqLen, maxChunks, vocabSize), path, seqLen);
        ArgumentNullException.ThrowIfNull(tok);
        return NonEmpty(TokenChunks.FromLines(TextCorpus.Read(path), tok, seqLen, maxChunks), path, seqLen);
    }

    static List<int[]> NonEmpty(List<int[]> chunks, string path, int seqLen)
    {
        if (chunks.Count == 0) throw new LayerPruneException($"{path}: no chunks (shorter than one sequence of {seqLen} tokens)");
        return chunks;
    }
}
