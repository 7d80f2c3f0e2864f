using System.CommandLine;
using System.CommandLine.Parsing;
using System.Diagnostics;
using System.Reflection;
using System.Text.Json.Nodes;
using LayerPrune.Sweep;

namespace LayerPrune.Cli.Commands;

/// <summary>The sweep's cluster flags: <c>--stage prepare|merge</c>, <c>--shard K/N</c>, and the job scripts of
/// <c>--slurm [--submit]</c> and <c>--kubernetes</c> (<see cref="ClusterScripts"/>; docs/cluster.md).</summary>
public sealed class SweepCluster
{
    readonly Option<string?> _stage = new("--stage")
    {
        Description = "Run one stage of a sweep split for a cluster: prepare (similarity, tasks, OUT/plan.json) or merge " +
                      "(every shard's rows → results, report, figures); see --shard and docs/cluster.md",
    };
    readonly Option<string?> _shard = new("--shard")
    {
        Description = "Run shard K (0-based) of N after --stage prepare, e.g. --shard 0/4: rows in OUT/shards/K-of-N.json, " +
                      "resumed when rerun",
    };
    readonly Option<bool> _slurm = new("--slurm")
    {
        Description = "Write Slurm scripts into OUT/slurm (prepare, an array of --shards tasks, merge after them) instead of running",
    };
    readonly Option<bool> _kubernetes = new("--kubernetes")
    {
        Description = "Write Kubernetes manifests into OUT/kubernetes (PVC, prepare Job, Indexed Job of --shards pods, merge Job)",
    };
    readonly Option<bool> _submit = new("--submit") { Description = "With --slurm: submit the scripts with sbatch and print the job ids" };
    readonly Option<int?> _shards = new("--shards") { Description = "With --slurm/--kubernetes: number of shards (array tasks)" };
    readonly Option<string?> _partition = new("--partition") { Description = "With --slurm: the partition" };
    readonly Option<int?> _gpus = new("--gpus-per-task") { Description = "With --slurm/--kubernetes: GPUs per task" };
    readonly Option<int?> _cpus = new("--cpus-per-task") { Description = "With --slurm/--kubernetes: CPU cores per task" };
    readonly Option<string?> _mem = new("--mem") { Description = "With --slurm/--kubernetes: memory per task, e.g. 32G" };
    readonly Option<string?> _time = new("--time") { Description = "With --slurm/--kubernetes: time limit per task, e.g. 04:00:00" };
    readonly Option<string?> _command = new("--command")
    {
        Description = "With --slurm/--kubernetes: the layerprune command the jobs run (default: this layerprune's absolute path; " +
                      "'layerprune' in Kubernetes)",
    };
    readonly Option<string?> _image = new("--image")
    {
        Description = "With --kubernetes: the container image (holds layerprune and the inputs)",
    };
    readonly Option<string> _claim = new("--claim")
    {
        Description = "With --kubernetes: the PersistentVolumeClaim mounted at --out's path",
        DefaultValueFactory = _ => "layerprune-sweep",
    };
    readonly Option<string> _storage = new("--storage")
    {
        Description = "With --kubernetes: the claim's size",
        DefaultValueFactory = _ => "20Gi",
    };

    Option[] All => [_stage, _shard, _slurm, _kubernetes, _submit, _shards, _partition, _gpus, _cpus, _mem, _time, _command, _image,
        _claim, _storage];

    /// <summary>Adds the flags to the sweep command.</summary>
    public void AddTo(Command command)
    {
        ArgumentNullException.ThrowIfNull(command);
        foreach (var o in All) command.Options.Add(o);
    }

