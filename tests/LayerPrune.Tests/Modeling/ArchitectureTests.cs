using LayerPrune.Checkpoints;
using LayerPrune.Healing;
using LayerPrune.Modeling;
using LayerPrune.Modeling.Families;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Modeling;

/// <summary>The family descriptors and the module tree against the golden checkpoints (written by HF save_pretrained).</summary>
public class ArchitectureTests
{
    static SafeTensorsFile OpenWeights(GoldenFixture g) => SafeTensorsFile.Open(Path.Combine(g.Dir, "model.safetensors"));

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void ExpectedTensorsAreExactlyTheCheckpointsTensors(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var file = OpenWeights(g);
        var config = ModelConfig.Load(g.Dir);
        var expected = Architecture.For(config).ExpectedTensors(config);
        Assert.Equal(expected.Count, expected.Select(e => e.Name).Distinct().Count());
        foreach (var e in expected.Where(e => e.Required))
            Assert.True(file.Tensors.ContainsKey(e.Name), $"{arch}: required {e.Name} is not in model.safetensors");
        foreach (var (name, info) in file.Tensors)
        {
            var e = Assert.Single(expected, x => x.Name == name);
            Assert.Equal(info.Shape, e.Shape);
        }
    }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void ModuleTreeNamesEveryStoredTensor(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var file = OpenWeights(g);
        using var model = CausalLM.Load(g.Dir);
        var named = model.NamedTensors().ToList();
        Assert.Equal(file.Tensors.Keys.Order(StringComparer.Ordinal), named.Select(n => n.name).Order(StringComparer.Ordinal));
        foreach (var (name, t) in named)
        {
            Assert.Equal(file.Tensors[name].Shape, t.shape);
            using var stored = model.Checkpoint.Load(name);
            Assert.True(stored.allclose(t, rtol: 0, atol: 0), name);
        }
    }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void LoraTargetsAreTheLayersLinears(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var model = CausalLM.Load(g.Dir);
        var family = model.Architecture;
        var leaves = model.Layer(0).Linears().Select(l => l.name.Split('.')[^1]).ToList();
        Assert.Equal(family.AllLinearTargets, leaves);
        var ffn = model.Layer(0).Linears().Where(l => l.name.StartsWith("mlp.", StringComparison.Ordinal)).Select(l => l.name[4..]);
        Assert.Equal(family.FfnTargets, ffn);
        Assert.Equal(family.AllLinearTargets, HealRecipes.AllLinear(model.Config.Family));
        Assert.Equal(family.FfnTargets, HealRecipes.FfnOnly(model.Config.Family));
        var names = model.NamedLinears().Select(l => l.name).ToList();
        Assert.Equal(model.NumLayers * leaves.Count, names.Count);
        Assert.All(names, n => Assert.StartsWith("model.layers.", n));
    }

