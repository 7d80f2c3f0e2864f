using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using LayerPrune.Evaluation.Suite;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Evaluation.Suite;

/// <summary>
/// The request strings of the first 3 documents of each multiple-choice task of the suite, spelled out as
/// lm-evaluation-harness builds them from the same rows (the YAML lines they come from are quoted above each block).
/// For output_type multiple_choice the harness's requests are (doc_to_text, target_delimiter + choice) per choice; for
/// WinoGrande, whose doc_to_text returns an index, (choice, target_delimiter + doc_to_target) per choice.
/// </summary>
public class SuiteRequestTests
{
    internal static string Bench(params string[] parts) => Path.Combine([TestPaths.Fixtures, "benchmarks", .. parts]);

    internal static readonly Dictionary<string, string> Files = new()
    {
        ["arc_easy"] = Bench("arc_easy", "test.jsonl"), ["arc_challenge"] = Bench("arc_challenge", "test.jsonl"),
        ["piqa"] = Bench("piqa", "validation.jsonl"), ["openbookqa"] = Bench("openbookqa", "test.jsonl"),
        ["winogrande"] = Bench("winogrande", "validation.jsonl"),
    };

    static (string, string)[] Same(string context, params string[] choices) => choices.Select(c => (context, " " + c)).ToArray();