    /// <summary>The options with the stage and shard of --stage / --shard (checked).</summary>
    public SweepOptions Apply(ParseResult p, SweepOptions options)
    {
        ArgumentNullException.ThrowIfNull(p);
        string? stage = p.GetValue(_stage);
        string? shard = p.GetValue(_shard);
        Cli.Require(stage is null or "prepare" or "merge", $"--stage {stage}: expected prepare or merge (shards: --shard K/N)");
        Cli.Require(stage is null || shard is null, "give --stage or --shard, not both");
        ShardSpec? spec = null;
        if (shard is not null)
            spec = ShardSpec.TryParse(shard)
                ?? throw LayerPruneException.Usage($"--shard {shard}: expected K/N with 0 ≤ K < N, e.g. 0/4");
        bool scripts = p.GetValue(_slurm) || p.GetValue(_kubernetes);
        Cli.Require(!scripts || (stage is null && shard is null), "--slurm/--kubernetes write the stages' scripts: drop --stage/--shard");
        Cli.Require(!p.GetValue(_submit) || p.GetValue(_slurm), "--submit: needs --slurm");
        return options with
        {
            Stage = stage switch
            {
                "prepare" => SweepStage.Prepare,
                "merge" => SweepStage.Merge,
                _ => spec is null ? null : SweepStage.Shard,
            },
            Shard = spec,
        };
    }

    /// <summary>With --slurm or --kubernetes: writes (and with --submit submits) the scripts and returns the exit code;
    /// otherwise null (the sweep runs here).</summary>
    public int? WriteScripts(ParseResult p, SweepOptions options, bool json)
    {
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(options);
        bool slurm = p.GetValue(_slurm), kube = p.GetValue(_kubernetes);
        if (!slurm && !kube) return null;
        Cli.Require(!(slurm && kube), "give --slurm or --kubernetes, not both");
        Cli.Require(p.GetValue(_shards) is not null, "--shards N is required with --slurm/--kubernetes");
        Cli.Require(p.GetValue(_shards) >= 1, $"--shards {p.GetValue(_shards)}: must be at least 1");
        Cli.Require(!kube || p.GetValue(_image) is not null, "--image is required with --kubernetes");
        var job = new ClusterJob
        {
            Command = p.GetValue(_command) ?? (kube ? "layerprune" : ThisCommand()),
            SweepArgs = SweepArgs(p),
            WorkingDirectory = Directory.GetCurrentDirectory(),
            OutDir = Path.GetFullPath(options.OutDir),
            Shards = p.GetValue(_shards)!.Value,
            Force = options.Force,
            Partition = p.GetValue(_partition),
            GpusPerTask = p.GetValue(_gpus),
            CpusPerTask = p.GetValue(_cpus),
            Mem = p.GetValue(_mem),
            Time = p.GetValue(_time),
            Image = p.GetValue(_image),
            Claim = p.GetValue(_claim)!,
            Storage = p.GetValue(_storage)!,
        };
        string dir;
        try
        {
            dir = slurm ? ClusterScripts.WriteSlurm(job) : ClusterScripts.WriteKubernetes(job);
        }
        catch (ArgumentException e) when (e.ParamName is not null)
        {
            throw LayerPruneException.Usage($"{Cli.FlagOf(e.ParamName)}: {e.Message.Split(" (Parameter", 2)[0]}");
        }
        var report = new JsonObject { ["folder"] = dir, ["shards"] = job.Shards };
        if (slurm && p.GetValue(_submit))
        {
            var ids = Submit(dir);
            ClusterScripts.WriteJobIds(dir, ids[0], ids[1], ids[2]);
            report["jobs"] = new JsonObject { ["prepare"] = ids[0], ["shards"] = ids[1], ["merge"] = ids[2] };
            if (!json) Console.Out.WriteLine($"submitted: prepare {ids[0]}, shards {ids[1]} (array 0-{job.Shards - 1}), merge {ids[2]}");
        }
        else if (!json)
        {
            Console.Out.WriteLine(slurm
                ? $"wrote {dir}: prepare.sbatch, shards.sbatch (array 0-{job.Shards - 1}), merge.sbatch; submit them in order with\n"
                  + $"  bash {Path.Combine(dir, "submit.sh")}\n"
                  + "which runs: sbatch prepare.sbatch; sbatch --dependency=afterok:PREPARE shards.sbatch; "
                  + "sbatch --dependency=afterok:SHARDS merge.sbatch"
                : $"wrote {dir}: pvc.yaml, prepare.yaml, shards.yaml (Indexed Job of {job.Shards}), merge.yaml; apply them in order with\n"
                  + $"  bash {Path.Combine(dir, "run.sh")}");
        }
        if (json) Cli.PrintJson(report);
        return 0;
    }

    /// <summary>After a prepare or shard stage: one line (or --json) saying what was written; null for merge and the
    /// whole sweep (which print the report).</summary>
    public static int? StageDone(SweepOptions options, SweepResult result, bool json)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(result);
        string? path = options.Stage switch
        {
            SweepStage.Prepare => Path.Combine(options.OutDir, SweepStages.PlanFile),
            SweepStage.Shard => SweepStages.ShardPath(options.OutDir, options.Shard!),
            _ => null,
        };
        if (path is null) return null;
        path = Path.GetFullPath(path);
        if (json) Cli.PrintJson(new JsonObject { ["stage"] = options.Stage.ToString()!.ToLowerInvariant(), ["file"] = path,
            ["rows"] = result.Rows.Count });
        else Console.Error.WriteLine(options.Stage == SweepStage.Prepare ? $"wrote {path}" : $"wrote {path}: {result.Rows.Count} rows");
        return 0;
    }

