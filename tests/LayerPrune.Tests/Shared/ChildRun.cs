using System.Diagnostics;

namespace LayerPrune.Tests.Robustness;

/// <summary>What a child CLI process did: exit code (137 = SIGKILL), whether the test killed it, its output.</summary>
public sealed record ChildResult(int Exit, bool Killed, string Stdout, string Stderr, int Pid);

/// <summary>
/// The one place where a test starts the real CLI and kills it at a chosen point (SIGKILL, no cleanup code runs).
/// The point is found by polling <c>killWhen</c> (e.g. "a temp folder holds a half-written file"); to slow the library
/// down or kill it at an exact step, the child is the test host (tests/LayerPrune.TestHost) with its callbacks.
/// </summary>
public static class ChildRun
{
    /// <summary>Starts <c>layerprune ARGS</c>; the child is SIGKILLed as soon as <paramref name="killWhen"/> returns true
    /// (polled every 10 ms), or runs to completion when it never does. <paramref name="onStarted"/> sees the running child.</summary>
    public static ChildResult Run(string[] args, Func<bool>? killWhen = null, IDictionary<string, string>? env = null,
        Action<Process>? onStarted = null, int timeoutMs = 600_000) =>
        Run(CliProcess.StartInfo(args, env), killWhen, onStarted, timeoutMs);

    /// <summary>As above for any child, e.g. the test host (<see cref="TestHostProcess.StartInfo"/>), whose callbacks slow
    /// the library down or SIGKILL it at a given point.</summary>
    public static ChildResult Run(ProcessStartInfo psi, Func<bool>? killWhen = null, Action<Process>? onStarted = null,
        int timeoutMs = 600_000)
    {
        var args = psi.ArgumentList.ToArray();
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        onStarted?.Invoke(p);
        var sw = Stopwatch.StartNew();
        bool killed = false;
        while (!p.HasExited && sw.ElapsedMilliseconds < timeoutMs)
        {
            if (killWhen?.Invoke() == true)
            {
                p.Kill(entireProcessTree: true); // SIGKILL on Unix
                killed = true;
                break;
            }
            Thread.Sleep(10);
        }
        if (!p.WaitForExit(Math.Max(1, timeoutMs - (int)sw.ElapsedMilliseconds)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException("layerprune " + string.Join(' ', args));
        }
        p.WaitForExit();
        return new ChildResult(p.ExitCode, killed, stdout.Result, stderr.Result, p.Id);
    }

    /// <summary>Asserts the CLI failed with exactly one "error: …" line on stderr and no stack trace.</summary>
    public static string AssertOneLineError(ChildResult r, int exit)
    {
        Assert.True(r.Exit == exit, $"exit {r.Exit}, expected {exit}; stderr: {r.Stderr}");
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.True(lines.Length == 1, "expected one line on stderr, got:\n" + r.Stderr);
        Assert.StartsWith("error: ", lines[0]);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.DoesNotContain("Exception", lines[0]);
        return lines[0];
    }
}
