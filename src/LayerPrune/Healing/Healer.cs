using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Data;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>What a heal run did (also written as heal_summary.json).</summary>
public sealed record HealResult(
    bool Completed, int Steps, double? FinalTrainLoss, double? FinalValLoss, double? MergedValLoss,
    double TokensPerSecond, double Seconds, long TrainableParameters, string OutDir, HealOptions Options);

/// <summary>
/// QLoRA / LoRA fine-tuning of a (pruned) model, the paper's "healing" step: frozen base (optionally NF4), LoRA adapters
/// on the target projections, AdamW on the adapters only, linear warmup + cosine decay, grad-norm clipping 1.0, gradient
/// accumulation, periodic validation loss, resumable checkpoints, PEFT adapter output and a merged checkpoint.
/// </summary>
public static class Healer
{
    const double MaxGradNorm = 1.0; // transformers TrainingArguments.max_grad_norm default
    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>OUT.partial: the in-progress folder (checkpoint + log) that --resume continues from.</summary>
    /// <summary>
    /// Test hook: LAYERPRUNE_TEST_KILL_AT_STEP=N makes the process SIGKILL itself right after optimizer step N (after any
    /// checkpoint of that step), so a test can interrupt a real `layerprune heal` process at a deterministic point. Unset in normal use.
    /// </summary>
    static readonly int KillAtStep = int.TryParse(Environment.GetEnvironmentVariable("LAYERPRUNE_TEST_KILL_AT_STEP"), out int k) && k > 0 ? k : 0;

    public static string PartialDir(string outDir) => Path.GetFullPath(outDir).TrimEnd(Path.DirectorySeparatorChar) + ".partial";
    static string CheckpointDir(string partial) => Path.Combine(partial, ".checkpoint");

    /// <summary>True when OUT.partial holds a checkpoint that --resume continues from.</summary>
    public static bool HasCheckpoint(string outDir) =>
        Directory.Exists(CheckpointDir(PartialDir(outDir))) || Directory.Exists(CheckpointDir(PartialDir(outDir)) + ".old");

