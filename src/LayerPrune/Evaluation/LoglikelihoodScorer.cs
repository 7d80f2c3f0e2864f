using LayerPrune.Modeling;
using LayerPrune.Planning;
using static TorchSharp.torch;

namespace LayerPrune.Evaluation;

/// <summary>lm-eval's loglikelihood response: the summed log-probability of the continuation and is_greedy.</summary>
public readonly record struct Loglikelihood(double LogProb, bool IsGreedy);

/// <summary>
/// Sums of continuation log-probabilities, as lm-evaluation-harness's loglikelihood: for a request (context, continuation)
/// the score is Σᵢ log P(contᵢ | context, cont₍&lt;ᵢ₎). Logits at position p predict token p+1.
/// </summary>
public sealed class LoglikelihoodScorer(CausalLM model, int batchSize = 8, IReadOnlyList<int>? layers = null)
{
    /// <summary>Score every continuation of a group of items sharing one context (the choices of one question).</summary>
    /// <param name="reusePrefix">Run the longest common prefix of an item's choices once and continue each choice from
    /// its KV cache (the harness recomputes the context per choice; results agree to float rounding).</param>
    /// <param name="items">The items; each holds the requests (choices) sharing one context.</param>
    /// <param name="onItemsDone">Called with the number of items scored so far; null for none.</param>
    /// <remarks>An offloaded model runs layer-major over groups of batches (each layer read from the checkpoint once per
    /// group, <see cref="MemoryPlanner.StreamGroupBytes"/> of residual streams); the scores are the resident model's.</remarks>
    public List<double[]> Score(IReadOnlyList<IReadOnlyList<LoglikelihoodRequest>> items, bool reusePrefix = true,
        Action<int>? onItemsDone = null) =>
        ScoreDetailed(items, reusePrefix, onItemsDone).Select(r => r.Select(x => x.LogProb).ToArray()).ToList();

    /// <summary><see cref="Score"/> with lm-eval's second response, is_greedy: whether every continuation token is the
    /// argmax of its logits (HFLM._loglikelihood_tokens: <c>max_equal = (greedy_tokens == cont_toks).all()</c>).</summary>
    public List<Loglikelihood[]> ScoreDetailed(IReadOnlyList<IReadOnlyList<LoglikelihoodRequest>> items, bool reusePrefix = true,
        Action<int>? onItemsDone = null)
    {
        var results = new Loglikelihood[items.Count][];
        // Longest items first (the harness sorts by length too): padding waste stays small and OOM shows up early.
        var order = Enumerable.Range(0, items.Count)
            .OrderByDescending(i => items[i].Max(r => r.ContextIds.Length + r.ContinuationIds.Length)).ToList();
        using var _ = no_grad();
        if (reusePrefix)
        {
            var batches = order.Chunk(Math.Max(1, batchSize)).ToList();
            foreach (var group in Groups(batches, g => g.Sum(i => items[i].Count * (long)items[i].Max(Length))))
            {
                using var scope = NewDisposeScope();
                var built = group.Select(g => PrefixBatch.Build(g.Select(i => items[i]).ToList())).ToList();
                var hidden = model.Offloaded ? StreamPrefixBatches(built) : built.Select(RunResident).ToList();
                for (int b = 0; b < group.Count; b++)
                {
                    var scores = Gather(built[b], hidden[b].prefix, hidden[b].rest);
                    for (int k = 0; k < group[b].Length; k++) results[group[b][k]] = scores[k];
                    onItemsDone?.Invoke(group[b].Length);
                }
            }
        }
        else
        {
            // From scratch: every (item, choice) is one full sequence; batches of batchSize sequences.
            var flat = order.SelectMany(i => items[i].Select((r, c) => (i, c, r))).ToList();
            foreach (var i in order) results[i] = new Loglikelihood[items[i].Count];
            var batches = flat.Chunk(Math.Max(1, batchSize)).ToList();
            foreach (var group in Groups(batches, g => g.Length * (long)g.Max(x => Length(x.r))))
            {
                using var scope = NewDisposeScope();
                var requests = group.Select(g => g.Select(x => x.r).ToList()).ToList();
                var inputs = requests.Select(FullInputs).ToList();
                var hidden = model.Offloaded
                    ? LossEvaluator.StreamHidden(model, inputs, layers)
                    : inputs.Select(ids => model.Forward(ids, options: Hidden)).ToList();
                for (int b = 0; b < group.Count; b++)
                {
                    var scores = GatherFull(requests[b], hidden[b]);
                    for (int k = 0; k < group[b].Length; k++) results[group[b][k].i][group[b][k].c] = scores[k];
                    onItemsDone?.Invoke(group[b].Count(x => x.c == items[x.i].Count - 1));
                }
            }
        }
        return results.ToList();
    }

