using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Pruning.Strategies;
using LayerPrune.Tests.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Pruning;

/// <summary>
/// LinearRepair (ReplaceMe's least-squares map) against an independent fp64 computation made here with plain tensor ops:
/// Y from layer s − 1 run with its MLP output zeroed, M from the MLP written out by hand, R from the residual stream
/// (for e = L the last layer's output before the final norm), T from the normal equations by LU (linalg.solve).
/// </summary>
public class LinearRepairTests
{
    static double Rel(Tensor a, Tensor b) => (a - b).norm().item<double>() / b.norm().item<double>();

    static List<int[]> RandomChunks(int count, int length, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, length).Select(_ => rng.Next(vocab)).ToArray()).ToList();
    }

    /// <summary>The MLP of <paramref name="layer"/> written out with plain ops: Llama down(silu(gate(rms(Y)))·up(rms(Y))),
    /// Phi fc2(gelu_tanh(fc1(ln(x)))) (parallel block: the MLP reads the layer's input x).</summary>
    static Tensor HandMlp(ModelConfig c, DecoderLayer layer, Tensor y, Tensor x)
    {
        var w = layer.Tensors().ToDictionary(t => t.name, t => t.tensor);
        if (c.Family == ArchitectureFamily.Phi)
        {
            var n = nn.functional.layer_norm(x, [c.HiddenSize], w["input_layernorm.weight"], w["input_layernorm.bias"], c.NormEps);
            var h = n.matmul(w["mlp.fc1.weight"].t()) + w["mlp.fc1.bias"];
            var g = 0.5 * h * (1.0 + (Math.Sqrt(2.0 / Math.PI) * (h + 0.044715 * h.pow(3))).tanh());
            return g.matmul(w["mlp.fc2.weight"].t()) + w["mlp.fc2.bias"];
        }
        // HF LlamaRMSNorm normalises in fp32 whatever the dtype (hidden_states.to(torch.float32)), and so does the model
        var y32 = y.to(ScalarType.Float32);
        var r = (y32 * (y32.square().mean([-1], keepdim: true) + c.NormEps).rsqrt()).to(y.dtype) * w["post_attention_layernorm.weight"];
        var gate = r.matmul(w["mlp.gate_proj.weight"].t());
        var up = r.matmul(w["mlp.up_proj.weight"].t());
        return (gate * gate.sigmoid() * up).matmul(w["mlp.down_proj.weight"].t());
    }

    public static readonly TheoryData<string, string> Cases = Build();
    static TheoryData<string, string> Build()
    {
        var d = new TheoryData<string, string>();
        // one run in the middle; two runs of which the second ends at L (R = last output before the final norm)
        foreach (string arch in new[] { "llama", "llama3rope", "mistral", "qwen2", "phi" }) { d.Add(arch, "3-5"); d.Add(arch, "2-3,6-7"); }
        return d;
    }

    [Theory, MemberData(nameof(Cases))]
    public void MapsEqualTheNormalEquationsAndTheFoldedProjectionGivesYPlusMT(string arch, string spec)
    {
        using var g = new GoldenFixture(arch);
        using var model = CausalLM.Load(g.Dir, dtype: ScalarType.Float64);
        var plan = PrunePlan.FromLayerSpec(spec, model.NumLayers);
        var chunks = RandomChunks(6, 32, model.Config.VocabSize, seed: 7);   // 192 tokens > H = 64
        Assert.Equal(spec == "3-5" ? 1 : 2, LinearRepair.RemovedRuns(plan).Count);
        CheckMapsAgainstNormalEquations(g.Dir, model, plan, chunks, $"{arch} {spec}");
    }

    /// <summary>
    /// Fits <paramref name="plan"/>'s maps on <paramref name="chunks"/> (length 32) and checks each against the normal equations
    /// computed here (≤ 1e-6 relative), its fit errors, the in-memory fold (Y + M·T at the cut, ≤ 1e-9) and the written fold.
    /// </summary>
    internal static void CheckMapsAgainstNormalEquations(string dir, CausalLM model, PrunePlan plan, List<int[]> chunks, string label)
    {
        var c = model.Config;
        using var repair = LinearRepair.Fit(model, plan, chunks, new RepairOptions { BatchSize = 4 });
        var runs = LinearRepair.RemovedRuns(plan);
        Assert.Equal(runs.Count, repair.Maps.Count);

        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var ids = tensor(chunks.SelectMany(x => x.Select(t => (long)t)).ToArray(), [chunks.Count, 32L]);
        var stream = new Tensor[model.NumLayers + 1];
        model.Forward(ids, options: new ForwardOptions { HiddenOnly = true, OnResidual = (k, x) => stream[k] = x.clone().DetachFromDisposeScope() });
        using var att = model.PrepareAttention(chunks.Count, 32, 0, null);
        string down = LinearRepair.MlpOutputName(c);
        using var src = Checkpoint.Open(dir);
        var folded = repair.FoldedTensors(src);
        foreach (var (map, (s, e)) in repair.Maps.Zip(runs))
        {
            Assert.Equal((s, e), (map.Start, map.EndExclusive));
            var layer = model.Layer(s - 1);
            var linear = layer.NamedModules<Linear>().Single(m => m.Name == down).Module;
            var x = stream[s - 1];
            // Y: the layer with its MLP output projection zeroed (weight and bias) outputs x + attn = Y
            var (w0, b0) = (linear.Weight!, linear.Bias);
            linear.Weight = zeros_like(w0);
            linear.Bias = b0 is null ? null : zeros_like(b0);
            var y = layer.Forward(x, att, null, 0);
            (linear.Weight, linear.Bias) = (w0, b0);
            var m = HandMlp(c, layer, y, x);
            Assert.True(Rel(y + m, stream[s]) < 1e-12, $"{label}: Y + M is not layer {s - 1}'s output");
            var mm = m.reshape(-1, c.HiddenSize);
            var dd = (stream[e] - y).reshape(-1, c.HiddenSize);
            var tRef = linalg.solve(mm.t().matmul(mm), mm.t().matmul(dd));
            double err = Rel(map.Transform, tRef);
            Assert.True(err <= 1e-6, $"{label}: map [{s}, {e}) differs from the normal equations by {err:E2} (relative)");
            Assert.True(map.RelativeResidual < 1e-9 && map.ConditionEstimate > 1, $"{label}: residual {map.RelativeResidual}");
            Assert.Equal(chunks.Count * 32L, map.Tokens);
            // the fit error reported equals ‖M·T − D‖² / ‖D‖² computed here
            double fit = (mm.matmul(tRef) - dd).square().sum().item<double>() / dd.square().sum().item<double>();
            Assert.Equal(fit, map.FitError, 1e-9);
            double fitI = (mm - dd).square().sum().item<double>() / dd.square().sum().item<double>();
            Assert.Equal(fitI, map.FitErrorIdentity, 1e-9);
            Assert.True(map.FitError < map.FitErrorIdentity);

            // in memory: the folded layer maps x to Y + M·T; the loaded weights come back afterwards
            var expected = y + m.matmul(tRef);
            using (repair.ApplyTo(model))
            {
                var outFolded = layer.Forward(x, att, null, 0);
                double fe = Rel(outFolded, expected);
                Assert.True(fe <= 1e-9, $"{label}: the folded {down} gives Y + M·T only to {fe:E2}");
                Assert.False(ReferenceEquals(linear.Weight, w0));
            }
            Assert.True(ReferenceEquals(linear.Weight, w0) && ReferenceEquals(linear.Bias, b0));
            // written: Tᵀ·W (and Tᵀ·b) from the stored fp32 values, stored as fp32
            string prefix = $"model.layers.{s - 1}.{down}.";
            using var stored = src.Load(prefix + "weight");
            var fw = folded[prefix + "weight"];
            Assert.Equal(stored.dtype, fw.dtype);
            Assert.True(Rel(fw.to(ScalarType.Float64), tRef.t().matmul(stored.to(ScalarType.Float64))) < 1e-6);
            Assert.Equal(c.Family == ArchitectureFamily.Phi, folded.ContainsKey(prefix + "bias"));
        }
        foreach (var f in folded.Values) f.Dispose();
        foreach (var t in stream) t.Dispose();
    }

    /// <summary>
    /// Non-contiguous plans as a strategy really produces them: SLEB-style greedy on the golden fixtures' calibration chunks.
    /// With these chunks greedy's first two rounds remove 4 then 7 (llama: runs [4, 5) and [7, 8), the second ending at L) and
    /// 4 then 1 (phi: runs [1, 2) and [4, 5)); the test asserts the plan has those two runs, so it fails if greedy changes.
    /// </summary>
    [Theory]
    [InlineData("llama", "4,7")]
    [InlineData("phi", "1,4")]
    public void GreedyPlanWithTwoRemovedRunsGetsTwoMapsEachEqualToTheNormalEquations(string arch, string expected)
    {
        using var g = new GoldenFixture(arch);
        using var model = CausalLM.Load(g.Dir, dtype: ScalarType.Float64);
        var chunks = RandomChunks(6, 32, model.Config.VocabSize, seed: 7);
        PrunePlan plan;
        using (var loss = new CalibrationLoss(model, chunks, 4))
            plan = GreedyStrategy.Run(loss, 2).Plan(2);
        Assert.Equal("greedy", plan.Strategy);
        Assert.Equal(expected, string.Join(",", plan.Removed));
        var runs = LinearRepair.RemovedRuns(plan);
        Assert.Equal(2, runs.Count);
        Assert.All(runs, r => Assert.True(r.Start >= 1));
        CheckMapsAgainstNormalEquations(g.Dir, model, plan, chunks, $"{arch} greedy n=2 (removed {expected})");
    }

    [Fact]
    public void RepairedCheckpointHasThePlainPrunesTensorsAndOnlyTheFoldedProjectionDiffers()
    {
        using var g = new GoldenFixture("phi");
        using var tmp = new TempDir();
        using var src = Checkpoint.Open(g.Dir);
        var plan = PrunePlan.FromLayerSpec("3-5", src.Config.NumLayers);
        CheckpointPruner.Write(src, plan, tmp["plain"]);
        using (var model = CausalLM.Load(g.Dir))
        using (var repair = LinearRepair.Fit(model, plan, RandomChunks(4, 32, src.Config.VocabSize, 1)))
            CheckpointPruner.Write(src, plan, tmp["repaired"], repair: repair);
        using var plain = SafeTensorsFile.Open(Path.Combine(tmp["plain"], "model.safetensors"));
        using var rep = SafeTensorsFile.Open(Path.Combine(tmp["repaired"], "model.safetensors"));
        Assert.Equal(plain.Tensors.Keys.Order(), rep.Tensors.Keys.Order());
        var differ = new List<string>();
        foreach (var (name, info) in plain.Tensors)
        {
            Assert.Equal(info.Dtype, rep.Tensors[name].Dtype);
            Assert.Equal(info.Shape, rep.Tensors[name].Shape);
            using var a = plain.Load(name);
            using var b = rep.Load(name);
            if (!a.allclose(b, 0, 0)) differ.Add(name);
        }
        Assert.Equal(["model.layers.2.mlp.fc2.bias", "model.layers.2.mlp.fc2.weight"], differ.Order());
        var planJson = JsonNode.Parse(File.ReadAllText(Path.Combine(tmp["repaired"], "prune_plan.json")))!;
        Assert.Equal("linear", (string)planJson["repair"]!["method"]!);
        Assert.Equal(128, (long)planJson["repair"]!["calibration_tokens"]!);
        Assert.Equal(2, (int)planJson["repair"]!["maps"]![0]!["folded_into_layer"]!);
    }

    [Fact]
    public void BadInputIsRefusedInOneLine()
    {
        using var g = new GoldenFixture("llama");
        using var model = CausalLM.Load(g.Dir);
        var chunks = RandomChunks(4, 32, model.Config.VocabSize, 2);
        var layer0 = Assert.Throws<LayerPruneException>(() => LinearRepair.Fit(model, PrunePlan.FromLayerSpec("0-2", 8), chunks));
        Assert.Contains("layer 0", layer0.Message);
        var alpha = Assert.Throws<LayerPruneException>(() =>
            LinearRepair.Fit(model, PrunePlan.FromLayerSpec("3-5", 8), chunks, new RepairOptions { Alpha = -1 }));
        Assert.Contains("alpha", alpha.Message);
        Assert.Throws<LayerPruneException>(() => LinearRepair.Fit(model, PrunePlan.FromLayerSpec("3-5", 8), []));
        // one calibration token: MᵀM has rank 1 of 64
        var single = Assert.Throws<LayerPruneException>(() =>
            LinearRepair.Fit(model, PrunePlan.FromLayerSpec("3-5", 8), [[5]]));
        Assert.Contains("singular (rank 1 of 64 from 1 calibration tokens)", single.Message);
        Assert.DoesNotContain('\n', single.Message);
        // with a ridge the same system solves
        using var ridge = LinearRepair.Fit(model, PrunePlan.FromLayerSpec("3-5", 8), [[5]], new RepairOptions { Alpha = 1e-3 });
        Assert.Single(ridge.Maps);
        // the model's loaded weights are untouched by a fit (no adapter left behind)
        Assert.All(model.NamedLinears(), l => Assert.Null(l.linear.Adapter));
    }

    [Fact]
    public void CosineRefinementLowersTheCosineLossAndRecordsItsSettings()
    {
        using var g = new GoldenFixture("llama");
        using var model = CausalLM.Load(g.Dir);
        var plan = PrunePlan.FromLayerSpec("4-7", 8);
        var o = new RepairOptions { Method = "cosine", CosineSteps = 30, CosineLearningRate = 1e-3, CosineTokens = 100, Seed = 3 };
        using var a = LinearRepair.Fit(model, plan, RandomChunks(4, 64, model.Config.VocabSize, 5), o);
        using var b = LinearRepair.Fit(model, plan, RandomChunks(4, 64, model.Config.VocabSize, 5), o);
        var (before, after) = a.Maps[0].CosineLoss!.Value;
        Assert.True(after < before, $"cosine loss {before} -> {after}");
        Assert.True(a.Maps[0].Transform.allclose(b.Maps[0].Transform, 0, 0), "seeded refinement is not reproducible");
        var json = a.ToJson();
        Assert.Equal(30, (int)json["cosine"]!["steps"]!);
        Assert.Equal(100, (int)json["cosine"]!["subsample_tokens"]!);
    }
}
