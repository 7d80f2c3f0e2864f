using System.Text;
using LayerPrune.Gguf;

namespace LayerPrune.Tests.Gguf;

/// <summary>
/// Regression tests for what bench/LayerPrune.Fuzz found in the GGUF reader (issue 27): every rejection is one line naming
/// the file, and a corrupt length never sizes an allocation beyond the file.
/// </summary>
public sealed class GgufFuzzFindingsTests : IDisposable
{
    readonly string _tmp = Directory.CreateTempSubdirectory("lp-gguf-fuzz-").FullName;
    static string Golden => Path.Combine(TestPaths.Fixtures, "golden", "llama");

    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    /// <summary>The golden llama exported as f32, rewritten with <paramref name="edit"/> applied to its metadata and tensors.</summary>
    string Rewrite(string name, Func<KeyValuePair<string, GgufValue>, KeyValuePair<string, GgufValue>> edit,
        Func<GgufTensorInfo, GgufFile, GgufTensorToWrite>? tensor = null)
    {
        string f32 = Path.Combine(_tmp, "golden-f32.gguf");
        if (!File.Exists(f32)) GgufExporter.Export(Golden, f32, new GgufExportOptions { Type = GgufOutputType.F32 });
        var g = GgufFile.Open(f32);
        string path = Path.Combine(_tmp, name);
        var tensors = g.Tensors.Select(t => tensor?.Invoke(t, g) ?? new GgufTensorToWrite(t.Name, t.Dims, t.Type, s => g.CopyTensor(t, s)));
        GgufWriter.Write(path, g.Metadata.Where(kv => kv.Key != "general.alignment").Select(edit).ToList(), tensors.ToList());
        return path;
    }

    static void AssertOneLineNaming(LayerPruneException e, string path)
    {
        Assert.DoesNotContain('\n', e.Message);
        Assert.DoesNotContain('\r', e.Message);
        Assert.StartsWith(path + ": ", e.Message);
        Assert.True(e.Message.Length < 400, e.Message);
    }

    [Fact]
    public void AKeyHoldingControlCharactersIsQuotedOnOneLine()
    {
        string path = Rewrite("key.gguf", kv => kv.Key == "general.name" ? new("bad\nkey\u0001" + new string('k', 500), kv.Value) : kv);
        byte[] bytes = File.ReadAllBytes(path), key = Encoding.UTF8.GetBytes("bad\nkey\u0001" + new string('k', 500));
        int at = IndexOf(bytes, key) + key.Length;
        BitConverter.TryWriteBytes(bytes.AsSpan(at), 99u); // the key's value type: unknown
        var e = Assert.Throws<LayerPruneException>(() => GgufFile.Parse(path, bytes));
        AssertOneLineNaming(e, path);
        Assert.Contains(@"'bad\nkey\u0001kkk", e.Message);
        Assert.Contains("…' has unknown value type 99", e.Message);
    }

    [Fact]
    public void AFloatWhereAnIntegerBelongsIsOneLineNamingTheKey()
    {
        string path = Rewrite("float.gguf", kv => kv.Key == "llama.context_length" ? new(kv.Key, GgufValue.F32(512.5f)) : kv);
        var e = Assert.Throws<LayerPruneException>(() => GgufImporter.Convert(path, Path.Combine(_tmp, "float")));
        AssertOneLineNaming(e, path);
        Assert.Contains("'llama.context_length' is Float32, not an integer", e.Message);
        path = Rewrite("u64.gguf",
            kv => kv.Key == "llama.block_count" ? new(kv.Key, new GgufValue(GgufValueType.UInt64, ulong.MaxValue)) : kv);
        e = Assert.Throws<LayerPruneException>(() => GgufFile.Open(path).BlockCount);
        AssertOneLineNaming(e, path);
        Assert.Contains($"'llama.block_count' = {ulong.MaxValue} is out of range", e.Message);
    }

    /// <summary>An array count below the file size but beyond the bytes left (8 per string) is refused before allocating.</summary>
    [Fact]
    public void AnArrayLengthBeyondTheRestOfTheFileAllocatesNothing()
    {
        const int Padding = 1 << 20;
        using var ms = new MemoryStream();
        var w = new BinaryWriter(ms);
        w.Write(GgufFile.Magic); w.Write(3u); w.Write(0UL); w.Write(1UL);
        w.Write(1UL); w.Write((byte)'k'); w.Write((uint)GgufValueType.Array); w.Write((uint)GgufValueType.String);
        w.Write((ulong)(Padding - 64)); // fits the old bound (the file size), not 8 bytes per string
        w.Write(new byte[Padding]);
        byte[] bytes = ms.ToArray();
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<LayerPruneException>(() => GgufFile.Parse("big.gguf", bytes));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        AssertOneLineNaming(e, "big.gguf");
        Assert.Contains("array length 1048512 exceeds the rest of the file", e.Message);
        Assert.True(allocated < Padding, $"{allocated} bytes allocated for a {bytes.Length}-byte file");
    }

    /// <summary>A tensor whose shape disagrees with the metadata fails in Convert, naming the GGUF, not the conversion folder.</summary>
    [Fact]
    public void TensorsThatDisagreeWithTheMetadataAreReportedAgainstTheGguf()
    {
        string path = Rewrite("shape.gguf", kv => kv, (t, g) => t.Name == "blk.1.attn_norm.weight"
            ? new GgufTensorToWrite(t.Name, [128], GgmlType.F32, s => s.Write(new byte[128 * 4]))
            : new GgufTensorToWrite(t.Name, t.Dims, t.Type, s => g.CopyTensor(t, s)));
        string outDir = Path.Combine(_tmp, "shape-out");
        var e = Assert.Throws<LayerPruneException>(() => GgufImporter.Convert(path, outDir));
        AssertOneLineNaming(e, path);
        Assert.Contains("do not make a valid model", e.Message);
        Assert.Contains("model.layers.1.input_layernorm.weight", e.Message);
        Assert.DoesNotContain(outDir, e.Message);
    }

    static int IndexOf(byte[] hay, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= hay.Length; i++)
            if (hay.AsSpan(i, needle.Length).SequenceEqual(needle)) return i;
        throw new InvalidOperationException("needle not found");
    }
}
