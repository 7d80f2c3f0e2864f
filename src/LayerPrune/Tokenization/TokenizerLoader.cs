using System.Text.Json;

namespace LayerPrune.Tokenization;

/// <summary>Loads a model directory's tokenizer the way HF transformers would pick it.</summary>
public static class TokenizerLoader
{
    /// <summary>True when <paramref name="modelDir"/> holds any tokenizer file that <see cref="Load"/> reads.</summary>
    public static bool HasTokenizer(string modelDir) =>
        File.Exists(Path.Combine(modelDir, "tokenizer.json")) || File.Exists(Path.Combine(modelDir, "tokenizer.model"))
        || (File.Exists(Path.Combine(modelDir, "vocab.json")) && File.Exists(Path.Combine(modelDir, "merges.txt")));

    /// <summary>
    /// Loads, in this order of preference: tokenizer.json (HF fast tokenizer, BPE models), tokenizer.model
    /// (SentencePiece BPE), vocab.json + merges.txt (GPT-2 / Qwen2 byte-level BPE). tokenizer_config.json gives
    /// add_bos_token / add_eos_token and the bos/eos/pad/unk tokens; config.json's bos/eos/pad_token_id are the fallback
    /// (config.json's eos ids are also added to <see cref="ITextTokenizer.EosIds"/>).
    /// </summary>
    /// <exception cref="LayerPruneException">No tokenizer file, or a malformed or unsupported one.</exception>
    public static TextTokenizer Load(string modelDir)
    {
        if (!Directory.Exists(modelDir)) throw LayerPruneException.Usage($"{modelDir}: model folder not found");
        var cfg = TokenizerConfig.Read(modelDir);
        string json = Path.Combine(modelDir, "tokenizer.json"), spm = Path.Combine(modelDir, "tokenizer.model");
        string vocab = Path.Combine(modelDir, "vocab.json"), merges = Path.Combine(modelDir, "merges.txt");
        if (File.Exists(json)) return LoadTokenizerJson(json, cfg);
        if (File.Exists(spm)) return LoadSentencePiece(spm, cfg);
        if (File.Exists(vocab) && File.Exists(merges)) return LoadVocabMerges(vocab, merges, cfg);
        throw new LayerPruneException(
            $"{modelDir}: no tokenizer found (looked for tokenizer.json, tokenizer.model, vocab.json + merges.txt)");
    }

    // ---------------- tokenizer.model ----------------

    private static TextTokenizer LoadSentencePiece(string path, TokenizerConfig cfg)
    {
        var sp = SentencePieceModel.Load(path);
        int? Lookup(string s) => sp.TryGetId(s, out int id) ? id : null;
        int? bos = cfg.Resolve(cfg.BosToken, Lookup) ?? cfg.BosIdFromConfig ?? (sp.BosId >= 0 ? sp.BosId : null);
        var eos = cfg.EosIds(Lookup, sp.EosId >= 0 ? sp.EosId : null);
        int? pad = cfg.Resolve(cfg.PadToken, Lookup) ?? cfg.PadIdFromConfig ?? (sp.PadId >= 0 ? sp.PadId : null);
        // HF LlamaTokenizer: add_bos_token defaults to true, add_eos_token to false.
        var (prefix, suffix) = Wrap(cfg.AddBos ?? true, cfg.AddEos ?? false, bos, eos);
        var special = Enumerable.Range(0, sp.VocabSize).Where(sp.IsControl).Concat(new[] { bos, pad }.OfType<int>()).Concat(eos);
        // Text is encoded as SentencePiece does: "<s>" in the text is not a special token (unlike HF's slow LlamaTokenizer).
        return new TextTokenizer("tokenizer.model (SentencePiece BPE)",
            (seg, _, output) => sp.Encode(seg, output), (ids, _) => sp.Decode(ids),
            new Dictionary<string, int>(), special, bos, eos, pad, prefix, suffix, sp.VocabSize);
    }

    // ---------------- vocab.json + merges.txt ----------------

