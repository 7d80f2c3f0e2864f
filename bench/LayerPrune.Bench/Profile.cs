using LayerPrune.Modeling;
using static TorchSharp.torch;
namespace LayerPrune.Bench;
/// <summary>Where forward time goes (diagnostic, bare times of parts of one model on one machine): `bench -- profile`.</summary>
public static class ProfileBench
{
    public static void Run(TextWriter o, string modelDir)
    {
        using var m = CausalLM.Load(modelDir);
        using var ids = randint(0, 2048, [8, 256]);
        using var _ = no_grad();
        double full = ModelBenchmarks.Time(() => m.Forward(ids).Dispose(), 5);
        double hidden = ModelBenchmarks.Time(() => m.Forward(ids, options: new ForwardOptions { HiddenOnly = true }).Dispose(), 5);
        using var x = randn(8, 256, 256);
        var layer = m.Layer(0);
        using var att = m.PrepareAttention(8, 256, 0, null);
        double oneLayer = ModelBenchmarks.Time(() => { for (int i = 0; i < 16; i++) layer.Forward(x, att, null, 0).Dispose(); }, 5);
        using var q = randn(8, 8, 256, 32); using var k = randn(8, 8, 256, 32);
        double sdpa = ModelBenchmarks.Time(() => { for (int i = 0; i < 16; i++) nn.functional.scaled_dot_product_attention(q, k, k, is_casual: true).Dispose(); }, 5);
        var lin = m.NamedLinears().Select(x => (x.linear, input: randn(8, 256, x.linear.InFeatures))).ToList();
        double linears = ModelBenchmarks.Time(() => { foreach (var (l, input) in lin) l.Forward(input).Dispose(); }, 5);
        double head = ModelBenchmarks.Time(() => m.Head(x).Dispose(), 5);
        using var w = randn(2048, 256);
        double lmhead = ModelBenchmarks.Time(() => nn.functional.linear(x, w).Dispose(), 5);
        double lmheadOut = ModelBenchmarks.Time(() => matmul(x, w.t()).Dispose(), 5);
        o.WriteLine($"head {head*1000:F1} ms, linear {lmhead*1000:F1} ms, matmul {lmheadOut*1000:F1} ms");
        o.WriteLine($"full {full*1000:F0} ms, hidden-only {hidden*1000:F0} ms, 16 layers {oneLayer*1000:F0} ms, sdpa×16 {sdpa*1000:F0} ms, all linears {linears*1000:F0} ms");
    }
}
