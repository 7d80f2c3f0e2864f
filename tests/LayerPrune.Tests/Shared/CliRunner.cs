using System.Diagnostics;

namespace LayerPrune.Tests.Cli;

/// <summary>Runs the built `layerprune` (layerprune.dll next to the test assembly) as a child process.</summary>
public static class CliRunner
{
    public static string Dll => Path.Combine(AppContext.BaseDirectory, "layerprune.dll");

    public static (int exitCode, string stdout, string stderr) Run(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = TestPaths.RepoRoot };
        psi.ArgumentList.Add(Dll);
        foreach (var a in ExactDtype.Apply(args)) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(10))) { p.Kill(true); throw new TimeoutException(string.Join(" ", args)); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