    private static TextTokenizer LoadVocabMerges(string vocabPath, string mergesPath, TokenizerConfig cfg)
    {
        var vocab = ReadJson(vocabPath, root =>
        {
            if (root.ValueKind != JsonValueKind.Object) throw new LayerPruneException("vocab.json: expected a JSON object of token → id");
            return ReadVocab(root, "vocab.json");
        });
        var merges = ReadMergesTxt(mergesPath);
        var model = new RankBpeModel(vocab, merges, "merges.txt");
        bool qwen2 = cfg.TokenizerClass?.StartsWith("Qwen2", StringComparison.Ordinal) == true;
        // HF Qwen2Tokenizer normalizes to NFC and splits with its own regex; GPT2Tokenizer uses GPT-2's regex.
        var normalizers = qwen2 ? new PipelineStep[] { new PipelineStep.Nfc() } : [];
        var pre = new PipelineStep[]
        {
            new PipelineStep.Split(new RegexSplitter(qwen2 ? ByteLevel.Qwen2Pattern : ByteLevel.Gpt2Pattern)),
            new PipelineStep.ByteLevel(cfg.AddPrefixSpace ?? false, UseRegex: false),
        };
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        var special = new HashSet<int>();
        foreach (var (id, content, isSpecial) in cfg.AddedTokensDecoder)
        {
            added[content] = id;
            if (isSpecial) special.Add(id);
        }
        // GPT2Tokenizer's defaults when there is no tokenizer_config.json: bos = eos = unk = "<|endoftext|>".
        string? bosTok = cfg.Exists ? cfg.BosToken : "<|endoftext|>", eosTok = cfg.Exists ? cfg.EosToken : "<|endoftext|>";
        int? Lookup(string s) => added.TryGetValue(s, out int a) ? a : vocab.TryGetValue(s, out int v) ? v : null;
        int? bos = cfg.Resolve(bosTok, Lookup) ?? cfg.BosIdFromConfig;
        var eos = cfg.EosIds(Lookup, cfg.Resolve(eosTok, Lookup));
        int? pad = cfg.Resolve(cfg.PadToken, Lookup) ?? cfg.PadIdFromConfig;
        // Named special tokens are never split either.
        foreach (var name in new[] { bosTok, eosTok, cfg.PadToken, cfg.UnkToken })
            if (name != null && Lookup(name) is int sid) { added.TryAdd(name, sid); special.Add(sid); }
        var idToToken = vocab.ToDictionary(kv => kv.Value, kv => kv.Key);
        var pipeline = new HfBpePipeline(normalizers, pre, model, idToToken);
        var (prefix, suffix) = Wrap(cfg.AddBos ?? false, cfg.AddEos ?? false, bos, eos);
        int size = Math.Max(vocab.Values.DefaultIfEmpty(-1).Max(), added.Values.DefaultIfEmpty(-1).Max()) + 1;
        return new TextTokenizer($"vocab.json + merges.txt ({(qwen2 ? "Qwen2" : "GPT-2")} byte-level BPE)",
            pipeline.Encode, pipeline.Decode, added, special, bos, eos, pad, prefix, suffix, size);
    }

