using System.Text.RegularExpressions;

namespace LayerPrune.Efficiency;

/// <summary>What a measurement ran on: CPU model, the SIMD flags that decide CPU matmul speed, cores and libtorch threads.</summary>
public sealed record MachineInfo(string CpuModel, IReadOnlyList<string> CpuFlags, int Cores, int TorchThreads)
{
    /// <summary>The /proc/cpuinfo flags recorded: AVX2, AVX-512 F, AVX-512 BF16 (bf16 dot products), AMX (tile matmuls).</summary>
    public static readonly IReadOnlyList<string> RecordedFlags = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"];

    /// <summary>This machine (CPU fields empty where /proc/cpuinfo is not available).</summary>
    public static MachineInfo Current()
    {
        string model = "";
        var flags = new HashSet<string>();
        if (File.Exists("/proc/cpuinfo"))
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                if (model.Length == 0 && line.StartsWith("model name", StringComparison.Ordinal)) model = Value(line);
                else if (flags.Count == 0 && line.StartsWith("flags", StringComparison.Ordinal)) flags.UnionWith(Value(line).Split(' '));
            }
        }
        var recorded = RecordedFlags.Where(flags.Contains).ToList();
        return new MachineInfo(Regex.Replace(model, @"\s+", " "), recorded, Environment.ProcessorCount, TorchSharp.torch.get_num_threads());
    }

    static string Value(string line) => line[(line.IndexOf(':') + 1)..].Trim();
}
