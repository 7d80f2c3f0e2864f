using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Pruning;
using static TorchSharp.torch;

namespace LayerPrune.Gguf;

/// <summary>
/// GGUF → Hugging Face checkpoint folder, the inverse of <see cref="GgufExporter"/> (and of llama.cpp's
/// convert_hf_to_gguf.py) for the <c>llama</c> and <c>qwen2</c> architectures: config.json from the hyper-parameter
/// metadata, model.safetensors with every tensor dequantized (F32, F16, BF16 stored as is; Q8_0 as the exact F32 products
/// d·q), the llama converter's q/k row permutation undone, and the tokenizer rebuilt from tokenizer.ggml.* (SentencePiece →
/// tokenizer.model, byte-level BPE → tokenizer.json) with tokenizer_config.json. Every command then reads the folder as any
/// other checkpoint. Other tensor types (k-quants, i-quants, Q4_0 …) are refused in one line.
/// </summary>
public static class GgufImporter
{
    /// <summary>The ggml types a GGUF input may hold.</summary>
    public static readonly GgmlType[] ReadableTypes = [GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0];

    /// <summary>
    /// The folder converted from <paramref name="ggufPath"/> under <paramref name="cacheRoot"/>, named by the file's full path,
    /// size and modification time (converted once, atomically; later calls reuse it).
    /// </summary>
    public static string Import(string ggufPath, string cacheRoot)
    {
        var fi = new FileInfo(ggufPath);
        if (!fi.Exists) throw LayerPruneException.Usage($"{ggufPath}: file not found");
        string key = System.Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(
            $"{fi.FullName}\n{fi.Length}\n{fi.LastWriteTimeUtc.Ticks}")))[..16];
        string dir = Path.Combine(cacheRoot, $"{Path.GetFileNameWithoutExtension(fi.Name)}-{key}");
        if (File.Exists(Path.Combine(dir, Checkpoint.SingleFile))) return dir;
        Directory.CreateDirectory(cacheRoot);
        string tmp = $"{dir}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        try
        {
            Convert(ggufPath, tmp);
            try { Directory.Move(tmp, dir); }
            catch (IOException) when (File.Exists(Path.Combine(dir, Checkpoint.SingleFile))) { } // another process won the race
        }
        finally { if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true); }
        return dir;
    }

    /// <summary>Writes the HF checkpoint of <paramref name="ggufPath"/> into the new folder <paramref name="outDir"/>.</summary>
    public static void Convert(string ggufPath, string outDir) => Convert(GgufFile.Open(ggufPath), outDir);

    /// <summary>Writes the HF checkpoint of the opened GGUF <paramref name="g"/> into the new folder <paramref name="outDir"/>.</summary>
    public static void Convert(GgufFile g, string outDir)
    {
        string ggufPath = g.Path;
        string arch = g.Architecture;
        if (arch is not ("llama" or "qwen2"))
            throw new LayerPruneException(
                $"{ggufPath}: GGUF architecture '{GgufFile.Quote(arch)}' cannot be read (LayerPrune reads llama and qwen2 GGUFs; " +
                "prune with an explicit layer list works on any)");
        foreach (var t in g.Tensors)
            if (Array.IndexOf(ReadableTypes, t.Type) < 0)
                throw new LayerPruneException(
                    $"{ggufPath}: tensor '{GgufFile.Quote(t.Name)}' is {t.Type}; LayerPrune reads f32, f16, bf16 and q8_0 GGUFs: " +
                    "export an f16 or q8_0 GGUF (convert_hf_to_gguf.py --outtype f16) or use the HF checkpoint");
        var tensors = g.Tensors.ToDictionary(t => t.Name);
        if (tensors.ContainsKey("rope_freqs.weight"))
            throw new LayerPruneException(
                $"{ggufPath}: llama3 RoPE frequency factors (rope_freqs.weight) cannot be mapped back to a config.json; " +
                "use the HF checkpoint");
        Directory.CreateDirectory(outDir);
        var config = Config(g, tensors);
        File.WriteAllText(Path.Combine(outDir, "config.json"), config.ToJsonString(new() { WriteIndented = true }));
        ModelConfig c;
        try { c = ModelConfig.Load(outDir); }
        catch (LayerPruneException e) { throw NotAModel(ggufPath, outDir, e); }
        var all = GgufTensorNames.Tensors(c, _ => true).ToDictionary(m => m.HfName);
        bool Has(string hf) => all.TryGetValue(hf, out var m) && tensors.ContainsKey(m.GgufName);
        var writes = new List<TensorToWrite>();
        foreach (var m in GgufTensorNames.Tensors(c, Has))
        {
            if (!tensors.TryGetValue(m.GgufName, out var t))
                throw new LayerPruneException($"{ggufPath}: tensor '{m.GgufName}' (for {m.HfName}) is missing");
            long[] shape = t.Dims.Reverse().ToArray();
            string dtype = t.Type switch { GgmlType.F16 => "F16", GgmlType.BF16 => "BF16", _ => "F32" };
            long bytes = t.NumElements * SafeTensorsFile.ElementSize(dtype);
            writes.Add(new TensorToWrite(m.HfName, dtype, shape, bytes, s => WriteTensor(g, t, m, shape, dtype, s)));
        }
        SafeTensorsWriter.Write(Path.Combine(outDir, Checkpoint.SingleFile), writes,
            new Dictionary<string, string> { ["format"] = "pt", ["source"] = "gguf" });
        GgufTokenizerReader.Write(g, outDir, c.VocabSize);
        // The folder must load as any checkpoint does; where it does not, the GGUF's metadata and tensors disagree, and the
        // user is told about the GGUF, not about the conversion folder (found by bench/LayerPrune.Fuzz).
        try
        {
            Checkpoint.Open(outDir).Dispose();
            Tokenization.TokenizerLoader.Load(outDir);
        }
        catch (LayerPruneException e) { throw NotAModel(ggufPath, outDir, e); }
    }

    /// <summary>A failure to load the converted folder, told about the GGUF (the folder's path left out).</summary>
    static LayerPruneException NotAModel(string ggufPath, string outDir, LayerPruneException e)
    {
        string inner = e.Message.Replace(Path.GetFullPath(outDir) + Path.DirectorySeparatorChar, "")
            .Replace(outDir + Path.DirectorySeparatorChar, "");
        return new LayerPruneException($"{ggufPath}: its metadata and tensors do not make a valid model (as converted, {inner})");
    }

    static JsonObject Config(GgufFile g, Dictionary<string, GgufTensorInfo> tensors)
    {
        string arch = g.Architecture;
        long? Key(string k) => g.Get($"{arch}.{k}") switch
        {
            null => null,
            { Type: GgufValueType.Array } => throw new LayerPruneException($"{g.Path}: {arch}.{k} varies per layer (not supported)"),
            var v => v.AsLong(g.Path, $"{arch}.{k}"),
        };
        long Need(string k) => Key(k) ?? throw new LayerPruneException($"{g.Path}: GGUF metadata has no {arch}.{k}");
        double? Float(string k) => g.Get($"{arch}.{k}")?.Value switch { float f => f, double d => d, _ => null };
        var embd = tensors.GetValueOrDefault("token_embd.weight")
            ?? throw new LayerPruneException($"{g.Path}: tensor 'token_embd.weight' is missing");
        if (embd.Dims.Length != 2) throw new LayerPruneException($"{g.Path}: token_embd.weight is not a matrix");
        long heads = Need("attention.head_count"), hidden = Need("embedding_length");
        var c = new JsonObject
        {
            ["architectures"] = new JsonArray(arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"),
            ["model_type"] = arch,
            ["hidden_size"] = hidden,
            ["intermediate_size"] = Need("feed_forward_length"),
            ["num_hidden_layers"] = Need("block_count"),
            ["num_attention_heads"] = heads,
            ["num_key_value_heads"] = Key("attention.head_count_kv") ?? heads,
            ["head_dim"] = Key("attention.key_length") ?? hidden / Math.Max(1, heads),
            ["max_position_embeddings"] = Key("context_length") ?? 2048,
            ["rms_norm_eps"] = Float("attention.layer_norm_rms_epsilon") ?? 1e-6,
            ["rope_theta"] = Float("rope.freq_base") ?? 10000.0,
            ["hidden_act"] = "silu",
            ["vocab_size"] = embd.Dims[1],
            ["tie_word_embeddings"] = !tensors.ContainsKey("output.weight"),
            ["torch_dtype"] = "float32",
        };
        if (g.Get($"{arch}.rope.scaling.type")?.Value is string scaling and not "none")
        {
            if (scaling != "linear")
                throw new LayerPruneException($"{g.Path}: RoPE scaling '{GgufFile.Quote(scaling)}' cannot be read (only linear)");
            c["rope_scaling"] = new JsonObject { ["type"] = "linear", ["factor"] = Float("rope.scaling.factor") ?? 1.0 };
        }
        if (Key("rope.dimension_count") is long rd && rd != c["head_dim"]!.GetValue<long>())
            throw new LayerPruneException($"{g.Path}: partial rotary embedding ({arch}.rope.dimension_count {rd}) cannot be read");
        if (arch == "llama")
        {
            c["attention_bias"] = tensors.ContainsKey("blk.0.attn_q.bias");
            c["mlp_bias"] = tensors.ContainsKey("blk.0.ffn_gate.bias");
        }
        if (g.Get("tokenizer.ggml.bos_token_id") is { } bos) c["bos_token_id"] = bos.AsLong(g.Path, "tokenizer.ggml.bos_token_id");
        if (g.Get("tokenizer.ggml.eos_token_id") is { } eos) c["eos_token_id"] = eos.AsLong(g.Path, "tokenizer.ggml.eos_token_id");
        return c;
    }

    static void WriteTensor(GgufFile g, GgufTensorInfo t, GgufTensorMapping m, long[] shape, string dtype, Stream s)
    {
        var raw = g.ReadTensorBytes(t);
        using var scope = NewDisposeScope();
        var x = tensor(Dequantize(t.Type, raw, t.NumElements), shape);
        if (m.Permute == GgufPermute.Heads) x = UnpermuteHeads(x, m.PermuteHeads);
        x = x.to(SafeTensorsFile.TorchType(dtype)).contiguous();
        s.Write(x.bytes);
    }

    /// <summary>
    /// Inverse of <see cref="GgufExporter.PermuteHeads"/> (convert_hf_to_gguf.py LlamaModel.permute): within each head the
    /// interleaved pairs (r0, r(d/2), r1, …) go back to HF's rotate_half layout [r0..r(d/2−1), r(d/2)..].
    /// </summary>
    public static Tensor UnpermuteHeads(Tensor w, int heads)
    {
        long rows = w.shape[0];
        var rest = w.shape.Skip(1).ToArray();
        long[] split = [heads, rows / heads / 2, 2, .. rest];
        return w.reshape(split).transpose(1, 2).reshape(w.shape);
    }

    /// <summary>The values of a stored tensor as float32 (Q8_0: d · q per block of 32, as ggml's dequantize_row_q8_0).</summary>
    public static float[] Dequantize(GgmlType type, ReadOnlySpan<byte> raw, long count)
    {
        var y = new float[count];
        switch (type)
        {
            case GgmlType.F32:
                raw[..(int)(count * 4)].CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsBytes(y.AsSpan()));
                break;
            case GgmlType.F16:
                for (int i = 0; i < count; i++) y[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(raw.Slice(2 * i, 2));
                break;
            case GgmlType.BF16:
                for (int i = 0; i < count; i++)
                    y[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(raw.Slice(2 * i, 2)) << 16);
                break;
            case GgmlType.Q8_0:
                const int B = GgufExporter.Q8Block;
                for (long b = 0; b < count / B; b++)
                {
                    var block = raw.Slice((int)(b * (B + 2)), B + 2);
                    float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
                    for (int j = 0; j < B; j++) y[b * B + j] = d * (sbyte)block[2 + j];
                }
                break;
            default: throw new LayerPruneException($"ggml tensor type {type} cannot be dequantized by LayerPrune");
        }
        return y;
    }
}