    /// <summary>This layerprune as a shell command: the apphost, or dotnet and the dll.</summary>
    static string ThisCommand()
    {
        string process = Environment.ProcessPath ?? "layerprune";
        if (Path.GetFileNameWithoutExtension(process) != "dotnet") return ClusterScripts.Quote(process);
        return ClusterScripts.Quote(process) + " " + ClusterScripts.Quote(Assembly.GetEntryAssembly()!.Location);
    }

    /// <summary>The command line's tokens after "sweep" without the script, stage and output-format flags (--force goes to
    /// the prepare stage alone).</summary>
    List<string> SweepArgs(ParseResult p)
    {
        var valueless = new HashSet<string> { "--slurm", "--kubernetes", "--submit", "--force", "--json" };
        var dropped = All.Select(o => o.Name).Concat(["--force", "--json"]).ToHashSet();
        var args = new List<string>();
        var tokens = p.Tokens;
        for (int i = 0; i < tokens.Count; i++)
        {
            var t = tokens[i];
            if (t.Type == TokenType.Command) continue;
            if (t.Type == TokenType.Option && dropped.Contains(t.Value))
            {
                bool next = i + 1 < tokens.Count && tokens[i + 1].Type == TokenType.Argument;
                if (next && (!valueless.Contains(t.Value) || tokens[i + 1].Value is "true" or "false")) i++;
                continue;
            }
            args.Add(t.Value);
        }
        return args;
    }

    /// <summary>sbatch prepare, the array after it, merge after the array; the three job ids.</summary>
    static string[] Submit(string dir)
    {
        var ids = new List<string>();
        foreach (var script in ClusterScripts.SlurmOrder)
        {
            var psi = new ProcessStartInfo("sbatch")
            {
                WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true,
            };
            psi.ArgumentList.Add("--parsable");
            if (ids.Count > 0) psi.ArgumentList.Add($"--dependency=afterok:{ids[^1]}");
            psi.ArgumentList.Add(script);
            Process proc;
            try
            {
                proc = Process.Start(psi)!;
            }
            catch (System.ComponentModel.Win32Exception)
            {
                throw new LayerPruneException($"--submit: sbatch was not found on PATH (the scripts are in {dir})");
            }
            using (proc)
            {
                string stdout = proc.StandardOutput.ReadToEnd();
                string stderr = proc.StandardError.ReadToEnd();
                proc.WaitForExit();
                if (proc.ExitCode != 0)
                    throw new LayerPruneException($"--submit: sbatch {script} failed ({Cli.OneLine(stderr)}); submitted so far: "
                        + (ids.Count == 0 ? "none" : string.Join(", ", ids)));
                ids.Add(stdout.Trim().Split(';')[0]);
            }
        }
        return [.. ids];
    }
}