    public static HealResult Run(HealOptions options, CancellationToken cancel = default)
    {
        options.Validate();
        if (!Directory.Exists(options.ModelDir)) throw LayerPruneException.Usage($"--model {options.ModelDir}: folder not found");
        if (!File.Exists(options.DataPath)) throw LayerPruneException.Usage($"--data {options.DataPath}: file not found");
        if (options.EvalDataPath is { } ev && !File.Exists(ev)) throw LayerPruneException.Usage($"--eval-data {ev}: file not found");
        string outFull = Path.GetFullPath(options.OutDir), partial = PartialDir(options.OutDir);
        string modelFull = Path.GetFullPath(options.ModelDir).TrimEnd(Path.DirectorySeparatorChar);
        // Never the input, nor inside or around it (canonical paths); existence is checked below. Holds the --out lock until the end.
        using var output = OutputFolder.Begin(options.OutDir, force: true, "--out", options.ModelDir);
        bool haveCheckpoint = options.Resume && (Directory.Exists(CheckpointDir(partial)) || Directory.Exists(CheckpointDir(partial) + ".old"));
        if (!options.Resume)
        {
            if ((Directory.Exists(outFull) || File.Exists(outFull)) && !options.Force)
                throw LayerPruneException.Usage($"--out {options.OutDir}: already exists (use --force to replace it, or --resume)");
            if (Directory.Exists(partial))
            {
                if (!options.Force) throw LayerPruneException.Usage($"--out {options.OutDir}: an interrupted run is in {partial} (use --resume to continue it or --force to start over)");
                Directory.Delete(partial, recursive: true);
            }
        }
        else if (!haveCheckpoint && Directory.Exists(partial)) Directory.Delete(partial, recursive: true); // nothing to resume: start fresh
        Directory.CreateDirectory(partial);

        var tok = TokenizerLoader.Load(options.ModelDir);
        using var model = CausalLM.Load(options.ModelDir, options.Device, options.Dtype);
        var o = options.Targets is null ? options with { Targets = HealRecipes.AllLinear(model.Config.Family) } : options;

        var train = TokenChunks.FromLines(TextCorpus.Read(o.DataPath), tok, o.SeqLen);
        if (train.Count == 0) throw new LayerPruneException($"{o.DataPath}: shorter than one sequence of {o.SeqLen} tokens");
        var eval = o.EvalDataPath is { } evalPath ? TokenChunks.FromLines(TextCorpus.Read(evalPath), tok, o.SeqLen, o.EvalChunks) : null;
        if (eval is { Count: 0 }) throw new LayerPruneException($"{o.EvalDataPath}: shorter than one sequence of {o.SeqLen} tokens");

        // Freeze the whole base (requires_grad is metadata only: memory-mapped weights are never written).
        foreach (var (_, t) in model.NamedTensors()) t.requires_grad_(false);
        var settings = new LoraSettings(o.Targets!, o.Rank, o.Alpha, o.Dropout);
        var adapters = LoraInjector.Inject(model.NamedLinears(), settings, o.Seed, o.Quant, o.DoubleQuant);
        using var dropoutRng = new Generator((ulong)o.Seed + 1);
        foreach (var (_, a) in adapters) a.DropoutGenerator = dropoutRng;
        var parameters = adapters.SelectMany(a => a.Adapter.Parameters()).ToList();
        long trainable = parameters.Sum(p => p.NumberOfElements);
        // HF Trainer's default optimizer: AdamW(β1 0.9, β2 0.999, ε 1e-8, weight_decay 0.0) on the trainable parameters.
        using var optimizer = torch.optim.AdamW(parameters, o.LearningRate, 0.9, 0.999, 1e-8, 0.0);

        var state = new TrainState { Epoch = 0, Index = 0, Step = 0 };
        string fingerprint = Fingerprint(o);
        string logPath = Path.Combine(partial, "train_log.jsonl");
        if (haveCheckpoint) state = LoadCheckpointOrExplain(partial, fingerprint, adapters, optimizer, dropoutRng, logPath, o.Steps);
        else File.WriteAllText(logPath, "");

        var order = Permutation(train.Count, o.Seed, state.Epoch);
        int micro = o.EffectiveMicroBatch;
        long tokensPerStep = (long)o.Batch * o.SeqLen;
        double? lastTrain = state.LastTrainLoss, lastVal = state.LastValLoss;
        var total = Stopwatch.StartNew();
        long tokensThisRun = 0;
        int stepsThisRun = 0;
        using (var progress = ProgressReporter.Start("heal", o.Steps - state.Step, "steps"))
        using (var log = new StreamWriter(logPath, append: true))
        {
            while (state.Step < o.Steps)
            {
                cancel.ThrowIfCancellationRequested();
                var sw = Stopwatch.StartNew();
                double lr = LrSchedule.Cosine(o.LearningRate, state.Step, o.Warmup, o.Steps);
                foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
                optimizer.zero_grad();
                // The step's samples: the next Batch indices of this epoch's shuffled order (a new order per epoch).
                var batch = new List<int[]>(o.Batch);
                while (batch.Count < o.Batch)
                {
                    if (state.Index >= order.Length) { state.Epoch++; state.Index = 0; order = Permutation(train.Count, o.Seed, state.Epoch); }
                    batch.Add(train[order[state.Index++]]);
                }
                foreach (var (_, a) in adapters) a.Training = true;
                double stepLoss = 0;
                foreach (var mb in batch.Chunk(micro))
                {
                    using var scope = NewDisposeScope();
                    using var loss = Loss(model, mb);
                    // Each micro-batch's mean × its share of the batch: the accumulated gradient is that of the full-batch mean.
                    using var scaled = loss * ((double)mb.Length / o.Batch);
                    scaled.backward();
                    stepLoss += scaled.item<float>();
                }
                torch.nn.utils.clip_grad_norm_(parameters, MaxGradNorm);
                optimizer.step();
                state.Step++;
                stepsThisRun++;
                tokensThisRun += tokensPerStep;
                double tps = tokensPerStep / Math.Max(1e-9, sw.Elapsed.TotalSeconds);
                lastTrain = stepLoss;
                double? val = null;
                if (eval is not null && (state.Step % o.EvalEvery == 0 || state.Step == o.Steps))
                {
                    foreach (var (_, a) in adapters) a.Training = false;
                    val = LossEvaluator.Evaluate(model, eval, Math.Max(1, micro)).ValidationLoss;
                    lastVal = val;
                }
                var line = new JsonObject { ["step"] = state.Step, ["epoch"] = state.Epoch, ["lr"] = lr, ["loss"] = Round(stepLoss), ["tokens_per_s"] = Math.Round(tps, 1) };
                if (val is double v) line["val_loss"] = Round(v);
                log.WriteLine(line.ToJsonString());
                log.Flush();
                progress.Advance(1, $"loss {stepLoss:F4}" + (lastVal is double lv ? $" · val {lv:F4}" : "") + $" · {tps:F0} tok/s");
                state.LastTrainLoss = lastTrain; state.LastValLoss = lastVal;
                bool stop = o.StopAfterSteps is int k && stepsThisRun >= k && state.Step < o.Steps;
                if (state.Step % o.SaveEvery == 0 || stop || cancel.IsCancellationRequested)
                    SaveCheckpoint(partial, fingerprint, state, adapters, optimizer, dropoutRng);
                if (state.Step == KillAtStep) System.Diagnostics.Process.GetCurrentProcess().Kill();
                if (stop)
                    return new HealResult(false, state.Step, lastTrain, lastVal, null, tokensThisRun / Math.Max(1e-9, total.Elapsed.TotalSeconds),
                        total.Elapsed.TotalSeconds, trainable, outFull, o);
                cancel.ThrowIfCancellationRequested();
            }
        }
        double seconds = total.Elapsed.TotalSeconds, trainTps = tokensThisRun / Math.Max(1e-9, seconds);

        // Final outputs, written into a temp folder and moved into place at once.
        SafeTensorsWriter.Write(output.File("adapter_model.safetensors"),
            PeftAdapterFiles.ToTensors(adapters).Select(kv => TensorToWrite.FromTensor(kv.Key, kv.Value)).ToList(),
            new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(output.File("adapter_config.json"), PeftAdapterFiles.Config(settings, modelFull).ToJsonString(Indented));
        File.Copy(logPath, output.File("train_log.jsonl"));
        WriteMerged(model.Checkpoint, adapters, output.File("merged"));
        double? mergedVal = null;
        if (eval is not null)
        {
            using var merged = CausalLM.Load(output.File("merged"), o.Device, o.Dtype);
            mergedVal = LossEvaluator.Evaluate(merged, eval, Math.Max(1, micro)).ValidationLoss;
        }
        var result = new HealResult(true, state.Step, lastTrain, lastVal, mergedVal, trainTps, seconds, trainable, outFull, o);
        File.WriteAllText(output.File("heal_summary.json"), Summary(result, model.Config).ToJsonString(Indented));
        output.Commit();
        Directory.Delete(partial, recursive: true);
        return result;
    }

    /// <summary>Mean next-token cross-entropy of a batch of equal-length sequences (the evaluation's loss, differentiable).</summary>
    public static Tensor Loss(CausalLM model, IReadOnlyList<int[]> sequences) => LossEvaluator.MeanLoss(model, sequences);

    /// <summary>A seeded shuffle of 0..n−1 for one epoch (Fisher–Yates with System.Random(seed, epoch)).</summary>
    public static int[] Permutation(int n, long seed, int epoch)
    {
        // System.Random with an explicit seed is the stable (legacy) generator: same sequence on every run and platform.
        var rng = new Random(unchecked((int)(seed * 1_000_003 + epoch * 7919 + 17)));
        var p = Enumerable.Range(0, n).ToArray();
        for (int i = n - 1; i > 0; i--) { int j = rng.Next(i + 1); (p[i], p[j]) = (p[j], p[i]); }
        return p;
    }

    static double Round(double x) => Math.Round(x, 6);

    static JsonObject Summary(HealResult r, ModelConfig config)
    {
        var o = r.Options;
        return new JsonObject
        {
            ["recipe"] = o.Recipe,
            ["model"] = Path.GetFullPath(o.ModelDir),
            ["data"] = Path.GetFullPath(o.DataPath),
            ["eval_data"] = o.EvalDataPath is null ? null : Path.GetFullPath(o.EvalDataPath),
            ["family"] = config.Family.ToString().ToLowerInvariant(),
            ["steps"] = r.Steps, ["batch"] = o.Batch, ["micro_batch"] = o.EffectiveMicroBatch, ["seq_len"] = o.SeqLen,
            ["rank"] = o.Rank, ["alpha"] = o.Alpha, ["dropout"] = o.Dropout, ["lr"] = o.LearningRate, ["warmup"] = o.Warmup,
            ["schedule"] = "cosine", ["optimizer"] = "adamw (0.9, 0.999, 1e-8, wd 0)", ["max_grad_norm"] = MaxGradNorm,
            ["quant"] = o.Quant == BaseQuantization.Nf4 ? "nf4" : "none", ["double_quant"] = o.DoubleQuant,
            ["targets"] = new JsonArray(o.Targets!.Select(t => (JsonNode?)t).ToArray()), ["seed"] = o.Seed,
            ["trainable_parameters"] = r.TrainableParameters,
            ["final_train_loss"] = r.FinalTrainLoss, ["final_val_loss"] = r.FinalValLoss, ["merged_val_loss"] = r.MergedValLoss,
            ["eval_chunks"] = o.EvalDataPath is null ? null : o.EvalChunks,
            ["tokens_per_s"] = Math.Round(r.TokensPerSecond, 1), ["seconds"] = Math.Round(r.Seconds, 2),
        };
    }

    /// <summary>Everything that must match for a checkpoint to be resumed.</summary>
    static string Fingerprint(HealOptions o) => string.Join("|", Path.GetFullPath(o.ModelDir), Path.GetFullPath(o.DataPath), o.Steps, o.Batch,
        o.EffectiveMicroBatch, o.SeqLen, o.Rank, o.Alpha.ToString("R", CultureInfo.InvariantCulture), o.Dropout.ToString("R", CultureInfo.InvariantCulture),
        o.LearningRate.ToString("R", CultureInfo.InvariantCulture), o.Warmup, o.Quant, o.DoubleQuant, string.Join(",", o.Targets!), o.Seed, o.Dtype);

    sealed class TrainState
    {
        public int Step, Epoch, Index;
        public double? LastTrainLoss, LastValLoss;
    }

    /// <summary>
    /// Writes adapters, AdamW state, RNG state and the data position to partial/.checkpoint atomically:
    /// a fresh temp folder is filled, the old checkpoint renamed to .checkpoint.old, the temp folder renamed into place.
    /// </summary>
    static void SaveCheckpoint(string partial, string fingerprint, TrainState s, IReadOnlyList<(string Name, LoraAdapter Adapter)> adapters,
        OptimizerHelper optimizer, Generator rng)
    {
        string dir = CheckpointDir(partial), tmp = dir + ".tmp", old = dir + ".old";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        Directory.CreateDirectory(tmp);
        SafeTensorsWriter.Write(Path.Combine(tmp, "adapters.safetensors"),
            PeftAdapterFiles.ToTensors(adapters).Select(kv => TensorToWrite.FromTensor(kv.Key, kv.Value)).ToList());
        optimizer.save_state_dict(Path.Combine(tmp, "optimizer.bin"));
        using var rngState = rng.get_state();
        var json = new JsonObject
        {
            ["fingerprint"] = fingerprint, ["step"] = s.Step, ["epoch"] = s.Epoch, ["index"] = s.Index,
            ["last_train_loss"] = s.LastTrainLoss, ["last_val_loss"] = s.LastValLoss,
            ["dropout_rng_state"] = Convert.ToBase64String(rngState.bytes),
        };
        File.WriteAllText(Path.Combine(tmp, "state.json"), json.ToJsonString(Indented));
        if (Directory.Exists(old)) Directory.Delete(old, true);
        if (Directory.Exists(dir)) Directory.Move(dir, old);
        Directory.Move(tmp, dir);
        if (Directory.Exists(old)) Directory.Delete(old, true);
    }

    /// <summary>A truncated or edited checkpoint is a one-line error that says how to start over (never a stack trace).</summary>
    static TrainState LoadCheckpointOrExplain(string partial, string fingerprint,
        IReadOnlyList<(string Name, LoraAdapter Adapter)> adapters, OptimizerHelper optimizer, Generator rng, string logPath, int steps)
    {
        string problem;
        try
        {
            var s = LoadCheckpoint(partial, fingerprint, adapters, optimizer, rng, logPath);
            if (s.Step >= 1 && s.Step <= steps && s.Epoch >= 0 && s.Index >= 0) return s;
            problem = $"step {s.Step}, epoch {s.Epoch}, index {s.Index} are out of range";
        }
        catch (LayerPruneException e) when (e.ExitCode == 2) { throw; } // made with other settings: already says what to do
        catch (Exception e) { problem = e.Message; }
        throw new LayerPruneException(
            $"--resume: the checkpoint in {partial} is damaged ({problem}); delete {partial} or rerun with --force to start over");
    }

    static TrainState LoadCheckpoint(string partial, string fingerprint, IReadOnlyList<(string Name, LoraAdapter Adapter)> adapters,
        OptimizerHelper optimizer, Generator rng, string logPath)
    {
        string dir = CheckpointDir(partial);
        if (!Directory.Exists(dir)) dir += ".old"; // interrupted between the two renames
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "state.json")))!.AsObject();
        if (json["fingerprint"]!.GetValue<string>() != fingerprint)
            throw LayerPruneException.Usage($"--resume: the checkpoint in {partial} was made with different settings (model, data, steps, batch, seq-len, rank, alpha, dropout, lr, warmup, quant, targets, seed or dtype); use the same flags or --force to start over");
        using (var file = SafeTensorsFile.Open(Path.Combine(dir, "adapters.safetensors")))
        using (no_grad())
            foreach (var (name, a) in adapters)
            {
                using var ta = file.Load(PeftAdapterFiles.KeyA(name));
                using var tb = file.Load(PeftAdapterFiles.KeyB(name));
                a.A.copy_(ta);
                a.B.copy_(tb);
            }
        optimizer.load_state_dict(Path.Combine(dir, "optimizer.bin"));
        using (var st = tensor(Convert.FromBase64String(json["dropout_rng_state"]!.GetValue<string>()), ScalarType.Byte)) rng.set_state(st);
        var s = new TrainState
        {
            Step = json["step"]!.GetValue<int>(), Epoch = json["epoch"]!.GetValue<int>(), Index = json["index"]!.GetValue<int>(),
            LastTrainLoss = json["last_train_loss"]?.GetValue<double>(), LastValLoss = json["last_val_loss"]?.GetValue<double>(),
        };
        // The log keeps only the steps the checkpoint covers (later lines are redone).
        var kept = File.Exists(logPath)
            ? File.ReadAllLines(logPath).Where(l => l.Length > 0 && JsonNode.Parse(l)?["step"]?.GetValue<int>() <= s.Step).ToList()
            : [];
        File.WriteAllLines(logPath, kept);
        return s;
    }

    /// <summary>
    /// The merged checkpoint: every adapted linear's ORIGINAL stored weight (not its NF4 form) + scaling·B·A, computed in
    /// fp32 and stored in the original dtype; every other tensor copied byte for byte; the same shard layout, config and
    /// side files. (PEFT's merge_and_unload on a 4-bit model merges into the dequantized weight instead.)
    /// </summary>
    public static void WriteMerged(Checkpoint source, IReadOnlyList<(string Name, LoraAdapter Adapter)> adapters, string dir)
    {
        Directory.CreateDirectory(dir);
        var byWeight = adapters.ToDictionary(a => a.Name + ".weight", a => a.Adapter, StringComparer.Ordinal);
        TensorToWrite Make(string name)
        {
            if (!byWeight.TryGetValue(name, out var adapter)) return TensorToWrite.FromFile(name, source.FileOf(name), name);
            var info = source.Info(name);
            return new TensorToWrite(name, info.Dtype, info.Shape, info.ByteLength, s =>
            {
                using var w = source.Load(name);
                using var m = adapter.MergeInto(w);
                using var c = m.contiguous();
                s.Write(c.bytes);
            });
        }
        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        if (!source.IsSharded)
            SafeTensorsWriter.Write(Path.Combine(dir, Checkpoint.SingleFile), source.WeightMap.Keys.Select(Make).ToList(), meta);
        else
        {
            foreach (var shard in source.WeightMap.GroupBy(kv => kv.Value, kv => kv.Key))
                SafeTensorsWriter.Write(Path.Combine(dir, shard.Key), shard.Select(Make).ToList(), meta);
            File.Copy(Path.Combine(source.Directory, Checkpoint.IndexFile), Path.Combine(dir, Checkpoint.IndexFile));
        }
        foreach (var path in Directory.EnumerateFiles(source.Directory))
        {
            string name = Path.GetFileName(path);
            if (name == Checkpoint.IndexFile || source.Files.ContainsKey(name) || name.EndsWith(".safetensors") || name.EndsWith(".bin")
                || name.EndsWith(".pt") || name.EndsWith(".pth")) continue;
            File.Copy(path, Path.Combine(dir, name));
        }
    }
}
