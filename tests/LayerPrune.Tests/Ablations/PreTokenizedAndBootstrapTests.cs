using LayerPrune.Data;
using LayerPrune.Similarity;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Ablations;

public class PreTokenizedAndBootstrapTests
{
    [Fact]
    public void RowsAreConcatenatedVerbatimIntoChunksAndSamplesAreTruncated()
    {
        using var tmp = new TempDir();
        string path = tmp["ids.jsonl"];
        File.WriteAllText(path, "{\"input_ids\": [1, 2, 3]}\n\n{\"input_ids\": [4, 5, 6, 7, 8]}\n{\"input_ids\": [9]}\n");
        Assert.True(PreTokenized.IsPreTokenized(path));
        var chunks = PreTokenized.Chunks(path, seqLen: 4);
        Assert.Equal(new[] { new[] { 1, 2, 3, 4 }, new[] { 5, 6, 7, 8 } }, chunks);                   // 9 is the incomplete tail
        Assert.Single(PreTokenized.Chunks(path, seqLen: 4, maxChunks: 1));
        var samples = SampleLoader.Load(path, tok: null, samples: 2, seqLen: 4);
        Assert.Equal(new[] { new[] { 1, 2, 3 }, new[] { 4, 5, 6, 7 } }, samples);
    }

    [Theory]
    [InlineData("{\"input_ids\": [1, -2]}", "ids.jsonl:1: \"input_ids\"[1] must be a non-negative integer, got -2")]
    [InlineData("{\"input_ids\": [1, 2.5]}", "ids.jsonl:1: \"input_ids\"[1] must be a non-negative integer, got 2.5")]
    [InlineData("{\"input_ids\": [1, 99]}", "ids.jsonl:1: \"input_ids\"[1] = 99 is outside the model's vocabulary (size 50)")]
    [InlineData("{\"input_ids\": [1]}\n{\"text\": \"a\"}", "ids.jsonl:2: missing array field \"input_ids\"")]
    [InlineData("{\"input_ids\": []}", "ids.jsonl:1: \"input_ids\" is empty")]
    public void BadRowsNameFileLineAndWhatIsWrong(string content, string message)
    {
        using var tmp = new TempDir();
        string path = tmp["ids.jsonl"];
        File.WriteAllText(path, content);
        var e = Assert.Throws<LayerPruneException>(() => PreTokenized.Chunks(path, 1, vocabSize: 50));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void BootstrapFrequencyAndIntervalFollowThePerSampleMatrices()
    {
        // Three layers; n = 1. Sample A prefers block start 0, sample B start 2 (weakly): the mean prefers 0.
        static double[,] M(double d01, double d12, double d23)
        {
            var m = new double[4, 4];
            m[0, 1] = d01; m[1, 2] = d12; m[2, 3] = d23; m[0, 2] = m[1, 3] = 0.5;
            return m;
        }
        var a = M(0.1, 0.4, 0.3);
        var b = M(0.3, 0.4, 0.2);
        var mean = M(0.2, 0.4, 0.25);
        var r = new SimilarityResult { Matrix = mean, Samples = 2, PerSample = [a, b] };
        var boot = SimilarityBootstrap.Run(r, resamples: 2000, seed: 7);
        var n1 = boot.Choices[0];
        Assert.Equal(0, n1.Start);
        // Resamples {A,A}, {A,B}, {B,A} choose 0 (d01 ≤ d23), {B,B} chooses 2: frequency 3/4.
        Assert.InRange(n1.ArgminFrequency, 0.72, 0.78);
        Assert.Equal(0.1, n1.Low, 12);                                        // d01 of {A,A}
        Assert.Equal(0.3, n1.High, 12);                                       // d01 of {B,B}
        Assert.Contains(n1, boot.Unstable);
        Assert.Equal(boot.Choices, SimilarityBootstrap.Run(r, 2000, 7).Choices);
    }
}
