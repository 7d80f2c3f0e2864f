namespace LayerPrune.Tokenization;

/// <summary>
/// The BPE merge loop shared by SentencePiece-BPE and rank-based (HF/GPT-2) BPE: repeatedly merge the adjacent
/// pair with the best (lowest) priority; equal priorities go to the leftmost pair, as in SentencePiece's
/// bpe_model.cc (SymbolPairComparator) and HF tokenizers' word.rs (ordered by rank, then position).
/// </summary>
internal static class BpeMerger
{
    /// <summary>Returns true when (left, right) merge into <paramref name="merged"/> with <paramref name="priority"/> (lower
    /// first).</summary>
    public delegate bool PairLookup(int left, int right, out double priority, out int merged);

    /// <summary>Merges <paramref name="symbols"/> in place.</summary>
    public static void Merge(List<int> symbols, PairLookup lookup)
    {
        int n = symbols.Count;
        if (n < 2) return;
        var ids = symbols.ToArray();
        var next = new int[n];
        var prev = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++) { next[i] = i + 1 < n ? i + 1 : -1; prev[i] = i - 1; alive[i] = true; }
        var queue = new PriorityQueue<(int Pos, int Right, int LeftId, int RightId, int Merged), (double, int)>();
        void Push(int l, int r)
        {
            if (l < 0 || r < 0) return;
            if (lookup(ids[l], ids[r], out double p, out int m)) queue.Enqueue((l, r, ids[l], ids[r], m), (p, l));
        }
        for (int i = 0; i + 1 < n; i++) Push(i, i + 1);
        while (queue.TryDequeue(out var e, out _))
        {
            // Stale entries: a symbol only changes id by growing, so equal ids at the same linked positions mean unchanged.
            if (!alive[e.Pos] || !alive[e.Right] || next[e.Pos] != e.Right || ids[e.Pos] != e.LeftId || ids[e.Right] != e.RightId) continue;
            ids[e.Pos] = e.Merged;
            alive[e.Right] = false;
            next[e.Pos] = next[e.Right];
            if (next[e.Pos] >= 0) prev[next[e.Pos]] = e.Pos;
            Push(prev[e.Pos], e.Pos);
            Push(e.Pos, next[e.Pos]);
        }
        symbols.Clear();
        for (int i = 0; i >= 0; i = next[i]) symbols.Add(ids[i]);
    }
}
