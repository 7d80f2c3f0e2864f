using LayerPrune.Checkpoints;
using LayerPrune.Pruning;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Robustness;

/// <summary>
/// Two runs on one --out: the first holds the output's lock (".NAME.lock", flock) from start to commit, so the second
/// fails at once naming the first one's pid, with or without --force; a commit never replaces a folder that appeared
/// during the run, and replaces one that existed at the start only with --force.
/// </summary>
public class ConcurrencyTests
{
    static string Golden => Path.Combine(TestPaths.Fixtures, "golden", "llama");

    [Fact]
    public void SecondPruneIntoTheSameOutFailsAtOnceNamingTheFirstRunsPid()
    {
        using var t = new TempDir();
        string output = t["pruned"];
        ChildResult? second = null, forced = null;
        TimeSpan secondTook = default;
        // The first run writes slowly (150 ms per tensor, ~7 s) so the others start while it holds the lock.
        // (the test host: the library's prune with a tensor-written callback that sleeps)
        var first = ChildRun.Run(TestHostProcess.StartInfo("prune", Golden, output, "2-4", "--sleep-ms", "150"),
            onStarted: p =>
            {
                var sw = System.Diagnostics.Stopwatch.StartNew();
                while (!Directory.EnumerateDirectories(t.Path, ".pruned.tmp-*").Any() && sw.Elapsed < TimeSpan.FromSeconds(30))
                    Thread.Sleep(10);
                Assert.True(File.Exists(t[".pruned.lock"]), "the first run holds no lock file");
                sw.Restart();
                var plain = Task.Run(() => ChildRun.Run(["prune", "-m", Golden, "-o", output, "--layers", "6", "--quiet"]));
                forced = ChildRun.Run(["prune", "-m", Golden, "-o", output, "--layers", "6", "--quiet", "--force"]);
                second = plain.Result;
                secondTook = sw.Elapsed;
                Assert.False(p.HasExited, "the first run ended before the second one was tried (is the slow-write callback working?)");
            });
        Assert.True(first.Exit == 0, first.Stderr);
        foreach (var r in new[] { second!, forced! })
        {
            string line = ChildRun.AssertOneLineError(r, 1);
            Assert.Equal($"error: --out {output}: another run (pid {first.Pid}) is writing it (lock {t[".pruned.lock"]}); " +
                "wait for it to finish or choose another --out", line);
        }
        Assert.True(secondTook < TimeSpan.FromSeconds(20), $"the second run took {secondTook} to fail");
        // The first run's output is intact and complete (5 of 8 layers); nothing else is left next to it.
        using (var pruned = Checkpoint.Open(output)) Assert.Equal(5, pruned.Config.NumLayers);
        Assert.Equal(["pruned"], Directory.EnumerateFileSystemEntries(t.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void HealAndSweepHoldTheirOutLockFromTheStart()
    {
        using var t = new TempDir();
        string data = Path.Combine(TestPaths.Samples, "data", "kjv", "validation.txt");
        using (OutputLock.Acquire(t["healed"], "--out"))
        {
            var e = Assert.Throws<LayerPruneException>(() => LayerPrune.Healing.Healer.Run(
                new LayerPrune.Healing.HealOptions { ModelDir = Golden, DataPath = data, OutDir = t["healed"], Steps = 1 }));
            Assert.Equal($"--out {t["healed"]}: another run (pid {Environment.ProcessId}) is writing it (lock {t[".healed.lock"]}); " +
                "wait for it to finish or choose another --out", LayerPrune.Cli.Cli.Describe(e));
            Assert.Equal("OutDir", e.ParameterName); // the library names its parameter; the CLI shows it as --out
            Assert.False(Directory.Exists(t["healed.partial"])); // refused before touching anything
        }
        using var model = LayerPrune.Modeling.CausalLM.Load(Golden);
        using (OutputLock.Acquire(t["sweep"], "--out"))
        {
            var options = new LayerPrune.Sweep.SweepOptions
            {
                ModelDir = Golden, DataPath = data, Tasks = ["loss:" + data], OutDir = t["sweep"],
            };
            var e = Assert.Throws<LayerPruneException>(() => LayerPrune.Sweep.SweepRunner.Run(model, null!, options));
            Assert.Contains($"--out {t["sweep"]}: another run (pid {Environment.ProcessId}) is writing it", LayerPrune.Cli.Cli.Describe(e));
            Assert.False(Directory.Exists(t["sweep"]));
        }
        Assert.Empty(Directory.EnumerateFileSystemEntries(t.Path)); // lock files removed on release
    }

    [Fact]
    public void CommitNeverReplacesAFolderThatAppearedDuringTheRun()
    {
        using var t = new TempDir();
        foreach (bool force in new[] { false, true })
        {
            string output = t[$"out-{force}"];
            string kept;
            using (var folder = OutputFolder.Begin(output, force, "--out"))
            {
                File.WriteAllText(folder.File("a.txt"), "ours");
                Directory.CreateDirectory(output);
                File.WriteAllText(Path.Combine(output, "theirs.txt"), "theirs"); // another program creates --out meanwhile
                var e = Assert.Throws<LayerPruneException>(folder.Commit);
                Assert.Equal($"--out {output}: was created by another program while this run was writing; left it untouched " +
                    $"(this run's output is in {folder.TempPath})", e.Message);
                kept = folder.TempPath;
            }
            Assert.Equal("theirs", File.ReadAllText(Path.Combine(output, "theirs.txt")));
            Assert.Equal("ours", File.ReadAllText(Path.Combine(kept, "a.txt"))); // neither folder deleted
            Assert.False(File.Exists(OutputLock.LockPathFor(output)));
        }
    }

    [Fact]
    public void ForceReplacesOnlyTheFolderThatExistedAtTheStart()
    {
        using var t = new TempDir();
        string output = t["out"];
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "old.txt"), "old");
        Assert.Throws<LayerPruneException>(() => OutputFolder.Begin(output, force: false, "--out"));
        using (var folder = OutputFolder.Begin(output, force: true, "--out"))
        {
            File.WriteAllText(folder.File("new.txt"), "new");
            // While this run holds the lock, a second one (same process or another) cannot begin.
            var e = Assert.Throws<LayerPruneException>(() => OutputFolder.Begin(output, force: true, "--out"));
            Assert.Contains($"another run (pid {Environment.ProcessId}) is writing it", e.Message);
            folder.Commit();
        }
        Assert.Equal(["new.txt"], Directory.EnumerateFileSystemEntries(output).Select(Path.GetFileName));
        Assert.Equal(["out"], Directory.EnumerateFileSystemEntries(t.Path).Select(Path.GetFileName)); // no lock, temp or old folder
    }

    [Fact]
    public void LeftoversOfAKilledRunAreCleanedAndAMovedAsideFolderComesBack()
    {
        using var t = new TempDir();
        string output = t["out"];
        // A killed run's temp folder and stale lock file (no process holds it), and a forced commit killed between its two
        // renames: the old output moved aside to ".out.old-GUID", nothing under the final name.
        Directory.CreateDirectory(t[".out.tmp-0123456789abcdef0123456789abcdef"]);
        File.WriteAllText(t[".out.lock"], "999999\n");
        Directory.CreateDirectory(t[".out.old-0123456789abcdef0123456789abcdef"]);
        File.WriteAllText(t[".out.old-0123456789abcdef0123456789abcdef/old.txt"], "old");
        using (var folder = OutputFolder.Begin(output, force: true, "--out"))
        {
            Assert.Equal("old", File.ReadAllText(Path.Combine(output, "old.txt"))); // restored before anything else
            Assert.Equal([".out.lock", Path.GetFileName(folder.TempPath), "out"],
                Directory.EnumerateFileSystemEntries(t.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        }
        Assert.Equal(["out"], Directory.EnumerateFileSystemEntries(t.Path).Select(Path.GetFileName));
    }
}
