using System.Text;

namespace LayerPrune.Tokenization;

/// <summary>One step of a HF tokenizers normalizer/pre-tokenizer chain that LayerPrune supports.</summary>
internal abstract record PipelineStep
{
    public sealed record Nfc : PipelineStep;
    public sealed record Nfkc : PipelineStep;
    public sealed record Prepend(string Prefix) : PipelineStep;
    public sealed record Replace(string Pattern, string Content) : PipelineStep;
    public sealed record Split(RegexSplitter Splitter) : PipelineStep;
    public sealed record ByteLevel(bool AddPrefixSpace, bool UseRegex) : PipelineStep;
    /// <summary>prepend_scheme: "always", "first" or "never".</summary>
    public sealed record Metaspace(char Replacement, string PrependScheme, bool SplitWords) : PipelineStep;
    public sealed record Digits(bool Individual) : PipelineStep;
}

/// <summary>
/// normalizer → pre-tokenizer → rank BPE for one segment of text (special tokens are split out before),
/// and the matching decoder: byte-level (GPT-2, Llama-3, Qwen2) or Metaspace/▁ with byte fallback (Llama-2, Mistral).
/// </summary>
internal sealed class HfBpePipeline(IReadOnlyList<PipelineStep> normalizers, IReadOnlyList<PipelineStep> preTokenizers,
    RankBpeModel model, IReadOnlyDictionary<int, string> idToToken)
{
    private static readonly RegexSplitter Gpt2Splitter = new(Tokenization.ByteLevel.Gpt2Pattern);
    private readonly bool _byteLevel = preTokenizers.Any(p => p is PipelineStep.ByteLevel);
    private readonly char _metaspace = preTokenizers.OfType<PipelineStep.Metaspace>().Select(m => m.Replacement).FirstOrDefault('\u2581');
    /// <summary>Whether encoding put a ▁ before the text, which decoding then drops (HF decoders Strip / Metaspace).</summary>
    private readonly bool _prefixAdded = normalizers.OfType<PipelineStep.Prepend>().Any()
        || preTokenizers.OfType<PipelineStep.Metaspace>().Any(m => m.PrependScheme != "never");

    public void Encode(string text, bool isFirstSegment, List<int> output)
    {
        foreach (var step in normalizers)
            text = step switch
            {
                PipelineStep.Nfc => text.Normalize(NormalizationForm.FormC),
                PipelineStep.Nfkc => text.Normalize(NormalizationForm.FormKC),
                PipelineStep.Prepend p => text.Length > 0 ? p.Prefix + text : text,
                PipelineStep.Replace r => text.Replace(r.Pattern, r.Content, StringComparison.Ordinal),
                _ => throw new InvalidOperationException(step.ToString()),
            };
        var pieces = new List<string> { text };
        foreach (var step in preTokenizers)
        {
            var next = new List<string>(pieces.Count * 2);
            for (int i = 0; i < pieces.Count; i++)
            {
                string piece = pieces[i];
                switch (step)
                {
                    case PipelineStep.Split s: s.Splitter.Split(piece, next); break;
                    case PipelineStep.ByteLevel b:
                        if (b.AddPrefixSpace && i == 0 && piece.Length > 0 && piece[0] != ' ') piece = " " + piece;
                        if (b.UseRegex)
                        {
                            var words = new List<string>();
                            Gpt2Splitter.Split(piece, words);
                            next.AddRange(words.Select(Tokenization.ByteLevel.Encode));
                        }
                        else next.Add(Tokenization.ByteLevel.Encode(piece));
                        break;
                    case PipelineStep.Metaspace m:
                        piece = piece.Replace(' ', m.Replacement);
                        bool prepend = m.PrependScheme == "always" || (m.PrependScheme == "first" && isFirstSegment && i == 0);
                        if (prepend && piece.Length > 0 && piece[0] != m.Replacement) piece = m.Replacement + piece;
                        if (!m.SplitWords) { next.Add(piece); break; }
                        int start = 0; // split before each replacement char (HF: SplitDelimiterBehavior::MergedWithNext)
                        for (int k = 1; k < piece.Length; k++)
                            if (piece[k] == m.Replacement) { next.Add(piece[start..k]); start = k; }
                        if (start < piece.Length) next.Add(piece[start..]);
                        break;
                    case PipelineStep.Digits d:
                        int s0 = 0;
                        for (int k = 1; k <= piece.Length; k++)
                        {
                            bool boundary = k == piece.Length || char.IsAsciiDigit(piece[k]) != char.IsAsciiDigit(piece[k - 1])
                                || (d.Individual && char.IsAsciiDigit(piece[k]));
                            if (boundary) { next.Add(piece[s0..k]); s0 = k; }
                        }
                        break;
                    default: throw new InvalidOperationException(step.ToString());
                }
            }
            pieces = next;
        }
        foreach (var p in pieces) model.EncodeWord(p, output);
    }

    public string Decode(IEnumerable<int> ids, bool atStart)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (!idToToken.TryGetValue(id, out var tok)) throw new LayerPruneException($"token id {id} is not in the vocabulary");
            if (_byteLevel)
            {
                if (!Tokenization.ByteLevel.TryDecode(tok, bytes)) bytes.AddRange(Encoding.UTF8.GetBytes(tok));
            }
            else if (tok.Length == 6 && tok.StartsWith("<0x", StringComparison.Ordinal) && tok[5] == '>'
                     && byte.TryParse(tok.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
                bytes.Add(b);
            else bytes.AddRange(Encoding.UTF8.GetBytes(tok.Replace(_metaspace, ' ')));
        }
        string text = Encoding.UTF8.GetString(bytes.ToArray());
        if (atStart && !_byteLevel && _prefixAdded && text.StartsWith(' ')) text = text[1..];
        return text;
    }
}