    private static List<(string, string)> ReadMergesTxt(string path)
    {
        var list = new List<(string, string)>();
        int lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (line.Length == 0 || (lineNo == 1 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            int sp = line.IndexOf(' ');
            if (sp <= 0 || sp == line.Length - 1 || line.IndexOf(' ', sp + 1) >= 0)
                throw new LayerPruneException($"merges.txt: line {lineNo} is not two tokens separated by one space");
            list.Add((line[..sp], line[(sp + 1)..]));
        }
        return list;
    }

    // ---------------- tokenizer.json ----------------

    private static TextTokenizer LoadTokenizerJson(string path, TokenizerConfig cfg)
    {
        const string F = "tokenizer.json";
        return ReadJson(path, root =>
        {
            if (!root.TryGetProperty("model", out var m) || m.ValueKind != JsonValueKind.Object)
                throw new LayerPruneException($"{F}: no \"model\" object");
            string type = Str(m, "type") ?? (m.TryGetProperty("merges", out _) ? "BPE" : "?");
            if (type != "BPE") throw new LayerPruneException($"{F}: model type '{type}' is not supported (only BPE)");
            if (!m.TryGetProperty("vocab", out var v) || v.ValueKind != JsonValueKind.Object)
                throw new LayerPruneException($"{F}: model.vocab is missing");
            if (!string.IsNullOrEmpty(Str(m, "continuing_subword_prefix")) || !string.IsNullOrEmpty(Str(m, "end_of_word_suffix")))
                throw new LayerPruneException($"{F}: BPE continuing_subword_prefix / end_of_word_suffix are not supported");
            var vocab = ReadVocab(v, F);
            var merges = new List<(string, string)>();
            if (m.TryGetProperty("merges", out var ms) && ms.ValueKind == JsonValueKind.Array)
                foreach (var e in ms.EnumerateArray())
                {
                    if (e.ValueKind == JsonValueKind.String)
                    {
                        var s = e.GetString()!; int sp = s.IndexOf(' ');
                        if (sp <= 0) throw new LayerPruneException($"{F}: merge '{s}' is not two tokens separated by a space");
                        merges.Add((s[..sp], s[(sp + 1)..]));
                    }
                    else if (e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2)
                        merges.Add((e[0].GetString()!, e[1].GetString()!));
                    else throw new LayerPruneException($"{F}: model.merges entries must be \"a b\" or [\"a\", \"b\"]");
                }
            var model = new RankBpeModel(vocab, merges, F, Str(m, "unk_token"), Bool(m, "byte_fallback"), Bool(m, "fuse_unk"),
                Bool(m, "ignore_merges"));

            var added = new Dictionary<string, int>(StringComparer.Ordinal);
            var special = new HashSet<int>();
            if (root.TryGetProperty("added_tokens", out var at) && at.ValueKind == JsonValueKind.Array)
                foreach (var t in at.EnumerateArray())
                {
                    string content = Str(t, "content") ?? throw new LayerPruneException($"{F}: added token without content");
                    int id = t.GetProperty("id").GetInt32();
                    added[content] = id;
                    if (Bool(t, "special")) special.Add(id);
                }
            var normalizers = new List<PipelineStep>();
            if (root.TryGetProperty("normalizer", out var n)) AddSteps(n, normalizers, F, "normalizer");
            var pre = new List<PipelineStep>();
            if (root.TryGetProperty("pre_tokenizer", out var p)) AddSteps(p, pre, F, "pre_tokenizer");
            // A step in the other section (e.g. a Split normalizer, found by the fuzzer) is not a tokenizers pipeline.
            if (normalizers.FirstOrDefault(x => x is not (PipelineStep.Nfc or PipelineStep.Nfkc or PipelineStep.Prepend
                    or PipelineStep.Replace)) is { } badNormalizer)
                throw new LayerPruneException($"{F}: normalizer type '{badNormalizer.GetType().Name}' is not supported");
            if (pre.FirstOrDefault(x => x is not (PipelineStep.Split or PipelineStep.ByteLevel or PipelineStep.Metaspace
                    or PipelineStep.Digits)) is { } badPre)
                throw new LayerPruneException($"{F}: pre_tokenizer type '{badPre.GetType().Name}' is not supported");

            int? Lookup(string s) => added.TryGetValue(s, out int a) ? a : vocab.TryGetValue(s, out int id) ? id : null;
            var (tplPrefix, tplSuffix) = root.TryGetProperty("post_processor", out var pp) ? Template(pp, F) : ([], []);
            // Last resort for BOS / EOS: the post-processor template's first token before / after the text.
            int? bos = cfg.Resolve(cfg.BosToken, Lookup) ?? cfg.BosIdFromConfig ?? tplPrefix.Cast<int?>().FirstOrDefault();
            var eos = cfg.EosIds(Lookup, tplSuffix.Cast<int?>().FirstOrDefault());
            int? pad = cfg.Resolve(cfg.PadToken, Lookup) ?? cfg.PadIdFromConfig;
            foreach (var id in new[] { bos, pad }.OfType<int>().Concat(eos)) special.Add(id);
            var (prefix, suffix) = cfg.AddBos != null || cfg.AddEos != null
                ? Wrap(cfg.AddBos ?? false, cfg.AddEos ?? false, bos, eos) : (tplPrefix, tplSuffix);

            var idToToken = new Dictionary<int, string>(vocab.Count);
            foreach (var (token, id) in vocab) idToToken.TryAdd(id, token); // an id given twice decodes as its first token
            foreach (var (c, id) in added) idToToken.TryAdd(id, c);
            var pipeline = new HfBpePipeline(normalizers, pre, model, idToToken);
            int size = Math.Max(vocab.Values.DefaultIfEmpty(-1).Max(), added.Values.DefaultIfEmpty(-1).Max()) + 1;
            // Added tokens that are also regular vocabulary entries decode through the model (e.g. "<0x0A>").
            var addedOnly = added.Where(kv => !vocab.ContainsKey(kv.Key) || special.Contains(kv.Value)).ToDictionary();
            return new TextTokenizer($"{F} (BPE{(pre.Any(s => s is PipelineStep.ByteLevel) ? ", byte-level" : "")})",
                pipeline.Encode, pipeline.Decode, addedOnly, special, bos, eos, pad, prefix, suffix, size);
        });
    }

    private static void AddSteps(JsonElement e, List<PipelineStep> steps, string file, string what)
    {
        if (e.ValueKind == JsonValueKind.Null) return;
        string type = Str(e, "type") ?? throw new LayerPruneException($"{file}: {what} without \"type\"");
        switch (type)
        {
            case "Sequence":
                var key = e.TryGetProperty("normalizers", out var list) ? list : e.GetProperty("pretokenizers");
                foreach (var s in key.EnumerateArray()) AddSteps(s, steps, file, what);
                break;
            case "NFC": steps.Add(new PipelineStep.Nfc()); break;
            case "NFKC": steps.Add(new PipelineStep.Nfkc()); break;
            case "Prepend": steps.Add(new PipelineStep.Prepend(Str(e, "prepend") ?? "")); break;
            case "Replace":
                var pat = e.GetProperty("pattern");
                string from = Str(pat, "String")
                    ?? throw new LayerPruneException($"{file}: {what} Replace with a regex pattern is not supported");
                steps.Add(new PipelineStep.Replace(from, Str(e, "content") ?? ""));
                break;
            case "Split":
                var sp = e.GetProperty("pattern");
                string regex = Str(sp, "Regex") ?? System.Text.RegularExpressions.Regex.Escape(Str(sp, "String") ?? "");
                string behavior = Str(e, "behavior") ?? "Isolated";
                if (behavior != "Isolated" || Bool(e, "invert"))
                    throw new LayerPruneException(
                        $"{file}: {what} Split behavior '{behavior}'{(Bool(e, "invert") ? " (inverted)" : "")} is not supported (only " +
                        "Isolated)");
                RegexSplitter splitter;
                try { splitter = new RegexSplitter(regex); }
                catch (ArgumentException x)
                {
                    throw new LayerPruneException($"{file}: {what} Split regex is invalid ({JsonInput.FirstLine(x.Message)})");
                }
                steps.Add(new PipelineStep.Split(splitter));
                break;
            case "ByteLevel":
                steps.Add(new PipelineStep.ByteLevel(Bool(e, "add_prefix_space"), !e.TryGetProperty("use_regex", out var ur)
                    || ur.ValueKind != JsonValueKind.False));
                break;
            case "Metaspace":
                string rep = Str(e, "replacement") ?? "\u2581";
                string scheme = Str(e, "prepend_scheme")
                    ?? (e.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.False ? "never" : "always");
                steps.Add(new PipelineStep.Metaspace(rep[0], scheme, !e.TryGetProperty("split", out var spl)
                    || spl.ValueKind != JsonValueKind.False));
                break;
            case "Digits": steps.Add(new PipelineStep.Digits(Bool(e, "individual_digits"))); break;
            default: throw new LayerPruneException($"{file}: {what} type '{type}' is not supported");
        }
    }

    /// <summary>Special tokens before / after sequence A of a TemplateProcessing post-processor (possibly inside a Sequence).</summary>
    private static (List<int>, List<int>) Template(JsonElement pp, string file)
    {
        if (pp.ValueKind != JsonValueKind.Object) return ([], []);
        string? type = Str(pp, "type");
        if (type == "Sequence")
        {
            foreach (var p in pp.GetProperty("processors").EnumerateArray())
                if (Str(p, "type") == "TemplateProcessing") return Template(p, file);
            return ([], []);
        }
        if (type != "TemplateProcessing") return ([], []);
        List<int> prefix = [], suffix = [];
        bool seenA = false;
        foreach (var piece in pp.GetProperty("single").EnumerateArray())
        {
            if (piece.TryGetProperty("Sequence", out _)) { seenA = true; continue; }
            string name = piece.GetProperty("SpecialToken").GetProperty("id").GetString()!;
            if (!pp.GetProperty("special_tokens").TryGetProperty(name, out var st))
                throw new LayerPruneException($"{file}: post_processor template uses '{name}' without defining it");
            foreach (var id in st.GetProperty("ids").EnumerateArray()) (seenA ? suffix : prefix).Add(id.GetInt32());
        }
        return (prefix, suffix);
    }

    // ---------------- helpers ----------------

    private static (List<int>, List<int>) Wrap(bool addBos, bool addEos, int? bos, IReadOnlyList<int> eos) =>
        (addBos && bos is int b ? [b] : [], addEos && eos.Count > 0 ? [eos[0]] : []);

    private static Dictionary<string, int> ReadVocab(JsonElement obj, string file)
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var kv in obj.EnumerateObject())
        {
            if (kv.Value.ValueKind != JsonValueKind.Number || !kv.Value.TryGetInt32(out int id) || id < 0)
                throw new LayerPruneException($"{file}: vocabulary entry '{kv.Name}' has no valid id");
            vocab[kv.Name] = id;
        }
        return vocab;
    }

    internal static T ReadJson<T>(string path, Func<JsonElement, T> read)
    {
        string file = Path.GetFileName(path);
        try
        {
            using var stream = File.OpenRead(path);
            using var doc = JsonDocument.Parse(stream,
                new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            return read(doc.RootElement);
        }
        catch (JsonException e) { throw new LayerPruneException($"{file}: invalid JSON at line {(e.LineNumber ?? 0) + 1}", e); }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException or IndexOutOfRangeException)
        { throw new LayerPruneException($"{file}: unexpected structure ({e.Message})", e); }
        catch (IOException e) { throw new LayerPruneException($"{file}: cannot read ({e.Message})", e); }
    }

    internal static string? Str(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()
            : null;

    internal static bool Bool(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;
}

/// <summary>What tokenizer_config.json and config.json say about special tokens.</summary>
internal sealed class TokenizerConfig
{
    public bool Exists { get; private init; }
    public bool? AddBos { get; private init; }
    public bool? AddEos { get; private init; }
    public bool? AddPrefixSpace { get; private init; }
    public string? BosToken { get; private init; }
    public string? EosToken { get; private init; }
    public string? PadToken { get; private init; }
    public string? UnkToken { get; private init; }
    public string? TokenizerClass { get; private init; }
    public List<(int Id, string Content, bool Special)> AddedTokensDecoder { get; } = [];
    public int? BosIdFromConfig { get; private init; }
    public List<int> EosIdsFromConfig { get; } = [];
    public int? PadIdFromConfig { get; private init; }

    public static TokenizerConfig Read(string dir)
    {
        string tc = Path.Combine(dir, "tokenizer_config.json"), mc = Path.Combine(dir, "config.json");
        TokenizerConfig cfg = File.Exists(tc) ? TokenizerLoader.ReadJson(tc, root =>
        {
            if (root.ValueKind != JsonValueKind.Object) throw new LayerPruneException("tokenizer_config.json: expected a JSON object");
            var c = new TokenizerConfig
            {
                Exists = true,
                AddBos = OptBool(root, "add_bos_token", "tokenizer_config.json"),
                AddEos = OptBool(root, "add_eos_token", "tokenizer_config.json"),
                AddPrefixSpace = OptBool(root, "add_prefix_space", "tokenizer_config.json"),
                BosToken = TokenString(root, "bos_token"), EosToken = TokenString(root, "eos_token"),
                PadToken = TokenString(root, "pad_token"), UnkToken = TokenString(root, "unk_token"),
                TokenizerClass = TokenizerLoader.Str(root, "tokenizer_class"),
            };
            if (root.TryGetProperty("added_tokens_decoder", out var atd) && atd.ValueKind == JsonValueKind.Object)
                foreach (var kv in atd.EnumerateObject())
                {
                    if (!int.TryParse(kv.Name, out int id))
                        throw new LayerPruneException($"tokenizer_config.json: added_tokens_decoder key '{kv.Name}' is not an id");
                    string content = TokenizerLoader.Str(kv.Value, "content")
                        ?? throw new LayerPruneException($"tokenizer_config.json: added token {id} has no content");
                    c.AddedTokensDecoder.Add((id, content, TokenizerLoader.Bool(kv.Value, "special")));
                }
            return c;
        }) : new TokenizerConfig();
        if (!File.Exists(mc)) return cfg;
        return TokenizerLoader.ReadJson(mc, root =>
        {
            var ids = IdList(root, "eos_token_id");
            var c = new TokenizerConfig
            {
                Exists = cfg.Exists, AddBos = cfg.AddBos, AddEos = cfg.AddEos, AddPrefixSpace = cfg.AddPrefixSpace,
                BosToken = cfg.BosToken, EosToken = cfg.EosToken, PadToken = cfg.PadToken, UnkToken = cfg.UnkToken,
                TokenizerClass = cfg.TokenizerClass,
                BosIdFromConfig = IdList(root, "bos_token_id").Cast<int?>().FirstOrDefault(),
                PadIdFromConfig = IdList(root, "pad_token_id").Cast<int?>().FirstOrDefault(),
            };
            c.AddedTokensDecoder.AddRange(cfg.AddedTokensDecoder);
            c.EosIdsFromConfig.AddRange(ids);
            return c;
        });
    }

    public int? Resolve(string? token, Func<string, int?> lookup) => token == null ? null : lookup(token);

    /// <summary>The tokenizer's EOS (tokenizer_config eos_token, else <paramref name="modelDefault"/>) followed by config.json's other eos
    /// ids.</summary>
    public IReadOnlyList<int> EosIds(Func<string, int?> lookup, int? modelDefault)
    {
        var list = new List<int>();
        if ((Resolve(EosToken, lookup) ?? (EosIdsFromConfig.Count == 0 ? modelDefault : null)) is int e) list.Add(e);
        foreach (int id in EosIdsFromConfig) if (!list.Contains(id)) list.Add(id);
        if (list.Count == 0 && modelDefault is int d) list.Add(d);
        return list;
    }

    private static bool? OptBool(JsonElement root, string name, string file)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new LayerPruneException($"{file}: {name} must be true or false"),
        };
    }

    /// <summary>A special token given as "text" or {"content": "text", ...}; null when absent or null.</summary>
    private static string? TokenString(JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v)) return null;
        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Object => TokenizerLoader.Str(v, "content"),
            JsonValueKind.Null => null,
            _ => throw new LayerPruneException($"tokenizer_config.json: {name} must be a string or an object with \"content\""),
        };
    }

    private static List<int> IdList(JsonElement root, string name)
    {
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty(name, out var v)) return [];
        return v.ValueKind switch
        {
            JsonValueKind.Number => [v.GetInt32()],
            JsonValueKind.Array => v.EnumerateArray().Select(x => x.GetInt32()).ToList(),
            JsonValueKind.Null => [],
            _ => throw new LayerPruneException($"config.json: {name} must be an integer or a list of integers"),
        };
    }
}
