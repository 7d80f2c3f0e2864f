using System.Text;

namespace LayerPrune.Tokenization;

/// <summary>
/// Rank-based BPE as in HF tokenizers' models/bpe (and GPT-2's encoder.py): the merge with the lowest rank
/// (line number in merges) goes first, ties to the leftmost; optional byte fallback (&lt;0xNN&gt; tokens), unk,
/// and ignore_merges (a word that is itself a token is emitted whole, as Llama-3's tokenizer.json asks).
/// </summary>
internal sealed class RankBpeModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<(int, int), (int Rank, int Merged)> _merges;
    private readonly int? _unkId;
    private readonly bool _byteFallback, _fuseUnk, _ignoreMerges;
    private readonly int[] _byteIds = Enumerable.Repeat(-1, 256).ToArray();
    private readonly Dictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private const int CacheLimit = 100_000;

    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    public RankBpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, string file,
        string? unkToken = null, bool byteFallback = false, bool fuseUnk = false, bool ignoreMerges = false)
    {
        _vocab = vocab;
        _merges = new Dictionary<(int, int), (int, int)>(merges.Count);
        for (int r = 0; r < merges.Count; r++)
        {
            var (a, b) = merges[r];
            if (!vocab.TryGetValue(a, out int ia) || !vocab.TryGetValue(b, out int ib) || !vocab.TryGetValue(a + b, out int im))
                throw new LayerPruneException($"{file}: merge {r + 1} '{a} {b}' uses a token that is not in the vocabulary");
            _merges.TryAdd((ia, ib), (r, im)); // a repeated merge keeps its first (best) rank
        }
        if (unkToken != null && vocab.TryGetValue(unkToken, out int unk)) _unkId = unk;
        _byteFallback = byteFallback; _fuseUnk = fuseUnk; _ignoreMerges = ignoreMerges;
        if (byteFallback)
            for (int b = 0; b < 256; b++)
                if (vocab.TryGetValue($"<0x{b:X2}>", out int id)) _byteIds[b] = id;
    }

    public void EncodeWord(string word, List<int> output)
    {
        if (word.Length == 0) return;
        if (_ignoreMerges && _vocab.TryGetValue(word, out int whole)) { output.Add(whole); return; }
        if (_cache.TryGetValue(word, out var cached)) { output.AddRange(cached); return; }
        var symbols = new List<int>(word.Length);
        bool prevUnk = false;
        for (int i = 0; i < word.Length;)
        {
            int len = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            string ch = word.Substring(i, len);
            i += len;
            if (_vocab.TryGetValue(ch, out int id)) { symbols.Add(id); prevUnk = false; continue; }
            if (_byteFallback)
            {
                var bytes = Encoding.UTF8.GetBytes(ch);
                if (bytes.All(b => _byteIds[b] >= 0)) { foreach (var b in bytes) symbols.Add(_byteIds[b]); prevUnk = false; continue; }
            }
            if (_unkId is int u)
            {
                if (!(_fuseUnk && prevUnk)) symbols.Add(u);
                prevUnk = true;
            }
            // No unk token: HF tokenizers drops the character.
        }
        BpeMerger.Merge(symbols, TryMerge);
        if (_cache.Count < CacheLimit) _cache[word] = symbols.ToArray();
        output.AddRange(symbols);
    }

    private bool TryMerge(int left, int right, out double priority, out int merged)
    {
        if (_merges.TryGetValue((left, right), out var m)) { priority = m.Rank; merged = m.Merged; return true; }
        priority = 0; merged = -1;
        return false;
    }
}
