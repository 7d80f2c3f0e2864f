using System.Diagnostics;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling;
using LayerPrune.Planning;
using LayerPrune.Pruning.Strategies;
using LayerPrune.Reporting;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Pruning;

/// <summary>How <see cref="LinearRepair.Fit"/> fits its maps.</summary>
public sealed record RepairOptions
{
    /// <summary>The repair methods: none, linear (least squares), cosine (least squares refined on the cosine distance).</summary>
    public static readonly IReadOnlyList<string> Methods = ["none", "linear", "cosine"];
    /// <summary>"linear" (ReplaceMe's least-squares map) or "cosine" (its second objective, started from the linear map).</summary>
    public string Method { get; init; } = "linear";
    /// <summary>Ridge α ≥ 0 added to the diagonal of Mᵀ·M (0: plain least squares).</summary>
    public double Alpha { get; init; }
    /// <summary>Calibration chunks per forward batch.</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>cosine: Adam steps (full batch over the subsample).</summary>
    public int CosineSteps { get; init; } = 100;
    /// <summary>cosine: Adam's learning rate.</summary>
    public double CosineLearningRate { get; init; } = 1e-4;
    /// <summary>cosine: calibration tokens drawn (seeded, without replacement) for the refinement.</summary>
    public int CosineTokens { get; init; } = 4096;
    /// <summary>cosine: seed of the subsample.</summary>
    public int Seed { get; init; }
    /// <summary>Progress of the calibration pass (chunks done).</summary>
    public IProgressSink? Progress { get; init; }

    internal void Validate()
    {
        if (!(Method is "linear" or "cosine"))
            throw LayerPruneException.Invalid("method", Method, "expected linear or cosine");
        if (!(Alpha >= 0) || double.IsInfinity(Alpha)) throw LayerPruneException.Invalid("alpha", Alpha, "must be a finite number ≥ 0");
        if (BatchSize < 1) throw LayerPruneException.Invalid("batchSize", BatchSize, "must be at least 1");
        if (Method == "cosine")
        {
            if (CosineSteps < 1) throw LayerPruneException.Invalid("cosineSteps", CosineSteps, "must be at least 1");
            if (!(CosineLearningRate > 0)) throw LayerPruneException.Invalid("cosineLearningRate", CosineLearningRate, "must be > 0");
            if (CosineTokens < 1) throw LayerPruneException.Invalid("cosineTokens", CosineTokens, "must be at least 1");
        }
    }
}

/// <summary>
/// The map of one maximal removed run [Start, EndExclusive): T [H, H] (fp64, CPU) with Y + M·T ≈ R, folded into the MLP
/// output projection of layer Start − 1 (down_proj; Phi: fc2, weight and bias).
/// </summary>
public sealed class RepairMap : IDisposable
{
    /// <summary>First removed layer s (0-based, original indexing).</summary>
    public required int Start { get; init; }
    /// <summary>One past the last removed layer e.</summary>
    public required int EndExclusive { get; init; }
    /// <summary>The kept layer the map is folded into: s − 1.</summary>
    public int Layer => Start - 1;
    /// <summary>T [H, H], fp64 on the CPU.</summary>
    public required Tensor Transform { get; init; }
    /// <summary>Calibration tokens of the fit.</summary>
    public required long Tokens { get; init; }
    /// <summary>‖(MᵀM + αI)·T − Mᵀ(R − Y)‖_F / ‖Mᵀ(R − Y)‖_F of the least-squares solve.</summary>
    public required double RelativeResidual { get; init; }
    /// <summary>λmax / λmin of MᵀM + αI (the 2-norm condition number of the solved system).</summary>
    public required double ConditionEstimate { get; init; }
    /// <summary>‖M·T − (R − Y)‖² / ‖R − Y‖² over the calibration tokens with the least-squares T.</summary>
    public required double FitError { get; init; }
    /// <summary>The same with T = I (the unrepaired prune: the cut passes Y + M on).</summary>
    public required double FitErrorIdentity { get; init; }
    /// <summary>cosine: mean 1 − cos(Y + M·T, R) on the subsample before (least-squares T) and after the refinement.</summary>
    public (double Before, double After)? CosineLoss { get; init; }