    ForwardOptions Hidden => new() { Layers = layers, HiddenOnly = true };
    KvCache NewCache() => new(layers?.Count ?? model.NumLayers);
    static int Length(LoglikelihoodRequest r) => r.ContextIds.Length + r.ContinuationIds.Length;

    /// <summary>
    /// Batches to run together: one each when resident; when offloaded, consecutive batches whose residual streams
    /// (<paramref name="tokens"/> × hidden size) stay within <see cref="MemoryPlanner.StreamGroupBytes"/>.
    /// </summary>
    List<List<T[]>> Groups<T>(List<T[]> batches, Func<T[], long> tokens)
    {
        if (!model.Offloaded) return batches.Select(b => new List<T[]> { b }).ToList();
        long bytesPerToken = model.Config.HiddenSize * (long)(model.Dtype == ScalarType.Float32 ? 4 : 2);
        var groups = new List<List<T[]>>();
        long used = 0;
        foreach (var b in batches)
        {
            long bytes = tokens(b) * bytesPerToken;
            if (groups.Count == 0 || used + bytes > MemoryPlanner.StreamGroupBytes)
            {
                groups.Add([]);
                used = 0;
            }
            groups[^1].Add(b);
            used += bytes;
        }
        return groups;
    }

    /// <summary>Each request as one right-padded row without its last token (causal attention: real tokens never see the
    /// padding after them): ids [N, T].</summary>
    static Tensor FullInputs(List<LoglikelihoodRequest> requests)
    {
        var seqs = requests.Select(r => r.ContextIds.Concat(r.ContinuationIds).ToArray()).ToList();
        return PadRight(seqs.Select(s => s[..^1]).ToList(), seqs.Max(s => s.Length) - 1);
    }

    /// <summary>Sums of continuation log-probabilities from the hidden states [N, T, H] of <see cref="FullInputs"/>.</summary>
    Loglikelihood[] GatherFull(List<LoglikelihoodRequest> requests, Tensor hidden)
    {
        var seqs = requests.Select(r => r.ContextIds.Concat(r.ContinuationIds).ToArray()).ToList();
        long T = hidden.shape[1];
        var rows = new List<long>();
        var targets = new List<long>();
        var owner = new List<int>();
        for (int n = 0; n < seqs.Count; n++)
            for (int p = requests[n].ContextIds.Length - 1; p < seqs[n].Length - 1; p++)
            {
                rows.Add(n * T + p);
                targets.Add(seqs[n][p + 1]);
                owner.Add(n);
            }
        return SumLogProbs(hidden.reshape(-1, hidden.shape[2]), rows, targets, owner, requests.Count);
    }

    /// <summary>
    /// Items × choices with prefix reuse, as tensors: pass 1 runs each item's common prefix (right-padded batch of items)
    /// into a KV cache; pass 2 runs every choice's remaining tokens from its item's cache rows, with a mask hiding prefix
    /// padding.
    /// </summary>
    sealed class PrefixBatch
    {
        public required List<IReadOnlyList<LoglikelihoodRequest>> Items;
        public required List<List<int[]>> Seqs;
        public required int[] PrefixLen;
        public required int P, R;
        public required Tensor PrefixIds, PrefixMask;   // [D, P]
        public required Tensor RestIds;                 // [N, R] (one row per (item, choice))
        public required Tensor Mask;                    // [N, P + R]
        public required Tensor ItemOfRow;               // [N]

