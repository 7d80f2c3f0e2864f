using LayerPrune.Modeling;
using LayerPrune.Reporting;
using static TorchSharp.torch;

namespace LayerPrune.Similarity;

/// <summary>The block of n consecutive layers [Start, EndExclusive) whose removal changes the residual stream least.</summary>
public sealed record BestBlock(int N, int Start, int EndExclusive, double Distance);

/// <summary>The outcome of a similarity pass: distance matrices between residual-stream states.</summary>
public sealed class SimilarityResult
{
    /// <summary>(L+1)×(L+1) mean angular distance between residual-stream states x_a and x_b at the last token (0-based).</summary>
    public required double[,] Matrix { get; init; }
    /// <summary>Samples averaged.</summary>
    public required int Samples { get; init; }
    /// <summary>ShortGPT Block Influence per layer: mean over all non-padding tokens of 1 − cos(layer input, layer output); null when not
    /// computed.</summary>
    public double[]? BlockInfluence { get; init; }
    /// <summary>(L+1)×(L+1) mean over all non-padding tokens of 1 − cos(x_a, x_b); its superdiagonal is
    /// <see cref="BlockInfluence"/>.</summary>
    public double[,]? BlockInfluenceMatrix { get; init; }
    /// <summary>(L+1)×(L+1) 1 − linear CKA(x_a, x_b) over all non-padding tokens (a distance: 0 = identical up to rotation and
    /// scale).</summary>
    public double[,]? CkaDistance { get; init; }
    /// <summary>Each sample's angular-distance matrix (what <see cref="Matrix"/> averages), for resampling.</summary>
    public IReadOnlyList<double[,]>? PerSample { get; init; }
    /// <summary>Number of decoder layers L.</summary>
    public int Layers => Matrix.GetLength(0) - 1;

    /// <summary>l*(n) = argmin over l = 0…L−n of D(l, l+n), for n = 1…L−1 (the paper's Eq. 7; ties: smallest l).</summary>
    public IReadOnlyList<BestBlock> Best() => Enumerable.Range(1, Layers - 1).Select(BestFor).ToList();

    /// <summary>l*(n) for one block size; <paramref name="n"/> must be in 1…L−1.</summary>
    public BestBlock BestFor(int n)
    {
        if (n < 1 || n >= Layers)
        {
            string problem = $"block size must be between 1 and {Layers - 1} (the model has {Layers} layers)";
            throw LayerPruneException.Invalid(nameof(n), n, problem);
        }
        int best = 0;
        for (int l = 1; l + n <= Layers; l++) if (Matrix[l, l + n] < Matrix[best, best + n]) best = l;
        return new BestBlock(n, best, best + n, Matrix[best, best + n]);
    }
}

/// <summary>
/// One pass over the samples collects x_0 (embeddings) … x_L (last layer output, before the final norm) at each sample's
/// last real token and accumulates d(x_a, x_b) = arccos(cos(x_a, x_b))/π for every pair (a, b): all block sizes at once.
/// </summary>
public static class LayerSimilarity
{
    /// <summary>Measures the matrices for <paramref name="model"/> over <paramref name="samples"/>.</summary>
    /// <param name="model">The model (resident or offloaded).</param>
    /// <param name="samples">Token ids per sample (any lengths; batches are right-padded and masked).</param>
    /// <param name="batchSize">Samples per forward batch.</param>
    /// <param name="blockInfluence">Also accumulate the all-token 1 − cos matrix (ShortGPT's Block Influence).</param>
    /// <param name="onSamplesDone">Called with the number of samples finished after each batch.</param>
    /// <param name="cka">Also compute the linear-CKA distance matrix over all tokens (same pass).</param>
    /// <param name="progress">Where a "similarity" reporter (in samples) goes; null = nowhere.</param>
    public static SimilarityResult Compute(CausalLM model, IReadOnlyList<int[]> samples, int batchSize = 8,
        bool blockInfluence = false, Action<int>? onSamplesDone = null, bool cka = false, IProgressSink? progress = null)
    {
        if (samples.Count == 0) throw new LayerPruneException("similarity: no samples");
        using var reporter = ProgressReporter.Start("similarity", samples.Count, "samples", progress);
        void Done(int n)
        {
            reporter.Advance(n);
            onSamplesDone?.Invoke(n);
        }
        int L = model.NumLayers;
        using var sum = zeros(L + 1, L + 1, dtype: ScalarType.Float64, device: model.Device);
        using var tokens = blockInfluence || cka ? new AllTokenAccumulator(L, model.Config.HiddenSize, blockInfluence, cka, model.Device)
            : null;
        var perSample = new List<double[,]>();
        using var _ = no_grad();
        var batches = samples.Chunk(Math.Max(1, batchSize)).ToList();
        if (!model.Offloaded)
        {
            foreach (var batch in batches)
            {
                using var scope = NewDisposeScope();
                var (ids, mask, last) = Pad(batch, model.Device);
                var c = new BatchCollector(L, mask, last, tokens);
                model.Forward(ids, mask, options: new ForwardOptions { OnResidual = c.Collect, HiddenOnly = true });
                c.AddTo(sum, perSample);
                Done(batch.Length);
            }
        }
        else
        {
            // Layer-major streaming: every layer is read once from the memory-mapped checkpoint and applied to all batches,
            // so peak memory is one layer + the residual streams of the samples (not the model). ForEachLayer frees each
            // streamed layer and drops the mapping handles after it, so that the layer's file pages leave the resident set.
            using var scope = NewDisposeScope();
            var padded = batches.Select(b => Pad(b, model.Device)).ToList();
            var collectors = padded.Select(p => new BatchCollector(L, p.mask, p.last, tokens)).ToList();
            var atts = padded.Select(p => model.PrepareAttention(p.ids.shape[0], p.ids.shape[1], 0, p.mask)).ToList();
            var hidden = padded.Select(p => model.Embed(p.ids)).ToList();
            model.ForEachLayer(null, (i, layer) =>
            {
                for (int b = 0; b < batches.Count; b++)
                {
                    collectors[b].Collect(i, hidden[b]);
                    hidden[b] = layer.Forward(hidden[b], atts[b], null, i);
                }
            });
            for (int b = 0; b < batches.Count; b++)
            {
                collectors[b].Collect(L, hidden[b]);
                collectors[b].AddTo(sum, perSample);
                Done(batches[b].Length);
            }
            foreach (var att in atts) att.Dispose();
        }
        var mean = (sum / samples.Count).cpu();
        var matrix = new double[L + 1, L + 1];
        var data = mean.data<double>().ToArray();
        for (int a = 0; a <= L; a++) for (int b = 0; b <= L; b++) matrix[a, b] = data[a * (L + 1) + b];
        var bi = blockInfluence ? tokens!.BlockInfluenceMatrix() : null;
        return new SimilarityResult
        {
            Matrix = matrix, Samples = samples.Count, PerSample = perSample,
            BlockInfluence = bi is null ? null : Enumerable.Range(0, L).Select(i => bi[i, i + 1]).ToArray(),
            BlockInfluenceMatrix = bi,
            CkaDistance = cka ? tokens!.CkaDistance() : null,
        };
    }

