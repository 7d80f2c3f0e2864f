using LayerPrune.Checkpoints;
using LayerPrune.Pruning;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Gguf;

/// <summary>The tensor type of an export (llama.cpp's --outtype): 1-D tensors (norms, biases) always stay F32.</summary>
public enum GgufOutputType
{
    /// <summary>32-bit float.</summary>
    F32,
    /// <summary>IEEE half.</summary>
    F16,
    /// <summary>bfloat16.</summary>
    BF16,
    /// <summary>8-bit blocks of 32 with one f16 scale (ggml Q8_0).</summary>
    Q8_0,
}

/// <summary>Parameters of <see cref="GgufExporter.Export"/>.</summary>
public sealed record GgufExportOptions
{
    /// <summary>Type of the 2-D weights.</summary>
    public GgufOutputType Type { get; init; } = GgufOutputType.F16;
    /// <summary>Replace an existing output file.</summary>
    public bool Force { get; init; }
    /// <summary>
    /// Export a model whose sliding window is shorter than its context although no llama.cpp architecture for its block
    /// represents the window (docs/gguf.md): llama.cpp then attends over the whole context, exact only while prompt and
    /// output fit in the window.
    /// </summary>
    public bool IgnoreSlidingWindow { get; init; }
    /// <summary>general.name (default: the model folder's name).</summary>
    public string? Name { get; init; }
}

/// <summary>What an export wrote.</summary>
public sealed record GgufExportResult(string Path, string Architecture, int Layers, int Tensors, long Bytes, string? Note);

/// <summary>
/// Hugging Face checkpoint → GGUF v3 as llama.cpp's convert_hf_to_gguf.py writes it (tensor names, q/k row order,
/// metadata, tokenizer). Streams one tensor at a time from the memory-mapped safetensors; the file appears atomically.
/// </summary>
public static class GgufExporter
{
    /// <summary>Q8_0: 32 weights per block, an F16 scale then 32 int8 (ggml block_q8_0, 34 bytes).</summary>
    public const int Q8Block = 32;

