using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Healing;

namespace LayerPrune.Cli.Commands;

/// <summary>`layerprune heal`: flags → <see cref="HealOptions"/> (defaults read from <see cref="HealOptions.Defaults"/>).</summary>
public static class HealCommand
{
    /// <summary>The command.</summary>
    public static Command Create()
    {
        var model = Cli.ModelOption("Model folder to heal (usually a pruned checkpoint)");
        var data = new Option<string>("--data")
        {
            Description = "Training text: .txt (one document per line), .jsonl or .parquet (field \"text\"); packed into --seq-len chunks",
            Required = true,
        };
        var output = new Option<string>("--out", "-o")
        {
            Description = "Output folder: adapters, merged/ checkpoint, train_log.jsonl, heal_summary.json", Required = true,
        };
        // Nullable: a flag the user did not give leaves the recipe's value. Defaults are read from HealOptions.
        var d = HealOptions.Defaults;
        var steps = new Option<int?>("--steps") { Description = $"Optimizer steps (default {d.Steps})" };
        var batch = new Option<int?>("--batch") { Description = $"Sequences per optimizer step (default {d.Batch})" };
        var microBatch = new Option<int?>("--micro-batch")
        {
            Description = "Sequences per forward/backward (gradient accumulation; default = --batch)",
        };
        var seqLen = new Option<int?>("--seq-len") { Description = $"Tokens per training sequence (default {d.SeqLen})" };
        var rank = new Option<int?>("--rank") { Description = $"LoRA rank r (default {d.Rank})" };
        var alpha = new Option<double?>("--alpha") { Description = $"LoRA alpha (default {d.Alpha}; scaling = alpha/r)" };
        var dropout = new Option<double?>("--dropout") { Description = $"LoRA dropout (default {d.Dropout})" };
        var lr = new Option<double?>("--lr")
        {
            Description = $"Peak learning rate (default {d.LearningRate:0e0}), AdamW, cosine decay to 0",
        };
        var warmup = new Option<int?>("--warmup") { Description = $"Linear warmup steps (default {d.Warmup})" };
        var quant = new Option<string?>("--quant") { Description = "Base weights: nf4 (QLoRA, default) | none" };
        var doubleQuant = new Option<bool>("--double-quant") { Description = "NF4 double quantization of the block scales" };
        var checkpointing = new Option<bool?>("--gradient-checkpointing")
        {
            Description = "Recompute each decoder layer in backward (default true; false: faster, keeps every layer's activations)",
        };
        var replay = new Option<bool?>("--replay-frozen-outputs")
        {
            Description = "With NF4 and checkpointing: keep the frozen matmuls' outputs for the recompute (same results, less "
                + "compute per step; default: the projections that save the most per value kept, within the NF4 base's own memory)",
        };
        var offload = new Option<bool>("--offload")
        {
            Description = "Stream the frozen base one layer at a time from the checkpoint (--quant none; chosen automatically "
                + "when the resident model does not fit; slower, same results)",
        };
        var targets = new Option<string?>("--targets")
        {
            Description = "Comma-separated module names (default: all attention + MLP projections; "
                + "Phi: q_proj,k_proj,v_proj,dense,fc1,fc2)",
        };
        var evalData = new Option<string?>("--eval-data")
        {
            Description = "Validation text for periodic loss (first --eval-chunks chunks)",
        };
        var evalEvery = new Option<int?>("--eval-every") { Description = $"Validation loss every K steps (default {d.EvalEvery})" };
        var evalChunks = new Option<int?>("--eval-chunks") { Description = $"Validation chunks of --seq-len (default {d.EvalChunks})" };
        var saveEvery = new Option<int?>("--save-every") { Description = $"Resumable checkpoint every K steps (default {d.SaveEvery})" };
        var seed = new Option<long?>("--seed") { Description = $"Seed of LoRA init, dropout and data order (default {d.Seed})" };
        var resume = new Option<bool>("--resume") { Description = "Continue an interrupted run from OUT.partial/" };
        var force = new Option<bool>("--force") { Description = "Replace an existing --out (and discard an interrupted run)" };
        var recipe = new Option<string>("--recipe")
        {
            Description = "plain (defaults above) | paper (Gromov et al. App. A.1: FFN-only, alpha = r, per-model r/lr, "
                + "100 warmup, batch 16)",
            DefaultValueFactory = _ => d.Recipe,
        };
        var json = Cli.JsonOption();
        const string about = "QLoRA/LoRA fine-tuning (\"healing\") of a pruned model; writes PEFT adapters and a merged checkpoint";
        var cmd = new Command("heal", about)
        {
            model, data, output, steps, batch, microBatch, seqLen, rank, alpha, dropout, lr, warmup, quant, doubleQuant, checkpointing,
            replay, offload, targets,
            evalData, evalEvery, evalChunks, saveEvery, seed, resume, force, recipe, json,
        };
        return cmd.WithAction(p =>
        {
            string dir = Cli.ResolveModel(p, p.GetValue(model)!);
            string r = p.GetValue(recipe)!;
            Cli.Require(r is "plain" or "paper", $"--recipe {r}: expected plain or paper");
            BaseQuantization? q = p.GetValue(quant) switch
            {
                null => null,
                "nf4" => BaseQuantization.Nf4,
                "none" => BaseQuantization.None,
                var s => throw LayerPruneException.Usage($"--quant {s}: expected nf4 or none"),
            };
            if (!Directory.Exists(dir))
                throw LayerPruneException.Usage($"--model {dir}: folder not found");
            var config = ModelConfig.Load(dir);
            var (device, dtype) = Cli.Target(p);
            var o = new HealOptions
            {
                ModelDir = dir, DataPath = Cli.ExistingFile(p.GetValue(data)!, "--data"), OutDir = p.GetValue(output)!,
                Recipe = r, Steps = p.GetValue(steps) ?? d.Steps, Device = device, Dtype = dtype, Progress = Cli.Progress,
            };
            o = HealRecipes.Apply(o, config);
            var split = StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries;
            o = o with
            {
                Batch = p.GetValue(batch) ?? o.Batch, MicroBatch = p.GetValue(microBatch), SeqLen = p.GetValue(seqLen) ?? o.SeqLen,
                Rank = p.GetValue(rank) ?? o.Rank, Alpha = p.GetValue(alpha) ?? o.Alpha, Dropout = p.GetValue(dropout) ?? o.Dropout,
                LearningRate = p.GetValue(lr) ?? o.LearningRate, Warmup = p.GetValue(warmup) ?? o.Warmup, Quant = q ?? o.Quant,
                DoubleQuant = p.GetValue(doubleQuant), GradientCheckpointing = p.GetValue(checkpointing) ?? o.GradientCheckpointing,
                ReplayFrozenOutputs = p.GetValue(replay),
                Targets = p.GetValue(targets) is { } t ? t.Split(',', split) : o.Targets,
                EvalDataPath = p.GetValue(evalData) is { } e ? Cli.ExistingFile(e, "--eval-data") : null,
                EvalEvery = p.GetValue(evalEvery) ?? o.EvalEvery, EvalChunks = p.GetValue(evalChunks) ?? o.EvalChunks,
                SaveEvery = p.GetValue(saveEvery) ?? o.SaveEvery, Seed = p.GetValue(seed) ?? o.Seed,
                Resume = p.GetValue(resume), Force = p.GetValue(force),
            };
            o = o with { Offload = p.GetValue(offload) };
            o.Validate(); // bad combinations (e.g. --offload with --quant nf4) fail before the plan and the load
            bool stream = Cli.PlanHeal(p, dir, o.EffectiveMicroBatch, o.SeqLen, o.Quant == BaseQuantization.Nf4, o.Rank,
                o.GradientCheckpointing, o.Offload, o.ReplayFanRatio(config));
            o = o with { Offload = stream };
            using var cts = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, args) =>
            {
                args.Cancel = true;
                cts.Cancel();
            };
            Console.CancelKeyPress += onCancel;
            HealResult result;
            try
            {
                result = Healer.Run(o, cts.Token);
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine($"interrupted: checkpoint kept in {Healer.PartialDir(o.OutDir)}; continue with --resume");
                return 130;
            }
            catch (IOException io) when (DiskFull.Is(io))
            {
                throw DiskFull.Explain(io, o.OutDir, KeepOnlyResumableState(o.OutDir));
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
            var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(result.OutDir, "heal_summary.json")))!;
            if (p.GetValue(json))
            {
                Cli.PrintJson(summary);
                return 0;
            }
            Console.Out.WriteLine(Line(result));
            return 0;
        });
    }

    /// <summary>
    /// "healed N steps in S s (… tok/s, … trainable parameters); train loss …[, val loss …][, merged val loss …] → OUT".
    /// </summary>
    static string Line(HealResult r)
    {
        string speed = $"{r.TokensPerSecond:F0} tok/s, {r.TrainableParameters:N0} trainable parameters";
        string val = r.FinalValLoss is double v ? $", val loss {v:F4}" : "";
        string merged = r.MergedValLoss is double m ? $", merged val loss {m:F4}" : "";
        return $"healed {r.Steps} steps in {r.Seconds:F0} s ({speed}); train loss {r.FinalTrainLoss:F4}{val}{merged} → {r.OutDir}";
    }

    /// <summary>After a failed write: OUT.partial stays only if it holds a checkpoint to resume from. Says what was kept.</summary>
    static string KeepOnlyResumableState(string outDir)
    {
        string partial = Healer.PartialDir(outDir);
        if (Healer.HasCheckpoint(outDir))
            return $"the last checkpoint is kept in {partial}: continue with --resume";
        if (Directory.Exists(partial))
            Directory.Delete(partial, recursive: true);
        return "nothing was kept";
    }
}
