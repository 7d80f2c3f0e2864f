using LayerPrune.Checkpoints;
using LayerPrune.Efficiency;
using LayerPrune.Healing;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Healing;

public sealed class ResidentPagesTests : IDisposable
{
    readonly string _dir = Path.Combine(Path.GetTempPath(), "lp-pages-" + Guid.NewGuid().ToString("N")[..8]);

    public ResidentPagesTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>Resident bytes ("Rss:" in /proc/self/smaps) of the mappings of <paramref name="path"/>.</summary>
    static long MappedRss(string path) => ProcessMemory.MappedFile(path)!.Resident;

    /// <summary>
    /// A 32 MiB tensor viewed from a safetensors mapping and read once is resident; after Release its pages are not
    /// (at most one page at each end may stay), and its values are unchanged (faulted in again from the file).
    /// An anonymous tensor is left alone.
    /// </summary>
    [Fact]
    public void MappedTensor_LeavesResidentSet_ValuesUnchanged()
    {
        if (!OperatingSystem.IsLinux())
            return;
        string path = Path.Combine(_dir, "w.safetensors");
        using (var source = arange(0, 8L << 20, dtype: ScalarType.Float32))
            SafeTensorsWriter.Write(path, [TensorToWrite.FromTensor("w", source)]);
        using var file = SafeTensorsFile.Open(path);
        using var w = file.Load("w");
        double sum = w.sum(type: ScalarType.Float64).item<double>();
        long before = MappedRss(path);
        Assert.True(before >= 30L << 20, $"resident after reading: {before} bytes");

        Assert.True(ResidentPages.Release(w));

        long after = MappedRss(path);
        Assert.True(after <= 2 * Environment.SystemPageSize, $"still resident after Release: {after} bytes");
        Assert.Equal(sum, w.sum(type: ScalarType.Float64).item<double>());

        using var anonymous = ones(1 << 20);
        Assert.False(ResidentPages.Release(anonymous));
        Assert.Equal(1 << 20, anonymous.sum().item<float>());
    }
}
