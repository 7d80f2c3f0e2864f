using System.Diagnostics;
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

/// <summary>What one optimizer step did (passed to the step callback of <see cref="HealSession.Run"/>).</summary>
/// <param name="Step">Optimizer steps done so far (1-based: the step just finished).</param>
/// <param name="TotalSteps">The run's total steps.</param>
/// <param name="Epoch">Epoch of the data order the step drew from.</param>
/// <param name="LearningRate">Learning rate the step used.</param>
/// <param name="TrainLoss">Mean training loss of the step's batch.</param>
/// <param name="ValLoss">Validation loss measured after this step; null when none was due.</param>
/// <param name="TokensPerSecond">Training tokens per second of this step.</param>
/// <param name="CheckpointSaved">True when the resumable checkpoint was written after this step.</param>
public sealed record HealStep(
    int Step, int TotalSteps, int Epoch, double LearningRate, double TrainLoss, double? ValLoss, double TokensPerSecond,
    bool CheckpointSaved);

/// <summary>
/// One healing run as an object: open it (from a model folder or an in-memory <see cref="CausalLM"/>), then either
/// <see cref="Run"/> it, or drive it yourself with <see cref="Step"/>, <see cref="Evaluate"/>, <see cref="SaveCheckpoint"/>
/// and <see cref="Export"/>. State that a resume needs lives in OUT.partial/ (see <see cref="Healer.PartialDir"/>).
/// </summary>
public sealed class HealSession : IDisposable
{
    readonly bool _ownsModel;
    readonly List<int[]> _train;
    readonly List<int[]>? _eval;
    readonly LoraSettings _settings;
    readonly Generator _dropoutRng;
    readonly List<Parameter> _parameters;
    readonly OptimizerHelper _optimizer;
    readonly HealCheckpoint _checkpoint;
    readonly string _modelDir;
    readonly Stopwatch _clock = new();
    StreamWriter? _log;
    HealCheckpoint.TrainState _state;
    int[] _order;
    long _tokensThisRun;
    readonly OutputFolder _output; // begun at open: holds the OUT lock for the whole run
    readonly StreamedAdapters? _streamed; // offloaded model: the adapters, attached to each layer as it is read

    HealSession(CausalLM model, bool ownsModel, ITextTokenizer tok, HealOptions options, bool resume, OutputFolder output)
    {
        _output = output;
        Model = model;
        _ownsModel = ownsModel;
        _modelDir = Path.GetFullPath(options.ModelDir).TrimEnd(Path.DirectorySeparatorChar);
        var o = options.Targets is null ? options with { Targets = HealRecipes.AllLinear(model.Config.Family) } : options;
        Options = o;

        _train = TokenChunks.FromLines(TextCorpus.Read(o.DataPath), tok, o.SeqLen);
        if (_train.Count == 0)
            throw new LayerPruneException($"{o.DataPath}: shorter than one sequence of {o.SeqLen} tokens");
        _eval = o.EvalDataPath is { } evalPath ? TokenChunks.FromLines(TextCorpus.Read(evalPath), tok, o.SeqLen, o.EvalChunks) : null;
        if (_eval is { Count: 0 })
            throw new LayerPruneException($"{o.EvalDataPath}: shorter than one sequence of {o.SeqLen} tokens");

        // Freeze the whole base (requires_grad is metadata only: memory-mapped weights are never written). Streamed layers
        // are built frozen (tensors read from the checkpoint do not require grad).
        foreach (var (_, t) in model.Offloaded ? model.StateDict() : model.NamedTensors())
            t.requires_grad_(false);
        _settings = new LoraSettings(o.Targets!, o.Rank, o.Alpha, o.Dropout);
        if (o.Offload)
        {
            _streamed = StreamedAdapters.Create(model, _settings, o.Seed);
            Adapters = _streamed.Adapters;
        }
        else if (model.Offloaded)
            // Each layer is quantized to NF4 as it is read (the injector does it), then kept resident: the same linears in
            // the same order as NamedLinears of the resident model, so the same adapters.
            Adapters = LoraInjector.Inject(model.LinearsLayerByLayer(model.KeepResident), _settings, o.Seed, o.Quant, o.DoubleQuant);
        else Adapters = LoraInjector.Inject(model.NamedLinears(), _settings, o.Seed, o.Quant, o.DoubleQuant);
        // On the model's device: CUDA draws the dropout masks with torch's bernoulli_, which takes only a generator there.
        _dropoutRng = new Generator((ulong)o.Seed + 1, model.Device);
        foreach (var (_, a) in Adapters)
            a.DropoutGenerator = _dropoutRng;
        if (o.GradientCheckpointing)
            model.GradientCheckpointing = new GradientCheckpointing
            {
                PreservedGenerators = [_dropoutRng], ReplayFanRatio = o.ReplayFanRatio(model.Config),
            };
        _parameters = Adapters.SelectMany(a => a.Adapter.Parameters()).ToList();
        TrainableParameters = _parameters.Sum(p => p.NumberOfElements);
        // HF Trainer's default optimizer: AdamW(β1 0.9, β2 0.999, ε 1e-8, weight_decay 0.0) on the trainable parameters.
        _optimizer = torch.optim.AdamW(_parameters, o.LearningRate, 0.9, 0.999, 1e-8, 0.0);

        _checkpoint = new HealCheckpoint(PartialDir, HealCheckpoint.Fingerprint(o));
        _state = resume ? LoadCheckpointOrExplain(o.Steps) : _checkpoint.StartLog();
        _order = Healer.Permutation(_train.Count, o.Seed, _state.Epoch);
        _log = new StreamWriter(_checkpoint.LogPath, append: true);
    }

