using System.Diagnostics;
using System.Text.Json.Nodes;
using LayerPrune.Sweep;
using LayerPrune.Tests.Pruning;
using LayerPrune.Tests.Robustness;

namespace LayerPrune.Tests.Sweep;

/// <summary>The Slurm scripts and Kubernetes manifests of a split sweep, run with a stand-in command that prints its
/// arguments: each stage gets exactly the sweep's arguments plus its own.</summary>
public class ClusterScriptsTests
{
    /// <summary>Runs <paramref name="script"/> with bash (or sh -c) and the given environment; its stdout lines.</summary>
    static List<string> Run(string file, string[] args, Dictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{file} {string.Join(' ', args)}: exit {p.ExitCode}: {stderr}");
        return stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList();
    }

    static readonly string[] Args = ["--model", "my model's dir", "--n", "4,8", "--tasks", "loss:a b.txt,mc:c.jsonl", "--out", "o"];

    ClusterJob Job(string outDir, string cwd) => new()
    {
        Command = "printf '%s\\n'", SweepArgs = Args, WorkingDirectory = cwd, OutDir = outDir, Shards = 3, Force = true,
        Partition = "gpu", GpusPerTask = 1, CpusPerTask = 8, Mem = "32G", Time = "1-02:00:00", Image = "registry.example/layerprune:1",
    };

    [Fact]
    public void SlurmScriptsRunTheStagesWithTheSweepsArgumentsAndAnArrayOfShards()
    {
        using var tmp = new TempDir();
        Directory.CreateDirectory(tmp["work dir"]);
        string dir = ClusterScripts.WriteSlurm(Job(tmp["out"], tmp["work dir"]));
        Assert.Equal(Path.Combine(tmp["out"], "slurm"), dir);
        Assert.True(Directory.Exists(Path.Combine(dir, "logs")));
        List<string> Expect(params string[] stage) => ["sweep", .. Args, .. stage];
        Assert.Equal(Expect("--stage", "prepare", "--force"), Run("bash", [Path.Combine(dir, "prepare.sbatch")]));
        Assert.Equal(Expect("--shard", "2/3"), Run("bash", [Path.Combine(dir, "shards.sbatch")],
            new() { ["SLURM_ARRAY_TASK_ID"] = "2" }));
        Assert.Equal(Expect("--stage", "merge"), Run("bash", [Path.Combine(dir, "merge.sbatch")]));
        string shards = File.ReadAllText(Path.Combine(dir, "shards.sbatch"));
        foreach (var line in new[] { "#SBATCH --array=0-2", "#SBATCH --requeue", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-task=1",
                     "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH --time=1-02:00:00" })
            Assert.Contains(line + "\n", shards);
        // The jobs start in the folder relative paths were given from.
        Assert.Equal(tmp["work dir"], Run("bash", ["-c", File.ReadAllText(Path.Combine(dir, "merge.sbatch"))
            .Replace("exec printf", "pwd; exit; exec printf", StringComparison.Ordinal)]).Single());
        string submit = File.ReadAllText(Path.Combine(dir, "submit.sh"));
        Assert.Contains("--dependency=afterok:${prepare%%;*} shards.sbatch", submit);
        Assert.Contains("--dependency=afterok:${shards%%;*} merge.sbatch", submit);
        Run("bash", ["-n", Path.Combine(dir, "submit.sh")]);
    }

