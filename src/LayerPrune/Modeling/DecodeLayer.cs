using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using LayerPrune.Healing;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>
/// One Llama decoder layer for one new token (batch 1, T = 1) on CPU, computed in C# loops on the tensors' memory instead of
/// ~40 torch ops: RMSNorm, the fused q/k/v GEMV (<see cref="Gemv"/>), RoPE, the KV cache written in place, attention over
/// the cached positions, o_proj, the fused gate/up GEMV, SiLU·up, down_proj and both residual adds. Per token this reads
/// each weight once and dispatches a handful of parallel loops (<see cref="SpinPool"/>); llama.cpp's ggml graph does the
/// same work. The math is HF modeling_llama.py's, with the same roundings as the torch-op path
/// (<see cref="LlamaDecoderLayer.Forward"/>): values are held in fp32 and rounded to the compute dtype (bf16: nearest
/// even) wherever a torch op would return a bf16 tensor; sums are accumulated in fp32 (softmax included) in another order
/// than libtorch's, so results agree with the torch-op path to rounding (DecodeLayerTests states the tolerance).
/// <see cref="Gemv.Disabled"/> turns it off with the GEMV kernel (the torch-op reference for A/B runs).
/// </summary>
internal static unsafe class DecodeLayer
{
    /// <summary>
    /// The layer's output for x [1, 1, H], or null when this path does not apply (the caller runs the torch ops): it needs
    /// a CPU input of the layer's dtype (bf16 or fp32), no graph to record, plain weights (no LoRA, not quantized), RMSNorm,
    /// SiLU, full rotary, no sliding window and no mask (no padding), and a KV cache when the attention runs.
    /// </summary>
    public static Tensor? TryForward(LlamaDecoderLayer layer, Tensor x, AttentionInputs a, KvCache? cache, int slot)
    {
        if (Gemv.Disabled || TorchOpsOnThisThread || x.device_type != TorchSharp.DeviceType.CPU) return null;
        if (x.dim() != 3 || x.shape[0] != 1 || x.shape[1] != 1) return null;
        if (x.dtype is not (ScalarType.BFloat16 or ScalarType.Float32) || !x.is_contiguous()) return null;
        if ((is_grad_enabled() && x.requires_grad) || LayerCheckpoint.Active) return null;
        var attn = a.Skip?.SkipsAttention(layer.Index) == true ? null : layer.SelfAttn;
        var mlp = a.Skip?.SkipsMlp(layer.Index) == true ? null : layer.Mlp;
        if (attn is not null)
        {
            if (cache is null || attn.SlidingWindow is not null || a.FullMask is not null || a.Cos.dtype != x.dtype) return null;
            if (layer.InputLayernorm is not RmsNorm n || !Plain(n.Weight, x, 1) || a.Rope.RotaryDim != attn.Shape.HeadDim) return null;
            if (!Plain(attn.Q, x) || !Plain(attn.K, x) || !Plain(attn.V, x) || !Plain(attn.O, x)) return null;
            if (a.Cos.NumberOfElements != a.Rope.RotaryDim || !a.Cos.is_contiguous() || !a.SinSigned.is_contiguous()) return null;
        }
        if (mlp is not null)
        {
            if (!mlp.Silu || layer.PostAttentionLayernorm is not RmsNorm n || !Plain(n.Weight, x, 1)) return null;
            if (!Plain(mlp.GateProj, x) || !Plain(mlp.UpProj, x) || !Plain(mlp.DownProj, x)) return null;
        }
        TakenOnThisThread++;
        return Forward(x, attn, (RmsNorm?)layer.InputLayernorm, mlp, (RmsNorm?)layer.PostAttentionLayernorm, a, cache, slot,
            Threads());
    }

    /// <summary>Threads of the parallel loops: torch's intra-op count (or CpuLoops.MaxThreads when a bench sets it).</summary>
    internal static int Threads() => Split?.Threads ?? Math.Max(1, CpuLoops.MaxThreads ?? get_num_threads());

    /// <summary>Tests: layer forwards this thread computed here.</summary>
    [ThreadStatic] internal static long TakenOnThisThread;