    /// <summary>Opens a run on the model in <see cref="HealOptions.ModelDir"/> (loaded with the options' device and dtype).</summary>
    public static HealSession Open(HealOptions options)
    {
        options.Validate();
        if (!Directory.Exists(options.ModelDir))
            throw LayerPruneException.Invalid(nameof(HealOptions.ModelDir), options.ModelDir, "folder not found");
        var (resume, output) = PrepareOutput(options, options.ModelDir);
        CausalLM? model = null;
        try
        {
            var tok = TokenizerLoader.Load(options.ModelDir);
            // An NF4 base is read one layer at a time and each layer quantized as it is read (LinearsLayerByLayer): the weights
            // are never all in the compute dtype at once (7B in fp32: 27 GB), as they would be loaded resident first.
            bool readLayerByLayer = options.Offload || options.Quant == BaseQuantization.Nf4;
            model = CausalLM.Load(options.ModelDir, options.Device, options.Dtype, readLayerByLayer);
            return new HealSession(model, ownsModel: true, tok, options, resume, output);
        }
        catch
        {
            model?.Dispose();
            output.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens a run on a model already in memory (no reload from disk). The model is changed in place: its target linears
    /// get the LoRA adapters (and NF4 base weights with <see cref="BaseQuantization.Nf4"/>), so after training it computes
    /// the healed model. Its checkpoint folder stands in for <see cref="HealOptions.ModelDir"/> (the merged output copies
    /// its other tensors and side files); the caller keeps ownership of <paramref name="model"/>.
    /// </summary>
    /// <param name="model">
    /// A resident or an offloaded model (<see cref="CausalLM.Offloaded"/>: a streamed heal, see <see cref="HealOptions.Offload"/>;
    /// its adapters stay attached to every layer it reads after the session, as long as the model lives).
    /// </param>
    /// <param name="options">
    /// Run settings; <see cref="HealOptions.ModelDir"/> is replaced by the model's folder and <see cref="HealOptions.Offload"/>
    /// by whether the model is offloaded.
    /// </param>
    /// <param name="tokenizer">Tokenizer of the training text; null = the one in the model's folder.</param>
    public static HealSession Open(CausalLM model, HealOptions options, ITextTokenizer? tokenizer = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var o = options with { ModelDir = model.Checkpoint.Directory, Offload = model.Offloaded };
        o.Validate();
        var (resume, output) = PrepareOutput(o, o.ModelDir);
        try { return new HealSession(model, ownsModel: false, tokenizer ?? TokenizerLoader.Load(o.ModelDir), o, resume, output); }
        catch
        {
            output.Dispose();
            throw;
        }
    }

    /// <summary>The settings in use (targets resolved, model folder filled in).</summary>
    public HealOptions Options { get; }

    /// <summary>The model being trained (with its adapters attached).</summary>
    public CausalLM Model { get; }

    /// <summary>The LoRA adapters by module name, e.g. "model.layers.3.mlp.up_proj".</summary>
    public IReadOnlyList<(string Name, LoraAdapter Adapter)> Adapters { get; }

    /// <summary>Trainable parameters (the adapters').</summary>
    public long TrainableParameters { get; }

    /// <summary>Optimizer steps done (including those restored from a checkpoint).</summary>
    public int StepsDone => _state.Step;

    /// <summary>True when all <see cref="HealOptions.Steps"/> are done.</summary>
    public bool IsFinished => _state.Step >= Options.Steps;

    /// <summary>OUT.partial: the in-progress folder (checkpoint + log).</summary>
    public string PartialDir => Healer.PartialDir(Options.OutDir);

    /// <summary>
    /// Trains until finished, then exports. After every step <paramref name="onStep"/> (when given) sees what happened;
    /// returning false stops the run there: the checkpoint is written and an incomplete result returned (no outputs).
    /// Cancelling also writes the checkpoint, then throws <see cref="OperationCanceledException"/>.
    /// </summary>
    public HealResult Run(Func<HealStep, bool>? onStep = null, CancellationToken cancel = default)
    {
        using (var progress = ProgressReporter.Start("heal", Options.Steps - _state.Step, "steps", Options.Progress))
        {
            while (!IsFinished)
            {
                cancel.ThrowIfCancellationRequested();
                var step = Step();
                if (!step.CheckpointSaved && cancel.IsCancellationRequested)
                    step = step with { CheckpointSaved = Save() };
                string val = _state.LastValLoss is double lv ? $" · val {lv:F4}" : "";
                progress.Advance(1, $"loss {step.TrainLoss:F4}{val} · {step.TokensPerSecond:F0} tok/s");
                bool keepGoing = onStep?.Invoke(step) ?? true;
                if (!keepGoing && !IsFinished)
                {
                    if (!step.CheckpointSaved)
                        SaveCheckpoint();
                    return Result(completed: false, mergedVal: null);
                }
                cancel.ThrowIfCancellationRequested();
            }
        }
        return Export();
    }

    /// <summary>
    /// The next batch of training sequences: the next Batch indices of this epoch's shuffled order (a new order per epoch).
    /// </summary>
    public IReadOnlyList<int[]> NextBatch()
    {
        var batch = new List<int[]>(Options.Batch);
        while (batch.Count < Options.Batch)
        {
            if (_state.Index >= _order.Length)
            {
                _state.Epoch++;
                _state.Index = 0;
                _order = Healer.Permutation(_train.Count, Options.Seed, _state.Epoch);
            }
            batch.Add(_train[_order[_state.Index++]]);
        }
        return batch;
    }

    /// <summary>
    /// One optimizer step on <see cref="NextBatch"/>: warmup + cosine LR, gradient accumulation over micro-batches, grad-norm
    /// clipping, AdamW; then the validation loss when due (every EvalEvery steps and at the last), a train_log.jsonl line,
    /// and the checkpoint every SaveEvery steps.
    /// </summary>
    public HealStep Step()
    {
        if (IsFinished)
            throw new InvalidOperationException($"healing is finished ({Options.Steps} steps)");
        _clock.Start();
        var o = Options;
        var sw = Stopwatch.StartNew();
        double lr = LrSchedule.Cosine(o.LearningRate, _state.Step, o.Warmup, o.Steps);
        var batch = NextBatch();
        double loss = Optimize(batch, lr);
        _state.Step++;
        long tokens = (long)o.Batch * o.SeqLen;
        _tokensThisRun += tokens;
        double tps = tokens / Math.Max(1e-9, sw.Elapsed.TotalSeconds);
        double? val = null;
        if (_eval is not null && (_state.Step % o.EvalEvery == 0 || _state.Step == o.Steps))
            val = Evaluate();
        Log(lr, loss, tps, val);
        _state.LastTrainLoss = loss;
        if (val is not null)
            _state.LastValLoss = val;
        bool saved = _state.Step % o.SaveEvery == 0 && Save();
        return new HealStep(_state.Step, o.Steps, _state.Epoch, lr, loss, val, tps, saved);
    }

    /// <summary>Mean validation loss of the adapted model on the eval chunks; null without eval data.</summary>
    public double? Evaluate()
    {
        if (_eval is null)
            return null;
        foreach (var (_, a) in Adapters)
            a.Training = false;
        return LossEvaluator.Evaluate(Model, _eval, Math.Max(1, Options.EffectiveMicroBatch)).ValidationLoss;
    }

    /// <summary>Writes the resumable checkpoint (adapters, AdamW state, RNG state, data position) into OUT.partial atomically.</summary>
    public void SaveCheckpoint() => _checkpoint.Save(_state, Adapters, _optimizer, _dropoutRng);

    bool Save()
    {
        SaveCheckpoint();
        return true;
    }

    /// <summary>
    /// Writes the outputs into OUT (atomically, via a temp sibling): PEFT adapter files, train_log.jsonl, the merged
    /// checkpoint, heal_summary.json; measures the merged model's validation loss; removes OUT.partial.
    /// </summary>
    public HealResult Export()
    {
        if (!IsFinished)
            throw new InvalidOperationException($"healing is not finished: {_state.Step} of {Options.Steps} steps done");
        _clock.Stop();
        _log?.Dispose();
        _log = null;
        var o = Options;
        var output = _output;
        var adapterTensors = PeftAdapterFiles.ToTensors(Adapters).Select(kv => TensorToWrite.FromTensor(kv.Key, kv.Value)).ToList();
        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        SafeTensorsWriter.Write(output.File("adapter_model.safetensors"), adapterTensors, meta);
        var config = PeftAdapterFiles.Config(_settings, _modelDir);
        File.WriteAllText(output.File("adapter_config.json"), config.ToJsonString(Healer.Indented));
        File.Copy(_checkpoint.LogPath, output.File("train_log.jsonl"));
        Healer.WriteMerged(Model.Checkpoint, Adapters, output.File("merged"));
        double? mergedVal = null;
        if (_eval is not null)
        {
            // Streamed (one layer resident at a time, same loss to 1e-6): the healed model is still in memory, and a second
            // resident copy in the compute dtype (an NF4 heal's base is 4-bit) could need more than the machine has.
            using var merged = CausalLM.Load(output.File("merged"), o.Device, o.Dtype, offload: true);
            mergedVal = LossEvaluator.Evaluate(merged, _eval, Math.Max(1, o.EffectiveMicroBatch)).ValidationLoss;
        }
        var result = Result(completed: true, mergedVal);
        File.WriteAllText(output.File("heal_summary.json"), Healer.Summary(result, Model.Config).ToJsonString(Healer.Indented));
        output.Commit();
        Directory.Delete(PartialDir, recursive: true);
        return result;
    }

    /// <summary>Releases the optimizer, RNG and log (and the model when this session loaded it). OUT.partial stays.</summary>
    public void Dispose()
    {
        _log?.Dispose();
        _optimizer.Dispose();
        Model.GradientCheckpointing = null;
        QuantizedMatmul.ReleaseBuffers();   // this thread's dequantization buffers (one layer's weights)
        _dropoutRng.Dispose();
        if (_ownsModel)
        {
            _streamed?.Dispose();
            Model.Dispose();
        }
        _output.Dispose();
    }

    /// <summary>The checkpoint to resume, or a one-line error that says it is damaged and how to start over.</summary>
    HealCheckpoint.TrainState LoadCheckpointOrExplain(int steps)
    {
        string problem;
        try
        {
            var s = _checkpoint.Load(Adapters, _optimizer, _dropoutRng);
            if (s.Step >= 1 && s.Step <= steps && s.Epoch >= 0 && s.Index >= 0)
                return s;
            problem = $"step {s.Step}, epoch {s.Epoch}, index {s.Index} are out of range";
        }
        catch (LayerPruneException e) when (e.IsInvalidInput)
        {
            throw; // made with other settings: the message already says what to do
        }
        catch (Exception e)
        {
            problem = e.Message;
        }
        throw LayerPruneException.Failed(nameof(HealOptions.Resume), null,
            $"the checkpoint in {PartialDir} is damaged ({problem}); delete {PartialDir} or rerun with `Force` to start over");
    }

    double Optimize(IReadOnlyList<int[]> batch, double lr)
    {
        foreach (var g in _optimizer.ParamGroups)
            g.LearningRate = lr;
        _optimizer.zero_grad();
        foreach (var (_, a) in Adapters)
            a.Training = true;
        double stepLoss = 0;
        foreach (var mb in batch.Chunk(Options.EffectiveMicroBatch))
        {
            using var scope = NewDisposeScope();
            using var loss = Healer.Loss(Model, mb);
            // Each micro-batch's mean × its share of the batch: the accumulated gradient is that of the full-batch mean.
            using var scaled = loss * ((double)mb.Length / Options.Batch);
            scaled.backward();
            BackwardHandles.ReleaseReturned();   // the last custom backward's gradient handles (see BackwardHandles)
            stepLoss += scaled.item<float>();
        }
        torch.nn.utils.clip_grad_norm_(_parameters, Healer.MaxGradNorm);
        _optimizer.step();
        return stepLoss;
    }

    void Log(double lr, double loss, double tps, double? val)
    {
        var line = new JsonObject
        {
            ["step"] = _state.Step, ["epoch"] = _state.Epoch, ["lr"] = lr, ["loss"] = Healer.Round(loss),
            ["tokens_per_s"] = Math.Round(tps, 1),
        };
        if (val is double v)
            line["val_loss"] = Healer.Round(v);
        _log!.WriteLine(line.ToJsonString());
        _log.Flush();
    }

    HealResult Result(bool completed, double? mergedVal)
    {
        double seconds = _clock.Elapsed.TotalSeconds;
        double tps = _tokensThisRun / Math.Max(1e-9, seconds);
        return new HealResult(completed, _state.Step, _state.LastTrainLoss, _state.LastValLoss, mergedVal, tps, seconds,
            TrainableParameters, Path.GetFullPath(Options.OutDir), Options);
    }

    /// <summary>
    /// Checks the inputs and the output folder and prepares OUT.partial; returns whether a checkpoint is resumed.
    /// A fresh run refuses an existing OUT or an interrupted run unless Force; Resume without a checkpoint starts fresh.
    /// </summary>
    static (bool Resume, OutputFolder Output) PrepareOutput(HealOptions o, string modelDir)
    {
        if (!File.Exists(o.DataPath))
            throw LayerPruneException.Invalid(nameof(HealOptions.DataPath), o.DataPath, "file not found");
        if (o.EvalDataPath is { } ev && !File.Exists(ev))
            throw LayerPruneException.Invalid(nameof(HealOptions.EvalDataPath), ev, "file not found");
        string outFull = Path.GetFullPath(o.OutDir);
        string partial = Healer.PartialDir(o.OutDir);
        // Never the input, nor inside or around it (canonical paths); existence is checked below. Holds the OUT lock until
        // the session is disposed, so a concurrent run on the same OUT fails at once.
        var output = OutputFolder.Begin(o.OutDir, force: true, nameof(HealOptions.OutDir), modelDir);
        try
        {
            return (PrepareFolders(o, outFull, partial), output);
        }
        catch
        {
            output.Dispose();
            throw;
        }
    }

    static bool PrepareFolders(HealOptions o, string outFull, string partial)
    {
        bool haveCheckpoint = o.Resume && HealCheckpoint.Exists(partial);
        if (!o.Resume)
        {
            if ((Directory.Exists(outFull) || File.Exists(outFull)) && !o.Force)
                throw LayerPruneException.Invalid(nameof(HealOptions.OutDir), o.OutDir,
                    "already exists (use `Force` to replace it, or `Resume`)");
            if (Directory.Exists(partial))
            {
                if (!o.Force)
                    throw LayerPruneException.Invalid(nameof(HealOptions.OutDir), o.OutDir,
                        $"an interrupted run is in {partial} (use `Resume` to continue it or `Force` to start over)");
                Directory.Delete(partial, recursive: true);
            }
        }
        else if (!haveCheckpoint && Directory.Exists(partial))
            Directory.Delete(partial, recursive: true); // nothing to resume: start fresh
        Directory.CreateDirectory(partial);
        return haveCheckpoint;
    }
}
