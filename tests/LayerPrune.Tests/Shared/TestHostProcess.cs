using System.Diagnostics;

namespace LayerPrune.Tests;

/// <summary>
/// Starts tests/LayerPrune.TestHost (LayerPrune.TestHost.dll, copied into the test output by the project reference): the
/// library's prune / heal with callbacks that sleep after every tensor written or SIGKILL the process at a given heal step,
/// so tests interrupt real processes at deterministic points without test hooks in the product.
/// </summary>
public static class TestHostProcess
{
    /// <summary>The built test host next to the test assembly.</summary>
    public static string Dll => Path.Combine(AppContext.BaseDirectory, "LayerPrune.TestHost.dll");

    /// <summary>A start info for `dotnet LayerPrune.TestHost.dll ARGS` with stdout and stderr redirected.</summary>
    public static ProcessStartInfo StartInfo(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Dll);
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        return psi;
    }
}