    /// <summary>W ← Tᵀ·W and b ← Tᵀ·b in fp64 (so that the projection's output M becomes M·T), cast to
    /// <paramref name="dtype"/>.</summary>
    public Tensor Fold(Tensor weightOrBias, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var t = Transform.to(weightOrBias.device);
        var w = weightOrBias.to(ScalarType.Float64);
        return t.t().matmul(w).to(dtype).MoveToOuterDisposeScope();   // [H, H]·[H, I] or [H, H]·[H]
    }

    /// <summary>This map's entry in prune_plan.json's "repair".</summary>
    public JsonObject ToJson(PrunePlan plan)
    {
        var o = new JsonObject
        {
            ["removed_run"] = new JsonArray(Start, EndExclusive - 1),
            ["folded_into_layer"] = Layer,
            ["folded_into_layer_pruned_index"] = Array.IndexOf(plan.Kept, Layer),
            ["calibration_tokens"] = Tokens,
            ["relative_residual"] = RelativeResidual,
            ["condition_estimate"] = ConditionEstimate,
            ["fit_error"] = FitError,
            ["fit_error_identity"] = FitErrorIdentity,
        };
        if (CosineLoss is var (b, a)) { o["cosine_loss_least_squares"] = b; o["cosine_loss"] = a; }
        return o;
    }

    /// <inheritdoc/>
    public void Dispose() => Transform.Dispose();
}

/// <summary>
/// Training-free repair of a pruned model (ReplaceMe, Shopkhoev et al., NeurIPS 2025, ReplaceMe/lstsq.py): for each maximal
/// run [s, e) of removed layers, one linear map T fitted on calibration activations of the unpruned model and folded into
/// the MLP output projection of layer s − 1. With M the output of layer s − 1's MLP, Y the residual stream before it (layer
/// s − 1 outputs Y + M) and R the residual stream entering layer e (for e = L the last layer's output before the final
/// norm), T = (MᵀM + αI)⁻¹·Mᵀ(R − Y) makes the pruned model's stream after layer s − 1, Y + M·T, the least-squares
/// estimate of R. Phi-2's parallel block is the same: M is its MLP output, Y = x + attn. Adds no parameters.
/// </summary>
public sealed class LinearRepair : IDisposable
{
    /// <summary>"linear" or "cosine".</summary>
    public required string Method { get; init; }
    /// <summary>The plan the maps repair.</summary>
    public required PrunePlan Plan { get; init; }
    /// <summary>One map per maximal removed run, in layer order.</summary>
    public required IReadOnlyList<RepairMap> Maps { get; init; }
    /// <summary>The options of the fit.</summary>
    public required RepairOptions Options { get; init; }
    /// <summary>The calibration pass (sequences and layer applications) and the wall-clock seconds of the whole fit.</summary>
    public required SelectionCost Cost { get; init; }
    /// <summary>Bytes held by the fit beyond the model: accumulators, pending activations, cosine subsample and Adam state.</summary>
    public required long WorkBytes { get; init; }

    /// <summary>The maximal runs [Start, EndExclusive) of consecutive removed layers of <paramref name="plan"/>.</summary>
    public static IReadOnlyList<(int Start, int EndExclusive)> RemovedRuns(PrunePlan plan)
    {
        var runs = new List<(int, int)>();
        var r = plan.Removed;
        for (int i = 0; i < r.Length;)
        {
            int j = i;
            while (j + 1 < r.Length && r[j + 1] == r[j] + 1) j++;
            runs.Add((r[i], r[j] + 1));
            i = j + 1;
        }
        return runs;
    }

