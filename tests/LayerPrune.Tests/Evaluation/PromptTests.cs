using LayerPrune.Evaluation;
using Xunit;

namespace LayerPrune.Tests.Evaluation;

public class PromptTests
{
    private static string Bench(params string[] p) => Path.Combine([TestPaths.Fixtures, "benchmarks", .. p]);

    [Fact]
    public void Mmlu_FirstAbstractAlgebraItem_FiveShotPromptIsExact()
    {
        var docs = MmluTask.Load(Bench("mmlu"), numFewshot: 5);
        var doc = docs.First(d => d.Subject == "abstract_algebra");
        // Written by hand from dev/abstract_algebra_dev.csv (5 rows) and the first row of test/abstract_algebra_test.csv.
        const string expected =
            "The following are multiple choice questions (with answers) about abstract algebra.\n\n" +
            "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n" +
            "Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K are subgroups of G then HK is a subgroup of G.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: B\n\n" +
            "Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | The symmetric group S_10 has 10 elements.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: C\n\n" +
            "Statement 1| Every function from a finite set onto itself must be one to one. Statement 2 | Every subgroup of an abelian group is abelian.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: A\n\n" +
            "Find the characteristic of the ring 2Z.\nA. 0\nB. 3\nC. 12\nD. 30\nAnswer: A\n\n" +
            "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:";
        Assert.Equal(expected, doc.Context);
        Assert.Equal([" A", " B", " C", " D"], doc.Continuations);
        Assert.Equal([1, 1, 1, 1], doc.NormLengths);
        Assert.Equal(1, doc.Gold);
    }

    [Fact]
    public void Mmlu_ZeroShot_IsDescriptionPlusQuestion_AndSubjectsSorted()
    {
        var docs = MmluTask.Load(Bench("mmlu"), numFewshot: 0, limitPerSubject: 1);
        Assert.Equal(["abstract_algebra", "anatomy", "high_school_geography"], docs.Select(d => d.Subject));
        Assert.StartsWith("The following are multiple choice questions (with answers) about high school geography.\n\n",
            docs[2].Context);
        Assert.Single(docs[0].Context.Split("Answer:")[1..]);
    }

    [Fact]
    public void Boolq_FirstValidationRow_PromptIsExact()
    {
        var doc = BoolqTask.Load(Bench("boolq", "validation.jsonl"), limit: 1)[0];
        const string passage = "Ethanol fuel -- All biomass goes through at least some of these steps: it needs to be grown, collected, dried, fermented, distilled, and burned. All of these steps require resources and an infrastructure. The total amount of energy input into the process compared to the energy released by burning the resulting ethanol fuel is known as the energy balance (or ``energy returned on energy invested''). Figures compiled in a 2007 report by National Geographic Magazine point to modest results for corn ethanol produced in the US: one unit of fossil-fuel energy is required to create 1.3 energy units from the resulting ethanol. The energy balance for sugarcane ethanol produced in Brazil is more favorable, with one unit of fossil-fuel energy required to create 8 from the ethanol. Energy balance estimates are not easily produced, thus numerous such reports have been generated that are contradictory. For instance, a separate survey reports that production of ethanol from sugarcane, which requires a tropical climate to grow productively, returns from 8 to 9 units of energy for each unit expended, as compared to corn, which only returns about 1.34 units of fuel energy for each unit of energy expended. A 2006 University of California Berkeley study, after analyzing six separate studies, concluded that producing ethanol from corn uses much less petroleum than producing gasoline.";
        Assert.Equal(passage + "\nQuestion: does ethanol take more energy make that produces?\nAnswer:", doc.Context);
        Assert.Equal([" no", " yes"], doc.Continuations);
        Assert.Equal([2, 3], doc.NormLengths);
        Assert.Equal(0, doc.Gold); // "answer": false
    }

