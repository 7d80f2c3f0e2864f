namespace LayerPrune.Tokenization;

/// <summary>A model's tokenizer as LayerPrune uses it: text to ids and back, with the model's BOS/EOS rules.</summary>
public interface ITextTokenizer
{
    /// <summary>Ids of <paramref name="text"/> without any special tokens (what HF's encode(add_special_tokens=False) gives).</summary>
    IReadOnlyList<int> EncodeRaw(string text);
    /// <summary>Ids with the model's special-token rules (BOS when tokenizer_config says add_bos_token, EOS likewise).</summary>
    IReadOnlyList<int> Encode(string text);
    string Decode(IEnumerable<int> ids);
    int? BosId { get; }
    IReadOnlyList<int> EosIds { get; }
    int? PadId { get; }
    bool AddsBos { get; }
    int VocabSize { get; }
}
