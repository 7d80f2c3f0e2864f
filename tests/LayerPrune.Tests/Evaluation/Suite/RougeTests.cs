using LayerPrune.Evaluation.Suite;

namespace LayerPrune.Tests.Evaluation.Suite;

/// <summary>
/// ROUGE against the published test cases of Google's rouge-score (rouge/rouge_scorer_test.py @ google-research): the
/// small sentence pairs, and the two target/prediction pairs whose "ground truth" scores come from ROUGE-1.5.5 runs,
/// with and without the Porter stemmer. Asserted to the 5 decimals the reference test gives.
/// </summary>
public class RougeTests
{
    static readonly string[] Targets = File.ReadAllLines(Path.Combine(TestPaths.Fixtures, "rouge", "target.txt"));
    static readonly string[] Predictions = File.ReadAllLines(Path.Combine(TestPaths.Fixtures, "rouge", "prediction.txt"));

    static void Near((double P, double R, double F) expected, RougeScore s, int digits = 5)
    {
        Assert.Equal(expected.P, s.Precision, digits);
        Assert.Equal(expected.R, s.Recall, digits);
        Assert.Equal(expected.F, s.FMeasure, digits);
    }

    [Fact]
    public void SentencePairs()
    {
        // testRouge1, testRouge2, testRougeLConsecutive, testRougeLNonConsecutive, testMultipleRougeTypes (score(target, prediction)).
        Near((1, 1 / 3.0, 1 / 2.0), Rouge.N("testing one two", "testing", 1, stem: false), 12);
        Near((1, 1 / 2.0, 2 / 3.0), Rouge.N("testing one two", "testing one", 2, stem: false), 12);
        Near((1, 2 / 3.0, 4 / 5.0), Rouge.L("testing one two", "testing one", stem: false), 12);
        Near((1, 2 / 3.0, 4 / 5.0), Rouge.L("testing one two", "testing two", stem: false), 12);
        Near((1, 2 / 3.0, 4 / 5.0), Rouge.N("testing one two", "testing one", 1, stem: false), 12);
        // testRougeEmpty: an empty prediction scores 0 for every type.
        Near((0, 0, 0), Rouge.N("testing one two", "", 1), 12);
        Near((0, 0, 0), Rouge.N("testing one two", "", 2), 12);
        Near((0, 0, 0), Rouge.L("testing one two", ""), 12);
    }

    [Fact]
    public void AgainstRouge155WithoutStemming()
    {
        Near((0.68750, 0.40741, 0.51163), Rouge.N(Targets[0], Predictions[0], 1, stem: false));
        Near((0.65385, 0.40476, 0.50000), Rouge.N(Targets[1], Predictions[1], 1, stem: false));
        Near((0.53333, 0.30769, 0.39024), Rouge.N(Targets[0], Predictions[0], 2, stem: false));
        Near((0.48000, 0.29268, 0.36364), Rouge.N(Targets[1], Predictions[1], 2, stem: false));
        Near((0.68750, 0.40741, 0.51163), Rouge.L(Targets[0], Predictions[0], stem: false));
        Near((0.65385, 0.40476, 0.50000), Rouge.L(Targets[1], Predictions[1], stem: false));
    }

    [Fact]
    public void AgainstRouge155WithStemming()
    {
        Near((0.68750, 0.40741, 0.51163), Rouge.N(Targets[0], Predictions[0], 1));
        Near((0.69231, 0.42857, 0.52941), Rouge.N(Targets[1], Predictions[1], 1));
        Near((0.53333, 0.30769, 0.39024), Rouge.N(Targets[0], Predictions[0], 2));
        Near((0.48000, 0.29268, 0.36364), Rouge.N(Targets[1], Predictions[1], 2));
    }

    [Fact]
    public void TokenizeLowercasesSplitsOnNonAlphanumericsAndStemsLongWords()
    {
        Assert.Equal(["the", "quick", "brown", "fox", "jump", "over", "3", "lazi", "dog"],
            Rouge.Tokenize("The quick-brown fox JUMPS over 3 lazy dogs!"));
        Assert.Equal(["caf", "na", "ve"], Rouge.Tokenize("café naïve"));   // non-ASCII letters are separators, as in [^a-z0-9]
        Assert.Empty(Rouge.Tokenize("/"));
    }

    /// <summary>NLTK PorterStemmer (NLTK_EXTENSIONS) outputs: the paper's examples, and NLTK's own departures.</summary>
    [Theory]
    [InlineData("caresses", "caress")] [InlineData("ponies", "poni")] [InlineData("ties", "tie")] [InlineData("cats", "cat")]
    [InlineData("feed", "feed")] [InlineData("agreed", "agre")] [InlineData("plastered", "plaster")] [InlineData("bled", "bled")]
    [InlineData("motoring", "motor")] [InlineData("sing", "sing")] [InlineData("conflated", "conflat")]
    [InlineData("troubled", "troubl")] [InlineData("sized", "size")] [InlineData("hopping", "hop")] [InlineData("falling", "fall")]
    [InlineData("hissing", "hiss")] [InlineData("filing", "file")] [InlineData("happy", "happi")] [InlineData("sky", "sky")]
    [InlineData("relational", "relat")] [InlineData("conditional", "condit")] [InlineData("generalization", "gener")]
    [InlineData("dying", "die")] [InlineData("spied", "spi")] [InlineData("died", "die")] [InlineData("enjoy", "enjoy")]
    [InlineData("meetings", "meet")] [InlineData("running", "run")] [InlineData("controlling", "control")]
    [InlineData("is", "is")] [InlineData("summarization", "summar")] [InlineData("effective", "effect")]
    public void PorterStems(string word, string stem) => Assert.Equal(stem, PorterStemmer.Stem(word));
}