    [Fact]
    public void Hellaswag_RawLayout_PreprocessIsExact()
    {
        var path = Path.Combine(Path.GetTempPath(), $"hs-{Guid.NewGuid():N}.jsonl");
        File.WriteAllText(path,
            """{"activity_label": "Home and Garden", "ctx_a": "[header] How to plant tulips [title] Pick a sunny spot.", "ctx_b": "DIG a hole", "endings": [" that is 8 inches deep. [step] Tulips need  depth. ", "[substeps] and  leave it."], "label": "0"}""" + "\n");
        try
        {
            var doc = HellaswagTask.Load(path)[0];
            // strip → " [title]" becomes ". " → "[...]" removed → first "  " collapsed; ctx_b capitalised ("Dig a hole").
            Assert.Equal("Home and Garden: How to plant tulips. Pick a sunny spot. Dig a hole", doc.Context);
            // The second ending keeps a leading space: strip() runs before "[substeps]" is removed (as in the harness).
            Assert.Equal([" that is 8 inches deep. Tulips need depth.", "  and leave it."], doc.Continuations);
            Assert.Equal([41, 14], doc.NormLengths);
            Assert.Equal(0, doc.Gold);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void Hellaswag_PreprocessedLayout_FirstFixtureRow()
    {
        var doc = HellaswagTask.Load(Bench("hellaswag", "validation.jsonl"), limit: 1)[0];
        Assert.Equal("Roof shingle removal: A man is sitting on a roof. he", doc.Context);
        Assert.Equal([" is using wrap to wrap a pair of skis.", " is ripping level tiles off.", " is holding a rubik's cube.",
            " starts pulling up roofing on a roof."], doc.Continuations);
        Assert.Equal(3, doc.Gold);
        Assert.Equal(36, doc.NormLengths[3]); // len("starts pulling up roofing on a roof.")
    }

    [Fact]
    public void Hellaswag_Preprocess_MatchesHarnessSteps()
    {
        Assert.Equal("a. b", HellaswagTask.Preprocess("  a [title] b "));        // ". " then "  " → " "
        Assert.Equal("x y", HellaswagTask.Preprocess("x [step] [x]y"));           // brackets removed, one "  " collapsed
        Assert.Equal("a  b", HellaswagTask.Preprocess("a    b"));                 // replace("  "," ") is a single pass
    }

    [Fact]
    public void Gsm8k_TwoShotPrompt_IsExact()
    {
        var docs = Gsm8kTask.Load(Bench("gsm8k", "test.jsonl"), Bench("gsm8k", "train.jsonl"), numFewshot: 2, limit: 1);
        var d = docs[0];
        const string expected =
            "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?\n" +
            "Answer: Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72\n\n" +
            "Question: Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?\n" +
            "Answer: Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10\n\n" +
            "Question: Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. How much in dollars does she make every day at the farmers' market?\nAnswer:";
        Assert.Equal(expected, d.Prompt);
        Assert.Equal(["Question:", "</s>", "<|im_end|>"], d.StopSequences);
        Assert.EndsWith("#### 18", d.Target);
    }

    [Fact]
    public void Gsm8k_WithoutTrainFile_ShotsComeFromTestAndAreNotScored()
    {
        var all = Gsm8kTask.ReadRows(Bench("gsm8k", "test.jsonl"));
        var docs = Gsm8kTask.Load(Bench("gsm8k", "test.jsonl"), trainPath: null, numFewshot: 2);
        Assert.Equal(all.Count - 2, docs.Count);
        Assert.StartsWith("Question: " + all[0].Question + "\nAnswer: " + all[0].Answer + "\n\n", docs[0].Prompt);
        Assert.EndsWith("Question: " + all[2].Question + "\nAnswer:", docs[0].Prompt);
    }

    [Theory]
    [InlineData("so the total is 1234.\n#### 1,234", "1,234", "1,234", "#### 1234", true, true)]
    [InlineData("The answer is $18.", "[invalid]", "$18.", "#### 18", false, true)]
    [InlineData("He loses 5 then -7 more.\n#### -12", "-12", "-12", "#### -12", true, true)]
    [InlineData("From 3 to 45 dollars, so 42", "[invalid]", "42", "#### 42", false, true)]
    [InlineData("#### 5 and later 6", "5", "6", "#### 5", true, false)]
    [InlineData("no number here", "[invalid]", "[invalid]", "#### 3", false, false)]
    [InlineData("It is 7", "[invalid]", "7", "#### 7", false, true)] // single digit: second alternative (-?[0-9]+)
    public void Gsm8k_AnswerExtraction(string response, string strict, string flexible, string target, bool strictOk, bool flexOk)
    {
        Assert.Equal(strict, Gsm8kTask.StrictMatch(response));
        Assert.Equal(flexible, Gsm8kTask.FlexibleExtract(response));
        Assert.Equal(strictOk, Gsm8kTask.IsCorrect(Gsm8kTask.StrictMatch(response), target));
        Assert.Equal(flexOk, Gsm8kTask.IsCorrect(Gsm8kTask.FlexibleExtract(response), target));
    }

    [Fact]
    public void Gsm8k_TruncatesAtStopSequences()
    {
        Assert.Equal(" 4 + 4 = 8\n#### 8\n\n", Gsm8kTask.TruncateAtStop(" 4 + 4 = 8\n#### 8\n\nQuestion: next</s>", Gsm8kTask.StopSequences));
        Assert.Equal("abc", Gsm8kTask.TruncateAtStop("abc<|im_end|>Question:", Gsm8kTask.StopSequences));
    }

    [Fact]
    public void Mc_KjvCloze_ChoicesVerbatim()
    {
        var docs = McTask.Load(Path.Combine(TestPaths.Samples, "data", "kjv-cloze", "test.jsonl"));
        Assert.Equal(500, docs.Count);
        Assert.Equal("For Christ is the end of the law for righteousness to every one that", docs[0].Context);
        Assert.Equal([" woman", " gavest", " like", " believeth"], docs[0].Continuations);
        Assert.Equal([6, 7, 5, 10], docs[0].NormLengths); // the leading space counts: choices are used verbatim
        Assert.Equal(3, docs[0].Gold);
    }
}