    /// <summary>The HF name, relative to the layer, of the linear whose output is the MLP's output.</summary>
    public static string MlpOutputName(ModelConfig config) => config.Family == ArchitectureFamily.Phi ? "mlp.fc2" : "mlp.down_proj";

    /// <summary>
    /// Fits one map per removed run of <paramref name="plan"/> from <paramref name="chunks"/> (equal-length token sequences,
    /// every token real) run through the unpruned <paramref name="model"/> (layers 0 … max e − 1; resident or offloaded).
    /// </summary>
    public static LinearRepair Fit(CausalLM model, PrunePlan plan, IReadOnlyList<int[]> chunks, RepairOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(chunks);
        options ??= new RepairOptions();
        options.Validate();
        if (plan.OriginalLayers != model.NumLayers)
            throw LayerPruneException.Invalid(nameof(plan), plan.Strategy,
                $"is for {plan.OriginalLayers} layers, the model has {model.NumLayers}");
        var runs = RemovedRuns(plan);
        if (runs[0].Start == 0)
            throw LayerPruneException.Invalid(nameof(plan), $"removed {string.Join(",", plan.Removed)}",
                "a removed run starts at layer 0, so no kept layer precedes it to take the repair map");
        if (chunks.Count == 0) throw LayerPruneException.Invalid(nameof(chunks), 0, "no calibration chunks");
        int T = chunks[0].Length;
        if (T < 1 || chunks.Any(c => c.Length != T))
            throw LayerPruneException.Invalid(nameof(chunks), T, "chunks must be non-empty and of equal length");

        var watch = Stopwatch.StartNew();
        using var _ = no_grad();
        var fits = runs.Select(r => new RunAccumulator(r.Start, r.EndExclusive, model.Config.HiddenSize)).ToList();
        int depth = runs.Max(r => r.EndExclusive);
        long totalTokens = (long)chunks.Count * T;
        // cosine: a seeded subsample of token positions (global index = chunk · T + position), drawn up front
        HashSet<long>? sample = null;
        if (options.Method == "cosine")
        {
            var rng = new Random(options.Seed);
            int k = (int)Math.Min(options.CosineTokens, totalTokens);
            sample = [];
            // Floyd's algorithm: k distinct indices of [0, totalTokens)
            for (long j = totalTokens - k; j < totalTokens; j++)
            {
                long t = rng.NextInt64(j + 1);
                if (!sample.Add(t)) sample.Add(j);
            }
        }

        var batches = chunks.Chunk(options.BatchSize).ToList();
        var maps = new List<RepairMap>();
        long work;
        try
        {
            using (var progress = ProgressReporter.Start("repair calibration", chunks.Count, "chunks", options.Progress))
                work = model.Offloaded
                    ? CalibrateStreamed(model, fits, depth, batches, T, sample, options, maps, progress)
                    : CalibrateResident(model, fits, depth, batches, T, sample, progress);
            foreach (var f in fits.Skip(maps.Count))
                maps.Add(f.Solve(options, model.Device));
        }
        catch
        {
            foreach (var m in maps) m.Dispose();
            throw;
        }
        finally
        {
            foreach (var f in fits) f.Dispose();
        }
        long H = model.Config.HiddenSize;
        if (sample is not null) work += fits.Count * 3L * sample.Count * H * 4 + 4 * H * H * 4;
        var cost = new SelectionCost(chunks.Count, (long)chunks.Count * depth, totalTokens, watch.Elapsed.TotalSeconds);
        return new LinearRepair { Method = options.Method, Plan = plan, Maps = maps, Options = options, Cost = cost, WorkBytes = work };
    }

    static Linear MlpOutput(CausalLM model, DecoderLayer layer)
    {
        string name = MlpOutputName(model.Config);
        return layer.NamedModules<Linear>().First(m => m.Name == name).Module;
    }

    static Tensor Ids(int[][] batch, int T) => tensor(batch.SelectMany(c => c.Select(x => (long)x)).ToArray(), [batch.Length, T]);

