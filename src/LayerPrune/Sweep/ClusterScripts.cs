using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using LayerPrune.Pruning;

namespace LayerPrune.Sweep;

/// <summary>What the job scripts of a split sweep run and ask the scheduler for.</summary>
public sealed record ClusterJob
{
    /// <summary>The layerprune command as a shell word list, used verbatim (e.g. "'/usr/bin/dotnet' '/opt/lp/layerprune.dll'").</summary>
    public required string Command { get; init; }

    /// <summary>The sweep's arguments after "sweep", the same for every stage (no stage, shard, force or script flags).</summary>
    public required IReadOnlyList<string> SweepArgs { get; init; }

    /// <summary>The folder the jobs start in (relative paths in <see cref="SweepArgs"/> are read from there).</summary>
    public required string WorkingDirectory { get; init; }

    /// <summary>The sweep's output folder (absolute), shared by every task; the scripts go into OUT/slurm or OUT/kubernetes.</summary>
    public required string OutDir { get; init; }

    /// <summary>Array tasks (shards).</summary>
    public int Shards { get; init; } = 1;

    /// <summary>The prepare stage discards results of a different earlier sweep (never the shards or merge).</summary>
    public bool Force { get; init; }

    /// <summary>Slurm partition; null = the cluster's default.</summary>
    public string? Partition { get; init; }

    /// <summary>GPUs per task (Slurm --gpus-per-task; Kubernetes nvidia.com/gpu).</summary>
    public int? GpusPerTask { get; init; }

    /// <summary>CPU cores per task.</summary>
    public int? CpusPerTask { get; init; }

    /// <summary>Memory per task in Slurm's form (e.g. 16G, 4000M; a bare number is megabytes).</summary>
    public string? Mem { get; init; }

    /// <summary>Time limit per task in Slurm's form (MM, HH:MM:SS or D-HH:MM:SS).</summary>
    public string? Time { get; init; }

    /// <summary>Kubernetes: the container image that holds layerprune and the sweep's inputs.</summary>
    public string? Image { get; init; }

    /// <summary>Kubernetes: the PersistentVolumeClaim mounted at the output folder's path.</summary>
    public string Claim { get; init; } = "layerprune-sweep";

    /// <summary>Kubernetes: the claim's size.</summary>
    public string Storage { get; init; } = "20Gi";
}

/// <summary>
/// The job scripts of a split sweep (<see cref="SweepStages"/>): for Slurm, prepare, a job array of one task per shard
/// (requeueable: a requeued task resumes its shard) and merge, chained with afterok dependencies; for Kubernetes, a
/// PVC, the prepare Job, an Indexed Job (JOB_COMPLETION_INDEX → shard) and the merge Job, applied in order by run.sh.
/// </summary>
public static partial class ClusterScripts
{
    /// <summary>The Slurm scripts' folder, OUT/slurm.</summary>
    public static string SlurmFolder(string outDir) => Path.Combine(outDir, "slurm");

    /// <summary>The Kubernetes manifests' folder, OUT/kubernetes.</summary>
    public static string KubernetesFolder(string outDir) => Path.Combine(outDir, "kubernetes");