    /// <summary>Exports <paramref name="modelDir"/> to <paramref name="outPath"/>.</summary>
    public static GgufExportResult Export(string modelDir, string outPath, GgufExportOptions o)
    {
        using var ckpt = Checkpoint.Open(modelDir);
        var c = ckpt.Config;
        CheckOutput(outPath, modelDir, o.Force);
        string arch = GgufTensorNames.Architecture(c.Family);
        var metadata = new List<KeyValuePair<string, GgufValue>>
        {
            new("general.architecture", GgufValue.Str(arch)),
            new("general.type", GgufValue.Str("model")),
            new("general.name", GgufValue.Str(o.Name ?? Path.GetFileName(Path.GetFullPath(modelDir).TrimEnd('/')))),
        };
        metadata.AddRange(GgufTensorNames.Hyperparameters(c, o.IgnoreSlidingWindow));
        metadata.Add(new("general.file_type", GgufValue.U32(FileType(o.Type))));
        metadata.Add(new("general.quantization_version", GgufValue.U32(2)));
        metadata.AddRange(GgufTokenizer.Metadata(modelDir, c, out string? note));

        var tensors = new List<GgufTensorToWrite>();
        foreach (var m in GgufTensorNames.Tensors(c, ckpt.Contains))
        {
            var info = ckpt.Info(m.HfName);
            long[] dims = info.Shape.Reverse().ToArray(); // ggml ne[0] = HF's last (contiguous) dimension
            var type = TargetType(o.Type, dims);
            tensors.Add(new GgufTensorToWrite(m.GgufName, dims, type, s => WriteTensor(ckpt, m, type, s)));
        }
        tensors.AddRange(DeciGguf.ZeroFfns(c));   // deci: a kept attention without MLP (see DeciGguf)
        if (c.Rope.Type == "llama3")
        {
            // llama.cpp's llama3 RoPE: per-frequency factors in rope_freqs.weight (written after token_embd like the converter).
            var factors = GgufTensorNames.Llama3RopeFactors(c);
            tensors.Insert(1, new GgufTensorToWrite("rope_freqs.weight", [factors.Length], GgmlType.F32,
                s => s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(factors.AsSpan()))));
        }
        int fallback = o.Type == GgufOutputType.Q8_0 ? tensors.Count(t => t.Dims.Length >= 2 && t.Type == GgmlType.F16) : 0;
        if (fallback > 0)
        {
            string fallbackNote = $"{fallback} matrices have rows that are not whole Q8_0 blocks of {Q8Block}: stored as F16";
            note = note is null ? fallbackNote : $"{note}; {fallbackNote}";
        }
        GgufWriter.Write(outPath, metadata, tensors, o.Force);
        return new GgufExportResult(Path.GetFullPath(outPath), arch, c.NumLayers, tensors.Count, new FileInfo(outPath).Length, note);
    }

    /// <summary>general.file_type (llama_ftype): ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32.</summary>
    public static uint FileType(GgufOutputType t) => t switch
    {
        GgufOutputType.F32 => 0, GgufOutputType.F16 => 1, GgufOutputType.Q8_0 => 7, GgufOutputType.BF16 => 32, _ => 0,
    };

    /// <summary>
    /// The stored type of one tensor: 1-D tensors stay F32; Q8_0 needs rows that are whole blocks (ne[0] % 32 == 0),
    /// other matrices fall back to F16 as llama.cpp's quantizer does.
    /// </summary>
    public static GgmlType TargetType(GgufOutputType t, long[] dims)
    {
        if (dims.Length < 2) return GgmlType.F32;
        return t switch
        {
            GgufOutputType.F32 => GgmlType.F32,
            GgufOutputType.F16 => GgmlType.F16,
            GgufOutputType.BF16 => GgmlType.BF16,
            _ => dims[0] % Q8Block == 0 ? GgmlType.Q8_0 : GgmlType.F16,
        };
    }

    static void WriteTensor(Checkpoint ckpt, GgufTensorMapping m, GgmlType type, Stream s)
    {
        // Loaded outside the dispose scope: the checkpoint caches its file mapping on first use.
        using var stored = ckpt.Load(m.HfName); // [out, in] or [n], a view of the mapping
        using var scope = NewDisposeScope();
        var t = stored.to(ScalarType.Float32);
        if (m.Permute == GgufPermute.Heads) t = PermuteHeads(t, m.PermuteHeads);
        t = t.contiguous();
        switch (type)
        {
            case GgmlType.F32: s.Write(t.bytes); break;
            case GgmlType.F16: s.Write(t.to(ScalarType.Float16).contiguous().bytes); break;
            case GgmlType.BF16: s.Write(t.to(ScalarType.BFloat16).contiguous().bytes); break;
            case GgmlType.Q8_0: QuantizeQ8_0(t.data<float>().ToArray(), s); break;
            default: throw new InvalidOperationException($"cannot write {type}");
        }
    }

    /// <summary>
    /// convert_hf_to_gguf.py LlamaModel.permute: within each head, rows [r0..r(d/2−1), r(d/2)..] (HF rotate_half layout)
    /// become interleaved pairs (r0, r(d/2), r1, …) for llama.cpp's adjacent-pair RoPE. w: [heads·d, …].
    /// </summary>
    public static Tensor PermuteHeads(Tensor w, int heads)
    {
        long rows = w.shape[0];
        var rest = w.shape.Skip(1).ToArray();
        long[] split = [heads, 2, rows / heads / 2, .. rest];
        return w.reshape(split).transpose(1, 2).reshape(w.shape);
    }

    /// <summary>
    /// ggml's quantize_row_q8_0_ref: per block of 32, d = max|x| / 127, q = roundf(x / d) computed as x · (1/d)
    /// in float, stored as (F16 d, 32 × int8).
    /// </summary>
    public static void QuantizeQ8_0(ReadOnlySpan<float> x, Stream s)
    {
        if (x.Length % Q8Block != 0) throw new ArgumentException($"Q8_0 needs a multiple of {Q8Block} values, got {x.Length}");
        Span<byte> block = stackalloc byte[2 + Q8Block];
        for (int b = 0; b < x.Length; b += Q8Block)
        {
            var xs = x.Slice(b, Q8Block);
            float amax = 0;
            foreach (float v in xs) amax = MathF.Max(amax, MathF.Abs(v));
            float d = amax / 127;
            float id = d != 0 ? 1.0f / d : 0.0f;
            BitConverter.TryWriteBytes(block, (Half)d);
            for (int j = 0; j < Q8Block; j++) block[2 + j] = (byte)(sbyte)MathF.Round(xs[j] * id, MidpointRounding.AwayFromZero);
            s.Write(block);
        }
    }

    /// <summary>The output must not replace one of the model's own files.</summary>
    static void CheckOutput(string outPath, string modelDir, bool force)
    {
        if (string.IsNullOrWhiteSpace(outPath)) throw LayerPruneException.Invalid(nameof(outPath), null, "must not be empty");
        string full = OutputFolder.Canonical(outPath);
        if (Directory.Exists(full)) throw LayerPruneException.Invalid(nameof(outPath), outPath, "is a folder, not a file");
        if (File.Exists(full) && !force)
            throw LayerPruneException.Invalid(nameof(outPath), outPath, "already exists (use `force` to replace it)");
        string dir = OutputFolder.Canonical(modelDir);
        if (File.Exists(full) && Path.GetDirectoryName(full) == dir && !full.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
            throw LayerPruneException.Invalid(nameof(outPath), outPath, $"would replace a file of the input model {modelDir}");
    }
}
