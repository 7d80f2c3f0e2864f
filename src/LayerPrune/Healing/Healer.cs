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
    internal const double MaxGradNorm = 1.0; // transformers TrainingArguments.max_grad_norm default
    internal static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>OUT.partial: the in-progress folder (checkpoint + log) that a resumed run continues from.</summary>
    public static string PartialDir(string outDir) => Path.GetFullPath(outDir).TrimEnd(Path.DirectorySeparatorChar) + ".partial";

    /// <summary>True when OUT.partial holds a checkpoint that a resumed run continues from.</summary>
    public static bool HasCheckpoint(string outDir) => HealCheckpoint.Exists(PartialDir(outDir));

    /// <summary>
    /// Heals the model in <see cref="HealOptions.ModelDir"/>: a <see cref="HealSession"/> run to the end (or until
    /// <paramref name="onStep"/> returns false: checkpoint kept, incomplete result, no outputs).
    /// </summary>
    /// <param name="options">Run settings (validated; errors name the property).</param>
    /// <param name="cancel">Stops after the current step with the checkpoint written (OperationCanceledException).</param>
    /// <param name="onStep">Called after every optimizer step; false stops the run.</param>
    public static HealResult Run(HealOptions options, CancellationToken cancel = default, Func<HealStep, bool>? onStep = null)
    {
        using var session = HealSession.Open(options);
        return session.Run(onStep, cancel);
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

    internal static double Round(double x) => Math.Round(x, 6);

    internal static JsonObject Summary(HealResult r, ModelConfig config)
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
            ["gradient_checkpointing"] = o.GradientCheckpointing, ["offload"] = o.Offload,
            ["replayed_projections"] = new JsonArray(o.ReplayedProjections(config).Select(n => (JsonNode?)n).ToArray()),
            ["trainable_parameters"] = r.TrainableParameters,
            ["final_train_loss"] = r.FinalTrainLoss, ["final_val_loss"] = r.FinalValLoss, ["merged_val_loss"] = r.MergedValLoss,
            ["eval_chunks"] = o.EvalDataPath is null ? null : o.EvalChunks,
            ["tokens_per_s"] = Math.Round(r.TokensPerSecond, 1), ["seconds"] = Math.Round(r.Seconds, 2),
        };
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
                using (var m = adapter.MergeInto(w))
                using (var c = m.contiguous())
                    s.Write(c.bytes);
                ResidentPages.Release(w); // one weight resident at a time, also for a 7B checkpoint
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
