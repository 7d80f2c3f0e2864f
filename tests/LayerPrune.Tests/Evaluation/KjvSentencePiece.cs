using LayerPrune.Tokenization;
using Microsoft.ML.Tokenizers;

namespace LayerPrune.Tests.Evaluation;

/// <summary>Test-only ITextTokenizer over the kjv-llama-16l SentencePiece model (BOS = 1, EOS = 2).</summary>
internal sealed class KjvSentencePiece : ITextTokenizer
{
    private static readonly Lazy<KjvSentencePiece> _shared = new(() => new KjvSentencePiece());
    public static KjvSentencePiece Shared => _shared.Value;

    private readonly LlamaTokenizer _sp;

    private KjvSentencePiece()
    {
        using var s = File.OpenRead(Path.Combine(TestPaths.Samples, "kjv-llama-16l", "tokenizer.model"));
        _sp = LlamaTokenizer.Create(s, addBeginOfSentence: false, addEndOfSentence: false);
    }

    public IReadOnlyList<int> EncodeRaw(string text) => _sp.EncodeToIds(text);
    public IReadOnlyList<int> Encode(string text) => [1, .. _sp.EncodeToIds(text)];
    public string Decode(IEnumerable<int> ids) => _sp.Decode(ids) ?? "";
    public int? BosId => 1;
    public IReadOnlyList<int> EosIds => [2];
    public int? PadId => null;
    public bool AddsBos => true;
    public int VocabSize => _sp.Vocabulary.Count;
}
