using LayerPrune.Checkpoints;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Modeling;

/// <summary>tests/fixtures/golden/&lt;arch&gt;: a tiny random HF model and what HF transformers 5.17 computed on it (fp32, eager).</summary>
public sealed class GoldenFixture : IDisposable
{
    public static readonly TheoryData<string> Architectures = new() { "llama", "llama3rope", "mistral", "qwen2", "phi" };

    public string Dir { get; }
    readonly SafeTensorsFile _reference;
    public GoldenFixture(string arch)
    {
        Dir = Path.Combine(TestPaths.Fixtures, "golden", arch);
        _reference = SafeTensorsFile.Open(Path.Combine(Dir, "reference.safetensors"));
    }
    public string PrunedDir => Dir + "_pruned_3_6";
    public Tensor this[string name] => _reference.Load(name);
    /// <summary>Row 0 and the valid (unpadded) part of row 1 of input_ids: two samples of different lengths.</summary>
    public int[][] TwoSamples()
    {
        var ids = this["input_ids"];
        return [ids[0].data<long>().Select(x => (int)x).ToArray(), ids[1].data<long>().Skip(5).Select(x => (int)x).ToArray()];
    }
    public void Dispose() => _reference.Dispose();
}