    /// <summary>Tests: this thread's layers take the torch ops (the reference the path is compared with).</summary>
    [ThreadStatic] internal static bool TorchOpsOnThisThread;

    /// <summary>Tests: threads and the weight bytes from which a GEMV is split (default <see cref="Gemv.ParallelBytes"/>).</summary>
    [ThreadStatic] internal static (int Threads, long MinParallelBytes)? Split;

    static int ThreadsFor(Linear[] ls, int threads)
    {
        long bytes = ls.Sum(l => l.Weight!.NumberOfElements * l.Weight.ElementSize);
        return bytes < (Split?.MinParallelBytes ?? Gemv.ParallelBytes) ? 1 : threads;
    }

    static bool Plain(Linear l, Tensor x) =>
        l.Adapter is null && l.Quantized is null && l.Weight is { } w && Plain(w, x, 2) && (l.Bias is null || Plain(l.Bias, x, 1));

    static bool Plain(Tensor t, Tensor x, int dims) =>
        t.device_type == TorchSharp.DeviceType.CPU && t.dtype == x.dtype && t.dim() == dims && t.is_contiguous();

    /// <summary>fp32 scratch of the calling thread (grown as needed; a decode step allocates nothing else but its output).</summary>
    [ThreadStatic] static float[]? _scratch;

    internal static Tensor Forward(Tensor x, Attention? attn, RmsNorm? inputNorm, LlamaMlp? mlp, RmsNorm? postNorm,
        AttentionInputs a, KvCache? cache, int slot, int threads)
    {
        bool bf16 = x.dtype == ScalarType.BFloat16;
        long H = x.shape[2];
        var (heads, kvHeads, D) = attn?.Shape ?? (0, 0, 0);
        long S = attn is null ? 0 : cache!.Reserve(slot, 1, 1, kvHeads, D, x.dtype).Length + 1;
        long I = mlp?.GateProj.OutFeatures ?? 0;
        long q = (long)heads * D, kv = (long)kvHeads * D;
        // h | normed | q | k | v | attention out | o | gate | up | scores (heads × S)
        long need = 3 * H + q + 2 * kv + q + 2 * I + heads * S + Math.Max(H, I);
        if (_scratch is null || _scratch.Length < need) _scratch = new float[Math.Max(need, (_scratch?.Length ?? 0) * 2)];
        var y = empty(x.shape, x.dtype);
        fixed (float* s = _scratch)
        {
            float* h = s, normed = h + H, o = normed + Math.Max(H, I), qf = o + H, kf = qf + q, vf = kf + kv, att = vf + kv;
            float* gate = att + q, up = gate + I, scores = up + I;
            Load(CpuLoops.Address(x), h, H, bf16);
            if (attn is not null)
            {
                RmsNormInto(h, inputNorm!, normed, H, bf16);
                Gemv.Run(normed, H, [Job(attn.Q, qf, 0), Job(attn.K, kf, Gemv.BlocksOf(q)),
                    Job(attn.V, vf, Gemv.BlocksOf(q) + Gemv.BlocksOf(kv))], bf16, Gemv.VectorBits,
                    ThreadsFor([attn.Q, attn.K, attn.V], threads));
                Round(qf, q + 2 * kv, bf16);
                float* cos = stackalloc float[D], sin = stackalloc float[D];
                Load(CpuLoops.Address(a.Cos), cos, D, bf16);
                Load(CpuLoops.Address(a.SinSigned), sin, D, bf16);
                for (int hd = 0; hd < heads; hd++) Rope(qf + hd * D, cos, sin, D, bf16);
                for (int hd = 0; hd < kvHeads; hd++) Rope(kf + hd * D, cos, sin, D, bf16);
                var (keys, values, past) = cache!.Reserve(slot, 1, 1, kvHeads, D, x.dtype);
                long cap = keys.shape[2];
                nint kp = CpuLoops.Address(keys), vp = CpuLoops.Address(values);
                for (int hd = 0; hd < kvHeads; hd++)
                {
                    Store(kf + hd * D, kp, (hd * cap + past) * D, D, bf16);
                    Store(vf + hd * D, vp, (hd * cap + past) * D, D, bf16);
                }
                cache.Commit(slot, 1);
                Attend(qf, kp, vp, att, scores, heads, kvHeads, D, S, cap, bf16, threads);
                Gemv.Run(att, q, [Job(attn.O, o, 0)], bf16, Gemv.VectorBits, ThreadsFor([attn.O], threads));
                for (long i = 0; i < H; i++) h[i] = R(R(o[i], bf16) + h[i], bf16);   // residual: o_proj(..) + x, rounded once
            }
            if (mlp is not null)
            {
                RmsNormInto(h, postNorm!, normed, H, bf16);
                Gemv.Run(normed, H, [Job(mlp.GateProj, gate, 0), Job(mlp.UpProj, up, Gemv.BlocksOf(I))], bf16, Gemv.VectorBits,
                    ThreadsFor([mlp.GateProj, mlp.UpProj], threads));
                for (long i = 0; i < I; i++)
                {
                    float g = R(gate[i], bf16);
                    // act(gate) · up: SiLU g·σ(g) rounded, then the product rounded (two torch ops).
                    normed[i] = R(R(g / (1f + MathF.Exp(-g)), bf16) * R(up[i], bf16), bf16);
                }
                Gemv.Run(normed, I, [Job(mlp.DownProj, o, 0)], bf16, Gemv.VectorBits, ThreadsFor([mlp.DownProj], threads));
                for (long i = 0; i < H; i++) h[i] = R(R(o[i], bf16) + h[i], bf16);
            }
            Store(h, CpuLoops.Address(y), 0, H, bf16);
        }
        return y;

        Gemv.Job Job(Linear l, float* into, long firstBlock) => new(CpuLoops.Address(l.Weight!),
            l.Bias is null ? 0 : CpuLoops.Address(l.Bias), (nint)into, l.OutFeatures, firstBlock, Float32Out: true);
    }