    /// <summary>Resident layers: one forward per batch through layers 0 … depth − 1, every run's sums updated per batch;
    /// returns the bytes held beyond the model.</summary>
    static long CalibrateResident(CausalLM model, List<RunAccumulator> fits, int depth, List<int[][]> batches, int T,
        HashSet<long>? sample, ProgressReporter progress)
    {
        var hooks = fits.ToDictionary(f => f.Start - 1, f => new MlpOutputHook());
        var attached = new List<Linear>();
        try
        {
            foreach (var (i, hook) in hooks)
            {
                var down = MlpOutput(model, model.Layer(i));
                if (down.Adapter is not null) throw new InvalidOperationException($"layer {i}'s MLP output already has an adapter");
                hook.Linear = down;
                down.Adapter = hook;
                attached.Add(down);
            }
            var layers = Enumerable.Range(0, depth).ToArray();
            long done = 0;
            for (int b = 0; b < batches.Count; b++)
            {
                var batch = batches[b];
                using var scope = NewDisposeScope();
                long first = done * T;
                var forward = new ForwardOptions
                {
                    Layers = layers, HiddenOnly = true,
                    OnResidual = (k, x) =>
                    {
                        foreach (var f in fits)
                        {
                            if (k == f.Start) f.TakeLayerOutput(b, x, hooks[f.Start - 1], SampleRows(sample, first, batch.Length, T));
                            if (k == f.EndExclusive) f.TakeTarget(b, x);
                        }
                    },
                };
                model.Forward(Ids(batch, T), options: forward).Dispose();
                done += batch.Length;
                progress.Advance(batch.Length);
            }
        }
        finally
        {
            foreach (var down in attached) down.Adapter = null;
            foreach (var h in hooks.Values) h.Dispose();
        }
        long H = model.Config.HiddenSize, B = batches[0].Length;
        // the sums of every run, one batch's M and layer output per run, and the fp64 copies of one batch
        return fits.Count * (2 * H * H * 8 + 2 * B * T * H * ElementBytes(model.Dtype)) + 3 * B * T * H * 8;
    }

