namespace LayerPrune.Tests.Cli;

/// <summary>Runs the built `layerprune` as a child process (the one runner: <see cref="Robustness.CliProcess"/>).</summary>
public static class CliRunner
{
    public static string Dll => Robustness.CliProcess.Dll;

    public static (int exitCode, string stdout, string stderr) Run(params string[] args) => Robustness.CliProcess.Run(args);
}