        public static PrefixBatch Build(List<IReadOnlyList<LoglikelihoodRequest>> items)
        {
            var seqs = items.Select(reqs => reqs.Select(r => r.ContextIds.Concat(r.ContinuationIds).ToArray()).ToList()).ToList();
            // Prefix length per item: common prefix of its choices, leaving ≥ 1 token per choice for pass 2.
            var prefixLen = seqs.Select(s => Math.Max(1, Math.Min(CommonPrefix(s), s.Min(x => x.Length) - 1))).ToArray();
            int P = prefixLen.Max();
            var prefixMask = zeros(items.Count, P, dtype: ScalarType.Int64);
            for (int d = 0; d < items.Count; d++)
                prefixMask[d, TensorIndex.Slice(0, prefixLen[d])] = tensor(1L);
            var prefixIds = PadRight(seqs.Select((s, d) => s[0][..prefixLen[d]]).ToList(), P);
            // Pass 2: one row per (item, choice): tokens prefixLen .. len−2 (the last token is only a target).
            var rowsOf = seqs.SelectMany((s, d) => s.Select(x => (d, x))).ToList();
            int R = Math.Max(1, rowsOf.Max(r => r.x.Length - 1 - prefixLen[r.d]));
            var restMask = zeros(rowsOf.Count, R, dtype: ScalarType.Int64);
            for (int n = 0; n < rowsOf.Count; n++)
                restMask[n, TensorIndex.Slice(0, rowsOf[n].x.Length - 1 - prefixLen[rowsOf[n].d])] = tensor(1L);
            var itemOfRow = tensor(rowsOf.Select(r => (long)r.d).ToArray());
            var restIds = PadRight(rowsOf.Select(r => r.x[prefixLen[r.d]..^1]).ToList(), R);
            var mask = cat([prefixMask.index_select(0, itemOfRow), restMask], 1);
            return new PrefixBatch
            {
                Items = items, Seqs = seqs, PrefixLen = prefixLen, P = P, R = R, PrefixIds = prefixIds, PrefixMask = prefixMask,
                RestIds = restIds, Mask = mask, ItemOfRow = itemOfRow,
            };
        }
    }

    /// <summary>Both passes of one batch with the resident model: hidden [D, P, H] and [N, R, H].</summary>
    (Tensor prefix, Tensor rest) RunResident(PrefixBatch b)
    {
        if (model.PrefixCache is { } shared && model.Skip is null) // the sweep's shared layer prefixes; the same hidden states
            return LoglikelihoodPrefixSharing.Forward(model, layers, shared, b.PrefixIds, b.PrefixMask, b.RestIds, b.Mask, b.ItemOfRow);
        using var cache = NewCache();
        var prefixHidden = model.Forward(b.PrefixIds, b.PrefixMask, cache, Hidden);   // [D, P, H]
        using var rowCache = cache.Select(b.ItemOfRow);
        var restHidden = model.Forward(b.RestIds, b.Mask, rowCache, Hidden);         // [N, R, H]
        return (prefixHidden, restHidden);
    }

    /// <summary>
    /// Both passes of every batch layer-major: each layer is applied to every batch's prefix, its cache slot copied to the
    /// choice rows, then to the choices; a slot is freed once used, so the caches never hold more than one layer.
    /// </summary>
    List<(Tensor prefix, Tensor rest)> StreamPrefixBatches(List<PrefixBatch> batches)
    {
        var prefixAtt = batches.Select(b => model.PrepareAttention(b.PrefixIds.shape[0], b.P, 0, b.PrefixMask)).ToList();
        var restAtt = batches.Select(b => model.PrepareAttention(b.RestIds.shape[0], b.R, b.P, b.Mask)).ToList();
        var caches = batches.Select(_ => NewCache()).ToList();
        var rowCaches = batches.Select(_ => NewCache()).ToList();
        var prefix = batches.Select(b => model.Embed(b.PrefixIds)).ToList();
        var rest = batches.Select(b => model.Embed(b.RestIds)).ToList();
        try
        {
            model.ForEachLayer(layers, (k, layer) =>
            {
                for (int b = 0; b < batches.Count; b++)
                {
                    var p = layer.Forward(prefix[b], prefixAtt[b], caches[b], k);
                    prefix[b].Dispose();
                    prefix[b] = p;
                    rowCaches[b].SelectSlot(k, caches[b], batches[b].ItemOfRow);
                    caches[b].ReleaseSlot(k);
                    var r = layer.Forward(rest[b], restAtt[b], rowCaches[b], k);
                    rest[b].Dispose();
                    rest[b] = r;
                    rowCaches[b].ReleaseSlot(k);
                }
            });
        }
        finally
        {
            foreach (var d in prefixAtt.Concat(restAtt)) d.Dispose();
            foreach (var c in caches.Concat(rowCaches)) c.Dispose();
        }
        return prefix.Zip(rest).ToList();
    }

