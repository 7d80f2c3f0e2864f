using System.Diagnostics;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LayerPrune.Sweep;
using LayerPrune.Tests.Pruning;
using LayerPrune.Tests.Robustness;
using Xunit.Abstractions;

namespace LayerPrune.Tests.Sweep;

/// <summary>
/// A private single-node Slurm cluster from Debian's packages (tests/slurm/start.sh: installs them with apt-get when
/// missing, config and state in a temp folder), stopped by pid afterwards (tests/slurm/stop.sh). Unavailable (the test
/// is skipped with the reason) when not root, or when the install or the daemons fail.
/// </summary>
public sealed class SlurmCluster : IDisposable
{
    readonly string _state = Path.Combine(Path.GetTempPath(), "layerprune-slurm-" + Guid.NewGuid().ToString("N")[..8]);

    /// <summary>Why the cluster is not running; null when it is.</summary>
    public string? Unavailable { get; }

    /// <summary>The cluster's slurm.conf (SLURM_CONF of every client command).</summary>
    public string Conf => Path.Combine(_state, "slurm.conf");

    /// <summary>Seconds start.sh took (install included when it installed).</summary>
    public double StartSeconds { get; }

    public SlurmCluster()
    {
        if (Environment.UserName != "root" && !IsRootUid())
        {
            Unavailable = "the Slurm test needs root (it installs Debian's slurmctld/slurmd/munge and runs the daemons); not root here";
            return;
        }
        var clock = Stopwatch.StartNew();
        var (exit, _, stderr) = Script("start.sh", timeoutSeconds: 900);
        StartSeconds = clock.Elapsed.TotalSeconds;
        if (exit != 0) Unavailable = $"no Slurm cluster (tests/slurm/start.sh exit {exit}): {stderr.Trim()}";
    }

