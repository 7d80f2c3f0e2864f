namespace LayerPrune.Planning;

/// <summary>
/// What the CPU can do natively, read from /proc/cpuinfo (Linux) once per process. bf16 matmul is 2–3× faster than
/// fp32 on CPUs with AVX512-BF16 or AMX and several times slower without them (docs/benchmarks.md), so
/// <c>dtype auto</c> on the CPU picks bf16 only when <see cref="NativeBf16"/>.
/// </summary>
public static class CpuFeatures
{
    static readonly Lazy<IReadOnlySet<string>> Flags = new(() => Parse(ReadCpuInfo()));

    /// <summary>The flags this machine reports that LayerPrune cares about (avx2, avx512f, avx512_bf16, amx_bf16, amx_tile).</summary>
    public static IReadOnlyList<string> Relevant =>
        new[] { "avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16" }.Where(Flags.Value.Contains).ToList();

    /// <summary>True when the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16).</summary>
    public static bool NativeBf16 => HasNativeBf16(Flags.Value);

    /// <summary>The flags as one line for benchmark and result files, e.g. "avx2 avx512f avx512_bf16".</summary>
    public static string Summary => Relevant.Count == 0 ? "(none of avx2/avx512f/avx512_bf16/amx)" : string.Join(' ', Relevant);

    /// <summary>True when <paramref name="flags"/> include avx512_bf16 or amx_bf16.</summary>
    public static bool HasNativeBf16(IReadOnlySet<string> flags) => flags.Contains("avx512_bf16") || flags.Contains("amx_bf16");

    /// <summary>The union of the "flags" lines of a /proc/cpuinfo text.</summary>
    public static IReadOnlySet<string> Parse(string cpuinfo)
    {
        var flags = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in cpuinfo.Split('\n'))
        {
            int colon = line.IndexOf(':');
            if (colon < 0 || line[..colon].Trim() != "flags")
                continue;
            foreach (var f in line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
                flags.Add(f);
        }
        return flags;
    }

    static string ReadCpuInfo()
    {
        try
        {
            return File.Exists("/proc/cpuinfo") ? File.ReadAllText("/proc/cpuinfo") : "";
        }
        catch (IOException)
        {
            return "";
        }
    }
}
