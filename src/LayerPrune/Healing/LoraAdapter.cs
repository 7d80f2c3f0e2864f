using LayerPrune.Modeling;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>
/// A LoRA adapter with PEFT semantics (peft/tuners/lora/layer.py, LoraLayer + Linear):
/// delta(x) = lora_B(lora_A(dropout(x))) · scaling, A: [r, in], B: [out, r], scaling = alpha/r (alpha/√r with rsLoRA).
/// A is initialised like nn.init.kaiming_uniform_(A, a=√5), B with zeros, so a fresh adapter adds exactly 0.
/// </summary>
public sealed class LoraAdapter : ILinearAdapter
{
    /// <summary>lora_A weight [r, in].</summary>
    public Parameter A { get; }
    /// <summary>lora_B weight [out, r].</summary>
    public Parameter B { get; }
    /// <summary>The rank r.</summary>
    public int Rank { get; }
    /// <summary>lora_alpha.</summary>
    public double Alpha { get; }
    /// <summary>Whether scaling is alpha/√r (rsLoRA) instead of alpha/r.</summary>
    public bool UseRsLora { get; }
    /// <summary>The factor applied to B(A(x)).</summary>
    public double Scaling { get; }
    /// <summary>Dropout probability on the adapter input.</summary>
    public double DropoutP { get; }
    /// <summary>Dropout on the adapter input is applied only while training (nn.Dropout semantics).</summary>
    public bool Training { get; set; } = true;
    /// <summary>
    /// When set, training-mode dropout draws from this generator (one seed per call on CPU, see <see cref="LoraDropout"/>)
    /// instead of torch's global RNG, so a run is reproducible and resumable from the generator state.
    /// </summary>
    public Generator? DropoutGenerator { get; set; }

    /// <summary>Input features of the adapted linear.</summary>
    public long InFeatures => A.shape[1];
    /// <summary>Output features of the adapted linear.</summary>
    public long OutFeatures => B.shape[0];

    /// <summary>A fresh adapter: A ~ kaiming_uniform_(a=√5) drawn from <paramref name="generator"/>, B = 0.</summary>
    public LoraAdapter(long inFeatures, long outFeatures, int r, double alpha, double dropout = 0.0, bool useRsLora = false,
        Generator? generator = null, ScalarType dtype = ScalarType.Float32, Device? device = null)
        : this(InitA(r, inFeatures, generator, dtype, device), zeros(outFeatures, r, dtype: dtype, device: device), alpha, dropout,
            useRsLora)
    {
    }

    /// <summary>An adapter from existing weights (takes ownership of <paramref name="a"/> and <paramref name="b"/>).</summary>
    public LoraAdapter(Tensor a, Tensor b, double alpha, double dropout = 0.0, bool useRsLora = false)
    {
        if (a.dim() != 2 || b.dim() != 2 || a.shape[0] != b.shape[1])
            throw new LayerPruneException($"LoraAdapter: A must be [r, in] and B [out, r], got A {Shape(a)} and B {Shape(b)}");
        if (a.shape[0] < 1) throw new LayerPruneException("LoraAdapter: rank r must be at least 1");
        if (dropout < 0 || dropout >= 1) throw new LayerPruneException($"LoraAdapter: dropout must be in [0, 1), got {dropout}");
        Rank = (int)a.shape[0];
        Alpha = alpha;
        UseRsLora = useRsLora;
        Scaling = ComputeScaling(Rank, alpha, useRsLora);
        DropoutP = dropout;
        A = new Parameter(a, requires_grad: true);
        B = new Parameter(b, requires_grad: true);
    }

    /// <summary>PEFT: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.</summary>
    public static double ComputeScaling(int r, double alpha, bool useRsLora) => useRsLora ? alpha / Math.Sqrt(r) : alpha / r;

    /// <summary>
    /// Bound of torch.nn.init.kaiming_uniform_(a=√5, mode="fan_in", nonlinearity="leaky_relu"):
    /// gain = sqrt(2 / (1 + a²)), std = gain / sqrt(fan_in), bound = sqrt(3) · std (= 1/sqrt(fan_in)).
    /// </summary>
    public static double KaimingUniformBound(long fanIn)
    {
        double a = Math.Sqrt(5);
        double gain = Math.Sqrt(2.0 / (1 + a * a));
        double std = gain / Math.Sqrt(fanIn);
        return Math.Sqrt(3.0) * std;
    }

    static Tensor InitA(int r, long inFeatures, Generator? generator, ScalarType dtype, Device? device)
    {
        if (r < 1) throw new LayerPruneException($"LoraAdapter: rank r must be at least 1, got {r}");
        var a = empty(r, inFeatures, dtype: dtype, device: device);
        double bound = KaimingUniformBound(inFeatures);
        using (no_grad()) a.uniform_(-bound, bound, generator);
        return a;
    }

    /// <summary>
    /// delta(x) = B(A(dropout(x))) · scaling, x: [..., in] → [..., out] in the adapter's dtype (PEFT adds it to the base
    /// output with type promotion and casts the sum back: <see cref="Modeling.Linear.Forward"/> does that).
    /// </summary>
    public Tensor Forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        // PEFT casts the input to the adapter's dtype; the result stays in it (Linear adds it to the base output).
        Tensor h;
        if (!(DropoutP > 0 && Training)) h = x.dtype == A.dtype ? x : x.to(A.dtype);
        else if (LoraDropout.Serves(x, A.dtype)) h = LoraDropout.Apply(x, DropoutP, DropoutGenerator);
        else
        {
            // Other dtypes and devices: torch's Bernoulli mask (x · mask / (1 − p), the nn.Dropout formula).
            var cast = x.dtype == A.dtype ? x : x.to(A.dtype);
            var keep = empty_like(cast).bernoulli_(1 - DropoutP, DropoutGenerator);
            h = cast * keep / (1 - DropoutP);
        }
        // Scaling on the rank-r intermediate, not on the [.., out] result: the same product, one pass fewer each way
        // (exact for a power-of-two scaling such as the default 16/8).
        var z = nn.functional.linear(h, A).mul_(Scaling);   // [.., r]
        return nn.functional.linear(z, B).MoveToOuterDisposeScope();
    }

    /// <summary>W + scaling·(B A), computed in fp32 and returned in <paramref name="weight"/>'s dtype (PEFT merge).</summary>
    public Tensor MergeInto(Tensor weight)
    {
        if (weight.dim() != 2 || weight.shape[0] != OutFeatures || weight.shape[1] != InFeatures)
            throw new LayerPruneException(
                $"LoraAdapter.MergeInto: weight {Shape(weight)} does not match adapter [{OutFeatures}, {InFeatures}]");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var delta = matmul(B.detach().to(ScalarType.Float32), A.detach().to(ScalarType.Float32)) * Scaling;
        var merged = (weight.detach().to(ScalarType.Float32) + delta).to(weight.dtype);
        return merged.MoveToOuterDisposeScope();
    }

    /// <summary>The trainable parameters A and B.</summary>
    public IEnumerable<Parameter> Parameters() { yield return A; yield return B; }

    static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";

    /// <summary>Releases A and B.</summary>
    public void Dispose() { A.Dispose(); B.Dispose(); }
}