    static bool IsRootUid()
    {
        try
        {
            return File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("Uid:", StringComparison.Ordinal))
                ?.Split('\t', StringSplitOptions.RemoveEmptyEntries).ElementAtOrDefault(1) == "0";
        }
        catch (IOException)
        {
            return false;
        }
    }

    (int Exit, string Stdout, string Stderr) Script(string name, int timeoutSeconds) =>
        Slurm.Run("bash", [Path.Combine(TestPaths.RepoRoot, "tests", "slurm", name), _state], null, timeoutSeconds);

    public void Dispose()
    {
        if (Unavailable is null)
        {
            Slurm.Run("scancel", ["--user", "root"], Conf, 30); // this private cluster's jobs only
            Script("stop.sh", timeoutSeconds: 60);
        }
        try { Directory.Delete(_state, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>Runs Slurm's client commands (and the CLI) against one cluster's configuration.</summary>
public static class Slurm
{
    public static (int Exit, string Stdout, string Stderr) Run(string file, IEnumerable<string> args, string? conf, int timeoutSeconds = 60)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (conf is not null) psi.Environment["SLURM_CONF"] = conf;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutSeconds * 1000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)}");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>The job's JobState=… from scontrol (jobs stay listed for MinJobAge = 600 s).</summary>
    public static string State(string job, string conf)
    {
        var (_, stdout, _) = Run("scontrol", ["show", "job", "-o", job], conf);
        return Regex.Match(stdout, @"JobState=(\S+)").Groups[1].Value;
    }
}

public class SlurmSweepTests(SlurmCluster cluster, ITestOutputHelper output) : IClassFixture<SlurmCluster>
{
    /// <summary>The sweep both runs use: the embedded model with its default tasks (validation loss + kjv cloze), tiny.</summary>
    static readonly string[] Sweep =
    [
        "sweep", "--n", "8", "--strategies", "similarity,deepest", "--samples", "8", "--seq-len", "64", "--max-chunks", "4",
        "--limit", "8", "--heal-steps", "2", "--heal-batch", "2", "--heal-quant", "none", "--quiet",
    ];

    static (int Exit, string Stdout, string Stderr) Cli(string? conf, params string[] args)
    {
        var psi = CliProcess.StartInfo(args, conf is null ? null : new Dictionary<string, string> { ["SLURM_CONF"] = conf });
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(600_000)) { p.Kill(entireProcessTree: true); throw new TimeoutException(string.Join(' ', args)); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>
    /// `sweep --slurm --shards 3 --submit` on a real cluster: prepare, the array (one task killed with SIGKILL while its
    /// variant runs, then requeued with the generated requeue.sh) and merge after it. The merged results.json/.csv are
    /// byte-identical to a single-process sweep with the same options, healed rows included, and no row is duplicated.
    /// </summary>
    [SkippableFact]
    public void SlurmArrayWithAKilledAndRequeuedTaskMergesTheSingleProcessRows()
    {
        Skip.If(cluster.Unavailable is not null, cluster.Unavailable);
        string conf = cluster.Conf;
        using var tmp = new TempDir();
        var single = Cli(null, [.. Sweep, "--out", tmp["single"]]);
        Assert.True(single.Exit == 0, single.Stderr);

        var clock = Stopwatch.StartNew();
        string outDir = tmp["split"];
        var submit = Cli(conf, [.. Sweep, "--out", outDir, "--slurm", "--shards", "3", "--submit", "--json"]);
        Assert.True(submit.Exit == 0, submit.Stderr);
        var jobs = JsonNode.Parse(submit.Stdout)!["jobs"]!;
        string array = (string)jobs["shards"]!, merge = (string)jobs["merge"]!;

        // Kill the shard that heals similarity n=8 with SIGKILL once that variant has started (its checkpoint folder appears).
        var deadline = DateTime.UtcNow.AddMinutes(8);
        string plan = Path.Combine(outDir, SweepStages.PlanFile);
        while (!File.Exists(plan))
        {
            Assert.True(DateTime.UtcNow < deadline, $"prepare wrote no plan in time; merge is {Slurm.State(merge, conf)}");
            Thread.Sleep(100);
        }
        var variants = JsonNode.Parse(File.ReadAllText(plan))!["variants"]!.AsArray();
        var shardOf = ShardPlan.Assign(variants.Select(v => (double)v!["cost"]!).ToList(), 3);
        int k = shardOf[variants.Select(v => (string)v!["key"]!).ToList().IndexOf("similarity/8/healed")];
        string variantDir = Path.Combine(outDir, "variants", "similarity-n8");
        while (!Directory.Exists(variantDir))
        {
            Assert.True(DateTime.UtcNow < deadline, $"shard {k} did not start healing in time; merge is {Slurm.State(merge, conf)}");
            Thread.Sleep(20);
        }
        var kill = Slurm.Run("scancel", ["--signal=KILL", $"{array}_{k}"], conf);
        Assert.True(kill.Exit == 0, kill.Stderr);
        while (Slurm.State($"{array}_{k}", conf) is "RUNNING" or "COMPLETING") Thread.Sleep(100);
        string rowsFile = SweepStages.ShardPath(outDir, new ShardSpec(k, 3));
        var killedRows = File.Exists(rowsFile) ? JsonNode.Parse(File.ReadAllText(rowsFile))!["rows"]!.AsArray() : [];
        Assert.DoesNotContain(killedRows, r => (bool)r!["healed"]! && (string)r["strategy"]! == "similarity"); // killed mid-variant
        Assert.NotEqual("COMPLETED", Slurm.State($"{array}_{k}", conf));
        int before = killedRows.Count;

        string task = k.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var requeue = Slurm.Run("bash", [Path.Combine(outDir, "slurm", "requeue.sh"), task], conf);
        Assert.True(requeue.Exit == 0, requeue.Stderr);
        string state;
        while ((state = Slurm.State(merge, conf)) is not ("COMPLETED" or "FAILED" or "CANCELLED" or "TIMEOUT" or ""))
        {
            Assert.True(DateTime.UtcNow < deadline.AddMinutes(4), $"merge job {merge} is still {state}");
            Thread.Sleep(500);
        }
        double seconds = clock.Elapsed.TotalSeconds;
        Assert.True(state == "COMPLETED",
            $"merge job {merge} ended {state}: " + string.Join(" | ", Directory.GetFiles(Path.Combine(outDir, "slurm", "logs"))
                .Select(f => Path.GetFileName(f) + ": " + File.ReadAllText(f).Trim())));
        Assert.Matches(@"Restarts=1\b", Slurm.Run("scontrol", ["show", "job", "-o", $"{array}_{k}"], conf).Stdout);

        foreach (var f in new[] { "results.json", "results.csv" })
            Assert.Equal(File.ReadAllText(Path.Combine(tmp["single"], f)), File.ReadAllText(Path.Combine(outDir, f)));
        var rows = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "results.json")))!["rows"]!.AsArray();
        var keys = rows.Select(r => $"{r!["strategy"]}/{r["n"]}/{r["healed"]}").ToList();
        Assert.Equal(5, keys.Count); // unpruned, similarity and deepest n = 8, both healed too
        Assert.Equal(keys.Count, keys.Distinct().Count());
        Assert.Equal(2, rows.Count(r => (bool)r!["healed"]!));
        Assert.True(File.Exists(Path.Combine(outDir, "report.md")));
        output.WriteLine($"Slurm: start.sh {cluster.StartSeconds:0} s; submit → merge COMPLETED {seconds:0} s " +
            $"(shard {k} killed inside the similarity n=8 heal after {before} rows, then requeued)");
    }
}
