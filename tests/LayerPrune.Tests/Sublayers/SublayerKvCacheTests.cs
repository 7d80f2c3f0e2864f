using LayerPrune.Checkpoints;
using LayerPrune.Efficiency;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Tests.Modeling;
using LayerPrune.Tests.Pruning;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Sublayers;

/// <summary>Layers without attention cache nothing: bench's KV-cache bytes follow the attention sublayers kept.</summary>
public class SublayerKvCacheTests
{
    [Fact]
    public void HalfTheAttentionSublayersRemovedHalvesTheKvCacheBytesExactly()
    {
        using var g = new GoldenFixture("llama");
        using var tmp = new TempDir();
        using (var ckpt = Checkpoint.Open(g.Dir))
            SublayerCheckpointWriter.Write(ckpt, SublayerPlan.FromSpec("1,3,5,7", PruneUnit.Attention, ckpt.Config), tmp["half"]);
        using var full = CausalLM.Load(g.Dir);
        using var half = CausalLM.Load(tmp["half"]);
        var o = new EfficiencyOptions { PromptLength = 16, DecodeTokens = 4, Warmup = 0, Repeats = 1 };
        var r = EfficiencyMeter.Measure([new EfficiencyTarget("full", full), new EfficiencyTarget("half attention", half)], o);
        // 8 layers × (k + v) × 2 kv heads × head_dim 16 × 20 positions × 4 bytes.
        long expected = 8L * 2 * 2 * 16 * 20 * 4;
        Assert.Equal(expected, r[0].KvCacheBytes);
        Assert.Equal(expected / 2, r[1].KvCacheBytes);
        Assert.Equal(r[0].KvCacheBytesPerToken / 2, r[1].KvCacheBytesPerToken);
        Assert.Equal(8L * 2 * 2 * 16 * 4, r[0].KvCacheBytesPerToken);
        Assert.Equal(r[1].KvCacheBytesPerToken, r[1].ToJson()["kv_cache_bytes_per_token"]!.GetValue<long>());
    }

    /// <summary>The acceptance point as the command says it: `bench --json` on the written checkpoint with half its attention
    /// sublayers removed reports exactly half the unpruned checkpoint's KV-cache bytes per token.</summary>
    [Fact]
    public void BenchReportsHalfTheKvCacheBytesPerTokenForHalfTheAttentionSublayers()
    {
        using var g = new GoldenFixture("llama");
        using var tmp = new TempDir();
        using (var ckpt = Checkpoint.Open(g.Dir))
            SublayerCheckpointWriter.Write(ckpt, SublayerPlan.FromSpec("0,2,4,6", PruneUnit.Attention, ckpt.Config), tmp["half"]);
        long PerToken(string dir)
        {
            var (code, stdout, stderr) = LayerPrune.Tests.Cli.CliRunner.Run("bench", "--model", dir, "--prompt-length", "16",
                "--decode-tokens", "4", "--warmup", "0", "--repeats", "1", "--json", "-q");
            Assert.True(code == 0, stderr);
            return System.Text.Json.Nodes.JsonNode.Parse(stdout)!["unpruned"]!["kv_cache_bytes_per_token"]!.GetValue<long>();
        }
        long full = PerToken(g.Dir), half = PerToken(tmp["half"]);
        ModelConfig c;
        using (var ckpt = Checkpoint.Open(g.Dir)) c = ckpt.Config;
        Assert.Equal(c.NumLayers * 2L * c.NumKvHeads * c.HeadDim * sizeof(float), full); // k and v of every layer, fp32
        Assert.Equal(full / 2, half);
        Assert.Equal(full, 2 * half);
    }

    [Fact]
    public void AnAttentionFreeModelGeneratesWithAnEmptyCache()
    {
        using var g = new GoldenFixture("llama");
        using var model = CausalLM.Load(g.Dir);
        var mask = new SublayerMask(Enumerable.Range(0, 8), []);
        var ids = g["input_ids"][0].data<long>().Take(6).ToArray();
        using var cache = new KvCache(8);
        using var _ = no_grad();
        using var all = model.Forward(tensor(ids, [1, 6]), options: new ForwardOptions { Skip = mask });
        using var first = model.Forward(tensor(ids.Take(5).ToArray(), [1, 5]), cache: cache, options: new ForwardOptions { Skip = mask });
        using var step = model.Forward(tensor(new[] { ids[5] }, [1, 1]), cache: cache, options: new ForwardOptions { Skip = mask });
        Assert.Equal(0, cache.Bytes);
        Assert.Equal(6, cache.Length);
        Assert.InRange(SublayerForwardTests.MaxDiff(step[0, 0], all[0, 5]), 0, 1e-5);
    }
}