    /// <summary>Value v as a tensor of the compute dtype holds it: bf16 rounds to nearest even, fp32 is unchanged.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float R(float v, bool bf16) => bf16 ? Gemv.Bf16ToFloat(Gemv.FloatToBf16(v)) : v;

    static void Round(float* p, long n, bool bf16)
    {
        if (!bf16) return;
        for (long i = 0; i < n; i++) p[i] = R(p[i], true);
    }

    static void Load(nint src, float* dst, long n, bool bf16)
    {
        if (bf16) for (long i = 0; i < n; i++) dst[i] = Gemv.Bf16ToFloat(((ushort*)src)[i]);
        else Buffer.MemoryCopy((float*)src, dst, n * 4, n * 4);
    }

    static void Store(float* src, nint dst, long offset, long n, bool bf16)
    {
        if (bf16) for (long i = 0; i < n; i++) ((ushort*)dst)[offset + i] = Gemv.FloatToBf16(src[i]);
        else Buffer.MemoryCopy(src, (float*)dst + offset, n * 4, n * 4);
    }

    /// <summary>LlamaRMSNorm: w · (x / sqrt(mean(x²) + eps)) with the normalized x rounded to the dtype, then the product.</summary>
    static void RmsNormInto(float* x, RmsNorm norm, float* into, long n, bool bf16)
    {
        double ss = 0;
        for (long i = 0; i < n; i++) ss += (double)x[i] * x[i];
        float r = 1f / MathF.Sqrt((float)(ss / n) + (float)norm.Eps);
        nint w = CpuLoops.Address(norm.Weight);
        for (long i = 0; i < n; i++)
        {
            float wi = bf16 ? Gemv.Bf16ToFloat(((ushort*)w)[i]) : ((float*)w)[i];
            into[i] = R(wi * R(x[i] * r, bf16), bf16);
        }
    }

