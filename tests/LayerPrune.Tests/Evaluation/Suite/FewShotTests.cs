using LayerPrune.Evaluation;
using LayerPrune.Evaluation.Suite;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Evaluation.Suite;

/// <summary>
/// num_fewshot with train=FILE as lm-evaluation-harness samples it (lm_eval/api/samplers.py ContextSampler.get_context,
/// seeded by task.set_fewshot_seed(1234)): per document, in order, <c>fewshotex = self.rnd.sample(self.docs, n_samples)</c>,
/// <c>selected_docs = [x for x in fewshotex if x != doc][:num_fewshot]</c>, each example doc_to_text + target_delimiter
/// (" ") + the gold choice + fewshot_delimiter ("\n\n"); n_samples = num_fewshot + 1 where the YAML's test_split is null
/// (piqa, winogrande: fewshot_split == test_split, both None), else num_fewshot (arc, openbookqa: test_split: test).
/// The indices come from CPython 3.11: <c>r = random.Random(1234); [r.sample(range(N), n_samples) for _ in range(3)]</c>.
/// </summary>
public class FewShotTests
{
    static string Bench(params string[] parts) => SuiteRequestTests.Bench(parts);

    /// <summary>CPython's own values: random.Random(1234).getrandbits(32) ×3, random(), then sample() on the same generator
    /// (populations above 21 take the rejection-set branch); seed 2**40 + 5 seeds from two 32-bit words.</summary>
    [Fact]
    public void PyRandomReproducesCPython()
    {
        var r = new PyRandom(1234);
        Assert.Equal([4150886329u, 3342196574u, 1892932127u], new[] { r.GetRandBits(32), r.GetRandBits(32), r.GetRandBits(32) });
        Assert.Equal(0.11685051774599753, r.NextDouble());
        r = new PyRandom(1234);
        Assert.Equal([99, 56, 14, 0, 11], r.Sample(100, 5));
        Assert.Equal([932, 965, 961, 826, 596, 35, 687], r.Sample(1000, 7));
        Assert.Equal([22, 2], r.Sample(30, 2));
        Assert.Equal([32, 33, 17], new PyRandom((1L << 40) + 5).Sample(50, 3));
        // The pool branch (population ≤ 21): the draws of the tests below.
        r = new PyRandom(1234);
        Assert.Equal([[14, 3], [0, 2], [18, 1]], Enumerable.Range(0, 3).Select(_ => r.Sample(20, 2)));
        r = new PyRandom(1234);
        Assert.Equal([[7, 1, 0], [1, 0, 9], [1, 5, 3]], Enumerable.Range(0, 3).Select(_ => r.Sample(10, 3)));
    }

    static (string, string)[] Pairs(ChoiceDoc d) => d.Contexts.Zip(d.Continuations).ToArray();

    /// <summary>arc_easy, 2-shot from arc_challenge's rows as the training split: n_samples = 2; draws [14, 3], [0, 2],
    /// [18, 1].</summary>
    [Fact]
    public void ArcTwoShotRequestsOfTheFirstThreeDocuments()
    {
        var t = (ChoiceSuiteTask)EvalTasks.Parse($"arc_easy:{Bench("arc_easy", "test.jsonl")},shots=2," +
            $"train={Bench("arc_challenge", "test.jsonl")}");
        var (docs, documents) = t.LoadDocs(limit: 3);
        Assert.Equal(20, documents);   // the shots come from the train file: every document of the file is scored
        const string s14 = "Question: Which of these gases is the most abundant greenhouse gas in the lower atmosphere of Earth?\n" +
            "Answer: water vapor";
        const string s3 = "Question: A physicist wants to determine the speed a car must reach to jump over a ramp. The physicist " +
            "conducts three trials. In trials two and three, the speed of the car is increased by 20 miles per hour. What is the " +
            "physicist investigating when he changes the speed?\nAnswer: the independent (manipulated) variable";
        const string s0 = "Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most " +
            "likely effect of this increase in rotation?\nAnswer: Planetary days will become shorter.";
        const string s2 = "Question: The end result in the process of photosynthesis is the production of sugar and oxygen. Which " +
            "step signals the beginning of photosynthesis?\nAnswer: Chlorophyll in the leaf captures light energy.";
        const string s18 = "Question: Logging companies cut trees in a forest and send the trees to lumber mills far from the forest. " +
            "The mills make boards that are used for construction. Some logging companies do not plant tree seedlings after cutting " +
            "trees. Not planting tree seedlings might affect people who need boards in the future because\n" +
            "Answer: the price of boards will increase";
        const string s1 = "Question: A group of engineers wanted to know how different building designs would respond during an " +
            "earthquake. They made several models of buildings and tested each for its ability to withstand earthquake conditions. " +
            "Which will most likely result from testing different building designs?\nAnswer: buildings will be made safer";
        string[] prefixes = [s14 + "\n\n" + s3 + "\n\n", s0 + "\n\n" + s2 + "\n\n", s18 + "\n\n" + s1 + "\n\n"];
        for (int i = 0; i < 3; i++)
            Assert.Equal(SuiteRequestTests.Expected["arc_easy"][i].Select(r => (prefixes[i] + r.Context, r.Continuation)).ToArray(),
                Pairs(docs[i]));
    }