    /// <summary>Writes prepare.sbatch, shards.sbatch, merge.sbatch and submit.sh (and logs/) into OUT/slurm; returns the
    /// folder.</summary>
    public static string WriteSlurm(ClusterJob job)
    {
        ArgumentNullException.ThrowIfNull(job);
        Validate(job);
        string dir = SlurmFolder(job.OutDir);
        string logs = Path.Combine(dir, "logs");
        Directory.CreateDirectory(logs);
        string Script(string name, string output, string extra, string stageArgs) =>
            new StringBuilder("#!/bin/bash\n")
                .Append(CultureInfo.InvariantCulture, $"#SBATCH --job-name=layerprune-{name}\n")
                .Append(CultureInfo.InvariantCulture, $"#SBATCH --output={Path.Combine(logs, output)}\n")
                .Append(Resources(job))
                .Append(extra)
                .Append("set -euo pipefail\n")
                .Append(CultureInfo.InvariantCulture, $"cd {Quote(job.WorkingDirectory)}\n")
                .Append(CultureInfo.InvariantCulture,
                    $"exec {job.Command} sweep {string.Join(' ', job.SweepArgs.Select(Quote))} {stageArgs}\n")
                .ToString();
        Write(Path.Combine(dir, "prepare.sbatch"), Script("prepare", "prepare-%j.out", "",
            "--stage prepare" + (job.Force ? " --force" : "")));
        // A requeued task (node failure, preemption, scontrol requeue) reruns its shard, which resumes its own rows.
        Write(Path.Combine(dir, "shards.sbatch"), Script("shards", "shard-%A_%a.out",
            $"#SBATCH --array=0-{job.Shards - 1}\n#SBATCH --requeue\n#SBATCH --open-mode=append\n",
            $"--shard \"$SLURM_ARRAY_TASK_ID/{job.Shards}\""));
        Write(Path.Combine(dir, "merge.sbatch"), Script("merge", "merge-%j.out", "", "--stage merge"));
        Write(Path.Combine(dir, "submit.sh"), """
            #!/bin/bash
            # Submits prepare, then the shard array after it, then merge after every shard (afterok).
            set -euo pipefail
            cd "$(dirname "$0")"
            prepare=$(sbatch --parsable prepare.sbatch)
            shards=$(sbatch --parsable --dependency=afterok:${prepare%%;*} shards.sbatch)
            merge=$(sbatch --parsable --dependency=afterok:${shards%%;*} merge.sbatch)
            printf 'PREPARE=%s\nSHARDS=%s\nMERGE=%s\n' "${prepare%%;*}" "${shards%%;*}" "${merge%%;*}" > jobs.env
            echo "prepare ${prepare%%;*} shards ${shards%%;*} merge ${merge%%;*}"

            """);
        Write(Path.Combine(dir, "requeue.sh"), $$"""
            #!/bin/bash
            # Reruns shard tasks K... of the submitted array (after a scancel, a failed node, an OOM kill): each resumes its
            # rows. A task that ended with a failure marks the merge's afterok dependency as never satisfiable (Slurm keeps the
            # array's failed exit code), so merge is pointed at every task again; a requeued task starts at once instead of
            # after Slurm's requeue delay. Job ids: jobs.env, written by submit.sh or `sweep --slurm --submit`.
            set -euo pipefail
            cd "$(dirname "$0")"
            source jobs.env
            for k in "$@"; do
              scontrol requeue "${SHARDS}_$k"
              scontrol update JobId="${SHARDS}_$k" StartTime=now
            done
            scontrol update JobId="$MERGE" Dependency="afterok:$(seq -s: -f "${SHARDS}_%g" 0 {{job.Shards - 1}})"

            """);
        return dir;
    }

    /// <summary>The job ids of a submission as requeue.sh reads them (OUT/slurm/jobs.env).</summary>
    public static void WriteJobIds(string slurmDir, string prepare, string shards, string merge) =>
        OutputFile.WriteAllText(Path.Combine(slurmDir, "jobs.env"), $"PREPARE={prepare}\nSHARDS={shards}\nMERGE={merge}\n");

    /// <summary>The scripts submit.sh submits, in order, each after the one before (afterok).</summary>
    public static IReadOnlyList<string> SlurmOrder { get; } = ["prepare.sbatch", "shards.sbatch", "merge.sbatch"];

