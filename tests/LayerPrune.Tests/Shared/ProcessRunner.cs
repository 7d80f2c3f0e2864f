using System.Diagnostics;
using System.Runtime.InteropServices;

namespace LayerPrune.Tests.Packaging;

/// <summary>Runs a child process (dotnet pack, tool install, an installed tool) with its own folder and environment.</summary>
public static class ProcessRunner
{
    /// <summary>The .NET installation that runs these tests (for DOTNET_ROOT of an installed tool's apphost).</summary>
    public static string DotnetRoot { get; } =
        Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", ".."));

    /// <summary>Runs <paramref name="file"/>; environment entries with a null value are removed.</summary>
    public static (int exitCode, string stdout, string stderr) Run(
        string file, IEnumerable<string> args, string workingDirectory, IReadOnlyDictionary<string, string?> env, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workingDirectory,
        };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        // `dotnet test` exports MSBuild variables that would point a nested dotnet at the test's own MSBuild.
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
            psi.Environment.Remove(key);
        foreach (var (key, value) in env)
        {
            if (value is null)
                psi.Environment.Remove(key);
            else
                psi.Environment[key] = value;
        }
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(true);
            throw new TimeoutException($"{file} {string.Join(" ", args)} did not finish in {timeout}");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
