using System.Text;

namespace LayerPrune.Gguf;

/// <summary>GGUF metadata value types (gguf-py constants.py GGUFValueType).</summary>
public enum GgufValueType : uint
{
#pragma warning disable CS1591 // Members mirror gguf-py constants.py one to one; the summary above names the source.
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9,
    UInt64 = 10, Int64 = 11, Float64 = 12,
#pragma warning restore CS1591
}

/// <summary>ggml tensor types (gguf-py constants.py GGMLQuantizationType); the ones LayerPrune writes are F32, F16, BF16, Q8_0.</summary>
public enum GgmlType : uint
{
#pragma warning disable CS1591 // Members mirror gguf-py constants.py one to one; the summary above names the source.
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13,
    Q6_K = 14, Q8_K = 15, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
#pragma warning restore CS1591
}

/// <summary>A metadata value: scalar (boxed), string, or array (<see cref="ElementType"/> + a typed .NET array).</summary>
public sealed record GgufValue(GgufValueType Type, object Value, GgufValueType ElementType = GgufValueType.UInt8)
{
    /// <summary>An unsigned 32-bit value (most GGUF integers).</summary>
    public static GgufValue U32(uint v) => new(GgufValueType.UInt32, v);
    /// <summary>A 32-bit float value.</summary>
    public static GgufValue F32(float v) => new(GgufValueType.Float32, v);
    /// <summary>A UTF-8 string value.</summary>
    public static GgufValue Str(string v) => new(GgufValueType.String, v);
    /// <summary>A boolean value.</summary>
    public static GgufValue Bool(bool v) => new(GgufValueType.Bool, v);
    /// <summary>An array of <paramref name="elementType"/> values.</summary>
    public static GgufValue Array(GgufValueType elementType, System.Array items) => new(GgufValueType.Array, items, elementType);

    /// <summary>Number of elements of an array value (0 for scalars).</summary>
    public int Count => Value is System.Array a ? a.Length : 0;

    /// <summary>An integer value of any integer type (throws for other types).</summary>
    public long AsLong() => Value switch
    {
        byte b => b, sbyte sb => sb, ushort us => us, short s => s, uint u => u, int i => i, ulong ul => checked((long)ul), long l => l,
        _ => throw new InvalidOperationException($"GGUF value of type {Type} is not an integer"),
    };

    /// <summary>
    /// The integer value of metadata <paramref name="key"/> of file <paramref name="path"/>; a value of another type, or
    /// beyond the range of long, is a one-line LayerPruneException naming both (found by bench/LayerPrune.Fuzz).
    /// </summary>
    public long AsLong(string path, string key) => Value switch
    {
        ulong ul when ul > long.MaxValue =>
            throw new LayerPruneException($"{path}: metadata '{GgufFile.Quote(key)}' = {ul} is out of range"),
        byte or sbyte or ushort or short or uint or int or ulong or long => AsLong(),
        _ => throw new LayerPruneException($"{path}: metadata '{GgufFile.Quote(key)}' is {(Type == GgufValueType.Array
            ? $"an array of {ElementType}" : Type.ToString())}, not an integer"),
    };

    /// <summary>Human-readable form for `info` (arrays abbreviated).</summary>
    public override string ToString() => Value switch
    {
        System.Array a => $"[{ElementType} × {a.Length}]",
        float f => f.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        double d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        _ => Value.ToString() ?? "",
    };
}

/// <summary>One tensor's header entry. <see cref="Dims"/> are in ggml order (ne[0] = innermost = HF's last dimension).</summary>
public sealed record GgufTensorInfo(string Name, long[] Dims, GgmlType Type, long Offset)
{
    /// <summary>Elements in the tensor.</summary>
    public long NumElements => Dims.Aggregate(1L, (a, b) => a * b);
    /// <summary>Stored bytes: rows of ne[0] elements packed in blocks (see <see cref="GgufFile.BlockLayout"/>).</summary>
    public long ByteLength => GgufFile.ByteLength(Type, Dims);
}