    /// <summary>Sums per (item, choice) of a batch from its hidden states: each continuation token's predicting state comes
    /// from the prefix pass or the choice pass.</summary>
    List<Loglikelihood[]> Gather(PrefixBatch b, Tensor prefixHidden, Tensor restHidden)
    {
        using var scope = NewDisposeScope();
        var all = cat([prefixHidden.reshape(-1, prefixHidden.shape[2]), restHidden.reshape(-1, restHidden.shape[2])], 0);
        long restBase = (long)b.Items.Count * b.P;
        var rows = new List<long>();
        var targets = new List<long>();
        var owner = new List<int>();
        int row = 0;
        var flatItem = new List<(int d, int c)>();
        for (int d = 0; d < b.Items.Count; d++)
            for (int c = 0; c < b.Seqs[d].Count; c++, row++)
            {
                flatItem.Add((d, c));
                var s = b.Seqs[d][c];
                for (int p = b.Items[d][c].ContextIds.Length - 1; p < s.Length - 1; p++)
                {
                    rows.Add(p < b.PrefixLen[d] ? (long)d * b.P + p : restBase + (long)row * b.R + (p - b.PrefixLen[d]));
                    targets.Add(s[p + 1]);
                    owner.Add(row);
                }
            }
        var sums = SumLogProbs(all, rows, targets, owner, row);
        var result = b.Seqs.Select(s => new Loglikelihood[s.Count]).ToList();
        for (int n = 0; n < flatItem.Count; n++) result[flatItem[n].d][flatItem[n].c] = sums[n];
        return result;
    }

    /// <summary>log_softmax (fp32) of the logits of the selected hidden rows at their target tokens, summed per owner
    /// (lm_head applied in chunks of rows, <see cref="TokenLogProbs"/>), and whether every target was the argmax.</summary>
    Loglikelihood[] SumLogProbs(Tensor flatHidden, List<long> rows, List<long> targets, List<int> owner, int owners)
    {
        using var scope = NewDisposeScope();
        var h = flatHidden.index_select(0, tensor(rows.ToArray(), device: flatHidden.device));   // [K, H]
        var (logp, isMax) = TokenLogProbs.GatherWithGreedy(model, h, tensor(targets.ToArray()));
        var values = logp.to(ScalarType.Float64).cpu().data<double>().ToArray();
        var greedy = isMax.cpu().data<bool>().ToArray();
        var sums = new double[owners];
        var allGreedy = Enumerable.Repeat(true, owners).ToArray();
        for (int k = 0; k < values.Length; k++)
        {
            sums[owner[k]] += values[k];
            allGreedy[owner[k]] &= greedy[k];
        }
        return sums.Select((s, i) => new Loglikelihood(s, allGreedy[i])).ToArray();
    }

    static int CommonPrefix(List<int[]> seqs)
    {
        int n = seqs.Min(s => s.Length);
        for (int i = 0; i < n; i++)
            if (seqs.Any(s => s[i] != seqs[0][i]))
                return i;
        return n;
    }

    static Tensor PadRight(List<int[]> seqs, int T)
    {
        var ids = new long[seqs.Count * T];
        for (int n = 0; n < seqs.Count; n++)
            for (int t = 0; t < seqs[n].Length; t++)
                ids[n * T + t] = seqs[n][t];
        return tensor(ids, [seqs.Count, T]);
    }
}
