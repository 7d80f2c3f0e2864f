using System.Text.Json;
using LayerPrune.Checkpoints;
using LayerPrune.Tokenization;

namespace LayerPrune.Gguf;

/// <summary>
/// The tokenizer.ggml.* metadata llama.cpp's converter writes: SentencePiece (tokenizer.model) → model "llama" with
/// tokens, scores and token types; byte-level BPE (tokenizer.json or vocab.json + merges.txt) → model "gpt2" with
/// tokens, types, merges and the pre-tokenizer name; then BOS/EOS/UNK/PAD ids, add_bos/add_eos and the chat template.
/// </summary>
public static class GgufTokenizer
{
    // gguf-py TokenType
    const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, ByteType = 6;

    /// <summary>
    /// Tokenizer metadata for <paramref name="modelDir"/>. Without a tokenizer, a minimal SentencePiece-style vocabulary
    /// ("&lt;unk&gt;", "&lt;s&gt;", "&lt;/s&gt;", the 256 byte tokens, then unused placeholders) of vocab_size entries is written
    /// so llama.cpp can load the model and run it on token ids; <paramref name="note"/> then says so.
    /// </summary>
    public static List<KeyValuePair<string, GgufValue>> Metadata(string modelDir, ModelConfig c, out string? note)
    {
        note = null;
        string spm = Path.Combine(modelDir, "tokenizer.model"), json = Path.Combine(modelDir, "tokenizer.json");
        string vocabJson = Path.Combine(modelDir, "vocab.json"), merges = Path.Combine(modelDir, "merges.txt");
        var kv = new List<KeyValuePair<string, GgufValue>>();
        if (File.Exists(json) || (File.Exists(vocabJson) && File.Exists(merges))) Bpe(modelDir, c, kv);
        else if (File.Exists(spm)) SentencePiece(spm, c, kv);
        else
        {
            Minimal(c, kv);
            note = $"{modelDir}: no tokenizer found; wrote a minimal {c.VocabSize}-token vocabulary (the model runs on token ids only)";
            return kv;
        }
        var tok = TokenizerLoader.Load(modelDir);
        Special(kv, "bos_token_id", tok.BosId);
        Special(kv, "eos_token_id", tok.EosIds.Count > 0 ? tok.EosIds[0] : null);
        Special(kv, "padding_token_id", tok.PadId);
        kv.Add(new("tokenizer.ggml.add_bos_token", GgufValue.Bool(tok.AddsBos)));
        kv.Add(new("tokenizer.ggml.add_eos_token", GgufValue.Bool(tok is TextTokenizer t && t.AddsEos)));
        if (ChatTemplate(modelDir) is { } template) kv.Add(new("tokenizer.chat_template", GgufValue.Str(template)));
        return kv;
    }

    static void Special(List<KeyValuePair<string, GgufValue>> kv, string key, int? id)
    {
        if (id is int i) kv.Add(new($"tokenizer.ggml.{key}", GgufValue.U32((uint)i)));
    }

    static void SentencePiece(string path, ModelConfig c, List<KeyValuePair<string, GgufValue>> kv)
    {
        var sp = SentencePieceModel.Load(path);
        if (sp.VocabSize > c.VocabSize)
            throw new LayerPruneException($"{path}: {sp.VocabSize} pieces but config.json vocab_size is {c.VocabSize}");
        var tokens = new string[c.VocabSize];
        var scores = new float[c.VocabSize];
        var types = new int[c.VocabSize];
        for (int i = 0; i < c.VocabSize; i++)
        {
            // Padding up to vocab_size as the converter does: "[PADi]", unused, score −1000.
            bool real = i < sp.VocabSize;
            tokens[i] = real ? sp.IdToPiece(i) : $"[PAD{i}]";
            scores[i] = real ? sp.Score(i) : -1000f;
            types[i] = real ? sp.PieceType(i) : Unused;
        }
        // tokenizer_config.json added_tokens_decoder overrides (control when special, else user-defined).
        var cfg = TokenizerConfig.Read(Path.GetDirectoryName(path)!);
        foreach (var (id, content, special) in cfg.AddedTokensDecoder)
            if (id >= 0 && id < c.VocabSize && tokens[id] != content)
            {
                tokens[id] = content;
                types[id] = special ? Control : UserDefined;
                scores[id] = -1000f;
            }
        kv.Add(new("tokenizer.ggml.model", GgufValue.Str("llama")));
        kv.Add(new("tokenizer.ggml.pre", GgufValue.Str("default")));
        kv.Add(new("tokenizer.ggml.tokens", GgufValue.Array(GgufValueType.String, tokens)));
        kv.Add(new("tokenizer.ggml.scores", GgufValue.Array(GgufValueType.Float32, scores)));
        kv.Add(new("tokenizer.ggml.token_type", GgufValue.Array(GgufValueType.Int32, types)));
        // llama.cpp's key (read by its UGM tokenizer, ignored by SPM): lets GgufTokenizerReader rebuild the same normalizer.
        kv.Add(new("tokenizer.ggml.remove_extra_whitespaces", GgufValue.Bool(sp.RemoveExtraWhitespaces)));
        if (sp.UnkId >= 0) Special(kv, "unknown_token_id", sp.UnkId);
    }