    [Fact]
    public void KubernetesManifestsAreAnIndexedJobBetweenPrepareAndMergeOnOneClaim()
    {
        using var tmp = new TempDir();
        string dir = ClusterScripts.WriteKubernetes(Job(tmp["out"], "/work"));
        string shards = File.ReadAllText(Path.Combine(dir, "shards.yaml"));
        foreach (var line in new[] { "completionMode: Indexed", "completions: 3", "parallelism: 3", "image: registry.example/layerprune:1",
                     "claimName: layerprune-sweep", $"mountPath: {tmp["out"]}", "nvidia.com/gpu: 1", "memory: 32Gi", "cpu: \"8\"",
                     "workingDir: /work", $"activeDeadlineSeconds: {4 * (86400 + 7200)}" })
            Assert.Contains(line, shards);
        Assert.Contains("kind: PersistentVolumeClaim", File.ReadAllText(Path.Combine(dir, "pvc.yaml")));
        // The container's command line (a YAML double-quoted string, JSON-compatible here) run by sh with the pod's index.
        string Command(string file)
        {
            var line = File.ReadLines(Path.Combine(dir, file)).Single(l => l.TrimStart().StartsWith("command:", StringComparison.Ordinal));
            var array = JsonNode.Parse(line[(line.IndexOf(':') + 1)..])!.AsArray();
            Assert.Equal(["/bin/sh", "-c"], array.Take(2).Select(x => (string)x!));
            return (string)array[2]!;
        }
        Assert.Equal(["sweep", .. Args, "--shard", "1/3"], Run("sh", ["-c", Command("shards.yaml")],
            new() { ["JOB_COMPLETION_INDEX"] = "1" }));
        Assert.Equal(["sweep", .. Args, "--stage", "merge"], Run("sh", ["-c", Command("merge.yaml")]));
        Assert.DoesNotContain("completionMode", File.ReadAllText(Path.Combine(dir, "merge.yaml")));
        string run = File.ReadAllText(Path.Combine(dir, "run.sh"));
        Assert.True(run.IndexOf("prepare.yaml", StringComparison.Ordinal) < run.IndexOf("shards.yaml", StringComparison.Ordinal)
            && run.IndexOf("shards.yaml", StringComparison.Ordinal) < run.IndexOf("merge.yaml", StringComparison.Ordinal));
        Assert.Throws<ArgumentException>(() => ClusterScripts.WriteKubernetes(Job(tmp["out2"], "/w") with { Image = null }));
    }

    [Theory]
    [InlineData("90", 5400L)]
    [InlineData("10:30", 630L)]
    [InlineData("04:00:00", 14400L)]
    [InlineData("2-00", 172800L)]
    [InlineData("1-12:00:00", 129600L)]
    [InlineData("four hours", null)]
    public void SlurmTimeFormsInSeconds(string time, long? seconds) => Assert.Equal(seconds, ClusterScripts.Seconds(time));

    /// <summary>The CLI keeps the user's sweep flags and drops its own (--slurm, --shards, --force to prepare only, --json).</summary>
    [Fact]
    public void CliWritesSlurmScriptsWithTheSweepFlagsOnly()
    {
        using var tmp = new TempDir();
        string outDir = tmp["o"];
        var (exit, stdout, stderr) = CliProcess.Run("sweep", "--n", "4,8", "--slurm", "--shards", "2", "--strategies", "deepest",
            "--force", "--command", "printf '%s\\n'", "--mem", "8G", "--out", outDir, "--json");
        Assert.True(exit == 0, stderr);
        Assert.Equal(2, (int)JsonNode.Parse(stdout)!["shards"]!);
        var args = Run("bash", [Path.Combine(outDir, "slurm", "shards.sbatch")], new() { ["SLURM_ARRAY_TASK_ID"] = "1" });
        Assert.Equal(["sweep", "--n", "4,8", "--strategies", "deepest", "--out", outDir, "--dtype", "fp32", "--shard", "1/2"], args);
        Assert.Contains("--stage\nprepare\n--force", string.Join('\n', Run("bash", [Path.Combine(outDir, "slurm", "prepare.sbatch")])));
        Assert.False(File.Exists(Path.Combine(outDir, "results.json"))); // nothing ran

        foreach (var (bad, flag) in new[] { (new[] { "--shard", "2/2" }, "--shard"), (["--stage", "shard"], "--stage"),
                     (["--slurm"], "--shards"), (["--submit"], "--submit"), (["--kubernetes", "--shards", "2"], "--image") })
        {
            var r = CliProcess.Run(["sweep", .. bad, "--out", tmp["bad"]]);
            Assert.Equal(2, r.Exit);
            Assert.Contains(flag, r.Stderr);
            Assert.Single(r.Stderr.Trim().Split('\n'));
        }
        var merge = CliProcess.Run("sweep", "--stage", "merge", "--out", tmp["none"]);
        Assert.Equal(1, merge.Exit);
        Assert.Contains("plan.json", merge.Stderr);
    }
}
