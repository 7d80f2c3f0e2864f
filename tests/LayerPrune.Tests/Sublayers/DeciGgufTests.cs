using LayerPrune.Checkpoints;
using LayerPrune.Gguf;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Tests.Gguf;
using LayerPrune.Tests.Integration;
using LayerPrune.Tokenization;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Sublayers;

/// <summary>Sublayer-pruned models exported as llama.cpp's "deci" architecture run in llama.cpp (LLamaSharp 0.30.0).</summary>
public class DeciGgufTests : IDisposable
{
    const double LogitTolerance = 1e-3;
    const int NewTokens = 32;
    readonly string _tmp = Directory.CreateTempSubdirectory("lp-deci-").FullName;
    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    /// <summary>A random 4-layer Llama, H = 128, FFN 256 = round_up(int(2·3.0·128/3), 256): ffn_mult 3.0 expresses it.</summary>
    internal static string RandomLlama(string dir)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), """
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128, "intermediate_size": 256,
             "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320,
             "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
             "tie_word_embeddings": false, "hidden_act": "silu"}
            """);
        using var gen = new Generator(4321);
        var tensors = new List<TensorToWrite>();
        void Add(string name, double scale, params long[] shape) =>
            tensors.Add(TensorToWrite.FromTensor(name, randn(shape, generator: gen) * scale + (shape.Length == 1 ? 1 : 0)));
        Add("model.embed_tokens.weight", 1, 320, 128);
        Add("lm_head.weight", 0.1, 320, 128);
        Add("model.norm.weight", 0.1, 128);
        for (int i = 0; i < 4; i++)
        {
            string p = $"model.layers.{i}.";
            Add(p + "input_layernorm.weight", 0.1, 128);
            Add(p + "post_attention_layernorm.weight", 0.1, 128);
            Add(p + "self_attn.q_proj.weight", 0.1, 128, 128);
            Add(p + "self_attn.k_proj.weight", 0.1, 64, 128);
            Add(p + "self_attn.v_proj.weight", 0.1, 64, 128);
            Add(p + "self_attn.o_proj.weight", 0.1, 128, 128);
            Add(p + "mlp.gate_proj.weight", 0.1, 256, 128);
            Add(p + "mlp.up_proj.weight", 0.1, 256, 128);
            Add(p + "mlp.down_proj.weight", 0.1, 128, 256);
        }
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors);
        return dir;
    }

    internal static (int[] Tokens, float[] Logits) Ours(string dir, IReadOnlyList<int> prompt) =>
        GgufExportTests.Ours(dir, prompt, NewTokens);

    static string PruneAndExport(string source, string spec, string dir)
    {
        using (var ckpt = Checkpoint.Open(source))
            SublayerCheckpointWriter.Write(ckpt, SublayerPlan.FromSpec(spec, PruneUnit.Sublayer, ckpt.Config), dir);
        string gguf = dir + ".gguf";
        GgufExporter.Export(dir, gguf, new GgufExportOptions { Type = GgufOutputType.F32 });
        return gguf;
    }

    internal static void AssertSame(string dir, string gguf, IReadOnlyList<int> prompt, string label)
    {
        var (ours, ourLogits) = Ours(dir, prompt);
        var (theirs, theirLogits) = LlamaCpp.Greedy(gguf, prompt, NewTokens);
        double diff = ourLogits.Zip(theirLogits).Max(p => Math.Abs((double)p.First - p.Second));
        Console.WriteLine($"{label}: max |Δlogit| = {diff:E2}; greedy {NewTokens} tokens equal: {ours.SequenceEqual(theirs)}");
        Assert.Equal(ours, theirs);
        Assert.True(diff <= LogitTolerance, $"{label}: max |Δlogit| {diff:E3} > {LogitTolerance}");
    }

    [Fact]
    public void RandomLlamaWithAttention1And3AndMlp2RemovedRunsInLlamaCpp()
    {
        string source = RandomLlama(Path.Combine(_tmp, "random"));
        string dir = Path.Combine(_tmp, "pruned");
        string gguf = PruneAndExport(source, "attention:1,3,mlp:2", dir);
        Assert.Equal(3.0, (double)System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!
            ["block_configs"]![0]!["ffn"]!["ffn_mult"]!);
        var f = GgufFile.Open(gguf);
        Assert.Equal("deci", f.Get("general.architecture")!.Value);
        Assert.Equal(new[] { 4, 0, 4, 0 }, (int[])f.Get("deci.attention.head_count")!.Value);
        Assert.Equal(new[] { 2, 0, 2, 0 }, (int[])f.Get("deci.attention.head_count_kv")!.Value);
        Assert.Equal(new[] { 256, 256, 1, 256 }, (int[])f.Get("deci.feed_forward_length")!.Value);
        Assert.DoesNotContain(f.Tensors, t => t.Name.StartsWith("blk.1.attn_", StringComparison.Ordinal));
        Assert.Contains(f.Tensors, t => t.Name == "blk.2.ffn_down.weight" && t.Dims.SequenceEqual(new long[] { 1, 128 }));
        AssertSame(dir, gguf, [1, 17, 42, 99, 5, 260, 7, 300], "random llama, attention 1,3 + mlp 2 removed");
        // The cut matters: the unpruned model continues differently.
        var (full, _) = Ours(source, [1, 17, 42, 99, 5, 260, 7, 300]);
        Assert.NotEqual(full, Ours(dir, [1, 17, 42, 99, 5, 260, 7, 300]).Tokens);
    }

    [Fact]
    public void EmbeddedModelWithHalfItsAttentionRemovedRunsInLlamaCpp()
    {
        // 688 is not an ffn_mult width: the checkpoint says intermediate_size, the GGUF needs only feed_forward_length.
        string dir = Path.Combine(_tmp, "kjv");
        string gguf = PruneAndExport(KjvModel.Dir, "attention:3,5,7,9,11,12,13,14,mlp:10", dir);
        var prompt = TokenizerLoader.Load(KjvModel.Dir).Encode("In the beginning God created");
        AssertSame(dir, gguf, prompt, "kjv, 8 attentions + mlp 10 removed");
    }
}
