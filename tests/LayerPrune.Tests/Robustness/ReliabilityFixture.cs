using System.Security.Cryptography;
using LayerPrune.Checkpoints;
using LayerPrune.Pruning;

namespace LayerPrune.Tests.Robustness;

/// <summary>
/// Inputs for the reliability tests, built once per class: a 2-layer cut of samples/kjv-llama-16l (layers 0 and 15, bf16,
/// with its tokenizer) small enough to heal in seconds, and the first 150 lines of the KJV training text.
/// </summary>
public sealed class ReliabilityFixture : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "lp-reliability-" + Guid.NewGuid().ToString("N")[..8]);
    public string Model => Path.Combine(Root, "kjv2");
    public string Train => Path.Combine(Root, "train.txt");
    public static string Kjv16 => Path.Combine(TestPaths.Samples, "kjv-llama-16l");
    public static string Validation => Path.Combine(TestPaths.Samples, "data", "kjv", "validation.txt");

    public ReliabilityFixture()
    {
        Directory.CreateDirectory(Root);
        using (var src = Checkpoint.Open(Kjv16)) CheckpointPruner.Write(src, PrunePlan.FromLayerSpec("1-14", 16), Model);
        File.WriteAllLines(Train, File.ReadLines(Path.Combine(TestPaths.Samples, "data", "kjv", "train.txt")).Take(150));
    }

    /// <summary>CLI arguments of a short heal (2-4 steps of 2 × 32 tokens, rank 2, no quantization) of the 2-layer model.</summary>
    public string[] HealArgs(string outDir, int steps, int saveEvery) =>
        ["heal", "--model", Model, "--data", Train, "--out", outDir, "--steps", $"{steps}", "--batch", "2", "--seq-len", "32",
         "--rank", "2", "--quant", "none", "--save-every", $"{saveEvery}", "--seed", "3", "--device", "cpu", "--dtype", "fp32", "--quiet"];

    /// <summary>The library options <see cref="HealArgs"/> amounts to (for the test host).</summary>
    public LayerPrune.Healing.HealOptions HealOptions(string outDir, int steps, int saveEvery) => new()
    {
        ModelDir = Model, DataPath = Train, OutDir = outDir, Steps = steps, Batch = 2, SeqLen = 32, Rank = 2,
        Quant = LayerPrune.Healing.BaseQuantization.None, SaveEvery = saveEvery, Seed = 3,
        Dtype = TorchSharp.torch.ScalarType.Float32,
    };

    /// <summary>SHA-256 of every file in a folder (name → hash), to prove inputs are untouched.</summary>
    public static Dictionary<string, string> Hashes(string dir) => Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
        .ToDictionary(f => Path.GetRelativePath(dir, f), f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))));

    public void Dispose() { try { Directory.Delete(Root, true); } catch (IOException) { } }
}
