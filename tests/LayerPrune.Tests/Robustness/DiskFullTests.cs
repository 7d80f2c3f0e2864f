using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Robustness;

/// <summary>
/// prune / heal / sweep into a small full file system (a tmpfs the test mounts; skipped unless root): one line
/// "PATH: no space left on device (…)", exit 1, nothing left on that file system, the input untouched.
/// (There is no export command yet.)
/// </summary>
public class DiskFullTests(ReliabilityFixture fx) : IClassFixture<ReliabilityFixture>
{
    const string NothingKept = "no space left on device (nothing was kept; free space and run again)";

    [TmpfsFact]
    public void PruneIntoAFullFileSystem()
    {
        string golden = Path.Combine(TestPaths.Fixtures, "golden", "llama");
        var before = ReliabilityFixture.Hashes(golden);
        using var fs = SmallFileSystem.Mount("1m"); // the 7-layer output is ~1.5 MB
        var r = ChildRun.Run(["prune", "-m", golden, "-o", fs["out"], "--layers", "5", "--quiet"]);
        Assert.Equal($"error: {fs["out"]}/model.safetensors: no space left on device (nothing was written under the final name; " +
            "free space and run again)", ChildRun.AssertOneLineError(r, 1));
        Assert.Empty(fs.Leftovers());
        Assert.Equal(before, ReliabilityFixture.Hashes(golden));
    }

    [TmpfsFact]
    public void HealIntoAFullFileSystem()
    {
        var before = ReliabilityFixture.Hashes(fx.Model);
        using var fs = SmallFileSystem.Mount("1m"); // training state fits; the merged 2-layer checkpoint (~2.9 MB) does not
        var r = ChildRun.Run(fx.HealArgs(fs["healed"], steps: 2, saveEvery: 100));
        Assert.Equal($"error: {fs["healed"]}/merged/model.safetensors: {NothingKept}", ChildRun.AssertOneLineError(r, 1));
        Assert.Empty(fs.Leftovers()); // no healed/, no healed.partial/ (it held no checkpoint), no temp folder, no lock file
        Assert.Equal(before, ReliabilityFixture.Hashes(fx.Model));
    }

    [TmpfsFact]
    public void SweepIntoAFullFileSystem()
    {
        var before = ReliabilityFixture.Hashes(ReliabilityFixture.Kjv16);
        using var fs = SmallFileSystem.Mount("1m", leaveFree: 4096); // one page: the lock file's
        string data = ReliabilityFixture.Validation;
        var r = ChildRun.Run(["sweep", "--model", ReliabilityFixture.Kjv16, "--data", data, "--samples", "2", "--seq-len", "32",
            "--tasks", "loss:" + data, "--max-chunks", "2", "--strategies", "deepest", "--n", "1", "--out", fs["sweep"], "--quiet"]);
        // The first file to meet the full disk is results.json or a variant's lm-eval results file (issue 28): either is named.
        Assert.Matches($@"^error: {System.Text.RegularExpressions.Regex.Escape(fs["sweep"])}/(results\.json|lm-eval/[^ ]+\.json): "
            + System.Text.RegularExpressions.Regex.Escape(NothingKept) + "$", ChildRun.AssertOneLineError(r, 1));
        Assert.Empty(fs.Leftovers());
        Assert.Equal(before, ReliabilityFixture.Hashes(ReliabilityFixture.Kjv16));
    }
}
