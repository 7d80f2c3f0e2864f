using LayerPrune.Checkpoints;
using LayerPrune.Efficiency;
using LayerPrune.Modeling;
using LayerPrune.Similarity;
using LayerPrune.Tests.Integration;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Efficiency;

/// <summary>
/// A streamed (offloaded) pass keeps at most one layer's file pages mapped: each streamed layer's mapping is unmapped
/// once the layer is freed. Measured on a private copy of kjv-llama-16l (bf16, 25 MB) from /proc/self/smaps, which counts
/// the resident pages of that one file's live mappings (no other test maps the copy).
/// </summary>
public sealed class StreamedMemoryTests : IDisposable
{
    readonly string _dir = Path.Combine(Path.GetTempPath(), $"lp-streamed-memory-{Guid.NewGuid():N}");

    public StreamedMemoryTests()
    {
        Directory.CreateDirectory(_dir);
        foreach (var f in Directory.GetFiles(KjvModel.Dir))
            File.Copy(f, Path.Combine(_dir, Path.GetFileName(f)));
    }

    public void Dispose() => Directory.Delete(_dir, true);

    string Weights => Path.Combine(_dir, Checkpoint.SingleFile);

    /// <summary>Stored bytes of layer <paramref name="i"/> and of everything outside the layers (embeddings, head, norm).</summary>
    static (long layer, long rest) StoredBytes(Checkpoint c, int i)
    {
        string prefix = $"model.layers.{i}.";
        long layer = c.WeightMap.Keys.Where(n => n.StartsWith(prefix, StringComparison.Ordinal)).Sum(n => c.Info(n).ByteLength);
        long rest = c.WeightMap.Keys.Where(n => !n.StartsWith("model.layers.", StringComparison.Ordinal)).Sum(n => c.Info(n).ByteLength);
        return (layer, rest);
    }

    static IReadOnlyList<int[]> Samples() =>
        Enumerable.Range(0, 4).Select(s => Enumerable.Range(0, 24).Select(t => (s * 131 + t * 17) % 2048).ToArray()).ToArray();

    [Theory]
    [InlineData(ScalarType.Float32)]  // converted weights: nothing views the mapping after the layer is built
    [InlineData(ScalarType.BFloat16)] // weights used in place: the layer's views keep its mapping until the layer is freed
    public void Each_streamed_layer_leaves_at_most_one_layer_of_file_pages_mapped(ScalarType dtype)
    {
        if (!OperatingSystem.IsLinux())
            return; // needs /proc/self/smaps
        using var model = CausalLM.Load(_dir, CPU, dtype, offload: true);
        var (layerBytes, restBytes) = StoredBytes(model.Checkpoint, 0);
        var resident = new List<long>();
        var mappings = new List<int>();
        using (no_grad())
        using (NewDisposeScope()) // as every streamed caller runs: nothing may be left to the scope that keeps a mapping alive
        {
            var (ids, _, _) = LayerSimilarity.Pad(Samples(), CPU);
            var att = model.PrepareAttention(ids.shape[0], ids.shape[1], 0, null);
            var h = model.Embed(ids);
            model.ForEachLayer(null, (k, layer) =>
            {
                h = layer.Forward(h, att, null, k); // reads every weight of the layer: its pages are resident now
                var m = ProcessMemory.MappedFile(Weights)!;
                resident.Add(m.Resident);
                mappings.Add(m.Mappings);
            });
        }
        Assert.Equal(16, resident.Count);
        // The layer being run (its pages all touched) plus, in bf16, the embeddings' and head's mapping; never two layers.
        long bound = layerBytes + restBytes + layerBytes / 2;
        string got = $"resident file pages per layer: {string.Join(", ", resident.Select(r => r / 1024))} KiB; mappings: "
            + $"{string.Join(", ", mappings)}; bound {bound / 1024} KiB (layer {layerBytes / 1024} KiB)";
        Assert.True(resident.Min() >= layerBytes * 9 / 10, got); // the measurement sees the layer it runs
        Assert.True(resident.Max() <= bound, got);
        Assert.True(mappings.Max() <= (dtype == ScalarType.BFloat16 ? 2 : 1), got);
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void A_streamed_similarity_pass_holds_no_layer_pages_when_it_ends(ScalarType dtype)
    {
        if (!OperatingSystem.IsLinux())
            return; // needs /proc/self/smaps
        using var model = CausalLM.Load(_dir, CPU, dtype, offload: true);
        var (layerBytes, restBytes) = StoredBytes(model.Checkpoint, 0);
        FileMappingMemory? atEnd = null;
        // Called after the last layer, inside the pass's dispose scope: what the pass still holds then.
        var r = LayerSimilarity.Compute(model, Samples(), batchSize: 2,
            onSamplesDone: _ => atEnd = ProcessMemory.MappedFile(Weights));
        Assert.Equal(4, r.Samples);
        Assert.NotNull(atEnd);
        // fp32: no mapping is left; bf16: the embeddings' and head's mapping, with at most the rows the samples embedded.
        string got = $"{atEnd} after the pass (layer {layerBytes} bytes, outside the layers {restBytes})";
        Assert.True(atEnd.Resident <= (dtype == ScalarType.BFloat16 ? restBytes : 0) + layerBytes / 2, got);
        Assert.True(atEnd.Mappings <= (dtype == ScalarType.BFloat16 ? 1 : 0), got);
    }

    /// <summary>
    /// Loading offloaded reads no layer: names, shapes and dtypes come from the headers (Checkpoint.Open). A sampler polls
    /// the file's resident mapped pages while the model loads in fp32 (converting a layer would read its bf16 pages).
    /// </summary>
    [Fact]
    public void An_offloaded_load_reads_no_layer_data()
    {
        if (!OperatingSystem.IsLinux())
            return; // needs /proc/self/smaps
        long peak = 0;
        int samples = 0;
        bool loaded = false;
        var sampler = new Thread(() =>
        {
            while (!Volatile.Read(ref loaded))
            {
                peak = Math.Max(peak, ProcessMemory.MappedFile(Weights)!.Resident);
                samples++;
            }
        });
        sampler.Start();
        CausalLM model;
        try
        {
            model = CausalLM.Load(_dir, CPU, ScalarType.Float32, offload: true);
        }
        finally
        {
            Volatile.Write(ref loaded, true);
            sampler.Join();
        }
        using var _ = model;
        var (layerBytes, restBytes) = StoredBytes(model.Checkpoint, 0);
        string got = $"peak resident file pages during the load {peak} bytes over {samples} samples (layer {layerBytes} bytes, "
            + $"outside the layers {restBytes})";
        Assert.True(samples > 0, got);
        Assert.True(peak <= restBytes + layerBytes / 2, got); // the embeddings, head and norm are converted; no layer is
    }
}
