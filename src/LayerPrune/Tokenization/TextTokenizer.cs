namespace LayerPrune.Tokenization;

/// <summary>
/// The <see cref="ITextTokenizer"/> that <see cref="TokenizerLoader"/> builds: added/special tokens are cut out of
/// the text first (never split, as HF does), each remaining segment goes through the model's encoder, and
/// <see cref="Encode"/> wraps the ids in the model's prefix (BOS) and suffix (EOS) tokens.
/// </summary>
public sealed class TextTokenizer : ITextTokenizer
{
    internal delegate void SegmentEncoder(string segment, bool isFirstSegment, List<int> output);
    internal delegate string SegmentDecoder(IReadOnlyList<int> ids, bool atStart);

    private readonly SegmentEncoder _encode;
    private readonly SegmentDecoder _decode;
    private readonly Dictionary<char, (string Content, int Id)[]> _addedByFirstChar;
    private readonly Dictionary<int, string> _addedById;
    private readonly HashSet<int> _special;
    private readonly int[] _prefix, _suffix;

    internal TextTokenizer(string kind, SegmentEncoder encode, SegmentDecoder decode,
        IReadOnlyDictionary<string, int> addedTokens, IEnumerable<int> specialIds,
        int? bosId, IReadOnlyList<int> eosIds, int? padId, IReadOnlyList<int> prefix, IReadOnlyList<int> suffix, int vocabSize)
    {
        Kind = kind; _encode = encode; _decode = decode;
        _addedByFirstChar = addedTokens.Where(kv => kv.Key.Length > 0)
            .GroupBy(kv => kv.Key[0])
            .ToDictionary(g => g.Key, g => g.Select(kv => (kv.Key, kv.Value)).OrderByDescending(t => t.Key.Length).ToArray());
        _addedById = addedTokens.GroupBy(kv => kv.Value).ToDictionary(g => g.Key, g => g.First().Key);
        _special = [.. specialIds];
        BosId = bosId; EosIds = eosIds; PadId = padId;
        _prefix = [.. prefix]; _suffix = [.. suffix];
        VocabSize = vocabSize;
    }

    /// <summary>Which loader path built this tokenizer, e.g. "tokenizer.model (SentencePiece BPE)".</summary>
    public string Kind { get; }
    /// <inheritdoc/>
    public int? BosId { get; }
    /// <inheritdoc/>
    public IReadOnlyList<int> EosIds { get; }
    /// <inheritdoc/>
    public int? PadId { get; }
    /// <inheritdoc/>
    public bool AddsBos => BosId is int b && _prefix.Contains(b);
    /// <summary>Whether <see cref="Encode"/> appends an EOS token (tokenizer_config add_eos_token, or the tokenizer.json
    /// template).</summary>
    public bool AddsEos => _suffix.Any(EosIds.Contains);
    /// <inheritdoc/>
    public int VocabSize { get; }
    /// <summary>Ids <see cref="Encode"/> puts before / after the text.</summary>
    public IReadOnlyList<int> PrefixIds => _prefix;
    /// <summary>Ids <see cref="Encode"/> puts after the text.</summary>
    public IReadOnlyList<int> SuffixIds => _suffix;

    /// <inheritdoc/>
    public IReadOnlyList<int> EncodeRaw(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        int segStart = 0;
        bool first = true;
        for (int i = 0; i < text.Length;)
        {
            if (_addedByFirstChar.TryGetValue(text[i], out var candidates))
            {
                var hit = candidates.FirstOrDefault(c => string.CompareOrdinal(text, i, c.Content, 0, c.Content.Length) == 0);
                if (hit.Content != null)
                {
                    if (i > segStart) _encode(text[segStart..i], first, ids);
                    ids.Add(hit.Id);
                    first = false;
                    i += hit.Content.Length;
                    segStart = i;
                    continue;
                }
            }
            i++;
        }
        if (segStart < text.Length) _encode(text[segStart..], first, ids);
        return ids;
    }

    /// <inheritdoc/>
    public IReadOnlyList<int> Encode(string text)
    {
        var raw = EncodeRaw(text);
        if (_prefix.Length == 0 && _suffix.Length == 0) return raw;
        var ids = new List<int>(raw.Count + _prefix.Length + _suffix.Length);
        ids.AddRange(_prefix); ids.AddRange(raw); ids.AddRange(_suffix);
        return ids;
    }

    /// <summary>Text of <paramref name="ids"/>; special tokens (BOS, EOS, pad, control and special added tokens) are
    /// left out, like HF decode(skip_special_tokens=True) and SentencePiece's DecodeIds.</summary>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var sb = new System.Text.StringBuilder();
        var run = new List<int>();
        bool atStart = true;
        void Flush()
        {
            if (run.Count == 0) return;
            sb.Append(_decode(run, atStart));
            atStart = false;
            run.Clear();
        }
        foreach (int id in ids)
        {
            if (_special.Contains(id)) continue;
            if (_addedById.TryGetValue(id, out var content)) { Flush(); sb.Append(content); atStart = false; continue; }
            run.Add(id);
        }
        Flush();
        return sb.ToString();
    }
}
