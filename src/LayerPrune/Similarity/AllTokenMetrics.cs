using static TorchSharp.torch;

namespace LayerPrune.Similarity;

/// <summary>The block-similarity measures a similarity pass can rank blocks by.</summary>
public enum SimilarityMetric
{
    /// <summary>The paper's angular distance arccos(cos(x_l, x_{l+n}))/π at each sample's last real token.</summary>
    Angular,
    /// <summary>ShortGPT's Block Influence generalised to blocks: mean over all valid tokens of 1 − cos(x_l, x_{l+n}).</summary>
    BlockInfluence,
    /// <summary>1 − linear CKA (Kornblith et al. 2019) between x_l and x_{l+n}, all valid tokens as the examples.</summary>
    Cka,
}

/// <summary>Names of <see cref="SimilarityMetric"/> as used in files and on the command line.</summary>
public static class SimilarityMetrics
{
    /// <summary>angular | bi | cka.</summary>
    public static string Name(SimilarityMetric m) => m switch
    {
        SimilarityMetric.Angular => "angular",
        SimilarityMetric.BlockInfluence => "bi",
        _ => "cka",
    };

    /// <summary>Parses angular | bi | cka; null for anything else.</summary>
    public static SimilarityMetric? Parse(string name) => name.ToLowerInvariant() switch
    {
        "angular" => SimilarityMetric.Angular,
        "bi" => SimilarityMetric.BlockInfluence,
        "cka" => SimilarityMetric.Cka,
        _ => null,
    };
}

/// <summary>
/// Accumulates, over all valid (non-padding) tokens of every batch, Σ (1 − cos(x_a, x_b)) for every pair of residual
/// states and the centred cross-covariances that linear CKA needs, so both come from the same single pass.
/// Linear CKA(X, Y) = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F) with X, Y column-centred [N, H] (N = all valid tokens). The
/// cross-covariances of all L+1 states are held as one ((L+1)·H)² fp64 matrix: memory grows with (L·H)², so CKA is for
/// models up to a few thousand hidden units × a few dozen layers.
/// </summary>
internal sealed class AllTokenAccumulator : IDisposable
{
    /// <summary>Largest cross-covariance the CKA accumulator allocates (bytes).</summary>
    public const long MaxCkaBytes = 8L << 30;

    readonly int _states, _hidden;
    readonly Tensor? _biSum;      // [L+1, L+1]
    readonly Tensor? _gram;       // [(L+1)H, (L+1)H] Σ (z − r)(z − r)ᵀ
    readonly Tensor? _colSum;     // [(L+1)H] Σ (z − r)
    Tensor? _shift;               // r: the first batch's mean (keeps the centring well-conditioned)
    double _tokens;

    public AllTokenAccumulator(int layers, int hidden, bool blockInfluence, bool cka, Device device)
    {
        _states = layers + 1;
        _hidden = hidden;
        if (blockInfluence) _biSum = zeros(_states, _states, dtype: ScalarType.Float64, device: device);
        if (!cka) return;
        long width = (long)_states * hidden;
        if (width * width * 8 > MaxCkaBytes)
            throw new LayerPruneException($"cka: the cross-covariance of {_states} states × {hidden} hidden units needs " +
                                          $"{width * width * 8 / (1L << 30)} GiB (limit {MaxCkaBytes >> 30} GiB)");
        _gram = zeros(width, width, dtype: ScalarType.Float64, device: device);
        _colSum = zeros(width, dtype: ScalarType.Float64, device: device);
    }

    public bool Cka => _gram is not null;
    public bool BlockInfluence => _biSum is not null;

    /// <summary>Adds one batch: <paramref name="states"/> x_0 … x_L each [B, T, H]; mask [B, T] (1 = real) or null.</summary>
    public void Add(Tensor[] states, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        long B = states[0].shape[0], T = states[0].shape[1];
        var x = stack(states, 2).to(ScalarType.Float64).reshape(B * T, _states, _hidden);   // [B·T, L+1, H]
        var valid = mask is null ? arange(B * T, device: x.device) : mask.reshape(-1).nonzero().squeeze(1);
        var z = x.index_select(0, valid);                                                   // [N, L+1, H]
        _tokens += z.shape[0];
        if (_biSum is not null)
        {
            var u = nn.functional.normalize(z, dim: -1);
            _biSum.add_((1 - u.bmm(u.transpose(1, 2))).sum(dim: 0));                        // Σ_t 1 − cos
        }
        if (_gram is not null)
        {
            var flat = z.reshape(z.shape[0], -1);                                           // [N, (L+1)H]
            _shift ??= flat.mean([0]).DetachFromDisposeScope(); // lives as long as the accumulator
            var c = flat - _shift;
            _gram.add_(c.t().mm(c));
            _colSum!.add_(c.sum(dim: 0));
        }
    }

    /// <summary>Mean over all valid tokens of 1 − cos(x_a, x_b), [L+1, L+1].</summary>
    public double[,] BlockInfluenceMatrix()
    {
        using var mean = _biSum! / _tokens;
        return ToArray(mean);
    }

    /// <summary>1 − linear CKA(x_a, x_b), [L+1, L+1] (0 on the diagonal).</summary>
    public double[,] CkaDistance()
    {
        using var scope = NewDisposeScope();
        var cov = _gram! - _colSum!.outer(_colSum!) / _tokens;                              // centred Σ, [(L+1)H, (L+1)H]
        var hsic = cov.view(_states, _hidden, _states, _hidden).pow(2).sum([1, 3]);          // ‖X_bᵀ X_a‖²_F, [L+1, L+1]
        var self = hsic.diagonal().sqrt();
        var cka = hsic / self.outer(self);
        return ToArray(1 - cka);
    }

    static double[,] ToArray(Tensor t)
    {
        var cpu = t.cpu();
        int n = (int)cpu.shape[0];
        var data = cpu.data<double>().ToArray();
        var m = new double[n, n];
        for (int a = 0; a < n; a++) for (int b = 0; b < n; b++) m[a, b] = data[a * n + b];
        return m;
    }

    public void Dispose()
    {
        _biSum?.Dispose();
        _gram?.Dispose();
        _colSum?.Dispose();
        _shift?.Dispose();
    }
}