    /// <summary>Per task: per document, the (context, continuation) pairs and the gold index.</summary>
    internal static readonly Dictionary<string, (string Context, string Continuation)[][]> Expected = new()
    {
        // arc_easy.yaml: doc_to_text: "Question: {{question}}\nAnswer:"   doc_to_choice: "{{choices.text}}"   (target_delimiter " ")
        ["arc_easy"] =
        [
            Same("Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:",
                "Sunlight is the source of energy for nearly all ecosystems.", "Most ecosystems are found on land instead of in water.",
                "Carbon dioxide is more available than other gases.", "The producers in all ecosystems are plants."),
            Same("Question: Which piece of safety equipment is used to keep mold spores from entering the respiratory system?\nAnswer:",
                "safety goggles", "breathing mask", "rubber gloves", "lead apron"),
            Same("Question: Meiosis is a type of cell division in which germ cells divide to produce haploid cells. " +
                 "Where does meiosis occur?\nAnswer:", "brain cells", "bone cells", "muscle cells", "ovary cells"),
        ],
        // arc_challenge.yaml: include: arc_easy.yaml (same doc_to_text / doc_to_choice)
        ["arc_challenge"] =
        [
            Same("Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely " +
                 "effect of this increase in rotation?\nAnswer:", "Planetary density will decrease.", "Planetary years will become longer.",
                "Planetary days will become shorter.", "Planetary gravity will become stronger."),
            Same("Question: A group of engineers wanted to know how different building designs would respond during an earthquake. " +
                 "They made several models of buildings and tested each for its ability to withstand earthquake conditions. Which will " +
                 "most likely result from testing different building designs?\nAnswer:", "buildings will be built faster",
                "buildings will be made safer", "building designs will look nicer", "building materials will be cheaper"),
            Same("Question: The end result in the process of photosynthesis is the production of sugar and oxygen. Which step signals " +
                 "the beginning of photosynthesis?\nAnswer:", "Chemical energy is absorbed through the roots.",
                "Light energy is converted to chemical energy.", "Chlorophyll in the leaf captures light energy.",
                "Sunlight is converted into chlorophyll."),
        ],
        // piqa.yaml: doc_to_text: "Question: {{goal}}\nAnswer:"   doc_to_choice: "{{[sol1, sol2]}}"
        ["piqa"] =
        [
            Same("Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
                "Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will also need to " +
                "supply it with a water bottle and a food dish.",
                "Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you will also need " +
                "to supply it with a water bottle and a food dish."),
            Same("Question: dresser\nAnswer:", "replace drawer with bobby pin ", "finish, woodgrain with  bobby pin "),
            Same("Question: To fight Ivan Drago in Rocky for sega master system.\nAnswer:",
                "Drago isn't in this game because it was released before Rocky IV.",
                "You have to defeat Apollo Creed and Clubber Lang first."),
        ],
        // openbookqa.yaml: doc_to_text: question_stem   doc_to_choice: "{{choices.text}}"
        ["openbookqa"] =
        [
            Same("A person wants to start saving money so that they can afford a nice vacation at the end of the year. After looking " +
                 "over their budget and expenses, they decide the best way to save money is to",
                "make more phone calls", "quit eating lunch out", "buy less with monopoly money", "have lunch with friends"),
            Same("There is most likely going to be fog around:", "a marsh", "a tundra", "the plains", "a desert"),
            Same("Predators eat", "lions", "humans", "bunnies", "grass"),
        ],
        // winogrande/default.yaml + preprocess_winogrande.py:
        //   doc_to_choice: [sentence[:idx] + option1, sentence[:idx] + option2]   (idx = sentence.index("_"))
        //   doc_to_target: sentence[idx + 1:].strip()   → continuation " " + target for both contexts
        ["winogrande"] =
        [
            [("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
             ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases.")],
            [("Sarah was a much better surgeon than Maria so Sarah", " always got the harder cases."),
             ("Sarah was a much better surgeon than Maria so Maria", " always got the harder cases.")],
            [("They were worried the wine would ruin the bed and the blanket, but the blanket", " was't ruined."),
             ("They were worried the wine would ruin the bed and the blanket, but the bed", " was't ruined.")],
        ],
    };

    /// <summary>doc_to_target of the first 3 documents: arc answerKey A, B, D → 0, 1, 3; arc_challenge C, B, C; piqa label;
    /// openbookqa answerKey B, A, C; winogrande {"1": 0, "2": 1}[answer] for answers "2", "1", "2".</summary>
    internal static readonly Dictionary<string, int[]> Gold = new()
    {
        ["arc_easy"] = [0, 1, 3], ["arc_challenge"] = [2, 1, 2], ["piqa"] = [0, 1, 1], ["openbookqa"] = [1, 0, 2],
        ["winogrande"] = [1, 0, 1],
    };

    [Theory]
    [InlineData("arc_easy")]
    [InlineData("arc_challenge")]
    [InlineData("piqa")]
    [InlineData("openbookqa")]
    [InlineData("winogrande")]
    public void FirstThreeDocumentsBuildTheHarnessRequests(string task)
    {
        var t = Assert.IsAssignableFrom<ChoiceSuiteTask>(EvalTasks.Parse($"{task}:{Files[task]}"));
        var (docs, documents) = t.LoadDocs(limit: 3);
        Assert.Equal(20, documents);
        Assert.Equal(3, docs.Count);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(Expected[task][i], docs[i].Contexts.Zip(docs[i].Continuations).ToArray());
            Assert.Equal(Gold[task][i], docs[i].Gold);
        }
    }

    /// <summary>acc_norm divides by len(choice) without the delimiter, in code points (ConfigurableTask.process_results).</summary>
    [Fact]
    public void AccNormLengthsAreTheChoiceTextsAndWinograndeHasNone()
    {
        var arc = (ChoiceSuiteTask)EvalTasks.Parse($"arc_easy:{Files["arc_easy"]}");
        Assert.Equal([14, 14, 13, 10], arc.LoadDocs(2).Docs[1].NormLengths!);
        var wino = (ChoiceSuiteTask)EvalTasks.Parse($"winogrande:{Files["winogrande"]}");
        Assert.Null(wino.LoadDocs(1).Docs[0].NormLengths);
    }

    /// <summary>shots=N without train=FILE: the first N rows of the file itself as examples (doc_to_text + delimiter + gold
    /// choice), joined and followed by the fewshot delimiter "\n\n", and not scored. (With train=FILE the harness's
    /// sampler draws them: <see cref="FewShotTests"/>.)</summary>
    [Fact]
    public void FewShotPrefixWithoutTrainFileIsTheFirstRowsJoinedByTheFewshotDelimiter()
    {
        var piqa = (ChoiceSuiteTask)EvalTasks.Parse($"piqa:{Files["piqa"]},shots=2");
        var (docs, _) = piqa.LoadDocs(1);
        string shots = Expected["piqa"][0][0].Context + Expected["piqa"][0][0].Continuation + "\n\n" +
                       Expected["piqa"][1][1].Context + Expected["piqa"][1][1].Continuation + "\n\n";
        Assert.Equal(Expected["piqa"][2].Select(r => (shots + r.Context, r.Continuation)).ToArray(),
            docs[0].Contexts.Zip(docs[0].Continuations).ToArray());
    }

    [Fact]
    public void LambadaSplitsOffTheLastWordWithItsSpace()
    {
        // lambada_openai.yaml: doc_to_text "{{text.split(' ')[:-1]|join(' ')}}", doc_to_target "{{' '+text.split(' ')[-1]}}"
        var docs = LambadaTask.Read(Bench("lambada_openai", "test.jsonl"));
        Assert.Equal(20, docs.Count);
        Assert.EndsWith("his mouth curved in a confident grin, I don't care about", docs[0].Context);
        Assert.Equal(" signs", docs[0].Continuation);
        Assert.Equal(("", " word"), LambadaTask.Split("word"));
        Assert.Equal(("a\n\nb", " c."), LambadaTask.Split("a\n\nb c."));
    }

    [Fact]
    public void AMissingFieldNamesFileLineAndField()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["arc.jsonl"], [File.ReadLines(Files["arc_easy"]).First(),
            """{"id":"x","question":{"choices":[{"text":"a","label":"A"},{"text":"b","label":"B"}]},"answerKey":"A"}"""]);
        static void Load(string spec) => _ = ((ChoiceSuiteTask)EvalTasks.Parse(spec)).LoadDocs();
        var e = Assert.Throws<LayerPruneException>(() => Load($"arc_easy:{dir["arc.jsonl"]}"));
        Assert.Equal($"{dir["arc.jsonl"]}:2: missing string field \"question.stem\"", e.Message);

