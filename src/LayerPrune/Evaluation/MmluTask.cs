using System.Text.Json.Nodes;
using LayerPrune.Data;

namespace LayerPrune.Evaluation;

/// <summary>One MMLU question.</summary>
public sealed record MmluItem(string Question, IReadOnlyList<string> Choices, int Answer, string Subject);

/// <summary>
/// MMLU (<c>mmlu:PATH</c>) as lm_eval/tasks/mmlu/default (_default_template_yaml + per-subject description):
/// description "The following are multiple choice questions (with answers) about {subject, _ → space}.\n\n";
/// k-shot examples = the first k dev items of the subject (fewshot sampler first_n), each
/// doc_to_text + " " + letter + "\n\n"; then doc_to_text(item), where doc_to_text =
/// "{question.strip()}\nA. {c0}\nB. {c1}\nC. {c2}\nD. {c3}\nAnswer:" (choices verbatim); choices "A".."D" with
/// target delimiter " ".
/// PATH may be: a folder with dev/*_dev.csv and test/*_test.csv (subject = file stem without the suffix); a folder
/// with test.csv (+ dev.csv) or test.jsonl (+ dev.jsonl) (subject = the folder name unless rows carry one); or a
/// single .csv/.jsonl test file (dev from the <c>dev=</c> option). CSV layouts: the original Hendrycks one (no header;
/// question,A,B,C,D,letter) and the export with header question,choice0..choice3,answer (answer 0–3). JSONL rows:
/// {question, choices[4], answer (0–3 or letter), subject?}.
/// </summary>
public sealed class MmluTask(TaskSpec spec) : MultipleChoiceTask(spec)
{
    /// <summary>The <c>mmlu</c> kind: 5-shot by default; PATH may be a folder; dev=FILE and subject=NAME for single files.</summary>
    public static readonly TaskKind Kind = new("mmlu", s => new MmluTask(s))
    {
        DefaultShots = 5, MaxShots = int.MaxValue, AllowsFolder = true,
        Options = [new TaskOption("dev", "FILE"), new TaskOption("subject", "NAME")],
    };

    /// <summary>The answer letters (doc_to_choice).</summary>
    public static readonly string[] Letters = ["A", "B", "C", "D"];

    /// <inheritdoc/>
    public override IReadOnlyList<EvalDoc> LoadDocs(int? limit = null) =>
        Load(Spec.Path, Spec.NumFewshot, limit, Spec.DevPath, Spec.Subject);

    /// <summary>The per-subject description line.</summary>
    public static string Description(string subject) =>
        $"The following are multiple choice questions (with answers) about {subject.Replace('_', ' ')}.\n\n";

    /// <summary>doc_to_text of one item.</summary>
    public static string DocToText(MmluItem item) =>
        $"{PyText.Strip(item.Question)}\nA. {item.Choices[0]}\nB. {item.Choices[1]}\nC. {item.Choices[2]}\nD. {item.Choices[3]}\nAnswer:";

    /// <summary>description + shots + doc_to_text(item) (lm_eval/api/samplers.py ContextSampler.get_context).</summary>
    public static string BuildPrompt(MmluItem item, IReadOnlyList<MmluItem> shots)
    {
        var sb = new System.Text.StringBuilder(Description(item.Subject));
        foreach (var s in shots) sb.Append(DocToText(s)).Append(' ').Append(Letters[s.Answer]).Append("\n\n");
        return sb.Append(DocToText(item)).ToString();
    }

    /// <summary>The item as a row of the harness's dataset (cais/mmlu: question, subject, choices, answer), the samples
    /// file's "doc".</summary>
    public static JsonObject Row(MmluItem item) => new()
    {
        ["question"] = item.Question, ["subject"] = item.Subject,
        ["choices"] = new JsonArray(item.Choices.Select(c => (JsonNode?)c).ToArray()), ["answer"] = item.Answer,
    };

    /// <summary>Loads all test items as <see cref="EvalDoc"/>s, subjects in alphabetical order (as the harness runs
    /// them); <paramref name="limitPerSubject"/> keeps the first N of each subject (the harness applies --limit per subtask).</summary>
    public static List<EvalDoc> Load(string path, int numFewshot = 5, int? limitPerSubject = null, string? devPath = null,
        string? subject = null)
    {
        var (test, dev) = ReadItems(path, devPath, subject);
        var docs = new List<EvalDoc>();
        foreach (var group in test.GroupBy(t => t.Subject).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var shots = Array.Empty<MmluItem>();
            if (numFewshot > 0)
            {
                var devItems = dev.Where(d => d.Subject == group.Key).ToArray();
                if (devItems.Length < numFewshot)
                    throw new LayerPruneException($"{path}: {numFewshot}-shot MMLU needs {numFewshot} dev items for subject " +
                        $"\"{group.Key}\", found {devItems.Length} (use shots=0 or provide the dev split)");
                shots = devItems[..numFewshot];
            }
            foreach (var item in limitPerSubject is int l ? group.Take(l) : group)
                docs.Add(EvalDoc.FromChoices(BuildPrompt(item, shots), Letters, item.Answer, item.Subject) with { Row = Row(item) });
        }
        return docs;
    }

