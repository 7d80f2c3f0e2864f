using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Efficiency;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Tests.Cli;
using LayerPrune.Tests.Integration;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Efficiency;

/// <summary>
/// Resident memory is a process-wide counter: these tests run alone (after the parallel ones), so that no other test
/// allocates while a load is measured.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessWideCollection
{
    public const string Name = "process-wide measurements";
}

[Collection(ProcessWideCollection.Name)]
public sealed class EfficiencyTests
{
    /// <summary>fp32 bytes of kjv-llama-16l's weights from its config: embedding + head + L layers + final norm.</summary>
    static long ExpectedWeightBytes(ModelConfig c, int layers)
    {
        long h = c.HiddenSize, q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim, i = c.IntermediateSize;
        long perLayer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h; // q, k, v, o, gate/up/down, two norms
        return 4 * (2 * c.VocabSize * h + layers * perLayer + h);
    }

    static readonly EfficiencyOptions Quick = new() { PromptLength = 32, DecodeTokens = 24, Warmup = 1, Repeats = 7 };

    /// <summary>
    /// Loads <paramref name="dir"/> five times and keeps the load with the median resident growth. ΔRSS is a process-wide
    /// counter and it errs both ways: other threads (tiered JIT, the GC, the test runner) can add to one load's count (CI
    /// once saw +1.8 MB on a 27 MB load), and memory the process frees during a load takes from it (about one load in 20
    /// here counted 46.5 instead of 51.2 MB, with or without the intermediate views of the mapping disposed at once), so
    /// the least of several loads fails as often as a single one; the median needs three of five to err the same way.
    /// </summary>
    static (CausalLM model, ResidentMemory memory) LoadMedian(string dir)
    {
        var loads = Enumerable.Range(0, 5).Select(_ => EfficiencyMeter.LoadMeasured(dir, CPU, ScalarType.Float32, Quick))
            .OrderBy(l => l.memory.Bytes).ToList();
        foreach (var other in loads.Where((_, i) => i != 2))
            other.model.Dispose();
        return loads[2];
    }