        File.WriteAllLines(dir["wino.jsonl"], ["""{"sentence":"A _ b.","option1":"x","answer":"1"}"""]);
        e = Assert.Throws<LayerPruneException>(() => Load($"winogrande:{dir["wino.jsonl"]}"));
        Assert.Equal($"{dir["wino.jsonl"]}:1: missing string field \"option2\"", e.Message);

        File.WriteAllLines(dir["lambada.jsonl"], ["""{"txt":"a b"}"""]);
        e = Assert.Throws<LayerPruneException>(() => { _ = LambadaTask.Read(dir["lambada.jsonl"]); });
        Assert.Equal($"{dir["lambada.jsonl"]}:1: missing string field \"text\"", e.Message);
    }

    [Fact]
    public void AnUnknownTaskListsTheKnownOnes()
    {
        var e = Assert.Throws<LayerPruneException>(() => EvalTasks.Parse("arc_hard:x.jsonl"));
        Assert.Contains("unknown kind \"arc_hard\"", e.Message);
        foreach (var k in new[] { "arc_easy", "arc_challenge", "piqa", "openbookqa", "winogrande", "lambada_openai", "wikitext", "boolq" })
            Assert.Contains(k, e.Message);
    }

    /// <summary>HF's flat layouts read the same as AI2's: ARC {question, choices{text,label}}, OpenBookQA {question_stem, ...}.</summary>
    [Fact]
    public void HfFlatLayoutsGiveTheSameDocuments()
    {
        using var dir = new TempDir();
        var flat = new List<string>();
        var obqa = new List<string>();
        foreach (var line in File.ReadLines(Files["arc_easy"]).Take(3))
        {
            var o = JsonNode.Parse(line)!.AsObject();
            var q = o["question"]!.AsObject();
            var ch = q["choices"]!.AsArray();
            var choices = new JsonObject
            {
                ["text"] = new JsonArray(ch.Select(c => (JsonNode?)c!["text"]!.GetValue<string>()).ToArray()),
                ["label"] = new JsonArray(ch.Select(c => (JsonNode?)c!["label"]!.GetValue<string>()).ToArray()),
            };
            flat.Add(new JsonObject { ["id"] = o["id"]!.GetValue<string>(), ["question"] = q["stem"]!.GetValue<string>(),
                ["choices"] = choices.DeepClone(), ["answerKey"] = o["answerKey"]!.GetValue<string>() }.ToJsonString());
        }
        foreach (var line in File.ReadLines(Files["openbookqa"]).Take(3))
        {
            var o = JsonNode.Parse(line)!.AsObject();
            var q = o["question"]!.AsObject();
            var ch = q["choices"]!.AsArray();
            obqa.Add(new JsonObject { ["id"] = o["id"]!.GetValue<string>(), ["question_stem"] = q["stem"]!.GetValue<string>(),
                ["choices"] = new JsonObject
                {
                    ["text"] = new JsonArray(ch.Select(c => (JsonNode?)c!["text"]!.GetValue<string>()).ToArray()),
                    ["label"] = new JsonArray(ch.Select(c => (JsonNode?)c!["label"]!.GetValue<string>()).ToArray()),
                }, ["answerKey"] = o["answerKey"]!.GetValue<string>() }.ToJsonString());
        }
        File.WriteAllLines(dir["arc.jsonl"], flat);
        File.WriteAllLines(dir["obqa.jsonl"], obqa);
        var a = ((ChoiceSuiteTask)EvalTasks.Parse($"arc_easy:{dir["arc.jsonl"]}")).LoadDocs().Docs;
        var b = ((ChoiceSuiteTask)EvalTasks.Parse($"openbookqa:{dir["obqa.jsonl"]}")).LoadDocs().Docs;
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(Expected["arc_easy"][i], a[i].Contexts.Zip(a[i].Continuations).ToArray());
            Assert.Equal(Expected["openbookqa"][i], b[i].Contexts.Zip(b[i].Continuations).ToArray());
            Assert.Equal((Gold["arc_easy"][i], Gold["openbookqa"][i]), (a[i].Gold, b[i].Gold));
        }
    }
}
