using LayerPrune.Modeling;
using static TorchSharp.torch;
namespace LayerPrune.Bench;
/// <summary>
/// Where forward time goes (diagnostic, bare times of parts of one model on one machine):
/// `bench -- profile --model DIR [--dtype fp32|bf16] [--batch 4] [--seq-len 128]`.
/// </summary>
public static class ProfileBench
{
    public static void Run(TextWriter o, string modelDir, string[] args)
    {
        var (_, dtype) = ComputeTarget.Resolve("cpu", Arg(args, "--dtype") ?? "fp32");
        int B = int.Parse(Arg(args, "--batch") ?? "8"), T = int.Parse(Arg(args, "--seq-len") ?? "256");
        using var m = CausalLM.Load(modelDir, CPU, dtype);
        var c = m.Config;
        using var ids = randint(0, c.VocabSize, [B, T]);
        using var _ = no_grad();
        double full = ModelBenchmarks.Time(() => m.Forward(ids).Dispose(), 2);
        double hidden = ModelBenchmarks.Time(() => m.Forward(ids, options: new ForwardOptions { HiddenOnly = true }).Dispose(), 2);
        using var x = randn(B, T, c.HiddenSize).to(dtype);
        var layer = m.Layer(0);
        using var att = m.PrepareAttention(B, T, 0, null);
        double oneLayer = ModelBenchmarks.Time(() => layer.Forward(x, att, null, 0).Dispose(), 2);
        using var q = randn(B, c.NumHeads, T, c.HeadDim).to(dtype);
        using var k = randn(B, c.NumHeads, T, c.HeadDim).to(dtype);
        double sdpa = ModelBenchmarks.Time(() => nn.functional.scaled_dot_product_attention(q, k, k, is_casual: true).Dispose(), 2);
        var lin = layer.Linears().Select(l => (l.linear, input: randn(B, T, l.linear.InFeatures).to(dtype))).ToList();
        double linears = ModelBenchmarks.Time(() => { foreach (var (l, input) in lin) l.Forward(input).Dispose(); }, 2);
        double head = ModelBenchmarks.Time(() => m.Head(x).Dispose(), 2);
        using var w1 = ones(c.HiddenSize).to(dtype);
        double rms = ModelBenchmarks.Time(() =>
        {
            using var scope = NewDisposeScope();
            var h = x.to(ScalarType.Float32);
            var normed = w1 * (h * rsqrt(h.pow(2).mean([-1], keepdim: true) + 1e-5)).to(dtype);
        }, 2);
        using var rotary = new Rope(c.Rope, c.HeadDim, CPU);
        using var positions = arange(T).unsqueeze(0).expand(B, T);
        var (cos, sin) = rotary.CosSin(positions, dtype);
        using var qt = randn(B, T, c.NumHeads, c.HeadDim).to(dtype).transpose(1, 2);
        double rope = ModelBenchmarks.Time(() => rotary.Apply(qt, cos, sin).Dispose(), 2);
        using var kv = randn(B, c.NumKvHeads, T, c.HeadDim).to(dtype);
        double repeat = ModelBenchmarks.Time(() => kv.repeat_interleave(c.NumHeads / c.NumKvHeads, dim: 1).Dispose(), 2);
        using var g = randn(B, T, c.IntermediateSize).to(dtype);
        double act = ModelBenchmarks.Time(() => { using var a = nn.functional.silu(g); (a * g).Dispose(); }, 2);
        using var h32 = x.to(ScalarType.Float32);
        double toF = ModelBenchmarks.Time(() => x.to(ScalarType.Float32).Dispose(), 3);
        double toB = ModelBenchmarks.Time(() => h32.to(dtype).Dispose(), 3);
        double pow2 = ModelBenchmarks.Time(() => h32.pow(2).Dispose(), 3);
        double sq = ModelBenchmarks.Time(() => (h32 * h32).Dispose(), 3);
        double mean = ModelBenchmarks.Time(() => h32.mean([-1], keepdim: true).Dispose(), 3);
        double mulB = ModelBenchmarks.Time(() => (x * x).Dispose(), 3);
        double siluB = ModelBenchmarks.Time(() => nn.functional.silu(g).Dispose(), 3);
        o.WriteLine($"  to fp32 {toF * 1000:F2}, to {dtype} {toB * 1000:F2}, pow2 {pow2 * 1000:F2}, h*h {sq * 1000:F2}, mean {mean * 1000:F2}, "
            + $"x*x ({dtype}) {mulB * 1000:F2}, silu [B,T,I] {siluB * 1000:F2} ms");
        o.WriteLine($"  rmsnorm {rms * 1000:F1} ms, rope(q) {rope * 1000:F1} ms, repeat_interleave(k) {repeat * 1000:F1} ms, silu·up {act * 1000:F1} ms");
        o.WriteLine($"profile {ComputeTarget.Name(dtype)} {B}×{T}: full {full * 1000:F0} ms, hidden-only {hidden * 1000:F0} ms, "
            + $"head {head * 1000:F0} ms; one layer {oneLayer * 1000:F1} ms (×{c.NumLayers} = {oneLayer * c.NumLayers * 1000:F0} ms): "
            + $"its linears {linears * 1000:F1} ms, sdpa {sdpa * 1000:F1} ms, rest {(oneLayer - linears - sdpa) * 1000:F1} ms");
    }

    static string? Arg(string[] args, string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
}
