namespace LayerPrune.Tests;

/// <summary>
/// `--dtype auto` picks bf16 on CPUs with native bf16 (the fast path users get); the exactness tests compare against
/// fp32 references, so every CLI child process a test starts runs in explicit fp32 unless the test chose a dtype.
/// </summary>
public static class ExactDtype
{
    /// <summary><paramref name="args"/> plus "--dtype fp32" when they name a command but no dtype.</summary>
    public static IEnumerable<string> Apply(IReadOnlyList<string> args) =>
        args.Count == 0 || args.Contains("--dtype") ? args : [.. args, "--dtype", "fp32"];
}
