using System.Globalization;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>
/// The resumable state of a heal run in OUT.partial: .checkpoint/ (adapters, AdamW state, dropout RNG state, data position)
/// and train_log.jsonl. A resume must use the same settings (see <see cref="Fingerprint"/>).
/// </summary>
sealed class HealCheckpoint(string partial, string fingerprint)
{
    /// <summary>Step counter, data position and last losses.</summary>
    public sealed class TrainState
    {
        public int Step, Epoch, Index;
        public double? LastTrainLoss, LastValLoss;
    }

    string Dir => Path.Combine(partial, ".checkpoint");

    public string LogPath => Path.Combine(partial, "train_log.jsonl");

    /// <summary>True when <paramref name="partialDir"/> holds a checkpoint (or one interrupted between its renames).</summary>
    public static bool Exists(string partialDir)
    {
        string dir = Path.Combine(partialDir, ".checkpoint");
        return Directory.Exists(dir) || Directory.Exists(dir + ".old");
    }

    /// <summary>Everything that must match for a checkpoint to be resumed.</summary>
    public static string Fingerprint(HealOptions o)
    {
        var c = CultureInfo.InvariantCulture;
        return string.Join("|", Path.GetFullPath(o.ModelDir), Path.GetFullPath(o.DataPath), o.Steps, o.Batch, o.EffectiveMicroBatch,
            o.SeqLen, o.Rank, o.Alpha.ToString("R", c), o.Dropout.ToString("R", c), o.LearningRate.ToString("R", c), o.Warmup,
            o.Quant, o.DoubleQuant, string.Join(",", o.Targets!), o.Seed, o.Dtype);
    }

    /// <summary>A fresh run: an empty log and step 0.</summary>
    public TrainState StartLog()
    {
        File.WriteAllText(LogPath, "");
        return new TrainState();
    }

    /// <summary>
    /// Writes the checkpoint atomically: a fresh temp folder is filled, the old checkpoint renamed to .checkpoint.old,
    /// the temp folder renamed into place.
    /// </summary>
    public void Save(TrainState s, IReadOnlyList<(string Name, LoraAdapter Adapter)> adapters, OptimizerHelper optimizer, Generator rng)
    {
        string dir = Dir;
        string tmp = dir + ".tmp";
        string old = dir + ".old";
        if (Directory.Exists(tmp))
            Directory.Delete(tmp, true);
        Directory.CreateDirectory(tmp);
        var tensors = PeftAdapterFiles.ToTensors(adapters).Select(kv => TensorToWrite.FromTensor(kv.Key, kv.Value)).ToList();
        SafeTensorsWriter.Write(Path.Combine(tmp, "adapters.safetensors"), tensors);
        optimizer.save_state_dict(Path.Combine(tmp, "optimizer.bin"));
        using var rngState = rng.get_state();
        var json = new JsonObject
        {
            ["fingerprint"] = fingerprint, ["step"] = s.Step, ["epoch"] = s.Epoch, ["index"] = s.Index,
            ["last_train_loss"] = s.LastTrainLoss, ["last_val_loss"] = s.LastValLoss,
            ["dropout_rng_state"] = Convert.ToBase64String(rngState.bytes),
        };
        File.WriteAllText(Path.Combine(tmp, "state.json"), json.ToJsonString(Healer.Indented));
        if (Directory.Exists(old))
            Directory.Delete(old, true);
        if (Directory.Exists(dir))
            Directory.Move(dir, old);
        Directory.Move(tmp, dir);
        if (Directory.Exists(old))
            Directory.Delete(old, true);
    }

    /// <summary>Restores adapters, optimizer and RNG; the log keeps only the steps the checkpoint covers (later ones are redone).</summary>
    public TrainState Load(IReadOnlyList<(string Name, LoraAdapter Adapter)> adapters, OptimizerHelper optimizer, Generator rng)
    {
        string dir = Dir;
        if (!Directory.Exists(dir))
            dir += ".old"; // interrupted between the two renames
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "state.json")))!.AsObject();
        if (json["fingerprint"]!.GetValue<string>() != fingerprint)
        {
            const string settings = "model, data, steps, batch, seq-len, rank, alpha, dropout, lr, warmup, quant, targets, seed or dtype";
            throw LayerPruneException.Invalid(nameof(HealOptions.Resume), null,
                $"the checkpoint in {partial} was made with different settings ({settings}); use the same flags or `Force` to start over");
        }
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
        var rngBytes = Convert.FromBase64String(json["dropout_rng_state"]!.GetValue<string>());
        using (var st = tensor(rngBytes, ScalarType.Byte))
            rng.set_state(st);
        var s = new TrainState
        {
            Step = json["step"]!.GetValue<int>(), Epoch = json["epoch"]!.GetValue<int>(), Index = json["index"]!.GetValue<int>(),
            LastTrainLoss = json["last_train_loss"]?.GetValue<double>(), LastValLoss = json["last_val_loss"]?.GetValue<double>(),
        };
        string log = LogPath;
        var kept = File.Exists(log)
            ? File.ReadAllLines(log).Where(l => l.Length > 0 && JsonNode.Parse(l)?["step"]?.GetValue<int>() <= s.Step).ToList()
            : [];
        File.WriteAllLines(log, kept);
        return s;
    }
}
