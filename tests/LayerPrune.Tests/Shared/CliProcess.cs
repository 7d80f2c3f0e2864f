using System.Diagnostics;

namespace LayerPrune.Tests.Robustness;

/// <summary>
/// Runs the real CLI (layerprune.dll, copied into the test output by the project reference) as a child process in the repository
/// root, with exact fp32 unless the test picks a dtype (<see cref="ExactDtype"/>) and a 10-minute limit.
/// </summary>
public static class CliProcess
{
    public static string Dll => Path.Combine(AppContext.BaseDirectory, "layerprune.dll");

    public static ProcessStartInfo StartInfo(IEnumerable<string> args, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = TestPaths.RepoRoot };
        psi.ArgumentList.Add(Dll);
        foreach (var a in ExactDtype.Apply(args.ToList())) psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        return psi;
    }

    public static (int Exit, string Stdout, string Stderr) Run(params string[] args)
    {
        using var p = Process.Start(StartInfo(args))!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(600_000)) { p.Kill(entireProcessTree: true); throw new TimeoutException("layerprune " + string.Join(' ', args)); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