    /// <summary>HF apply_rotary_pos_emb on one head: x·cos + rotate_half(x)·sin, each product and the sum rounded.</summary>
    static void Rope(float* x, float* cos, float* sinSigned, int d, bool bf16)
    {
        int half = d / 2;
        float* y = stackalloc float[d];
        for (int j = 0; j < d; j++)
        {
            float swapped = x[j < half ? j + half : j - half];   // roll(x, d/2) = cat(x2, x1)
            y[j] = R(R(x[j] * cos[j], bf16) + R(swapped * sinSigned[j], bf16), bf16);
        }
        for (int j = 0; j < d; j++) x[j] = y[j];
    }

    /// <summary>
    /// softmax(q·kᵀ/√d)·v for each query head over the S cached positions (grouped-query: head h reads kv head h / (heads /
    /// kvHeads)), in fp32; keys and values are [kvHeads, cap, d] in the dtype. The output is rounded to the dtype.
    /// </summary>
    static void Attend(float* qf, nint keys, nint values, float* att, float* scores, int heads, int kvHeads, int d, long S,
        long cap, bool bf16, int threads)
    {
        nint qp = (nint)qf, ap = (nint)att, sp = (nint)scores;
        int group = heads / kvHeads;
        float scale = 1f / MathF.Sqrt(d);
        void Head(int hd)
        {
            float* qh = (float*)qp + hd * d, out_ = (float*)ap + hd * d, sc = (float*)sp + hd * S;
            long kvOff = (long)(hd / group) * cap * d;
            float max = float.NegativeInfinity;
            for (long j = 0; j < S; j++)
            {
                float dot = bf16 ? DotBf16(qh, (ushort*)keys + kvOff + j * d, d) : Dot(qh, (float*)keys + kvOff + j * d, d);
                sc[j] = dot * scale;
                if (sc[j] > max) max = sc[j];
            }
            float sum = 0;
            for (long j = 0; j < S; j++) sum += sc[j] = MathF.Exp(sc[j] - max);
            for (int t = 0; t < d; t++) out_[t] = 0;
            for (long j = 0; j < S; j++)
            {
                float p = sc[j] / sum;
                if (bf16)
                {
                    ushort* v = (ushort*)values + kvOff + j * d;
                    for (int t = 0; t < d; t++) out_[t] = MathF.FusedMultiplyAdd(p, Gemv.Bf16ToFloat(v[t]), out_[t]);
                }
                else
                {
                    float* v = (float*)values + kvOff + j * d;
                    Axpy(p, v, out_, d);
                }
            }
            Round(out_, d, bf16);
        }
        // Attention reads S·d·kvHeads·2 cached values: worth a parallel loop only for long contexts.
        if (threads > 1 && S * heads * d >= (Split is null ? 1 << 16 : 0)) SpinPool.For(heads, threads, Head);
        else for (int hd = 0; hd < heads; hd++) Head(hd);
    }

    static float Dot(float* a, float* b, int n)
    {
        int i = 0;
        var acc = Vector256<float>.Zero;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= n; i += 8) acc += Vector256.Load(a + i) * Vector256.Load(b + i);
        float s = Vector256.Sum(acc);
        for (; i < n; i++) s += a[i] * b[i];
        return s;
    }

    static float DotBf16(float* a, ushort* b, int n)
    {
        int i = 0;
        var acc = Vector256<float>.Zero;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= n; i += 8)
            {
                var w = Vector128.Load(b + i);   // 8 bf16 → fp32: zero-extend and shift into the high half
                var wide = Vector256.Create(Vector128.WidenLower(w), Vector128.WidenUpper(w));
                acc += Vector256.Load(a + i) * Vector256.ShiftLeft(wide, 16).AsSingle();
            }
        float s = Vector256.Sum(acc);
        for (; i < n; i++) s += a[i] * Gemv.Bf16ToFloat(b[i]);
        return s;
    }

    static void Axpy(float p, float* v, float* y, int n)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var pv = Vector256.Create(p);
            for (; i + 8 <= n; i += 8) (Vector256.Load(y + i) + pv * Vector256.Load(v + i)).Store(y + i);
        }
        for (; i < n; i++) y[i] = MathF.FusedMultiplyAdd(p, v[i], y[i]);
    }
}
