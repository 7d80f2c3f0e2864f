using LayerPrune.Checkpoints;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Robustness;

/// <summary>
/// `prune` killed mid-write must leave nothing under the final --out name, and the next run must clean up after it. The test
/// host (tests/LayerPrune.TestHost) runs the library's CheckpointPruner.Write with a tensor-written callback that sleeps 200 ms
/// after every tensor, so the ~50-tensor output of the golden llama takes ~10 s to write and the kill lands inside the write.
/// </summary>
public class InterruptTests
{
    [Fact]
    public void PruneKilledMidWriteLeavesNoOutputFolderAndRerunSucceeds()
    {
        using var t = new TempDir();
        string model = Path.Combine(TestPaths.Fixtures, "golden", "llama"), output = t["pruned"];
        string[] args = ["prune", "-m", model, "-o", output, "--layers", "2-4", "--quiet"];
        // Kill once the hidden temp sibling holds a partly written model.safetensors.
        bool PartlyWritten() => Directory.EnumerateDirectories(t.Path, ".pruned.tmp-*").Select(d => Path.Combine(d, "model.safetensors"))
            .Any(f => File.Exists(f) && new FileInfo(f).Length > 100_000);
        var killed = ChildRun.Run(TestHostProcess.StartInfo("prune", model, output, "2-4", "--sleep-ms", "200"), PartlyWritten);
        Assert.True(killed.Killed, "prune finished before it could be killed (is the slow-write callback working?)");

        Assert.False(Directory.Exists(output), "a killed prune must not leave a folder under the final --out name");
        Assert.False(File.Exists(output));
        Assert.Single(Directory.GetDirectories(t.Path, ".pruned.tmp-*")); // the killed run's hidden temp sibling
        Assert.True(File.Exists(t[".pruned.lock"]));                       // its lock file, no longer locked by anyone

        // A rerun (the real CLI) takes the stale lock over, removes the stale temp folder and commits a complete checkpoint.
        var (exit, _, stderr) = CliProcess.Run(args);
        Assert.True(exit == 0, stderr);
        using var pruned = Checkpoint.Open(output);
        Assert.Equal(5, pruned.Config.NumLayers);
        Assert.Equal(["pruned"], Directory.EnumerateFileSystemEntries(t.Path).Select(Path.GetFileName));
    }
}
