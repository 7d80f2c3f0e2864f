using System.Text;

namespace LayerPrune.Tokenization;

/// <summary>
/// A SentencePiece BPE model (tokenizer.model) with its own encoder, reproducing sentencepiece's bpe_model.cc:
/// highest-score pair first, ties to the leftmost pair, byte fallback for pieces not in the vocabulary.
/// (Microsoft.ML.Tokenizers 2.0.1's LlamaTokenizer breaks score ties differently, e.g. on "x"×40 with Llama-2.)
/// Only the "identity" normalizer is supported (Llama, Mistral and the kjv sample use it).
/// </summary>
internal sealed class SentencePieceModel
{
    // sentencepiece_model.proto: SentencePiece.Type
    private const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6;
    private const char SpaceSymbol = '\u2581';

    private readonly string[] _pieces;
    private readonly float[] _scores;
    private readonly int[] _types;
    private readonly Dictionary<string, int> _pieceToId;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private readonly int[] _byteIds = Enumerable.Repeat(-1, 256).ToArray();
    private readonly string[] _userDefined;
    private readonly Dictionary<(int, int), (float Score, int Id)?> _pairCache = new();

    public bool AddDummyPrefix { get; }
    public bool RemoveExtraWhitespaces { get; }
    public bool EscapeWhitespaces { get; }
    public bool ByteFallback { get; }
    public int UnkId { get; }
    public int BosId { get; }
    public int EosId { get; }
    public int PadId { get; }
    public int VocabSize => _pieces.Length;

    private SentencePieceModel(string[] pieces, float[] scores, int[] types, int modelType, bool byteFallback,
        int unkId, int bosId, int eosId, int padId, string normalizerName, bool addDummyPrefix, bool removeExtra,
        bool escapeWs, string file)
    {
        if (modelType != 2) throw new LayerPruneException($"{file}: SentencePiece model_type {modelType} is not supported (only BPE = 2)");
        if (normalizerName is not ("identity" or ""))
            throw new LayerPruneException($"{file}: SentencePiece normalizer '{normalizerName}' is not supported (only 'identity')");
        _pieces = pieces; _scores = scores; _types = types;
        ByteFallback = byteFallback; UnkId = unkId; BosId = bosId; EosId = eosId; PadId = padId;
        AddDummyPrefix = addDummyPrefix; RemoveExtraWhitespaces = removeExtra; EscapeWhitespaces = escapeWs;
        _pieceToId = new Dictionary<string, int>(pieces.Length, StringComparer.Ordinal);
        for (int i = 0; i < pieces.Length; i++)
        {
            _pieceToId.TryAdd(pieces[i], i);
            if (types[i] == Byte && pieces[i].Length == 6 && pieces[i].StartsWith("<0x", StringComparison.Ordinal))
                _byteIds[Convert.ToInt32(pieces[i].Substring(3, 2), 16)] = i;
        }
        _lookup = _pieceToId.GetAlternateLookup<ReadOnlySpan<char>>();
        _userDefined = Enumerable.Range(0, pieces.Length).Where(i => types[i] == UserDefined)
            .Select(i => pieces[i]).OrderByDescending(p => p.Length).ToArray();
        if (byteFallback && _byteIds.Any(id => id < 0))
            throw new LayerPruneException($"{file}: byte_fallback is set but <0xNN> pieces are missing");
    }

    public string IdToPiece(int id) => _pieces[id];
    public float Score(int id) => _scores[id];
    public bool IsNormal(int id) => _types[id] == Normal;
    /// <summary>The piece's sentencepiece_model.proto type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).</summary>
    public int PieceType(int id) => _types[id];
    public bool TryGetId(string piece, out int id) => _pieceToId.TryGetValue(piece, out id);
    public bool IsControl(int id) => id >= 0 && id < _types.Length && _types[id] == Control;

    // ---- loading: a minimal protobuf reader for sentencepiece_model.proto (ModelProto) ----

    public static SentencePieceModel Load(string path)
    {
        string file = Path.GetFileName(path);
        byte[] data;
        try { data = File.ReadAllBytes(path); }
        catch (IOException e) { throw new LayerPruneException($"{file}: cannot read ({e.Message})", e); }
        try { return Parse(data, file); }
        catch (Exception e) when (e is IndexOutOfRangeException or ArgumentException or DecoderFallbackException or FormatException
                                   or OverflowException)
        { throw new LayerPruneException($"{file}: not a valid SentencePiece model ({e.Message})", e); }
    }