    [Fact]
    public void LlamaStyleAndPhiTargetListsArePeftNames()
    {
        Assert.Equal(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], LoraSettings.AllLinear);
        Assert.Same(LlamaFamily.AllLinear, Architecture.For(ArchitectureFamily.Qwen2).AllLinearTargets);
        Assert.Equal(["fc1", "fc2"], Architecture.For(ArchitectureFamily.Phi).FfnTargets);
    }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void TrainModeAndDisposalReachEveryModule(string arch)
    {
        using var g = new GoldenFixture(arch);
        var model = CausalLM.Load(g.Dir);
        var adapters = LoraInjector.Inject(model.NamedLinears(), new LoraSettings(model.Architecture.AllLinearTargets, R: 2), seed: 1);
        Assert.All(adapters, a => Assert.True(a.Adapter.Training));   // LoraAdapter's default
        model.Train(false);
        Assert.All(adapters, a => Assert.False(a.Adapter.Training));
        Assert.All(model.NamedModules(), m => Assert.False(m.Module.Training));
        model.Train();
        Assert.All(adapters, a => Assert.True(a.Adapter.Training));
        Assert.True(model.Layer(model.NumLayers - 1).Training);

        var tensors = model.StateDict().Select(t => t.Tensor).ToList();
        Assert.Equal(model.NamedTensors().Count() + (model.TiedHead ? 1 : 0), tensors.Count);
        var adapterTensors = adapters.SelectMany(a => a.Adapter.Parameters()).ToList();
        model.Dispose();
        Assert.All(tensors, t => Assert.True(t.IsInvalid));
        Assert.All(adapterTensors, t => Assert.True(t.IsInvalid));
    }

    [Fact]
    public void FamilyConfigDefaultsComeFromTheDescriptor()
    {
        var phi = ModelConfig.Parse("""{"model_type":"phi","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,""" +
                                    """ "vocab_size":5,"intermediate_size":16,"layer_norm_eps":1e-3,"rms_norm_eps":7}""", "phi.json");
        Assert.Equal(1e-3, phi.NormEps);
        Assert.Equal("gelu_new", phi.HiddenAct);
        Assert.True(phi.AttentionBias);
        Assert.True(phi.MlpBias);
        var qwen = ModelConfig.Parse("""{"model_type":"qwen2","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,""" +
                                     """ "vocab_size":5,"intermediate_size":16,"attention_bias":false,"layer_norm_eps":7}""", "qwen.json");
        Assert.Equal(1e-5, qwen.NormEps);
        Assert.Equal("silu", qwen.HiddenAct);
        Assert.True(qwen.AttentionBias);
        Assert.False(qwen.MlpBias);
        var llama = ModelConfig.Parse("""{"model_type":"llama","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,""" +
                                      """ "vocab_size":5,"intermediate_size":16,"rms_norm_eps":1e-6,"mlp_bias":true}""", "llama.json");
        Assert.Equal(1e-6, llama.NormEps);
        Assert.False(llama.AttentionBias);
        Assert.True(llama.MlpBias);
        Assert.Equal(["llama", "mistral", "qwen2", "phi", "nemotron-nas"], ModelConfig.SupportedModelTypes.Keys);
    }

    [Fact]
    public void ExpectedTensorsFollowConfigBiasesAndTying()
    {
        const string Base = """ "hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,""" +
                            """ "vocab_size":5,"intermediate_size":16 """;
        var llama = ModelConfig.Parse($$"""{"model_type":"llama",{{Base}},"attention_bias":true,"tie_word_embeddings":true}""", "c.json");
        var e = Architecture.For(llama).ExpectedTensors(llama).ToDictionary(t => t.Name);
        Assert.Equal(new long[] { 4, 8 }, e["model.layers.1.self_attn.k_proj.weight"].Shape);   // kv heads 1 × head_dim 4
        Assert.True(e["model.layers.1.self_attn.k_proj.bias"].Required);
        Assert.False(e["model.layers.1.self_attn.o_proj.bias"].Required);
        Assert.False(e["model.layers.0.mlp.down_proj.bias"].Required);
        Assert.False(e["lm_head.weight"].Required);
        Assert.DoesNotContain("lm_head.bias", e.Keys);
        Assert.Equal(new long[] { 8, 16 }, e["model.layers.0.mlp.down_proj.weight"].Shape);
        Assert.Equal(2 + 2 * 2 + 2 * 7 * 2 + 1, e.Count);   // embed, norm, lm_head; 2 norms + 7 linears × (w, b) per layer

        var phi = ModelConfig.Parse($$"""{"model_type":"phi",{{Base}}}""", "c.json");
        var p = Architecture.For(phi).ExpectedTensors(phi).ToDictionary(t => t.Name);
        Assert.True(p["lm_head.bias"].Required);
        Assert.True(p["model.final_layernorm.bias"].Required);
        Assert.True(p["model.layers.1.self_attn.dense.bias"].Required);
        Assert.Equal(new long[] { 8, 8 }, p["model.layers.1.self_attn.dense.weight"].Shape);
        Assert.All(p.Values, t => Assert.True(t.Required));
    }

    [Fact]
    public void PaperRecipeTableIsPerFamily()
    {
        Assert.Equal(new PaperHealSettings(3e-4, 2, "Llama-2-7B"), LlamaFamily.Llama.PaperSettings(4096));
        Assert.Equal(new PaperHealSettings(3e-5, 8, "Llama-2-70B"), LlamaFamily.Llama.PaperSettings(8192));
        Assert.Equal(new PaperHealSettings(3e-4, 8, "fallback"), LlamaFamily.Llama.PaperSettings(64));
        Assert.Equal(new PaperHealSettings(3e-6, 4, "Mistral-7B"), LlamaFamily.Mistral.PaperSettings(64));
        Assert.Equal(new PaperHealSettings(3e-4, 64, "Qwen-7B/14B"), LlamaFamily.Qwen2.PaperSettings(64));
        Assert.Equal(new PaperHealSettings(2e-4, 64, "Phi-2"), PhiFamily.Phi.PaperSettings(2560));
    }
}