    /// <summary>Writes pvc.yaml, prepare.yaml, shards.yaml, merge.yaml and run.sh into OUT/kubernetes; returns the folder.
    /// The claim is mounted at the output folder's own path, so the sweep's arguments stay as they are.</summary>
    public static string WriteKubernetes(ClusterJob job)
    {
        ArgumentNullException.ThrowIfNull(job);
        Validate(job);
        if (string.IsNullOrWhiteSpace(job.Image))
            throw new ArgumentException("a container image is needed for Kubernetes", nameof(ClusterJob.Image));
        string dir = KubernetesFolder(job.OutDir);
        Directory.CreateDirectory(dir);
        string name = "layerprune-" + Slug(Path.GetFileName(job.OutDir.TrimEnd('/')));
        Write(Path.Combine(dir, "pvc.yaml"), $"""
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata:
              name: {job.Claim}
            spec:
              accessModes: [ReadWriteMany]   # every shard's pod writes its own rows file into the same folder
              resources:
                requests:
                  storage: {job.Storage}

            """);
        Write(Path.Combine(dir, "prepare.yaml"), KubeJob($"{name}-prepare", job, "--stage prepare" + (job.Force ? " --force" : ""), null));
        Write(Path.Combine(dir, "shards.yaml"),
            KubeJob($"{name}-shards", job, $"--shard \"$JOB_COMPLETION_INDEX/{job.Shards}\"", job.Shards));
        Write(Path.Combine(dir, "merge.yaml"), KubeJob($"{name}-merge", job, "--stage merge", null));
        Write(Path.Combine(dir, "run.sh"), $"""
            #!/bin/bash
            # Kubernetes has no dependencies between Jobs: apply each stage and wait for it to complete.
            set -euo pipefail
            cd "$(dirname "$0")"
            kubectl apply -f pvc.yaml
            kubectl apply -f prepare.yaml
            kubectl wait --for=condition=complete --timeout=-1s job/{name}-prepare
            kubectl apply -f shards.yaml
            kubectl wait --for=condition=complete --timeout=-1s job/{name}-shards
            kubectl apply -f merge.yaml
            kubectl wait --for=condition=complete --timeout=-1s job/{name}-merge

            """);
        return dir;
    }

    static string KubeJob(string name, ClusterJob job, string stageArgs, int? shards)
    {
        string command = $"exec {job.Command} sweep {string.Join(' ', job.SweepArgs.Select(Quote))} {stageArgs}";
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n");
        if (shards is int n)
        {
            // One pod per shard; a pod that fails (node loss, eviction) is retried and resumes its shard's rows.
            sb.Append(CultureInfo.InvariantCulture, $"  completionMode: Indexed\n  completions: {n}\n  parallelism: {n}\n");
            sb.Append("  backoffLimitPerIndex: 3\n  maxFailedIndexes: 0\n");
        }
        else
        {
            sb.Append("  backoffLimit: 3\n");
        }
        if (Seconds(job.Time) is long deadline)
            sb.Append(CultureInfo.InvariantCulture, $"  activeDeadlineSeconds: {deadline * (shards is null ? 1 : 4)}\n");
        sb.Append("  template:\n    spec:\n      restartPolicy: Never\n      containers:\n");
        sb.Append(CultureInfo.InvariantCulture, $"        - name: layerprune\n          image: {job.Image}\n");
        sb.Append(CultureInfo.InvariantCulture, $"          workingDir: {job.WorkingDirectory}\n");
        sb.Append(CultureInfo.InvariantCulture, $"          command: [\"/bin/sh\", \"-c\", {Yaml(command)}]\n");
        var requests = new List<string>();
        if (job.CpusPerTask is int c) requests.Add($"cpu: \"{c}\"");
        if (KubeMemory(job.Mem) is string m) requests.Add($"memory: {m}");
        if (requests.Count > 0 || job.GpusPerTask is not null)
        {
            sb.Append("          resources:\n");
            if (requests.Count > 0)
                sb.Append("            requests:\n").Append(string.Concat(requests.Select(r => $"              {r}\n")));
            var limits = new List<string>(requests.Where(r => r.StartsWith("memory", StringComparison.Ordinal)));
            if (job.GpusPerTask is int g) limits.Add($"nvidia.com/gpu: {g}");
            if (limits.Count > 0)
                sb.Append("            limits:\n").Append(string.Concat(limits.Select(r => $"              {r}\n")));
        }
        sb.Append("          volumeMounts:\n            - name: sweep\n")
            .Append(CultureInfo.InvariantCulture, $"              mountPath: {job.OutDir}\n");
        sb.Append("      volumes:\n        - name: sweep\n          persistentVolumeClaim:\n")
            .Append(CultureInfo.InvariantCulture, $"            claimName: {job.Claim}\n");
        return sb.ToString();
    }

