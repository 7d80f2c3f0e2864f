using System.Globalization;
using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using LayerPrune.Tests.Cli;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Evaluation.Suite;

/// <summary>
/// <c>--log-samples</c> for the older tasks (mmlu, boolq, hellaswag, gsm8k): the request strings (context, continuation)
/// of the first 3 documents, as the samples files hold them, equal the ones lm-evaluation-harness builds from the same
/// documents (spelled out below with the YAML lines they come from); the per-document metrics agree with the responses.
/// </summary>
public class OlderTaskSamplesTests
{
    static string Bench(params string[] parts) => SuiteRequestTests.Bench(parts);

    static (string, string)[] Letters(string context) => new[] { "A", "B", "C", "D" }.Select(l => (context, " " + l)).ToArray();
    static (string, string)[] Yn(string context) => [(context, " no"), (context, " yes")];
    static (string, string)[] Same(string context, params string[] choices) => choices.Select(c => (context, " " + c)).ToArray();

    /// <summary>Per samples file: per document, the (context, continuation) pairs, and the targets.</summary>
    internal static readonly Dictionary<string, ((string Context, string Continuation)[][] Requests, int[] Target)> Expected = new()
    {
        // mmlu/default/_default_template_yaml:
        //   doc_to_text: "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
        //   doc_to_choice: ["A", "B", "C", "D"]   doc_to_target: answer   (target_delimiter " ")
        // mmlu_abstract_algebra.yaml: "description": "The following are multiple choice questions (with answers) about abstract
        //   algebra.\n\n"   (0-shot: context = description + doc_to_text)
        ["mmlu_abstract_algebra"] = ([
            Letters("The following are multiple choice questions (with answers) about abstract algebra.\n\n" +
                "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:"),
            Letters("The following are multiple choice questions (with answers) about abstract algebra.\n\n" +
                "Let p = (1, 2, 5, 4)(2, 3) in S_5 . Find the index of <p> in S_5.\nA. 8\nB. 2\nC. 24\nD. 120\nAnswer:"),
            Letters("The following are multiple choice questions (with answers) about abstract algebra.\n\n" +
                "Find all zeros in the indicated finite field of the given polynomial with coefficients in that field. " +
                "x^5 + 3x^3 + x^2 + 2x in Z_5\nA. 0\nB. 1\nC. 0,1\nD. 0,4\nAnswer:"),
        ], [1, 2, 3]),
        // super_glue/boolq/default.yaml: doc_to_text: "{{passage}}\nQuestion: {{question}}?\nAnswer:"
        //   doc_to_choice: ["no", "yes"]   doc_to_target: label
        ["boolq"] = ([
            Yn("Ethanol fuel -- All biomass goes through at least some of these steps: it needs to be grown, collected, dried," +
                " fermented, distilled, and burned. All of these steps require resources and an infrastructure. The total amount of" +
                " energy input into the process compared to the energy released by burning the resulting ethanol fuel is known as the" +
                " energy balance (or ``energy returned on energy invested''). Figures compiled in a 2007 report by National Geographic" +
                " Magazine point to modest results for corn ethanol produced in the US: one unit of fossil-fuel energy is required to" +
                " create 1.3 energy units from the resulting ethanol. The energy balance for sugarcane ethanol produced in Brazil is" +
                " more favorable, with one unit of fossil-fuel energy required to create 8 from the ethanol. Energy balance estimates" +
                " are not easily produced, thus numerous such reports have been generated that are contradictory. For instance, a" +
                " separate survey reports that production of ethanol from sugarcane, which requires a tropical climate to grow" +
                " productively, returns from 8 to 9 units of energy for each unit expended, as compared to corn, which only returns" +
                " about 1.34 units of fuel energy for each unit of energy expended. A 2006 University of California Berkeley study," +
                " after analyzing six separate studies, concluded that producing ethanol from corn uses much less petroleum than" +
                " producing gasoline.\nQuestion: does ethanol take more energy make that produces?\nAnswer:"),
            Yn("Property tax -- Property tax or 'house tax' is a local tax on buildings, along with appurtenant land. It is and" +
                " imposed on the Possessor (not the custodian of property as per 1978, 44th amendment of constitution). It resembles" +
                " the US-type wealth tax and differs from the excise-type UK rate. The tax power is vested in the states and is" +
                " delegated to local bodies, specifying the valuation method, rate band, and collection procedures. The tax base is the" +
                " annual rental value (ARV) or area-based rating. Owner-occupied and other properties not producing rent are assessed" +
                " on cost and then converted into ARV by applying a percentage of cost, usually four percent. Vacant land is generally" +
                " exempt. Central government properties are exempt. Instead a 'service charge' is permissible under executive order." +
                " Properties of foreign missions also enjoy tax exemption without requiring reciprocity. The tax is usually accompanied" +
                " by service taxes, e.g., water tax, drainage tax, conservancy (sanitation) tax, lighting tax, all using the same tax" +
                " base. The rate structure is flat on rural (panchayat) properties, but in the urban (municipal) areas it is mildly" +
                " progressive with about 80% of assessments falling in the first two brackets.\nQuestion: is house tax and property tax" +
                " are same?\nAnswer:"),
            Yn("Phantom pain -- Phantom pain sensations are described as perceptions that an individual experiences relating to a limb" +
                " or an organ that is not physically part of the body. Limb loss is a result of either removal by amputation or" +
                " congenital limb deficiency. However, phantom limb sensations can also occur following nerve avulsion or spinal cord" +
                " injury.\nQuestion: is pain experienced in a missing body part or paralyzed area?\nAnswer:"),
        ], [0, 1, 1]),
        // hellaswag.yaml: process_docs: !function utils.process_docs   doc_to_text: "{{query}}"   doc_to_choice: "choices"
        // utils.py: ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        //           query = preprocess(doc["activity_label"] + ": " + ctx); choices = [preprocess(ending) for ending in endings]
        ["hellaswag"] = ([
            Same("Roof shingle removal: A man is sitting on a roof. He", "is using wrap to wrap a pair of skis.",
                "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."),
            Same("Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. The lady",
                "swings and lands in her arms.", "pulls the barbell forward.", "pulls a rope attached to the barbell.",
                "stands and lifts the weight over her head."),
            Same("Canoeing: Two women in a child are shown in a canoe while a man pulls the canoe while standing in the water, " +
                 "with other individuals visible in the background. The child and a different man",
                "are then shown paddling down a river in a boat while a woman talks.",
                "are driving the canoe, they go down the river flowing side to side.", "sit in a canoe while the man paddles.",
                "walking go down the rapids, while the man in his helicopter almost falls and goes out of canoehood."),
        ], [3, 3, 2]),
    };

