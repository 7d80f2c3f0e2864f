using System.Text;
using LayerPrune.Pruning;

namespace LayerPrune.Gguf;

/// <summary>A tensor to write: GGUF name, ggml dims (ne[0] first), type, and a writer of exactly its bytes.</summary>
public sealed record GgufTensorToWrite(string Name, long[] Dims, GgmlType Type, Action<Stream> WriteData)
{
    /// <summary>Bytes the tensor occupies.</summary>
    public long ByteLength => GgufFile.ByteLength(Type, Dims);
}

/// <summary>
/// Streams a GGUF v3 file: header and tensor infos first (sizes are known up front), then each tensor's data in turn,
/// so memory stays O(one tensor). Output is atomic: a hidden temp sibling renamed into place when complete.
/// </summary>
public static class GgufWriter
{
    /// <summary>
    /// Writes <paramref name="outPath"/> (replacing it only when <paramref name="force"/>); an interrupted write leaves
    /// at most a ".NAME.tmp-GUID" sibling, never a partial file under the final name.
    /// </summary>
    public static void Write(string outPath, IReadOnlyList<KeyValuePair<string, GgufValue>> metadata,
                             IReadOnlyList<GgufTensorToWrite> tensors, bool force = false, int alignment = GgufFile.DefaultAlignment)
    {
        string full = Path.GetFullPath(outPath);
        if (File.Exists(full) && !force)
            throw LayerPruneException.Invalid(nameof(outPath), outPath, "already exists (use `force` to replace it)");
        if (Directory.Exists(full)) throw LayerPruneException.Invalid(nameof(outPath), outPath, "is a folder, not a file");
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        OutputFile.Write(full, temp =>
        {
            using var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
            WriteTo(fs, metadata, tensors, alignment, outPath);
        });
    }

    static void WriteTo(FileStream fs, IReadOnlyList<KeyValuePair<string, GgufValue>> metadata,
                        IReadOnlyList<GgufTensorToWrite> tensors, int alignment, string path)
    {
        var w = new BinaryWriter(fs, Encoding.UTF8, leaveOpen: true);
        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)tensors.Count);
        w.Write((ulong)metadata.Count);
        foreach (var (key, value) in metadata)
        {
            WriteString(w, key);
            w.Write((uint)value.Type);
            WriteValue(w, value);
        }
        long offset = 0;
        var offsets = new long[tensors.Count];
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            WriteString(w, t.Name);
            w.Write((uint)t.Dims.Length);
            foreach (var d in t.Dims) w.Write((ulong)d);
            w.Write((uint)t.Type);
            w.Write((ulong)offset);
            offsets[i] = offset;
            offset = GgufFile.Align(offset + t.ByteLength, alignment);
        }
        w.Flush();
        Pad(fs, alignment);
        long dataStart = fs.Position;
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            long before = fs.Position;
            if (before - dataStart != offsets[i])
                throw new InvalidOperationException($"{path}: '{t.Name}' starts at {before - dataStart}, expected {offsets[i]}");
            t.WriteData(fs);
            if (fs.Position - before != t.ByteLength)
                throw new InvalidOperationException($"{path}: '{t.Name}' wrote {fs.Position - before} bytes, expected {t.ByteLength}");
            Pad(fs, alignment);
        }
    }

    static void Pad(Stream s, int alignment)
    {
        long pad = GgufFile.Align(s.Position, alignment) - s.Position;
        for (long i = 0; i < pad; i++) s.WriteByte(0);
    }

    static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    static void WriteValue(BinaryWriter w, GgufValue v)
    {
        if (v.Type != GgufValueType.Array)
        {
            WriteScalar(w, v.Type, v.Value);
            return;
        }
        var items = (Array)v.Value;
        w.Write((uint)v.ElementType);
        w.Write((ulong)items.Length);
        foreach (var item in items) WriteScalar(w, v.ElementType, item!);
    }

    static void WriteScalar(BinaryWriter w, GgufValueType type, object value)
    {
        switch (type)
        {
            case GgufValueType.UInt8: w.Write(Convert.ToByte(value)); break;
            case GgufValueType.Int8: w.Write(Convert.ToSByte(value)); break;
            case GgufValueType.UInt16: w.Write(Convert.ToUInt16(value)); break;
            case GgufValueType.Int16: w.Write(Convert.ToInt16(value)); break;
            case GgufValueType.UInt32: w.Write(Convert.ToUInt32(value)); break;
            case GgufValueType.Int32: w.Write(Convert.ToInt32(value)); break;
            case GgufValueType.Float32: w.Write(Convert.ToSingle(value)); break;
            case GgufValueType.Bool: w.Write((byte)((bool)value ? 1 : 0)); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.UInt64: w.Write(Convert.ToUInt64(value)); break;
            case GgufValueType.Int64: w.Write(Convert.ToInt64(value)); break;
            case GgufValueType.Float64: w.Write(Convert.ToDouble(value)); break;
            default: throw new InvalidOperationException($"cannot write GGUF value type {type}");
        }
    }
}