    static void Validate(ClusterJob job)
    {
        if (job.Shards < 1)
            throw new ArgumentOutOfRangeException(nameof(ClusterJob.Shards), job.Shards, "must be at least 1");
        if (!Path.IsPathFullyQualified(job.OutDir))
            throw new ArgumentException("must be an absolute path", nameof(ClusterJob.OutDir));
        if (job.Mem is { } mem && !MemoryForm().IsMatch(mem))
            throw new ArgumentException($"'{mem}' is not a memory size like 16G or 4000M", nameof(ClusterJob.Mem));
        if (job.Time is { } t && Seconds(t) is null)
            throw new ArgumentException($"'{t}' is not a time like 90, 04:00:00 or 1-12:00:00", nameof(ClusterJob.Time));
        if (job.GpusPerTask is < 1)
            throw new ArgumentOutOfRangeException(nameof(ClusterJob.GpusPerTask), job.GpusPerTask, "must be at least 1");
        if (job.CpusPerTask is < 1)
            throw new ArgumentOutOfRangeException(nameof(ClusterJob.CpusPerTask), job.CpusPerTask, "must be at least 1");
    }

    static string Resources(ClusterJob job)
    {
        var sb = new StringBuilder();
        if (job.Partition is { } p) sb.Append(CultureInfo.InvariantCulture, $"#SBATCH --partition={p}\n");
        if (job.GpusPerTask is int g) sb.Append(CultureInfo.InvariantCulture, $"#SBATCH --gpus-per-task={g}\n");
        if (job.CpusPerTask is int c) sb.Append(CultureInfo.InvariantCulture, $"#SBATCH --cpus-per-task={c}\n");
        if (job.Mem is { } m) sb.Append(CultureInfo.InvariantCulture, $"#SBATCH --mem={m}\n");
        if (job.Time is { } t) sb.Append(CultureInfo.InvariantCulture, $"#SBATCH --time={t}\n");
        return sb.ToString();
    }

    [GeneratedRegex(@"^\d+[KMGT]?$")]
    private static partial Regex MemoryForm();

    /// <summary>Slurm's memory (bare number = MB) as a Kubernetes quantity (16G → 16Gi).</summary>
    static string? KubeMemory(string? mem) => mem is null ? null
        : char.IsDigit(mem[^1]) ? mem + "Mi" : mem[..^1] + mem[^1] + "i";

    /// <summary>Slurm's time forms (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in seconds; null when not one.</summary>
    public static long? Seconds(string? time)
    {
        if (time is null) return null;
        var m = Regex.Match(time, @"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$");
        if (!m.Success) return null;
        long P(int g) => m.Groups[g].Success ? long.Parse(m.Groups[g].Value, CultureInfo.InvariantCulture) : 0;
        if (m.Groups[1].Success) return P(1) * 86400 + P(2) * 3600 + P(3) * 60 + P(4); // D-HH[:MM[:SS]]
        if (m.Groups[4].Success) return P(2) * 3600 + P(3) * 60 + P(4);              // HH:MM:SS
        return P(2) * 60 + P(3);                                                        // MM[:SS]
    }

    /// <summary>A POSIX shell word: as is when it holds only safe characters, else single-quoted.</summary>
    public static string Quote(string s)
    {
        ArgumentNullException.ThrowIfNull(s);
        return s.Length > 0 && SafeWord().IsMatch(s) ? s : "'" + s.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
    }

    [GeneratedRegex(@"^[A-Za-z0-9_./,:=+@%-]+$")]
    private static partial Regex SafeWord();

    static string Yaml(string s) =>
        "\"" + s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";

    static string Slug(string s)
    {
        var slug = Regex.Replace(s.ToLowerInvariant(), "[^a-z0-9-]+", "-").Trim('-');
        return slug.Length == 0 ? "sweep" : slug[..Math.Min(slug.Length, 40)];
    }

    static void Write(string path, string text)
    {
        OutputFile.WriteAllText(path, text);
        bool script = path.EndsWith(".sh", StringComparison.Ordinal) || path.EndsWith(".sbatch", StringComparison.Ordinal);
        if (!OperatingSystem.IsWindows() && script)
            File.SetUnixFileMode(path, File.GetUnixFileMode(path) | UnixFileMode.UserExecute | UnixFileMode.GroupExecute
                | UnixFileMode.OtherExecute);
    }
}