    static void Minimal(ModelConfig c, List<KeyValuePair<string, GgufValue>> kv)
    {
        if (c.VocabSize < 259)
            throw new LayerPruneException(
                $"{c.Path}: no tokenizer and vocab_size {c.VocabSize} < 259 (too small for a minimal vocabulary)");
        var tokens = new string[c.VocabSize];
        var types = new int[c.VocabSize];
        var scores = new float[c.VocabSize];
        string[] named = ["<unk>", "<s>", "</s>"];
        for (int i = 0; i < c.VocabSize; i++)
        {
            (tokens[i], types[i]) = i switch
            {
                0 => (named[0], Unknown),
                < 3 => (named[i], Control),
                < 259 => ($"<0x{i - 3:X2}>", ByteType),
                _ => ($"[UNUSED{i}]", Unused),
            };
        }
        kv.Add(new("tokenizer.ggml.model", GgufValue.Str("llama")));
        kv.Add(new("tokenizer.ggml.pre", GgufValue.Str("default")));
        kv.Add(new("tokenizer.ggml.tokens", GgufValue.Array(GgufValueType.String, tokens)));
        kv.Add(new("tokenizer.ggml.scores", GgufValue.Array(GgufValueType.Float32, scores)));
        kv.Add(new("tokenizer.ggml.token_type", GgufValue.Array(GgufValueType.Int32, types)));
        kv.Add(new("tokenizer.ggml.unknown_token_id", GgufValue.U32(0)));
        kv.Add(new("tokenizer.ggml.bos_token_id", GgufValue.U32(1)));
        kv.Add(new("tokenizer.ggml.eos_token_id", GgufValue.U32(2)));
        kv.Add(new("tokenizer.ggml.add_bos_token", GgufValue.Bool(false)));
        kv.Add(new("tokenizer.ggml.add_eos_token", GgufValue.Bool(false)));
    }

    static void Bpe(string modelDir, ModelConfig c, List<KeyValuePair<string, GgufValue>> kv)
    {
        string json = Path.Combine(modelDir, "tokenizer.json");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var merges = new List<string>();
        var added = new List<(int Id, string Content, bool Special)>();
        string pre;
        if (File.Exists(json))
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(json));
            var root = doc.RootElement;
            var m = root.GetProperty("model");
            foreach (var e in m.GetProperty("vocab").EnumerateObject()) vocab[e.Name] = e.Value.GetInt32();
            if (m.TryGetProperty("merges", out var ms))
                foreach (var e in ms.EnumerateArray())
                    merges.Add(e.ValueKind == JsonValueKind.String ? e.GetString()! : $"{e[0].GetString()} {e[1].GetString()}");
            if (root.TryGetProperty("added_tokens", out var at))
                foreach (var t in at.EnumerateArray())
                    added.Add((t.GetProperty("id").GetInt32(), t.GetProperty("content").GetString()!,
                               t.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True));
            pre = PreTokenizer(root.TryGetProperty("pre_tokenizer", out var p) ? p.GetRawText() : "", c, json);
        }
        else
        {
            using (var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(modelDir, "vocab.json"))))
                foreach (var e in doc.RootElement.EnumerateObject()) vocab[e.Name] = e.Value.GetInt32();
            var lines = File.ReadLines(Path.Combine(modelDir, "merges.txt"));
            merges.AddRange(lines.Where((l, i) => l.Length > 0 && !(i == 0 && l.StartsWith("#version"))));
            added.AddRange(TokenizerConfig.Read(modelDir).AddedTokensDecoder);
            pre = c.Family == ArchitectureFamily.Qwen2 ? "qwen2" : "gpt-2";
        }
        var tokens = new string[c.VocabSize];
        var types = new int[c.VocabSize];
        foreach (var (tok, id) in vocab)
            if (id < c.VocabSize) (tokens[id], types[id]) = (tok, Normal);
            else throw new LayerPruneException($"{modelDir}: token id {id} is beyond config.json vocab_size {c.VocabSize}");
        foreach (var (id, content, special) in added)
            if (id < c.VocabSize) (tokens[id], types[id]) = (content, special ? Control : UserDefined);
        for (int i = 0; i < c.VocabSize; i++)
            if (tokens[i] is null) (tokens[i], types[i]) = ($"[PAD{i}]", UserDefined);
        kv.Add(new("tokenizer.ggml.model", GgufValue.Str("gpt2")));
        kv.Add(new("tokenizer.ggml.pre", GgufValue.Str(pre)));
        kv.Add(new("tokenizer.ggml.tokens", GgufValue.Array(GgufValueType.String, tokens)));
        kv.Add(new("tokenizer.ggml.token_type", GgufValue.Array(GgufValueType.Int32, types)));
        kv.Add(new("tokenizer.ggml.merges", GgufValue.Array(GgufValueType.String, merges.ToArray())));
    }

    /// <summary>
    /// llama.cpp's pre-tokenizer name. Its converter identifies it by hashing a tokenization; we recognise the split
    /// regexes of the families we support and refuse others (a wrong name silently changes tokenization).
    /// </summary>
    static string PreTokenizer(string preJson, ModelConfig c, string file)
    {
        if (c.Family == ArchitectureFamily.Qwen2) return "qwen2";
        const string Llama3Split = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}";
        if (preJson.Contains(Llama3Split, StringComparison.Ordinal))
            return "llama-bpe";
        if (preJson.Contains("\"ByteLevel\"", StringComparison.Ordinal) && !preJson.Contains("\"Split\"", StringComparison.Ordinal))
            return "gpt-2";
        throw new LayerPruneException(
            $"{file}: BPE pre-tokenizer not recognised (LayerPrune knows GPT-2, Llama-3 and Qwen2); llama.cpp would tokenize differently");
    }

    static string? ChatTemplate(string modelDir)
    {
        string tc = Path.Combine(modelDir, "tokenizer_config.json"), jinja = Path.Combine(modelDir, "chat_template.jinja");
        if (File.Exists(jinja)) return File.ReadAllText(jinja);
        if (!File.Exists(tc)) return null;
        using var doc = JsonDocument.Parse(File.ReadAllBytes(tc));
        return doc.RootElement.TryGetProperty("chat_template", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
    }
}