    /// <summary>
    /// An offloaded model (issue 24: "the accumulators must stream with the model"): layer-major like the streamed loss
    /// (<see cref="Evaluation.LossEvaluator"/>), so each layer is read from the checkpoint once per group of batches (one group
    /// up to <see cref="MemoryPlanner.StreamGroupBytes"/> of residual streams). A run's sums are allocated when its target
    /// layer e is reached; with one group the map is solved there and the sums freed, so only the open cut's H×H sums are
    /// held. The batches, their order and each batch's ops are the resident pass's, so the sums are the same.
    /// Returns the bytes held beyond the streamed layer.
    /// </summary>
    static long CalibrateStreamed(CausalLM model, List<RunAccumulator> fits, int depth, List<int[][]> batches, int T,
        HashSet<long>? sample, RepairOptions options, List<RepairMap> maps, ProgressReporter progress)
    {
        long H = model.Config.HiddenSize, elt = ElementBytes(model.Dtype), B = batches[0].Length;
        // per sequence: its residual stream, plus the pending M and output of layer s − 1 of the open run
        long perBatch = 3 * B * T * H * elt;
        int perGroup = (int)Math.Clamp(MemoryPlanner.StreamGroupBytes / Math.Max(1, perBatch), 1, batches.Count);
        var groups = batches.Select((batch, index) => (batch, index)).Chunk(perGroup).ToList();
        var layers = Enumerable.Range(0, depth).ToArray();
        long[] firstChunk = new long[batches.Count];
        for (int b = 1; b < batches.Count; b++) firstChunk[b] = firstChunk[b - 1] + batches[b - 1].Length;
        for (int g = 0; g < groups.Count; g++)
        {
            var group = groups[g];
            bool lastGroup = g == groups.Count - 1;
            void Targets(int k, List<Tensor> hidden)
            {
                foreach (var f in fits.Where(f => f.EndExclusive == k))
                {
                    for (int j = 0; j < group.Length; j++) f.TakeTarget(group[j].index, hidden[j]);
                    if (lastGroup && groups.Count == 1) maps.Add(f.Solve(options, model.Device));   // frees its sums
                }
            }
            using var scope = NewDisposeScope();
            var ids = group.Select(x => Ids(x.batch, T)).ToList();
            var atts = ids.Select(x => model.PrepareAttention(x.shape[0], x.shape[1], 0, null)).ToList();
            var hidden = ids.Select(model.Embed).ToList();
            try
            {
                model.ForEachLayer(layers, (k, layer) =>
                {
                    Targets(k, hidden);
                    var open = fits.FirstOrDefault(f => f.Start - 1 == k);
                    using var hook = new MlpOutputHook();
                    Linear? down = null;
                    if (open is not null)
                    {
                        down = MlpOutput(model, layer);
                        if (down.Adapter is not null) throw new InvalidOperationException($"layer {k}'s MLP output already has an adapter");
                        hook.Linear = down;
                        down.Adapter = hook;
                    }
                    try
                    {
                        for (int j = 0; j < group.Length; j++)
                        {
                            var next = layer.Forward(hidden[j], atts[j], null, k);
                            int index = group[j].index;
                            open?.TakeLayerOutput(index, next, hook,
                                SampleRows(sample, firstChunk[index] * T, group[j].batch.Length, T));
                            hidden[j].Dispose();
                            hidden[j] = next;
                        }
                    }
                    finally
                    {
                        if (down is not null) down.Adapter = null;
                    }
                });
                Targets(depth, hidden);
            }
            finally
            {
                foreach (var a in atts) a.Dispose();
                foreach (var h in hidden) h.Dispose();
            }
            progress.Advance(group.Sum(x => x.batch.Length));
        }
        long groupSequences = groups.Max(x => x.Sum(y => (long)y.batch.Length));
        long sums = (groups.Count == 1 ? 1 : fits.Count) * 2 * H * H * 8;
        return sums + groupSequences * T * H * elt * 3 + 3 * B * T * H * 8;
    }

    static long ElementBytes(ScalarType t) => t switch { ScalarType.Float64 => 8, ScalarType.Float32 => 4, _ => 2 };

    /// <summary>Rows (b · T + t) of this batch that belong to the cosine subsample.</summary>
    static long[]? SampleRows(HashSet<long>? sample, long first, int batch, int T)
    {
        if (sample is null) return null;
        var rows = new List<long>();
        for (long r = 0; r < (long)batch * T; r++)
            if (sample.Contains(first + r)) rows.Add(r);
        return rows.ToArray();
    }

    /// <summary>
    /// Replaces the MLP output weights (and Phi's bias) of the <paramref name="model"/>'s layers s − 1 by their folded forms in
    /// the compute dtype, until the returned handle is disposed (which puts the loaded weights back). For evaluating a repaired
    /// variant in memory with <see cref="ForwardOptions.Layers"/> = the plan's kept layers. An offloaded model's layers s − 1
    /// are folded each time they are read from the checkpoint (<see cref="CausalLM.LayerLoaded"/>), before they are used.
    /// </summary>
    public IDisposable ApplyTo(CausalLM model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var undo = new List<Action>();
        if (Maps.Where(m => model.Model.Layers[m.Layer] is null).ToDictionary(m => m.Layer) is { Count: > 0 } streamed)
            undo.Add(FoldWhenRead(model, streamed));
        foreach (var map in Maps.Where(m => model.Model.Layers[m.Layer] is not null))
        {
            var down = MlpOutput(model, model.Layer(map.Layer));
            Tensor w = down.Weight ?? throw new LayerPruneException("an in-memory repair needs an unquantized MLP output weight");
            Tensor? b = down.Bias;
            down.Weight = map.Fold(w, w.dtype);
            down.Bias = b is null ? null : map.Fold(b, b.dtype);
            undo.Add(() =>
            {
                down.Weight.Dispose();
                down.Bias?.Dispose();
                down.Weight = w;
                down.Bias = b;
            });
        }
        return new Undo(undo);
    }