/// <summary>
/// A GGUF v2/v3 file (llama.cpp ggml/docs/gguf.md): "GGUF", version, tensor count, metadata count, metadata key/values,
/// tensor infos, padding to general.alignment (default 32), tensor data (each tensor's offset aligned, relative to the
/// data section). Only the header is read; tensor bytes are copied by <see cref="CopyTensor"/>.
/// </summary>
public sealed class GgufFile
{
    /// <summary>"GGUF" as a little-endian uint32.</summary>
    public const uint Magic = 0x46554747;
    /// <summary>Default general.alignment.</summary>
    public const int DefaultAlignment = 32;

    /// <summary>Path of the file.</summary>
    public string Path { get; }
    /// <summary>GGUF version (2 or 3).</summary>
    public uint Version { get; }
    /// <summary>Metadata in file order.</summary>
    public IReadOnlyList<KeyValuePair<string, GgufValue>> Metadata { get; }
    /// <summary>Tensor infos in file order.</summary>
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }
    /// <summary>Absolute offset of the data section.</summary>
    public long DataStart { get; }
    /// <summary>general.alignment (or 32).</summary>
    public int Alignment { get; }
    /// <summary>File length in bytes.</summary>
    public long FileLength { get; }

    /// <summary>The whole file when it was parsed from memory (<see cref="Parse"/>); null: read from <see cref="Path"/>.</summary>
    readonly byte[]? _bytes;

    GgufFile(string path, uint version, List<KeyValuePair<string, GgufValue>> metadata, List<GgufTensorInfo> tensors,
             long dataStart, int alignment, long length, byte[]? bytes = null)
    {
        _bytes = bytes;
        Path = path;
        Version = version;
        Metadata = metadata;
        Tensors = tensors;
        DataStart = dataStart;
        Alignment = alignment;
        FileLength = length;
    }

    /// <summary>The value of <paramref name="key"/> or null.</summary>
    public GgufValue? Get(string key) => Metadata.FirstOrDefault(kv => kv.Key == key).Value;

    /// <summary>general.architecture.</summary>
    public string Architecture => Get("general.architecture")?.Value as string
        ?? throw new LayerPruneException($"{Path}: GGUF metadata has no general.architecture");

    /// <summary>{arch}.block_count: the number of decoder layers.</summary>
    public int BlockCount => (int)(Get($"{Architecture}.block_count")?.AsLong(Path, $"{Architecture}.block_count")
        ?? throw new LayerPruneException($"{Path}: GGUF metadata has no {Quote(Architecture)}.block_count"));

    /// <summary>(elements per block, bytes per block) of a ggml type (gguf-py GGML_QUANT_SIZES).</summary>
    public static (int Block, int Bytes) BlockLayout(GgmlType t) => t switch
    {
        GgmlType.F32 or GgmlType.I32 => (1, 4), GgmlType.F16 or GgmlType.BF16 or GgmlType.I16 => (1, 2),
        GgmlType.I8 => (1, 1), GgmlType.I64 or GgmlType.F64 => (1, 8),
        GgmlType.Q4_0 => (32, 18), GgmlType.Q4_1 => (32, 20), GgmlType.Q5_0 => (32, 22), GgmlType.Q5_1 => (32, 24),
        GgmlType.Q8_0 => (32, 34), GgmlType.Q8_1 => (32, 36), GgmlType.IQ4_NL => (32, 18), GgmlType.MXFP4 => (32, 17),
        GgmlType.Q2_K => (256, 84), GgmlType.Q3_K => (256, 110), GgmlType.Q4_K => (256, 144), GgmlType.Q5_K => (256, 176),
        GgmlType.Q6_K => (256, 210), GgmlType.Q8_K => (256, 292), GgmlType.IQ2_XXS => (256, 66), GgmlType.IQ2_XS => (256, 74),
        GgmlType.IQ3_XXS => (256, 98), GgmlType.IQ1_S => (256, 50), GgmlType.IQ3_S => (256, 110), GgmlType.IQ2_S => (256, 82),
        GgmlType.IQ4_XS => (256, 136), GgmlType.IQ1_M => (256, 56), GgmlType.TQ1_0 => (256, 54), GgmlType.TQ2_0 => (256, 66),
        _ => throw new LayerPruneException($"ggml tensor type {(uint)t} is not known to LayerPrune"),
    };

    /// <summary>Bytes of a tensor of <paramref name="type"/> with ggml dims <paramref name="dims"/>.</summary>
    public static long ByteLength(GgmlType type, long[] dims)
    {
        var (block, bytes) = BlockLayout(type);
        long rows = dims.Skip(1).Aggregate(1L, (a, b) => checked(a * b));
        long ne0 = dims.Length == 0 ? 1 : dims[0];
        if (ne0 % block != 0)
            throw new LayerPruneException($"a {type} tensor's first dimension {ne0} is not a multiple of its block size {block}");
        return checked(rows * (ne0 / block) * bytes);
    }

    /// <summary>Reads and validates the header of a GGUF file; every failure is a one-line LayerPruneException naming the file.</summary>
    public static GgufFile Open(string path)
    {
        if (!File.Exists(path)) throw new LayerPruneException($"{path}: file not found");
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            return Read(path, fs);
        }
        catch (EndOfStreamException) { throw new LayerPruneException($"{path}: truncated GGUF header"); }
        catch (IOException e) { throw new LayerPruneException($"{path}: cannot read ({JsonInput.FirstLine(e.Message)})", e); }
    }

    /// <summary>
    /// Reads and validates a GGUF file held in memory (<paramref name="name"/> names it in messages); tensors are then copied
    /// from <paramref name="bytes"/>, which must not change. Every failure is a one-line LayerPruneException naming it.
    /// </summary>
    public static GgufFile Parse(string name, byte[] bytes)
    {
        try
        {
            using var ms = new MemoryStream(bytes, writable: false);
            return Read(name, ms, bytes);
        }
        catch (EndOfStreamException) { throw new LayerPruneException($"{name}: truncated GGUF header"); }
    }

    static GgufFile Read(string path, Stream fs, byte[]? whole = null)
    {
        long length = fs.Length;
        var r = new BinaryReader(fs, Encoding.UTF8, leaveOpen: true);
        if (length < 24 || r.ReadUInt32() != Magic) throw new LayerPruneException($"{path}: not a GGUF file (no 'GGUF' magic)");
        uint version = r.ReadUInt32();
        if (version is not (2 or 3)) throw new LayerPruneException($"{path}: GGUF version {version} is not supported (2 or 3)");
        ulong tensorCount = r.ReadUInt64(), kvCount = r.ReadUInt64();
        // Each entry takes at least 8 bytes: counts beyond the file size are corrupt (and must not size allocations).
        if (tensorCount > (ulong)length / 8 || kvCount > (ulong)length / 8)
            throw new LayerPruneException($"{path}: GGUF header claims {tensorCount} tensors and {kvCount} metadata entries: corrupt file");
        var metadata = new List<KeyValuePair<string, GgufValue>>((int)Math.Min(kvCount, 4096));
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = ReadString(r, path, length);
            var type = (GgufValueType)r.ReadUInt32();
            metadata.Add(new(key, ReadValue(r, type, path, length, key)));
        }
        int alignment = DefaultAlignment;
        if (metadata.FirstOrDefault(kv => kv.Key == "general.alignment").Value is { } a)
        {
            long al = a.AsLong(path, "general.alignment");
            if (al <= 0 || al > 1 << 20 || (al & (al - 1)) != 0)
                throw new LayerPruneException($"{path}: general.alignment {al} is not a power of two");
            alignment = (int)al;
        }
        var tensors = new List<GgufTensorInfo>((int)Math.Min(tensorCount, 4096));
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = ReadString(r, path, length);
            uint nDims = r.ReadUInt32();
            if (nDims > 4) throw new LayerPruneException($"{path}: tensor '{Quote(name)}' has {nDims} dimensions (ggml allows at most 4)");
            var dims = new long[nDims];
            for (int d = 0; d < nDims; d++)
            {
                ulong v = r.ReadUInt64();
                if (v > (ulong)length * 8)
                    throw new LayerPruneException($"{path}: tensor '{Quote(name)}' dimension {v} is implausible: corrupt file");
                dims[d] = (long)v;
            }
            var type = (GgmlType)r.ReadUInt32();
            ulong offset = r.ReadUInt64();
            if (offset > (ulong)length)
                throw new LayerPruneException($"{path}: tensor '{Quote(name)}' offset {offset} is beyond the end of the file");
            tensors.Add(new GgufTensorInfo(name, dims, type, (long)offset));
        }
        long dataStart = Align(fs.Position, alignment);
        foreach (var t in tensors)
        {
            long bytes;
            try { bytes = t.ByteLength; }
            catch (LayerPruneException e) { throw new LayerPruneException($"{path}: tensor '{Quote(t.Name)}': {e.Message}"); }
            if (t.Offset % alignment != 0)
                throw new LayerPruneException($"{path}: tensor '{Quote(t.Name)}' offset {t.Offset} is not aligned to {alignment}");
            if (dataStart + t.Offset + bytes > length)
                throw new LayerPruneException(
                    $"{path}: tensor '{Quote(t.Name)}' ({bytes} bytes at data offset {t.Offset}) extends beyond the end of the file: " +
                    "truncated?");
        }
        if (tensors.Select(t => t.Name).Distinct().Count() != tensors.Count)
            throw new LayerPruneException($"{path}: duplicate tensor names");
        return new GgufFile(path, version, metadata, tensors, dataStart, alignment, length, whole);
    }

    static string ReadString(BinaryReader r, string path, long length)
    {
        ulong n = r.ReadUInt64();
        // Bounded by the bytes left, so that a corrupt length never sizes an allocation beyond the file.
        if (n > (ulong)(length - r.BaseStream.Position))
            throw new LayerPruneException($"{path}: GGUF string length {n} exceeds the rest of the file: corrupt file");
        var bytes = r.ReadBytes((int)n);
        if (bytes.Length != (int)n) throw new EndOfStreamException();
        return Encoding.UTF8.GetString(bytes);
    }

    static GgufValue ReadValue(BinaryReader r, GgufValueType type, string path, long length, string key)
    {
        if (type != GgufValueType.Array) return new GgufValue(type, ReadScalar(r, type, path, length, key));
        var elem = (GgufValueType)r.ReadUInt32();
        ulong n = r.ReadUInt64();
        if (elem == GgufValueType.Array)
            throw new LayerPruneException($"{path}: metadata '{Quote(key)}' is a nested array (not supported)");
        var clr = ScalarClrType(elem, path, key);
        // Each element takes at least its scalar size (a string: its 8-byte length) of the bytes left.
        ulong left = (ulong)(length - r.BaseStream.Position), size = elem switch
        {
            GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1UL,
            GgufValueType.UInt16 or GgufValueType.Int16 => 2UL,
            GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4UL,
            _ => 8UL,
        };
        if (n > left / size)
            throw new LayerPruneException($"{path}: metadata '{Quote(key)}' array length {n} exceeds the rest of the file: corrupt file");
        var arr = System.Array.CreateInstance(clr, (int)n);
        for (int i = 0; i < (int)n; i++) arr.SetValue(ReadScalar(r, elem, path, length, key), i);
        return GgufValue.Array(elem, arr);
    }

    static object ReadScalar(BinaryReader r, GgufValueType type, string path, long length, string key) => type switch
    {
        GgufValueType.UInt8 => r.ReadByte(), GgufValueType.Int8 => r.ReadSByte(), GgufValueType.UInt16 => r.ReadUInt16(),
        GgufValueType.Int16 => r.ReadInt16(), GgufValueType.UInt32 => r.ReadUInt32(), GgufValueType.Int32 => r.ReadInt32(),
        GgufValueType.Float32 => r.ReadSingle(), GgufValueType.Bool => r.ReadByte() != 0,
        GgufValueType.String => ReadString(r, path, length),
        GgufValueType.UInt64 => r.ReadUInt64(), GgufValueType.Int64 => r.ReadInt64(), GgufValueType.Float64 => r.ReadDouble(),
        _ => throw new LayerPruneException($"{path}: metadata '{Quote(key)}' has unknown value type {(uint)type}"),
    };

    /// <summary>The .NET element type used for arrays of <paramref name="t"/>.</summary>
    internal static Type ScalarClrType(GgufValueType t, string path = "", string key = "") => t switch
    {
        GgufValueType.UInt8 => typeof(byte), GgufValueType.Int8 => typeof(sbyte), GgufValueType.UInt16 => typeof(ushort),
        GgufValueType.Int16 => typeof(short), GgufValueType.UInt32 => typeof(uint), GgufValueType.Int32 => typeof(int),
        GgufValueType.Float32 => typeof(float), GgufValueType.Bool => typeof(bool), GgufValueType.String => typeof(string),
        GgufValueType.UInt64 => typeof(ulong), GgufValueType.Int64 => typeof(long), GgufValueType.Float64 => typeof(double),
        _ => throw new LayerPruneException($"{path}: metadata '{Quote(key)}' has unknown array element type {(uint)t}"),
    };

    /// <summary>
    /// A string read from a GGUF file, fit for a one-line message: control characters escaped (\n, \u0001 …) and at most
    /// 80 characters kept. Keys and tensor names of a corrupt file can hold anything, even the rest of the header.
    /// </summary>
    public static string Quote(string s)
    {
        var sb = new StringBuilder();
        foreach (char ch in s)
        {
            if (sb.Length >= 80) return sb.Append('…').ToString();
            if (ch == '\n') sb.Append("\\n");
            else if (ch == '\r') sb.Append("\\r");
            else if (char.IsControl(ch) || ch is '\u2028' or '\u2029' or '\u0085') sb.Append($"\\u{(int)ch:x4}");
            else sb.Append(ch);
        }
        return sb.ToString();
    }

    /// <summary>Rounds <paramref name="x"/> up to a multiple of <paramref name="alignment"/>.</summary>
    public static long Align(long x, int alignment) => (x + alignment - 1) / alignment * alignment;

    /// <summary>Copies the stored bytes of <paramref name="t"/> (any type) to <paramref name="destination"/>.</summary>
    public void CopyTensor(GgufTensorInfo t, Stream destination)
    {
        if (_bytes is not null)
        {
            destination.Write(_bytes, (int)(DataStart + t.Offset), (int)t.ByteLength); // Read checked the extent
            return;
        }
        using var fs = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        fs.Position = DataStart + t.Offset;
        var buffer = new byte[(int)Math.Min(1 << 20, Math.Max(1, t.ByteLength))];
        for (long left = t.ByteLength; left > 0;)
        {
            int n = fs.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
            if (n <= 0) throw new LayerPruneException($"{Path}: unexpected end of file reading '{Quote(t.Name)}'");
            destination.Write(buffer, 0, n);
            left -= n;
        }
    }

    /// <summary>The stored bytes of <paramref name="t"/> (for tests and small tensors).</summary>
    public byte[] ReadTensorBytes(GgufTensorInfo t)
    {
        using var ms = new MemoryStream();
        CopyTensor(t, ms);
        return ms.ToArray();
    }
}