    private static SentencePieceModel Parse(byte[] data, string file)
    {
        var pieces = new List<string>(); var scores = new List<float>(); var types = new List<int>();
        int modelType = 1, unk = 0, bos = 1, eos = 2, pad = -1; bool byteFallback = false;
        string normName = "identity"; bool dummy = true, removeWs = true, escapeWs = true;
        bool sawTrainer = false;
        var r = new ProtoReader(data, 0, data.Length);
        while (r.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == 2: // SentencePiece pieces
                    var p = r.Sub(); string piece = ""; float score = 0; int type = Normal;
                    while (p.Next(out int f, out int w))
                    {
                        if (f == 1 && w == 2) piece = p.String();
                        else if (f == 2 && w == 5) score = p.Float();
                        else if (f == 3 && w == 0) type = (int)p.Varint();
                        else p.Skip(w);
                    }
                    pieces.Add(piece); scores.Add(score); types.Add(type);
                    break;
                case 2 when wire == 2: // TrainerSpec
                    sawTrainer = true;
                    var t = r.Sub();
                    while (t.Next(out int f, out int w))
                    {
                        if (w != 0) { t.Skip(w); continue; }
                        long v = (long)t.Varint();
                        switch (f)
                        {
                            case 3: modelType = (int)v; break;
                            case 35: byteFallback = v != 0; break;
                            case 40: unk = (int)v; break;
                            case 41: bos = (int)v; break;
                            case 42: eos = (int)v; break;
                            case 43: pad = (int)v; break; // int32 -1 is written as a 64-bit varint
                        }
                    }
                    break;
                case 3 when wire == 2: // NormalizerSpec
                    var n = r.Sub();
                    while (n.Next(out int f, out int w))
                    {
                        if (f == 1 && w == 2) normName = n.String();
                        else if (f == 3 && w == 0) dummy = n.Varint() != 0;
                        else if (f == 4 && w == 0) removeWs = n.Varint() != 0;
                        else if (f == 5 && w == 0) escapeWs = n.Varint() != 0;
                        else n.Skip(w);
                    }
                    break;
                default: r.Skip(wire); break;
            }
        }
        if (pieces.Count == 0 || !sawTrainer)
            throw new LayerPruneException($"{file}: not a valid SentencePiece model (no pieces or trainer spec)");
        return new SentencePieceModel(pieces.ToArray(), scores.ToArray(), types.ToArray(), modelType, byteFallback,
            unk, bos, eos, pad, normName, dummy, removeWs, escapeWs, file);
    }

    private struct ProtoReader(byte[] data, int pos, int end)
    {
        private int _pos = pos;
        public bool Next(out int field, out int wire)
        {
            if (_pos >= end) { field = wire = 0; return false; }
            ulong key = Varint(); field = (int)(key >> 3); wire = (int)(key & 7);
            return true;
        }
        public ulong Varint()
        {
            ulong v = 0; int shift = 0;
            while (true)
            {
                if (_pos >= end) throw new FormatException("truncated varint");
                byte b = data[_pos++]; v |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return v;
                shift += 7;
                if (shift > 63) throw new FormatException("varint too long");
            }
        }
        public float Float() { float f = BitConverter.ToSingle(data, _pos); _pos += 4; return f; }
        private int Length()
        {
            int len = checked((int)Varint());
            if (len < 0 || _pos + len > end) throw new FormatException("length out of range");
            return len;
        }
        public ProtoReader Sub() { int len = Length(); var s = new ProtoReader(data, _pos, _pos + len); _pos += len; return s; }
        public string String()
        {
            int len = Length();
            var s = new UTF8Encoding(false, true).GetString(data, _pos, len);
            _pos += len;
            return s;
        }
        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: _pos += 8; break;
                case 2: int len = Length(); _pos += len; break;
                case 5: _pos += 4; break;
                default: throw new FormatException($"unsupported wire type {wire}");
            }
            if (_pos > end) throw new FormatException("field out of range");
        }
    }

    // ---- encoding ----

    /// <summary>sentencepiece normalizer.cc with the identity rule set: drop extra spaces, add the dummy prefix, escape spaces.</summary>
    public string Normalize(string text)
    {
        var sb = new StringBuilder(text.Length + 1);
        int i = 0;
        if (RemoveExtraWhitespaces) while (i < text.Length && text[i] == ' ') i++;
        if (i == text.Length) return "";
        if (AddDummyPrefix) sb.Append(EscapeWhitespaces ? SpaceSymbol : ' ');
        bool prevSpace = RemoveExtraWhitespaces;
        for (; i < text.Length; i++)
        {
            char c = text[i];
            if (c == ' ')
            {
                if (prevSpace) continue;
                sb.Append(EscapeWhitespaces ? SpaceSymbol : ' ');
                prevSpace = RemoveExtraWhitespaces;
            }
            else { sb.Append(c); prevSpace = false; }
        }
        if (RemoveExtraWhitespaces)
        {
            char sp = EscapeWhitespaces ? SpaceSymbol : ' ';
            while (sb.Length > 0 && sb[^1] == sp) sb.Length--;
        }
        return sb.ToString();
    }

    /// <summary>Appends the ids of <paramref name="text"/> (what SentencePieceProcessor.encode gives, no BOS/EOS).</summary>
    public void Encode(string text, List<int> output)
    {
        string s = Normalize(text);
        if (s.Length == 0) return;
        // Initial symbols: user-defined pieces whole, otherwise one code point each. Characters outside the
        // vocabulary get negative ids (~index into `unknown`) so they never merge.
        var symbols = new List<int>(s.Length);
        var unknown = new List<string>();
        for (int i = 0; i < s.Length;)
        {
            string? ud = null;
            foreach (var u in _userDefined) if (string.CompareOrdinal(s, i, u, 0, u.Length) == 0) { ud = u; break; }
            int len = ud?.Length ?? (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? 2 : 1);
            if (_lookup.TryGetValue(s.AsSpan(i, len), out int id) && _types[id] is Normal or UserDefined) symbols.Add(id);
            else { symbols.Add(~unknown.Count); unknown.Add(s.Substring(i, len)); }
            i += len;
        }
        BpeMerger.Merge(symbols, TryMergePair);
        foreach (int id in symbols)
        {
            if (id >= 0) { output.Add(id); continue; }
            string piece = unknown[~id];
            if (ByteFallback) foreach (byte b in Encoding.UTF8.GetBytes(piece)) output.Add(_byteIds[b]);
            else output.Add(UnkId);
        }
    }

    private bool TryMergePair(int left, int right, out double priority, out int merged)
    {
        priority = 0; merged = -1;
        if (left < 0 || right < 0 || _types[left] == UserDefined || _types[right] == UserDefined) return false;
        if (!_pairCache.TryGetValue((left, right), out var hit))
        {
            hit = null;
            // Merge targets are normal pieces (sentencepiece also admits unused ones, then re-splits them; none of our models has any).
            if (_pieceToId.TryGetValue(_pieces[left] + _pieces[right], out int id) && _types[id] == Normal) hit = (_scores[id], id);
            _pairCache[(left, right)] = hit;
        }
        if (hit is not { } h) return false;
        priority = -h.Score; merged = h.Id; // highest score first
        return true;
    }

    // ---- decoding (sentencepiece DecodeIds) ----

    public string Decode(IEnumerable<int> ids)
    {
        var sb = new StringBuilder();
        var bytes = new List<byte>();
        bool atStart = true;
        void Flush() { if (bytes.Count > 0) { sb.Append(Encoding.UTF8.GetString(bytes.ToArray())); bytes.Clear(); atStart = false; } }
        foreach (int id in ids)
        {
            if (id < 0 || id >= _pieces.Length)
                throw new LayerPruneException($"token id {id} is outside the vocabulary (size {_pieces.Length})");
            int type = _types[id];
            if (type == Control) continue;
            if (type == Byte) { bytes.Add(Convert.ToByte(_pieces[id].Substring(3, 2), 16)); continue; }
            Flush();
            if (type == Unknown) { sb.Append(" \u2047 "); atStart = false; continue; }
            string piece = _pieces[id];
            if (atStart && (AddDummyPrefix || RemoveExtraWhitespaces) && piece.Length > 0 && piece[0] == SpaceSymbol) piece = piece[1..];
            sb.Append(piece.Replace(SpaceSymbol, ' '));
            atStart = false;
        }
        Flush();
        return sb.ToString();
    }
}
