using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Checkpoints;

/// <summary>One tensor's entry in a safetensors header; Begin/End are byte offsets relative to the data section.</summary>
public sealed record TensorInfo(string Name, string Dtype, long[] Shape, long Begin, long End)
{
    /// <summary>Product of the shape.</summary>
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);
    /// <summary>Bytes of the tensor's data.</summary>
    public long ByteLength => End - Begin;
}

/// <summary>
/// A safetensors file (format: 8-byte little-endian header length, JSON header, raw little-endian data).
/// The header is validated completely on open; tensors are memory-mapped views, never copied into managed arrays.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    /// <summary>Largest header accepted (100 MiB, as the safetensors crate).</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    static readonly Dictionary<string, (ScalarType type, int size)> Dtypes = new()
    {
        ["F64"] = (ScalarType.Float64, 8), ["F32"] = (ScalarType.Float32, 4), ["F16"] = (ScalarType.Float16, 2),
        ["BF16"] = (ScalarType.BFloat16, 2), ["I64"] = (ScalarType.Int64, 8), ["I32"] = (ScalarType.Int32, 4),
        ["I16"] = (ScalarType.Int16, 2), ["I8"] = (ScalarType.Int8, 1), ["U8"] = (ScalarType.Byte, 1), ["BOOL"] = (ScalarType.Bool, 1),
    };

    /// <summary>The file's path.</summary>
    public string Path { get; }
    /// <summary>File offset of the data section (8 + header length).</summary>
    public long DataStart { get; }
    /// <summary>The file's length in bytes.</summary>
    public long FileLength { get; }
    /// <summary>Tensor name → header entry.</summary>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }
    /// <summary>The header's "__metadata__" strings.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }
    readonly Dictionary<ScalarType, Tensor> _mappings = new();

    /// <summary>Bytes per element of safetensors dtype <paramref name="dtype"/>.</summary>
    public static int ElementSize(string dtype) => Dtypes[dtype].size;
    /// <summary>The torch scalar type of safetensors dtype <paramref name="dtype"/>.</summary>
    public static ScalarType TorchType(string dtype) => Dtypes[dtype].type;
    /// <summary>The safetensors dtype name of <paramref name="t"/>.</summary>
    public static string DtypeName(ScalarType t) => Dtypes.First(kv => kv.Value.type == t).Key;

    SafeTensorsFile(string path, long dataStart, long fileLength, Dictionary<string, TensorInfo> tensors, Dictionary<string,
        string> metadata)
    { Path = path; DataStart = dataStart; FileLength = fileLength; Tensors = tensors; Metadata = metadata; }

    /// <summary>Opens <paramref name="path"/> and validates its header completely.</summary>
    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new LayerPruneException($"{path}: file not found");
        try { return OpenCore(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LayerPruneException($"{path}: cannot read ({JsonInput.FirstLine(e.Message)})", e);
        }
    }

    static SafeTensorsFile OpenCore(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long length = fs.Length;
        if (length < 8) throw new LayerPruneException($"{path}: truncated safetensors file ({length} bytes, no header)");
        Span<byte> lenBytes = stackalloc byte[8];
        fs.ReadExactly(lenBytes);
        ulong headerLen = BitConverter.ToUInt64(lenBytes);
        if (headerLen > MaxHeaderBytes)
            throw new LayerPruneException($"{path}: safetensors header length {headerLen} exceeds the 100 MB limit");
        if ((long)headerLen > length - 8)
            throw new LayerPruneException(
                $"{path}: safetensors header length {headerLen} is larger than the file ({length} bytes): truncated or not a " +
                "safetensors file");
        var header = new byte[headerLen];
        fs.ReadExactly(header);
        return Parse(path, header, length);
    }

    /// <summary>Validates a header (bytes after the 8-byte length) against a file of <paramref name="fileLength"/> bytes.</summary>
    public static SafeTensorsFile Parse(string path, byte[] header, long fileLength)
    {
        long dataStart = 8 + header.Length, dataLength = fileLength - dataStart;
        var root = JsonInput.ParseObject(header, path, "safetensors header");

        var tensors = new Dictionary<string, TensorInfo>();
        var metadata = new Dictionary<string, string>();
        foreach (var (name, node) in root)
        {
            if (name == "__metadata__")
            {
                if (node is JsonObject m)
                {
                    foreach (var (k, v) in m)
                        metadata[k] = v is JsonValue jv && jv.TryGetValue<string>(out var s) ? s : v?.ToJsonString() ?? "";
                }
                continue;
            }
            if (node is not JsonObject t) throw new LayerPruneException($"{path}: tensor '{name}' entry is not an object");
            string dtype = t["dtype"] is JsonValue dv && dv.TryGetValue<string>(out var ds) ? ds
                : throw new LayerPruneException($"{path}: tensor '{name}' has no dtype");
            if (!Dtypes.TryGetValue(dtype, out var dt))
                throw new LayerPruneException(
                    $"{path}: tensor '{name}' has unsupported dtype '{dtype}' (supported: {string.Join(", ", Dtypes.Keys)})");
            if (t["shape"] is not JsonArray shapeArr) throw new LayerPruneException($"{path}: tensor '{name}' has no shape");
            var shape = new long[shapeArr.Count];
            for (int i = 0; i < shape.Length; i++)
                shape[i] = shapeArr[i] is JsonValue sv && sv.TryGetValue<long>(out var d) && d >= 0 ? d
                    : throw new LayerPruneException($"{path}: tensor '{name}' has an invalid shape {shapeArr.ToJsonString()}");
            if (t["data_offsets"] is not JsonArray offs || offs.Count != 2 ||
                offs[0] is not JsonValue b0 || !b0.TryGetValue<long>(out long begin) || offs[1] is not JsonValue b1
                    || !b1.TryGetValue<long>(out long end))
                throw new LayerPruneException($"{path}: tensor '{name}' has invalid data_offsets");
            if (begin < 0 || end < begin || end > dataLength)
                throw new LayerPruneException(
                    $"{path}: tensor '{name}' data_offsets [{begin}, {end}) are outside the data section ({dataLength} bytes): " +
                    "truncated file?");
            // Element count and byte size in checked arithmetic: a shape like [2^62] must not wrap around to a small size.
            long elements = 1;
            foreach (var s in shape) elements = elements == 0 || s == 0 ? 0 : elements > long.MaxValue / s / dt.size
                ? throw new LayerPruneException($"{path}: tensor '{name}' shape {shapeArr.ToJsonString()} is too large") : elements * s;
            if (elements * dt.size != end - begin)
                throw new LayerPruneException(
                    $"{path}: tensor '{name}' shape [{string.Join(", ", shape)}] × {dtype} needs {elements * dt.size} bytes but " +
                    $"data_offsets span {end - begin}");
            tensors[name] = new TensorInfo(name, dtype, shape, begin, end);
        }
        // Tensors must not overlap (the format requires a contiguous, non-overlapping layout).
        TensorInfo? prev = null;
        foreach (var ti in tensors.Values.Where(x => x.ByteLength > 0).OrderBy(x => x.Begin))
        {
            if (prev is not null && ti.Begin < prev.End)
                throw new LayerPruneException($"{path}: tensors '{prev.Name}' and '{ti.Name}' overlap in the data section");
            prev = ti;
        }
        return new SafeTensorsFile(path, dataStart, fileLength, tensors, metadata);
    }

    /// <summary>A CPU tensor in the storage dtype: a view of a private (copy-on-write) memory mapping of the file.</summary>
    public Tensor Load(string name)
    {
        var info = Tensors.TryGetValue(name, out var i) ? i : throw new LayerPruneException($"{Path}: no tensor named '{name}'");
        var (type, size) = Dtypes[info.Dtype];
        long absolute = DataStart + info.Begin;
        if (absolute % size != 0 || info.NumElements == 0)
        {
            // Unaligned data (not produced by the reference writer): one copy through a stream.
            var t = empty(info.Shape, type);
            if (info.NumElements == 0) return t;
            using var fs = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.Read);
            fs.Position = absolute;
            fs.ReadExactly(t.bytes);
            return t;
        }
        // The mapping outlives any dispose scope the first Load runs in (a layer streamed inside a scope maps the file again).
        if (!_mappings.TryGetValue(type, out var map))
            _mappings[type] = map = from_file(Path, shared: false, size: FileLength / size, dtype: type).DetachFromDisposeScope();
        // The intermediate narrow is disposed at once: left to an enclosing dispose scope it would keep the mapping alive
        // after the caller converted and freed the weight (a streamed layer's pages would then stay resident).
        using var flat = map.narrow(0, absolute / size, info.NumElements);
        return flat.view(info.Shape);
    }

    /// <summary>Copies a tensor's raw stored bytes (exact dtype and bytes preserved).</summary>
    public void CopyBytes(string name, Stream destination)
    {
        var info = Tensors[name];
        using var fs = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        fs.Position = DataStart + info.Begin;
        var buffer = new byte[Math.Min(1 << 20, Math.Max(1, info.ByteLength))];
        for (long left = info.ByteLength; left > 0;)
        {
            int n = fs.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
            if (n <= 0) throw new LayerPruneException($"{Path}: unexpected end of file reading '{name}'");
            destination.Write(buffer, 0, n);
            left -= n;
        }
    }

    /// <summary>
    /// Drops this file's mapping handles. Tensors still viewing a mapping keep it alive; a mapping no tensor views any
    /// more is unmapped (its pages leave the process's resident set). A later <see cref="Load"/> maps the file again.
    /// </summary>
    public void ReleaseMappings() { foreach (var m in _mappings.Values) m.Dispose(); _mappings.Clear(); }

    /// <summary>Releases the memory mappings.</summary>
    public void Dispose() => ReleaseMappings();
}

