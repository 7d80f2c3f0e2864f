using System.Text;
using System.Text.Json.Nodes;
using LayerPrune.Tokenization;

namespace LayerPrune.Gguf;

/// <summary>
/// The tokenizer of a GGUF file (tokenizer.ggml.*) as Hugging Face files, the inverse of <see cref="GgufTokenizer"/>:
/// model "llama" (SentencePiece) → tokenizer.model (sentencepiece_model.proto: pieces with scores and types, BPE trainer
/// spec with byte fallback and the special ids, identity normalizer); model "gpt2" (byte-level BPE) → tokenizer.json
/// with the split regex of the pre-tokenizer named by tokenizer.ggml.pre (gpt-2, llama-bpe, qwen2); both with
/// tokenizer_config.json (BOS/EOS, add_bos/add_eos, chat template).
/// </summary>
public static class GgufTokenizerReader
{
    const int Control = 3, UserDefined = 4, ByteType = 6;

    /// <summary>Llama-3's split regex (tokenizer.json of Meta-Llama-3; llama.cpp's "llama-bpe").</summary>
    public const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|" +
                                        @"\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Writes the tokenizer files of <paramref name="g"/> into <paramref name="dir"/>; nothing when it has none.</summary>
    public static void Write(GgufFile g, string dir, int vocabSize)
    {
        string? model = g.Get("tokenizer.ggml.model")?.Value as string;
        if (model is null or "none") return;
        var tokens = g.Get("tokenizer.ggml.tokens")?.Value as string[]
            ?? throw new LayerPruneException($"{g.Path}: tokenizer.ggml.tokens is missing or not an array of strings");
        if (tokens.Length > vocabSize)
            throw new LayerPruneException($"{g.Path}: {tokens.Length} tokens but token_embd has {vocabSize} rows");
        int[] types = g.Get("tokenizer.ggml.token_type")?.Value is int[] tt && tt.Length == tokens.Length ? tt
            : Enumerable.Repeat(1, tokens.Length).ToArray();
        int? Id(string key)
        {
            if (g.Get($"tokenizer.ggml.{key}") is not { } v) return null;
            long id = v.AsLong(g.Path, $"tokenizer.ggml.{key}");
            if (id < 0 || id >= tokens.Length) throw new LayerPruneException($"{g.Path}: tokenizer.ggml.{key} {id} is not a token id");
            return (int)id;
        }
        int? bos = Id("bos_token_id"), eos = Id("eos_token_id"), unk = Id("unknown_token_id"), pad = Id("padding_token_id");
        bool addBos = g.Get("tokenizer.ggml.add_bos_token")?.Value as bool? ?? model == "llama";
        bool addEos = g.Get("tokenizer.ggml.add_eos_token")?.Value as bool? ?? false;
        var cfg = new JsonObject { ["add_bos_token"] = addBos, ["add_eos_token"] = addEos };
        if (bos is int b) cfg["bos_token"] = tokens[b];
        if (eos is int e) cfg["eos_token"] = tokens[e];
        if (unk is int u) cfg["unk_token"] = tokens[u];
        if (pad is int p) cfg["pad_token"] = tokens[p];
        if (g.Get("tokenizer.chat_template")?.Value is string template) cfg["chat_template"] = template;
        switch (model)
        {
            case "llama":
                float[] scores = g.Get("tokenizer.ggml.scores")?.Value is float[] sc && sc.Length == tokens.Length ? sc
                    : new float[tokens.Length];
                bool dummyPrefix = g.Get("tokenizer.ggml.add_space_prefix")?.Value as bool? ?? true;
                // Absent (llama.cpp's converter): false, as llama.cpp's SPM tokenizer never collapses spaces.
                bool removeExtra = g.Get("tokenizer.ggml.remove_extra_whitespaces")?.Value as bool? ?? false;
                File.WriteAllBytes(Path.Combine(dir, "tokenizer.model"),
                    SentencePieceProto(tokens, scores, types, unk ?? 0, bos ?? -1, eos ?? -1, pad ?? -1, dummyPrefix, removeExtra));
                cfg["tokenizer_class"] = "LlamaTokenizer";
                break;
            case "gpt2":
                var merges = g.Get("tokenizer.ggml.merges")?.Value as string[]
                    ?? throw new LayerPruneException($"{g.Path}: tokenizer.ggml.merges is missing for a gpt2 tokenizer");
                string pre = g.Get("tokenizer.ggml.pre")?.Value as string ?? "default";
                File.WriteAllText(Path.Combine(dir, "tokenizer.json"), BpeJson(g.Path, tokens, types, merges, pre).ToJsonString());
                break;
            default:
                throw new LayerPruneException(
                    $"{g.Path}: tokenizer.ggml.model '{GgufFile.Quote(model)}' cannot be read " +
                    "(LayerPrune reads llama/SentencePiece and gpt2/BPE)");
        }
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), cfg.ToJsonString(new() { WriteIndented = true }));
    }

    static JsonObject BpeJson(string path, string[] tokens, int[] types, string[] merges, string pre)
    {
        // llama.cpp's pre-tokenizer names (llama-vocab.cpp) → the split regex of the HF tokenizer.json they came from.
        JsonNode Split(string regex) => new JsonObject
        {
            ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = regex }, ["behavior"] = "Isolated", ["invert"] = false,
        };
        JsonNode ByteLevel(bool useRegex) => new JsonObject
            { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = useRegex };
        JsonNode preTokenizer = pre switch
        {
            "gpt-2" or "default" => ByteLevel(true),
            "qwen2" => new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(Split(Tokenization.ByteLevel.Qwen2Pattern),
                ByteLevel(false)) },
            "llama-bpe" or "llama3" => new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(Split(Llama3Pattern),
                ByteLevel(false)) },
            _ => throw new LayerPruneException(
                $"{path}: BPE pre-tokenizer '{GgufFile.Quote(pre)}' is not known to LayerPrune (it reads gpt-2, llama-bpe and qwen2)"),
        };
        var vocab = new JsonObject();
        var added = new JsonArray();
        for (int i = 0; i < tokens.Length; i++)
        {
            if (types[i] is Control or UserDefined)
                added.Add(new JsonObject
                {
                    ["id"] = i, ["content"] = tokens[i], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                    ["normalized"] = types[i] == UserDefined, ["special"] = types[i] == Control,
                });
            if (!vocab.ContainsKey(tokens[i])) vocab[tokens[i]] = i;
        }
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = added,
            ["normalizer"] = pre == "qwen2" ? new JsonObject { ["type"] = "NFC" } : null,
            ["pre_tokenizer"] = preTokenizer,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = new JsonArray(merges.Select(m => (JsonNode?)m).ToArray()),
                ["byte_fallback"] = false, ["ignore_merges"] = pre is "llama-bpe" or "llama3",
            },
        };
    }

    /// <summary>A minimal sentencepiece_model.proto ModelProto (fields that <see cref="SentencePieceModel"/> and
    /// sentencepiece read: pieces 1, trainer_spec 2, normalizer_spec 3).</summary>
    static byte[] SentencePieceProto(string[] tokens, float[] scores, int[] types, int unk, int bos, int eos, int pad, bool dummyPrefix,
        bool removeExtra)
    {
        var model = new MemoryStream();
        for (int i = 0; i < tokens.Length; i++)
        {
            var piece = new MemoryStream();
            Bytes(piece, 1, Encoding.UTF8.GetBytes(tokens[i]));
            Tag(piece, 2, 5); piece.Write(BitConverter.GetBytes(scores[i]));
            Varint(piece, 3, (ulong)Math.Clamp(types[i], 1, 6));
            Bytes(model, 1, piece.ToArray());
        }
        var trainer = new MemoryStream();
        Varint(trainer, 3, 2); // model_type BPE
        Varint(trainer, 35, types.Contains(ByteType) ? 1UL : 0UL); // byte_fallback
        Varint(trainer, 40, (ulong)(long)unk);
        Varint(trainer, 41, (ulong)(long)bos);
        Varint(trainer, 42, (ulong)(long)eos);
        Varint(trainer, 43, (ulong)(long)pad);
        Bytes(model, 2, trainer.ToArray());
        var normalizer = new MemoryStream();
        Bytes(normalizer, 1, "identity"u8.ToArray());
        Varint(normalizer, 3, dummyPrefix ? 1UL : 0UL);
        Varint(normalizer, 4, removeExtra ? 1UL : 0UL);
        Varint(normalizer, 5, 1);
        Bytes(model, 3, normalizer.ToArray());
        return model.ToArray();
    }

    static void Tag(Stream s, int field, int wire) => Raw(s, (ulong)(field << 3 | wire));
    static void Varint(Stream s, int field, ulong v) { Tag(s, field, 0); Raw(s, v); }
    static void Bytes(Stream s, int field, byte[] b) { Tag(s, field, 2); Raw(s, (ulong)b.Length); s.Write(b); }
    static void Raw(Stream s, ulong v)
    {
        while (v >= 0x80) { s.WriteByte((byte)(v | 0x80)); v >>= 7; }
        s.WriteByte((byte)v);
    }
}