    /// <summary>Test and dev items from any supported layout (see the class summary).</summary>
    public static (List<MmluItem> Test, List<MmluItem> Dev) ReadItems(string path, string? devPath = null, string? subject = null)
    {
        var test = new List<MmluItem>();
        var dev = new List<MmluItem>();
        if (Directory.Exists(path))
        {
            string testDir = Path.Combine(path, "test"), devDir = Path.Combine(path, "dev");
            string folderSubject = subject ?? new DirectoryInfo(path).Name;
            if (Directory.Exists(testDir))
            {
                foreach (var f in Directory.GetFiles(testDir, "*_test.csv").Order(StringComparer.Ordinal))
                    test.AddRange(ReadCsv(f, StemWithout(f, "_test")));
                if (Directory.Exists(devDir))
                    foreach (var f in Directory.GetFiles(devDir, "*_dev.csv").Order(StringComparer.Ordinal))
                        dev.AddRange(ReadCsv(f, StemWithout(f, "_dev")));
                if (test.Count == 0) throw new LayerPruneException($"{testDir}: no *_test.csv files");
            }
            else if (File.Exists(Path.Combine(path, "test.csv")))
            {
                test.AddRange(ReadCsv(Path.Combine(path, "test.csv"), folderSubject));
                var d = devPath ?? Path.Combine(path, "dev.csv");
                if (devPath is not null || File.Exists(d)) dev.AddRange(ReadFile(d, folderSubject));
            }
            else if (File.Exists(Path.Combine(path, "test.jsonl")))
            {
                test.AddRange(ReadJsonl(Path.Combine(path, "test.jsonl"), folderSubject));
                var d = devPath ?? Path.Combine(path, "dev.jsonl");
                if (devPath is not null || File.Exists(d)) dev.AddRange(ReadFile(d, folderSubject));
            }
            else throw new LayerPruneException($"{path}: no MMLU data (expected test/*_test.csv, test.csv or test.jsonl)");
        }
        else if (File.Exists(path))
        {
            string fileSubject = subject ?? StemWithout(path, "_test");
            test.AddRange(ReadFile(path, fileSubject));
            if (devPath is not null) dev.AddRange(ReadFile(devPath, fileSubject));
        }
        else throw new LayerPruneException($"{path}: MMLU path not found");
        if (test.Count == 0) throw new LayerPruneException($"{path}: no MMLU test items");
        return (test, dev);
    }

    private static IEnumerable<MmluItem> ReadFile(string path, string subject) =>
        Path.GetExtension(path).Equals(".jsonl", StringComparison.OrdinalIgnoreCase) ? ReadJsonl(path, subject) : ReadCsv(path, subject);

    private static string StemWithout(string file, string suffix)
    {
        var stem = Path.GetFileNameWithoutExtension(file);
        return stem.EndsWith(suffix, StringComparison.Ordinal) && stem.Length > suffix.Length ? stem[..^suffix.Length] : stem;
    }

    /// <summary>Reads one CSV in either layout: Hendrycks (no header; answer letter) or the export (header
    /// question,choice0,choice1,choice2,choice3,answer; answer 0–3). Either answer form is accepted in both.</summary>
    public static List<MmluItem> ReadCsv(string path, string subject)
    {
        var items = new List<MmluItem>();
        bool first = true;
        foreach (var rec in Csv.ReadFile(path))
        {
            var f = rec.Fields;
            if (first)
            {
                first = false;
                if (f.Count == 6 && f[0].Trim().Equals("question", StringComparison.OrdinalIgnoreCase)
                    && f[5].Trim().Equals("answer", StringComparison.OrdinalIgnoreCase)) continue; // export header
            }
            if (f.Count != 6)
                throw new LayerPruneException($"{path}:{rec.Line}: expected 6 fields (question, 4 choices, answer), got {f.Count}");
            items.Add(new MmluItem(f[0], [f[1], f[2], f[3], f[4]], ParseAnswer(f[5], $"{path}:{rec.Line}"), subject));
        }
        if (items.Count == 0) throw new LayerPruneException($"{path}: no MMLU rows");
        return items;
    }

    /// <summary>Reads the JSONL export: {question, choices[4], answer (0–3 or A–D), subject?}.</summary>
    public static List<MmluItem> ReadJsonl(string path, string defaultSubject)
    {
        var items = new List<MmluItem>();
        foreach (var (line, row) in JsonLines.Read(path))
        {
            var choices = JsonLines.GetStringArray(row, "choices", path, line);
            if (choices.Count != 4) throw new LayerPruneException($"{path}:{line}: MMLU needs 4 choices, got {choices.Count}");
            var a = row["answer"];
            int answer = a is JsonValue av && av.TryGetValue<string>(out var s)
                ? ParseAnswer(s, $"{path}:{line}") : JsonLines.GetInt(row, "answer", path, line);
            if (answer is < 0 or > 3) throw new LayerPruneException($"{path}:{line}: answer must be 0–3 or A–D, got {answer}");
            string subj = row["subject"] is not null ? JsonLines.GetString(row, "subject", path, line) : defaultSubject;
            items.Add(new MmluItem(JsonLines.GetString(row, "question", path, line), choices, answer, subj));
        }
        if (items.Count == 0) throw new LayerPruneException($"{path}: no MMLU rows");
        return items;
    }

    private static int ParseAnswer(string raw, string where)
    {
        var a = raw.Trim();
        return a switch
        {
            "A" or "0" => 0,
            "B" or "1" => 1,
            "C" or "2" => 2,
            "D" or "3" => 3,
            _ => throw new LayerPruneException($"{where}: answer must be A–D or 0–3, got \"{raw}\""),
        };
    }
}