    /// <summary>Folds the streamed layers of <paramref name="byLayer"/> as they are read; returns the undo.</summary>
    static Action FoldWhenRead(CausalLM model, Dictionary<int, RepairMap> byLayer)
    {
        var previous = model.LayerLoaded;
        model.LayerLoaded = (i, layer) =>
        {
            previous?.Invoke(i, layer);
            if (!byLayer.TryGetValue(i, out var map)) return;
            var down = MlpOutput(model, layer);
            Tensor w = down.Weight ?? throw new LayerPruneException("an in-memory repair needs an unquantized MLP output weight");
            down.Weight = map.Fold(w, w.dtype);
            w.Dispose();   // the streamed layer owns the folded weight now and frees it with itself
            if (down.Bias is { } b)
            {
                down.Bias = map.Fold(b, b.dtype);
                b.Dispose();
            }
        };
        return () => model.LayerLoaded = previous;
    }

    sealed class Undo(List<Action> actions) : IDisposable
    {
        bool _done;
        public void Dispose()
        {
            if (_done) return;
            _done = true;
            foreach (var a in actions) a();
        }
    }

    /// <summary>
    /// The folded tensors to write instead of the stored ones, keyed by their name in <paramref name="source"/>: layer s − 1's
    /// MLP output weight (and bias), folded in fp64 from the stored values and stored in the checkpoint's dtype.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> FoldedTensors(Checkpoint source)
    {
        ArgumentNullException.ThrowIfNull(source);
        var result = new Dictionary<string, Tensor>();
        string down = MlpOutputName(source.Config);
        foreach (var map in Maps)
            foreach (string suffix in new[] { ".weight", ".bias" })
            {
                string name = Modeling.Families.Architecture.LayerPrefix(map.Layer) + down + suffix;
                if (!source.Contains(name)) continue;
                using var stored = source.Load(name);
                result[name] = map.Fold(stored, stored.dtype);
            }
        return result;
    }