    /// <summary>winogrande (no test_split: n_samples = 3), 2-shot from rows 10–19 of the file as the training split:
    /// draws [7, 1, 0], [1, 0, 9], [1, 5, 3] → the first two; each example is the option-filled partial context + " " + the
    /// rest of the sentence; the partial contexts of the document keep the prefix.</summary>
    [Fact]
    public void WinograndeTwoShotDrawsOneExtraAndPrefixesEachPartialContext()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["train.jsonl"], File.ReadLines(Bench("winogrande", "validation.jsonl")).Skip(10));
        var t = (ChoiceSuiteTask)EvalTasks.Parse(
            $"winogrande:{Bench("winogrande", "validation.jsonl")},shots=2,train={dir["train.jsonl"]}");
        var docs = t.LoadDocs(limit: 3).Docs;
        const string s7 = "Michael just bought brand new wheels for his truck unlike Leslie because Michael wheels were old and used.";
        const string s1 = "I had to read an entire story for class tomorrow. Luckily, the class was canceled.";
        const string s0 = "Joe immediately went to bakery before the bank because the bank had a substantial supply of what he " +
            "wanted.";
        const string s5 = "Lindsey like to read graphic novels but Natalie liked classic literature to read. Lindsey bought the new " +
            "Frank Miller comic at the book store.";
        string[] prefixes = [s7 + "\n\n" + s1 + "\n\n", s1 + "\n\n" + s0 + "\n\n", s1 + "\n\n" + s5 + "\n\n"];
        for (int i = 0; i < 3; i++)
            Assert.Equal(SuiteRequestTests.Expected["winogrande"][i].Select(r => (prefixes[i] + r.Context, r.Continuation)).ToArray(),
                Pairs(docs[i]));
    }

    /// <summary>With the scored file as its own training split, a draw of the document itself is dropped
    /// (<c>x != doc</c>): document 2 draws rows [2, 3, 11] and keeps [3, 11].</summary>
    [Fact]
    public void TheDocumentItselfIsNotItsOwnExample()
    {
        string file = Bench("winogrande", "validation.jsonl");
        var docs = ((ChoiceSuiteTask)EvalTasks.Parse($"winogrande:{file},shots=2,train={file}")).LoadDocs(limit: 3).Docs;
        const string s3 = "Terry tried to bake the eggplant in the toaster oven but the eggplant was too big.";
        const string s11 = "I had to read an entire story for class tomorrow. Luckily, the class was canceled.";
        Assert.Equal(SuiteRequestTests.Expected["winogrande"][2].Select(r => (s3 + "\n\n" + s11 + "\n\n" + r.Context, r.Continuation))
            .ToArray(), Pairs(docs[2]));
    }

    [Fact]
    public void ATrainFileWithTooFewRowsIsNamed()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["train.jsonl"], File.ReadLines(Bench("winogrande", "validation.jsonl")).Take(2));
        var t = (ChoiceSuiteTask)EvalTasks.Parse(
            $"winogrande:{Bench("winogrande", "validation.jsonl")},shots=2,train={dir["train.jsonl"]}");
        var e = Assert.Throws<LayerPruneException>(() => t.LoadDocs(limit: 1));
        Assert.Equal($"{dir["train.jsonl"]}: 2-shot winogrande draws 3 rows, found 2", e.Message);
    }
}