/// <summary>A tensor to write: its name, safetensors dtype, shape and a writer of exactly its bytes.</summary>
public sealed record TensorToWrite(string Name, string Dtype, long[] Shape, long ByteLength, Action<Stream> WriteData)
{
    /// <summary>From an in-memory tensor (any device); written in its own dtype.</summary>
    public static TensorToWrite FromTensor(string name, Tensor t)
    {
        var cpu = t.detach().cpu().contiguous();
        return new TensorToWrite(name, SafeTensorsFile.DtypeName(cpu.dtype), cpu.shape, cpu.NumberOfElements * cpu.ElementSize,
            s => { s.Write(cpu.bytes); });
    }

    /// <summary>The stored bytes of a tensor in an existing file, copied verbatim.</summary>
    public static TensorToWrite FromFile(string name, SafeTensorsFile file, string sourceName)
    {
        var info = file.Tensors[sourceName];
        return new TensorToWrite(name, info.Dtype, info.Shape, info.ByteLength, s => file.CopyBytes(sourceName, s));
    }
}

/// <summary>Writes safetensors files.</summary>
public static class SafeTensorsWriter
{
    /// <summary>
    /// Writes a safetensors file (tensors in name order, header padded with spaces to 8 bytes like the reference writer).
    /// </summary>
    /// <param name="path">The new file (must not exist).</param>
    /// <param name="tensors">What to write.</param>
    /// <param name="metadata">The header's __metadata__ (omitted when empty).</param>
    /// <param name="onTensorWritten">
    /// Called with each tensor's name once its bytes are written and flushed to the file (progress, or a test that
    /// interrupts the write at a known point).
    /// </param>
    public static void Write(string path, IEnumerable<TensorToWrite> tensors, IReadOnlyDictionary<string, string>? metadata = null,
        Action<string>? onTensorWritten = null)
    {
        var list = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
            header["__metadata__"] = new JsonObject(metadata.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value)));
        long offset = 0;
        foreach (var t in list)
        {
            header[t.Name] = new JsonObject
            {
                ["dtype"] = t.Dtype,
                ["shape"] = new JsonArray(t.Shape.Select(s => (JsonNode?)s).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + t.ByteLength),
            };
            offset += t.ByteLength;
        }
        var headerBytes = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (headerBytes.Length + 7) / 8 * 8;
        using var fs = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        fs.Write(BitConverter.GetBytes((ulong)padded));
        fs.Write(headerBytes);
        for (int i = headerBytes.Length; i < padded; i++) fs.WriteByte((byte)' ');
        foreach (var t in list)
        {
            long before = fs.Position;
            t.WriteData(fs);
            long wrote = fs.Position - before;
            if (wrote != t.ByteLength)
                throw new InvalidOperationException($"{path}: '{t.Name}' wrote {wrote} bytes, expected {t.ByteLength}");
            if (onTensorWritten is null)
                continue;
            fs.Flush();
            onTensorWritten(t.Name);
        }
    }
}
