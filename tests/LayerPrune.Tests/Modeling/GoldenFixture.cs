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
    public void Dispose() => _reference.Dispose();
}