    [Fact]
    public void SamplesFilesHoldTheHarnessRequestsOfTheFirstThreeDocuments()
    {
        using var dir = new TempDir();
        var (code, _, stderr) = CliRunner.Run("eval", "--model", Path.Combine(TestPaths.Samples, "kjv-llama-16l"), "--limit", "3",
            "--task", $"mmlu:{Bench("mmlu")},shots=0", "--task", $"boolq:{Bench("boolq", "validation.jsonl")}",
            "--task", $"hellaswag:{Bench("hellaswag", "validation-raw.jsonl")}",
            "--task", $"gsm8k:{Bench("gsm8k", "test.jsonl")},train={Bench("gsm8k", "train.jsonl")},shots=1",
            "--max-new-tokens", "4", "--output-path", dir.Path, "--log-samples", "--json", "--quiet");
        Assert.True(code == 0, stderr);
        var folder = Assert.Single(Directory.GetDirectories(dir.Path));
        // MMLU: one file per subject (samples_mmlu_SUBJECT_*), as the harness writes its subtasks; none for the group.
        Assert.Empty(Directory.GetFiles(folder, "samples_mmlu_2*.jsonl"));
        foreach (var subject in new[] { "anatomy", "high_school_geography" })
            Assert.Equal(3, File.ReadAllLines(Assert.Single(Directory.GetFiles(folder, $"samples_mmlu_{subject}_*.jsonl"))).Length);

        foreach (var (task, (requests, target)) in Expected)
        {
            var lines = File.ReadAllLines(Assert.Single(Directory.GetFiles(folder, $"samples_{task}_*.jsonl")));
            Assert.Equal(3, lines.Length);
            for (int i = 0; i < 3; i++)
            {
                var s = JsonNode.Parse(lines[i])!.AsObject();
                Assert.Equal(i, s["doc_id"]!.GetValue<int>());
                Assert.Equal(target[i], s["target"]!.GetValue<int>());
                var pairs = s["arguments"]!.AsArray().Select(a => (a![0]!.GetValue<string>(), a[1]!.GetValue<string>())).ToArray();
                Assert.Equal(requests[i], pairs);
                Assert.Equal("none", s["filter"]!.GetValue<string>());
                Assert.Equal(LayerPrune.Evaluation.Suite.SampleRecords.Sha256(pairs[0].Item1), s["prompt_hash"]!.GetValue<string>());
                // resps [[["ll", "is_greedy"]]] per request; acc from the argmax of the written log-likelihoods.
                var ll = s["filtered_resps"]!.AsArray().Select(x => double.Parse(x![0]!.GetValue<string>(), CultureInfo.InvariantCulture))
                    .ToArray();
                Assert.Equal(requests[i].Length, ll.Length);
                Assert.Equal(requests[i].Length, s["resps"]!.AsArray().Count);
                Assert.Equal(Array.IndexOf(ll, ll.Max()) == target[i] ? 1.0 : 0.0, s["acc"]!.GetValue<double>());
                var norm = ll.Select((x, c) => x / requests[i][c].Continuation.Trim().Length).ToArray();
                Assert.Equal(Array.IndexOf(norm, norm.Max()) == target[i] ? 1.0 : 0.0, s["acc_norm"]!.GetValue<double>());
            }
        }
        var mmlu = JsonNode.Parse(File.ReadLines(Directory.GetFiles(folder, "samples_mmlu_abstract_algebra_*.jsonl")[0]).First())!;
        Assert.Equal("abstract_algebra", mmlu["doc"]!["subject"]!.GetValue<string>());
        Assert.Equal(["0", "4", "2", "6"], mmlu["doc"]!["choices"]!.AsArray().Select(c => c!.GetValue<string>()));
        var hs = JsonNode.Parse(File.ReadLines(Directory.GetFiles(folder, "samples_hellaswag_*.jsonl")[0]).First())!;
        Assert.Equal("Roof shingle removal: A man is sitting on a roof. He", hs["doc"]!["query"]!.GetValue<string>());
        Assert.Equal(3, hs["doc"]!["gold"]!.GetValue<int>());

        // gsm8k: per filter (strict-match, then flexible-extract) one record per document, [prompt, generation kwargs].
        var gsm = File.ReadAllLines(Assert.Single(Directory.GetFiles(folder, "samples_gsm8k_*.jsonl")))
            .Select(l => JsonNode.Parse(l)!.AsObject()).ToArray();
        Assert.Equal(["strict-match", "strict-match", "strict-match", "flexible-extract", "flexible-extract", "flexible-extract"],
            gsm.Select(g => g["filter"]!.GetValue<string>()));
        var train = JsonNode.Parse(File.ReadLines(Bench("gsm8k", "train.jsonl")).First())!;
        var test = File.ReadLines(Bench("gsm8k", "test.jsonl")).Take(3).Select(l => JsonNode.Parse(l)!).ToArray();
        for (int i = 0; i < 6; i++)
        {
            var doc = test[i % 3];
            // gsm8k.yaml: doc_to_text "Question: {{question}}\nAnswer:", shot = doc_to_text + " " + answer + "\n\n"
            string prompt = $"Question: {train["question"]}\nAnswer: {train["answer"]}\n\nQuestion: {doc["question"]}\nAnswer:";
            var args = gsm[i]["arguments"]!.AsArray()[0]!.AsArray();
            Assert.Equal(prompt, args[0]!.GetValue<string>());
            Assert.Equal(["Question:", "</s>", "<|im_end|>"], args[1]!["until"]!.AsArray().Select(u => u!.GetValue<string>()));
            Assert.Equal(doc["answer"]!.GetValue<string>(), gsm[i]["target"]!.GetValue<string>());
            Assert.Equal(i % 3, gsm[i]["doc_id"]!.GetValue<int>());
            string generated = gsm[i]["resps"]![0]![0]!.GetValue<string>(), answer = gsm[i]["filtered_resps"]![0]!.GetValue<string>();
            Assert.Equal(i < 3 ? Gsm8kTask.StrictMatch(generated) : Gsm8kTask.FlexibleExtract(generated),
                answer);
            Assert.Equal(Gsm8kTask.IsCorrect(answer, doc["answer"]!.GetValue<string>()) ? 1.0 : 0.0,
                gsm[i]["exact_match"]!.GetValue<double>());
        }
    }
}
