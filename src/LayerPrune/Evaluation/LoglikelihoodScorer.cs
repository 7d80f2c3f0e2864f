using LayerPrune.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Evaluation;

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
    public List<double[]> Score(IReadOnlyList<IReadOnlyList<LoglikelihoodRequest>> items, bool reusePrefix = true,
        Action<int>? onItemsDone = null)
    {
        var results = new double[items.Count][];
        // Longest items first (the harness sorts by length too): padding waste stays small and OOM shows up early.
        var order = Enumerable.Range(0, items.Count)
            .OrderByDescending(i => items[i].Max(r => r.ContextIds.Length + r.ContinuationIds.Length)).ToList();
        using var _ = no_grad();
        if (reusePrefix)
        {
            foreach (var group in order.Chunk(Math.Max(1, batchSize)))
            {
                var scores = ScoreWithSharedPrefix(group.Select(i => items[i]).ToList());
                for (int k = 0; k < group.Length; k++) results[group[k]] = scores[k];
                onItemsDone?.Invoke(group.Length);
            }
        }
        else
        {
            // From scratch: every (item, choice) is one full sequence; batches of batchSize sequences.
            var flat = order.SelectMany(i => items[i].Select((r, c) => (i, c, r))).ToList();
            foreach (var i in order) results[i] = new double[items[i].Count];
            foreach (var chunk in flat.Chunk(Math.Max(1, batchSize)))
            {
                var scores = ScoreFull(chunk.Select(x => x.r).ToList());
                for (int k = 0; k < chunk.Length; k++) results[chunk[k].i][chunk[k].c] = scores[k];
                onItemsDone?.Invoke(chunk.Count(x => x.c == items[x.i].Count - 1));
            }
        }
        return results.ToList();
    }

    ForwardOptions Hidden => new() { Layers = layers, HiddenOnly = true };
    KvCache NewCache() => new(layers?.Count ?? model.NumLayers);

    /// <summary>Each request as one right-padded row (causal attention: real tokens never see the padding after them).</summary>
    double[] ScoreFull(List<LoglikelihoodRequest> requests)
    {
        using var scope = NewDisposeScope();
        var seqs = requests.Select(r => r.ContextIds.Concat(r.ContinuationIds).ToArray()).ToList();
        int T = seqs.Max(s => s.Length) - 1;
        var hidden = model.Forward(PadRight(seqs.Select(s => s[..^1]).ToList(), T), options: Hidden); // [N, T, H]
        var rows = new List<long>();
        var targets = new List<long>();
        var owner = new List<int>();
        for (int n = 0; n < seqs.Count; n++)
            for (int p = requests[n].ContextIds.Length - 1; p < seqs[n].Length - 1; p++)
            {
                rows.Add((long)n * T + p);
                targets.Add(seqs[n][p + 1]);
                owner.Add(n);
            }
        return SumLogProbs(hidden.reshape(-1, hidden.shape[2]), rows, targets, owner, requests.Count);
    }

    /// <summary>
    /// Items × choices with prefix reuse: pass 1 runs each item's common prefix (right-padded batch of items) into a KV
    /// cache; pass 2 runs every choice's remaining tokens from its item's cache rows, with a mask hiding prefix padding.
    /// </summary>
    List<double[]> ScoreWithSharedPrefix(List<IReadOnlyList<LoglikelihoodRequest>> items)
    {
        using var scope = NewDisposeScope();
        var seqs = items.Select(reqs => reqs.Select(r => r.ContextIds.Concat(r.ContinuationIds).ToArray()).ToList()).ToList();
        // Prefix length per item: common prefix of its choices, leaving ≥ 1 token per choice for pass 2.
        var prefixLen = seqs.Select(s => Math.Max(1, Math.Min(CommonPrefix(s), s.Min(x => x.Length) - 1))).ToArray();
        int P = prefixLen.Max();
        var prefixMask = zeros(items.Count, P, dtype: ScalarType.Int64);
        for (int d = 0; d < items.Count; d++)
            prefixMask[d, TensorIndex.Slice(0, prefixLen[d])] = tensor(1L);
        using var cache = NewCache();
        var prefixIds = PadRight(seqs.Select((s, d) => s[0][..prefixLen[d]]).ToList(), P);
        var prefixHidden = model.Forward(prefixIds, prefixMask, cache, Hidden); // [D, P, H]

        // Pass 2: one row per (item, choice): tokens prefixLen .. len−2 (the last token is only a target).
        var rowsOf = seqs.SelectMany((s, d) => s.Select(x => (d, x))).ToList();
        int R = Math.Max(1, rowsOf.Max(r => r.x.Length - 1 - prefixLen[r.d]));
        var restMask = zeros(rowsOf.Count, R, dtype: ScalarType.Int64);
        for (int n = 0; n < rowsOf.Count; n++)
            restMask[n, TensorIndex.Slice(0, rowsOf[n].x.Length - 1 - prefixLen[rowsOf[n].d])] = tensor(1L);
        var itemOfRow = tensor(rowsOf.Select(r => (long)r.d).ToArray());
        using var rowCache = cache.Select(itemOfRow);
        var restIds = PadRight(rowsOf.Select(r => r.x[prefixLen[r.d]..^1]).ToList(), R);
        var mask = cat([prefixMask.index_select(0, itemOfRow), restMask], 1);
        var restHidden = model.Forward(restIds, mask, rowCache, Hidden); // [N, R, H]

        // Gather the hidden state predicting each continuation token: from the prefix pass or the choice pass.
        var all = cat([prefixHidden.reshape(-1, prefixHidden.shape[2]), restHidden.reshape(-1, restHidden.shape[2])], 0);
        long restBase = (long)items.Count * P;
        var rows = new List<long>();
        var targets = new List<long>();
        var owner = new List<int>();
        int row = 0;
        var flatItem = new List<(int d, int c)>();
        for (int d = 0; d < items.Count; d++)
            for (int c = 0; c < seqs[d].Count; c++, row++)
            {
                flatItem.Add((d, c));
                var s = seqs[d][c];
                for (int p = items[d][c].ContextIds.Length - 1; p < s.Length - 1; p++)
                {
                    rows.Add(p < prefixLen[d] ? (long)d * P + p : restBase + (long)row * R + (p - prefixLen[d]));
                    targets.Add(s[p + 1]);
                    owner.Add(row);
                }
            }
        var sums = SumLogProbs(all, rows, targets, owner, row);
        var result = seqs.Select(s => new double[s.Count]).ToList();
        for (int n = 0; n < flatItem.Count; n++) result[flatItem[n].d][flatItem[n].c] = sums[n];
        return result;
    }

    /// <summary>log_softmax (fp32) of the logits of the selected hidden rows at their target tokens, summed per owner.</summary>
    double[] SumLogProbs(Tensor flatHidden, List<long> rows, List<long> targets, List<int> owner, int owners)
    {
        using var scope = NewDisposeScope();
        var h = flatHidden.index_select(0, tensor(rows.ToArray(), device: flatHidden.device)).unsqueeze(0);   // [1, K, H]
        var logProbs = model.Head(h)[0].to(ScalarType.Float32).log_softmax(-1);                               // [K, V]
        var index = tensor(targets.ToArray(), device: logProbs.device).unsqueeze(1);                          // [K, 1]
        var picked = logProbs.gather(1, index).squeeze(1).to(ScalarType.Float64).cpu();                       // [K]
        var values = picked.data<double>().ToArray();
        var sums = new double[owners];
        for (int k = 0; k < values.Length; k++) sums[owner[k]] += values[k];
        return sums;
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