    /// <summary>prune_plan.json's "repair".</summary>
    public JsonObject ToJson()
    {
        var o = new JsonObject
        {
            ["method"] = Method,
            ["calibration_tokens"] = Cost.Tokens,
            ["alpha"] = Options.Alpha,
            ["solver"] = "cholesky of the fp64 normal equations (M^T M + alpha I) T = M^T (R - Y)",
            ["seconds"] = Math.Round(Cost.Seconds, 3),
            ["cost"] = Cost.ToJson(),
            ["work_bytes"] = WorkBytes,
            ["maps"] = new JsonArray(Maps.Select(m => (JsonNode)m.ToJson(Plan)).ToArray()),
        };
        if (Method == "cosine")
            o["cosine"] = new JsonObject
            {
                ["objective"] = "mean 1 - cos(Y + M T, R), Adam from the least-squares T, full batch over the subsample",
                ["steps"] = Options.CosineSteps,
                ["learning_rate"] = Options.CosineLearningRate,
                ["subsample_tokens"] = Maps[0].CosineLoss is null ? 0 : (int)Math.Min(Options.CosineTokens, Cost.Tokens),
                ["seed"] = Options.Seed,
            };
        return o;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var m in Maps) m.Dispose();
    }

    /// <summary>A forward hook on the MLP output linear (as ReplaceMe's register_forward_hook): keeps M = linear(u) [B·T, H]
    /// in the compute dtype (converted to fp64 when the sums are updated).</summary>
    sealed class MlpOutputHook : ILinearAdapter
    {
        public Linear? Linear;
        public Tensor? Output;   // [B·T, H]
        public bool Training { get; set; }

        public Tensor Forward(Tensor u)
        {
            var m = nn.functional.linear(u, Linear!.Weight!, Linear.Bias);   // the same op as the base: the same values
            Output?.Dispose();
            Output = m.reshape(-1, m.shape[^1]).DetachFromDisposeScope();
            m.Dispose();
            return zeros(1, dtype: u.dtype, device: u.device);   // adds nothing
        }

        public void Dispose()
        {
            Output?.Dispose();
            Output = null;
        }
    }

    /// <summary>MᵀM, Mᵀ(R − Y) and ‖R − Y‖² of one run, accumulated in fp64 over the calibration batches (in batch order).
    /// The sums are allocated at the first target and freed by <see cref="Solve"/>.</summary>
    sealed class RunAccumulator(int start, int end, long hidden) : IDisposable
    {
        public int Start => start;
        public int EndExclusive => end;
        Tensor? _mtm, _mtd;
        double _dd, _trMtD;
        long _tokens;
        // per batch, from layer s − 1 until the target: M and the layer's output Y + M [B·T, H] in the compute dtype
        readonly Dictionary<int, (Tensor M, Tensor Out, long[]? Rows)> _pending = [];
        readonly List<(Tensor M, Tensor Y, Tensor R)> _sample = [];

        /// <summary>x: the output of layer s − 1 (= Y + M) for batch <paramref name="batch"/>; the hook holds M of the same
        /// batch.</summary>
        public void TakeLayerOutput(int batch, Tensor x, MlpOutputHook hook, long[]? rows)
        {
            var m = hook.Output ?? throw new InvalidOperationException($"no MLP output captured at layer {start - 1}");
            hook.Output = null;   // ours now
            if (_pending.Remove(batch, out var old)) { old.M.Dispose(); old.Out.Dispose(); }
            _pending[batch] = (m, x.reshape(-1, x.shape[^1]).DetachFromDisposeScope(), rows);
        }

        /// <summary>x: the residual stream entering layer e (for e = L: before the final norm) for batch
        /// <paramref name="batch"/>.</summary>
        public void TakeTarget(int batch, Tensor x)
        {
            if (!_pending.Remove(batch, out var p))
                throw new InvalidOperationException($"no output of layer {start - 1} for calibration batch {batch}");
            using var pendingM = p.M;
            using var pendingOut = p.Out;
            using var scope = NewDisposeScope();
            var m = p.M.to(ScalarType.Float64).cpu();
            var y = p.Out.to(ScalarType.Float64).cpu() - m;
            var r = x.reshape(-1, x.shape[^1]).to(ScalarType.Float64).cpu();
            var d = r - y;
            _mtm ??= zeros(hidden, hidden, dtype: ScalarType.Float64).DetachFromDisposeScope();
            _mtd ??= zeros(hidden, hidden, dtype: ScalarType.Float64).DetachFromDisposeScope();
            _mtm.add_(m.t().matmul(m));
            _mtd.add_(m.t().matmul(d));
            _dd += d.square().sum().item<double>();
            _trMtD += (m * d).sum().item<double>();
            _tokens += r.shape[0];
            if (p.Rows is { Length: > 0 })
            {
                var idx = tensor(p.Rows);
                _sample.Add((m.index_select(0, idx).to(ScalarType.Float32).DetachFromDisposeScope(),
                             y.index_select(0, idx).to(ScalarType.Float32).DetachFromDisposeScope(),
                             r.index_select(0, idx).to(ScalarType.Float32).DetachFromDisposeScope()));
            }
        }

        /// <summary>The map from the sums (which are freed afterwards).</summary>
        public RepairMap Solve(RepairOptions o, Device device)
        {
            if (_mtm is null || _mtd is null || _pending.Count > 0)
                throw new InvalidOperationException($"run {start}-{end - 1}: calibration incomplete");
            using var scope = NewDisposeScope();
            long H = _mtm.shape[0];
            var a = _mtm + o.Alpha * eye(H, dtype: ScalarType.Float64);
            var eig = linalg.eigvalsh(a);
            double lmin = eig[0].item<double>(), lmax = eig[H - 1].item<double>();
            // numpy matrix_rank's tolerance: σmax · n · ε
            double tol = Math.Max(lmax, 0) * H * Math.Pow(2, -52);
            if (!(lmin > tol))
            {
                long rank = eig.gt(tol).sum().item<long>();
                throw new LayerPruneException(
                    $"repair of removed layers {start}-{end - 1}: " +
                    $"the calibration system MᵀM{(o.Alpha > 0 ? " + αI" : "")} is singular " +
                    $"(rank {rank} of {H} from {_tokens} calibration tokens); give more calibration tokens or a ridge alpha > 0")
                    { IsInvalidInput = true };
            }
            var (chol, info) = linalg.cholesky_ex(a);
            if (info.item<int>() != 0)
                throw new LayerPruneException(
                    $"repair of removed layers {start}-{end - 1}: the calibration system is not positive definite; give a ridge alpha > 0")
                    { IsInvalidInput = true };
            var t = cholesky_solve(_mtd, chol);
            double bNorm = _mtd.norm().item<double>();
            double rel = bNorm == 0 ? 0 : (a.matmul(t) - _mtd).norm().item<double>() / bNorm;
            // ‖MT − D‖² = tr(TᵀMᵀMT) − 2 tr(TᵀMᵀD) + ‖D‖²; with T = I: tr(MᵀM) − 2 tr(MᵀD) + ‖D‖²
            double fit = (t * _mtm.matmul(t)).sum().item<double>() - 2 * (t * _mtd).sum().item<double>() + _dd;
            double fitI = _mtm.trace().item<double>() - 2 * _trMtD + _dd;
            (double, double)? cosine = null;
            if (o.Method == "cosine" && _sample.Count > 0) (t, cosine) = Refine(t, o, device);
            var map = new RepairMap
            {
                Start = start, EndExclusive = end, Transform = t.DetachFromDisposeScope(), Tokens = _tokens,
                RelativeResidual = rel, ConditionEstimate = lmax / lmin,
                FitError = _dd == 0 ? 0 : fit / _dd, FitErrorIdentity = _dd == 0 ? 0 : fitI / _dd, CosineLoss = cosine,
            };
            Dispose();   // the sums and the subsample are no longer needed
            return map;
        }

        /// <summary>ReplaceMe's cosine objective: Adam on mean 1 − cos(Y + M·T, R) over the subsample, from the
        /// least-squares T.</summary>
        (Tensor, (double, double)) Refine(Tensor t0, RepairOptions o, Device device)
        {
            var m = cat(_sample.Select(s => s.M).ToArray(), 0).to(device);
            var y = cat(_sample.Select(s => s.Y).ToArray(), 0).to(device);
            var r = cat(_sample.Select(s => s.R).ToArray(), 0).to(device);
            var t = new TorchSharp.Modules.Parameter(t0.to(ScalarType.Float32).to(device).detach(), requires_grad: true);
            Tensor Loss() => (1 - nn.functional.cosine_similarity(y + m.matmul(t), r, dim: 1)).mean();
            double before;
            using (no_grad()) before = Loss().item<float>();
            var adam = optim.Adam([t], lr: o.CosineLearningRate);
            using (enable_grad())
                for (int step = 0; step < o.CosineSteps; step++)
                {
                    using var s = NewDisposeScope();
                    adam.zero_grad();
                    var loss = Loss();
                    loss.backward();
                    adam.step();
                }
            double after;
            using (no_grad()) after = Loss().item<float>();
            var refined = t.detach().to(ScalarType.Float64).cpu();
            adam.Dispose();
            return (refined, (before, after));
        }

        public void Dispose()
        {
            _mtm?.Dispose(); _mtd?.Dispose();
            _mtm = _mtd = null;
            foreach (var (m, o, _) in _pending.Values) { m.Dispose(); o.Dispose(); }
            _pending.Clear();
            foreach (var (m, y, r) in _sample) { m.Dispose(); y.Dispose(); r.Dispose(); }
            _sample.Clear();
        }
    }
}