    /// <summary>Right-pads a batch: ids [B, T], mask [B, T] (1 = real), index of each row's last real token [B].</summary>
    public static (Tensor ids, Tensor? mask, Tensor last) Pad(IReadOnlyList<int[]> batch, Device device)
    {
        int T = batch.Max(s => s.Length);
        var ids = new long[batch.Count * T];
        var mask = new long[batch.Count * T];
        var last = new long[batch.Count];
        for (int b = 0; b < batch.Count; b++)
        {
            if (batch[b].Length == 0) throw new LayerPruneException($"similarity: sample {b} is empty");
            for (int t = 0; t < batch[b].Length; t++) { ids[b * T + t] = batch[b][t]; mask[b * T + t] = 1; }
            last[b] = batch[b].Length - 1;
        }
        bool anyPadding = batch.Any(s => s.Length != T);
        return (tensor(ids, [batch.Count, T], device: device), anyPadding ? tensor(mask, [batch.Count, T], device: device) : null,
                tensor(last, device: device));
    }

    /// <summary>One batch's last-token states x_0 … x_L (and, for all-token metrics, the full states), folded into the totals at the
    /// end.</summary>
    sealed class BatchCollector(int layers, Tensor? mask, Tensor last, AllTokenAccumulator? tokens)
    {
        readonly Tensor[] _states = new Tensor[layers + 1];   // each [B, H] in fp64 at the last real token
        readonly Tensor[] _full = new Tensor[tokens is null ? 0 : layers + 1]; // each [B, T, H] (all-token metrics only)

        public void Collect(int k, Tensor x)
        {
            // MoveToOuterDisposeScope: the states outlive the Forward call that hands x over.
            _states[k] = x[arange(x.shape[0], device: x.device), last].to(ScalarType.Float64).MoveToOuterDisposeScope();
            if (tokens is not null) _full[k] = x.alias().MoveToOuterDisposeScope();
        }

        /// <summary>Adds Σ_batch arccos(cos(x_a, x_b))/π to <paramref name="sum"/>, each sample's matrix to <paramref name="perSample"/>,
        /// and the batch to the all-token accumulator.</summary>
        public void AddTo(Tensor sum, List<double[,]> perSample)
        {
            using var scope = NewDisposeScope();
            var x = nn.functional.normalize(stack(_states, 1), dim: -1);     // [B, L+1, H]
            var cosAll = x.bmm(x.transpose(1, 2)).clamp(-1.0, 1.0);         // [B, L+1, L+1]
            var d = cosAll.acos() / Math.PI;
            sum.add_(d.sum(dim: 0)); // not .sum(0): a literal 0 binds to the ScalarType overload
            var data = d.cpu().data<double>().ToArray();
            int n = layers + 1;
            for (int b = 0; b < d.shape[0]; b++)
            {
                var m = new double[n, n];
                for (int i = 0; i < n * n; i++) m[i / n, i % n] = data[b * n * n + i];
                perSample.Add(m);
            }
            tokens?.Add(_full, mask);
        }
    }
}
