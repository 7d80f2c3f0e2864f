namespace LayerPrune.Tokenization;

/// <summary>A model's tokenizer as LayerPrune uses it: text to ids and back, with the model's BOS/EOS rules.</summary>
public interface ITextTokenizer
{
    /// <summary>Ids of <paramref name="text"/> without any special tokens (what HF's encode(add_special_tokens=False) gives).</summary>
    IReadOnlyList<int> EncodeRaw(string text);
    /// <summary>Ids with the model's special-token rules (BOS when tokenizer_config says add_bos_token, EOS likewise).</summary>
    IReadOnlyList<int> Encode(string text);
    /// <summary>Text of <paramref name="ids"/>.</summary>
    string Decode(IEnumerable<int> ids);
    /// <summary>The BOS token id; null when the model has none.</summary>
    int? BosId { get; }
    /// <summary>Token ids that end a generation.</summary>
    IReadOnlyList<int> EosIds { get; }
    /// <summary>The padding token id; null when the model has none.</summary>
    int? PadId { get; }
    /// <summary>Whether <see cref="Encode"/> puts BOS first.</summary>
    bool AddsBos { get; }
    /// <summary>Size of the vocabulary.</summary>
    int VocabSize { get; }
}