    [Fact]
    public void Halving_kjv_saves_the_removed_layers_bytes_and_speeds_up_decoding_alike_in_memory_and_as_a_checkpoint()
    {
        string tmp = Path.Combine(Path.GetTempPath(), $"lp-efficiency-{Guid.NewGuid():N}");
        try
        {
            var (full, fullMemory) = LoadMedian(KjvModel.Dir);
            using var _full = full;
            var plan = PrunePlan.Deepest(8, 16); // layers 7-14
            CheckpointPruner.Write(full.Checkpoint, plan, tmp);
            var (pruned, prunedMemory) = LoadMedian(tmp);
            using var _pruned = pruned;

            // Weight bytes: exact, from the config; the in-memory subset holds what the pruned checkpoint holds.
            var c = full.Config;
            Assert.Equal(ExpectedWeightBytes(c, 16), EfficiencyMeter.WeightBytes(full));
            Assert.Equal(ExpectedWeightBytes(c, 8), EfficiencyMeter.WeightBytes(full, plan.Kept));
            Assert.Equal(ExpectedWeightBytes(c, 8), EfficiencyMeter.WeightBytes(pruned));
            long removedBytes = ExpectedWeightBytes(c, 16) - ExpectedWeightBytes(c, 8);

            // Resident memory (ΔRSS of each load): within 5 % of the weights, and the saving within 5 % of the removed layers' bytes.
            string got = $"unpruned load {fullMemory}, pruned load {prunedMemory}";
            Assert.True(Math.Abs(fullMemory.Bytes - ExpectedWeightBytes(c, 16)) <= 0.05 * ExpectedWeightBytes(c, 16), got);
            Assert.True(Math.Abs(prunedMemory.Bytes - ExpectedWeightBytes(c, 8)) <= 0.05 * ExpectedWeightBytes(c, 8), got);
            Assert.True(Math.Abs(fullMemory.Bytes - prunedMemory.Bytes - removedBytes) <= 0.05 * removedBytes, got);
            // bf16 storage converted to fp32: the file pages are unmapped after the load (CausalLM releases the mappings).
            Assert.True(fullMemory.File < 0.05 * fullMemory.Bytes, $"file-backed resident {fullMemory.File} of {fullMemory.Bytes}");

            var r = EfficiencyMeter.Measure([
                new EfficiencyTarget("unpruned", full, null, fullMemory),
                new EfficiencyTarget("skip 7-14", full, plan.Kept),
                new EfficiencyTarget("checkpoint", pruned, null, prunedMemory),
            ], Quick);
            // KV cache after 32 + 24 positions: 2 (k, v) × layers × kv heads × head dim × positions × 4 bytes.
            long kvPerLayer = 2L * c.NumKvHeads * c.HeadDim * (Quick.PromptLength + Quick.DecodeTokens) * 4;
            Assert.Equal(16 * kvPerLayer, r[0].KvCacheBytes);
            Assert.Equal(8 * kvPerLayer, r[1].KvCacheBytes);
            Assert.Equal(8 * kvPerLayer, r[2].KvCacheBytes);
            Assert.All(r, x => Assert.Equal(Quick.Repeats, x.DecodeTokensPerSecond.Samples.Count));

            // Speed: loose bounds for a loaded 2-core CI machine (the 15 % check against the ideal is bench/'s, docs/benchmarks.md).
            var skip = EfficiencyComparison.Of(r[0], r[1]);
            Assert.True(skip.DecodeSpeedup > 1.2, $"decode speed-up of half the layers removed: {skip.DecodeSpeedup:F2} (ideal 2)");
            Assert.Equal(removedBytes, skip.WeightBytesSaved);
            double sameVariant = r[2].DecodeTokensPerSecond.Median / r[1].DecodeTokensPerSecond.Median;
            Assert.InRange(sameVariant, 0.6, 1 / 0.6); // the same 8 layers, skipped in memory or written out
        }
        finally
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        }
    }

    [Fact]
    public void Spread_takes_median_min_and_max()
    {
        var odd = Spread.Of([3.0, 1.0, 2.0]);
        Assert.Equal((2.0, 1.0, 3.0), (odd.Median, odd.Min, odd.Max));
        var even = Spread.Of([4.0, 1.0, 2.0, 3.0]);
        Assert.Equal(2.5, even.Median);
        Assert.Equal(3.0 / 2.5, even.RelativeRange, 12);
        Assert.Throws<ArgumentException>(() => Spread.Of([]));
    }

    [Fact]
    public void Layer_index_of_tensor_names()
    {
        Assert.Equal(7, EfficiencyMeter.LayerOf("model.layers.7.mlp.up_proj.weight"));
        Assert.Equal(12, EfficiencyMeter.LayerOf("model.layers.12.input_layernorm.weight"));
        Assert.Null(EfficiencyMeter.LayerOf("model.embed_tokens.weight"));
        Assert.Null(EfficiencyMeter.LayerOf("model.layers.x.weight"));
        Assert.Equal("7-9,12", LayerPrune.Cli.Commands.BenchCommand.Spec([7, 8, 9, 12]));
    }

    [Fact]
    public void Comparison_against_the_measured_fixed_cost()
    {
        // Reference 10 ms/token with 16 layers, fixed part 2 ms: layers 8 ms. Variant with 8 layers at 6 ms/token.
        var reference = Result(16, 100, 1600);
        var variant = Result(8, 1000.0 / 6, 900);
        var zero = Result(0, 500, 100);
        var c = EfficiencyComparison.Of(reference, variant, zero);
        Assert.Equal(2.0, c.IdealLayerSpeedup, 12);
        Assert.Equal(8.0 / 4.0, c.LayerDecodeSpeedup!.Value, 9);       // (10 − 2) / (6 − 2)
        Assert.Equal(10.0 / (2 + 8.0 / 2), c.IdealDecodeSpeedup!.Value, 9); // 10 / (2 + 4)
        Assert.Equal(10.0 / 6, c.DecodeSpeedup, 9);
        Assert.Equal(700, c.WeightBytesSaved);
        Assert.Equal(700.0 / 1600, c.WeightSavedFraction, 12);
        var row = variant.RowFields(reference);
        Assert.Equal(10.0 / 6, row["decode_speedup"], 9);
        Assert.Equal(900, row["weight_bytes"]);
    }

    [Fact]
    public void Result_json_round_trips()
    {
        var r = Result(8, 123.5, 4567) with { Resident = new ResidentMemory(10, 7, 3, 12), Process = new MemorySnapshot(1, 2, 3, 4) };
        var back = EfficiencyResult.FromJson(JsonNode.Parse(r.ToJson().ToJsonString())!.AsObject());
        Assert.Equal(r.ToJson().ToJsonString(), back.ToJson().ToJsonString());
        Assert.Equal(r.Resident, back.Resident);
        Assert.Equal(r.Process, back.Process);
        Assert.Equal(r.DecodeTokensPerSecond.Samples, back.DecodeTokensPerSecond.Samples);
    }

    static EfficiencyResult Result(int layers, double decodeTokensPerSecond, long weightBytes) => new(
        $"{layers} layers", "/m", 16, Enumerable.Range(0, layers).ToArray(), "cpu", "Float32", 32, 8, 1, 3,
        Spread.Of([1000.0, 1100, 900]), Spread.Of([decodeTokensPerSecond]), weightBytes, 0, null, null,
        new MachineInfo("cpu", ["avx2"], 2, 2));

    [Fact]
    public void Bench_command_prints_json_with_the_variant_and_the_comparison()
    {
        var (code, stdout, stderr) = CliRunner.Run("bench", "--model", KjvModel.Dir, "--layers-removed", "8-14", "--json",
            "--repeats", "1", "--warmup", "0", "--prompt-length", "8", "--decode-tokens", "4");
        Assert.True(code == 0, stderr);
        var o = JsonNode.Parse(stdout)!.AsObject();
        Assert.Equal(16, o["unpruned"]!["layers_run"]!.AsArray().Count);
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 7, 15], o["variant"]!["layers_run"]!.AsArray().Select(x => x!.GetValue<int>()));
        Assert.Empty(o["zero_layers"]!["layers_run"]!.AsArray());
        using var ckpt = Checkpoint.Open(KjvModel.Dir);
        long expectedSaved = ExpectedWeightBytes(ckpt.Config, 16) - ExpectedWeightBytes(ckpt.Config, 9);
        Assert.Equal(expectedSaved, o["comparison"]!["weight_bytes_saved"]!.GetValue<long>());
        Assert.Equal(2L * 9 * 4 * 32 * 12 * 4, o["variant"]!["kv_cache_bytes"]!.GetValue<long>());
        Assert.True(o["unpruned"]!["decode_tokens_per_second"]!["median"]!.GetValue<double>() > 0);
        Assert.NotNull(o["unpruned"]!["resident"]);
        Assert.IsType<JsonArray>(o["unpruned"]!["cpu_flags"]);
    }

    [Theory]
    [InlineData("--layers-removed", "3-99", "--layers-removed '3-99': layer 16 is out of range")]
    [InlineData("--layers-removed", "0-15", "--layers-removed '0-15': removes all 16 layers")]
    [InlineData("--decode-tokens", "0", "--decode-tokens 0: must be at least 1")]
    [InlineData("--threads", "0", "--threads 0: must be at least 1")]
    public void Bench_command_rejects_bad_values_in_one_line(string flag, string value, string message)
    {
        var (code, stdout, stderr) = CliRunner.Run("bench", "--model", KjvModel.Dir, flag, value);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.StartsWith($"error: {message}", stderr.Trim());
        Assert.Single(stderr.Trim().Split('\n'));
    }
}
