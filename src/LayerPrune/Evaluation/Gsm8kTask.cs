using System.Text.RegularExpressions;
using LayerPrune.Data;

namespace LayerPrune.Evaluation;

/// <summary>
/// GSM8K (<c>gsm8k:FILE</c>) as lm_eval/tasks/gsm8k/gsm8k.yaml (version 3): generate_until with
/// doc_to_text "Question: {question}\nAnswer:", k-shot examples doc_to_text + " " + answer + "\n\n",
/// until ["Question:", "&lt;/s&gt;", "&lt;|im_end|&gt;"]; filters "strict-match" (regex "#### (\-?[0-9\.\,]+)", first
/// match) and "flexible-extract" (regex "(-?[$0-9.,]{2,})|(-?[0-9]+)", last match), fallback "[invalid]"; exact_match
/// with ignore_case and regexes_to_ignore [",", "\$", "(?s).*#### ", "\.$"] applied to prediction and reference.
/// Deviation: the shots are the first k rows of the train file (the harness samples them at random from train);
/// without a train file they are the first k rows of the test file itself, which are then not scored.
/// </summary>
public static partial class Gsm8kTask
{
    public static readonly string[] StopSequences = ["Question:", "</s>", "<|im_end|>"];
    public const string Fallback = "[invalid]";

    [GeneratedRegex(@"#### (\-?[0-9\.\,]+)")] private static partial Regex Strict();
    [GeneratedRegex(@"(-?[$0-9.,]{2,})|(-?[0-9]+)")] private static partial Regex Flexible();
    [GeneratedRegex(@"(?s).*#### ")] private static partial Regex UpToHashes();
    [GeneratedRegex(@"\.$")] private static partial Regex TrailingPeriod();

    public static string DocToText(string question) => $"Question: {question}\nAnswer:";

    public static string BuildPrompt(string question, IReadOnlyList<(string Question, string Answer)> shots)
    {
        var sb = new System.Text.StringBuilder();
        foreach (var (q, a) in shots) sb.Append(DocToText(q)).Append(' ').Append(a).Append("\n\n");
        return sb.Append(DocToText(question)).ToString();
    }

    /// <summary>Rows {question, answer} of a GSM8K JSONL file.</summary>
    public static List<(string Question, string Answer)> ReadRows(string path)
    {
        var rows = new List<(string, string)>();
        foreach (var (line, row) in JsonLines.Read(path))
            rows.Add((JsonLines.GetString(row, "question", path, line), JsonLines.GetString(row, "answer", path, line)));
        if (rows.Count == 0) throw new LayerPruneException($"{path}: no items");
        return rows;
    }

    public static List<GenerationDoc> Load(string path, string? trainPath = null, int numFewshot = 5, int? limit = null)
    {
        var test = ReadRows(path);
        List<(string Question, string Answer)> shots;
        if (trainPath is not null)
        {
            var train = ReadRows(trainPath);
            if (train.Count < numFewshot)
                throw new LayerPruneException($"{trainPath}: {numFewshot}-shot GSM8K needs {numFewshot} rows, found {train.Count}");
            shots = train.Take(numFewshot).ToList();
        }
        else
        {
            if (test.Count <= numFewshot)
                throw new LayerPruneException($"{path}: {numFewshot}-shot GSM8K without a train file needs more than {numFewshot} rows, found {test.Count}");
            shots = test.Take(numFewshot).ToList();
            test = test.Skip(numFewshot).ToList();
        }
        var items = limit is int l ? test.Take(l) : test;
        return items.Select(t => new GenerationDoc(BuildPrompt(t.Question, shots), t.Answer, StopSequences)).ToList();
    }

    /// <summary>The harness's until handling (HFLM.generate_until): cut the generation at the first occurrence of
    /// each stop sequence in turn (<c>s = s.split(term)[0]</c>).</summary>
    public static string TruncateAtStop(string generated, IReadOnlyList<string> stops)
    {
        foreach (var term in stops)
        {
            if (term.Length == 0) continue;
            int i = generated.IndexOf(term, StringComparison.Ordinal);
            if (i >= 0) generated = generated[..i];
        }
        return generated;
    }

    /// <summary>"strict-match": first "#### N" (group 1), stripped; "[invalid]" when absent.</summary>
    public static string StrictMatch(string response)
    {
        var m = Strict().Match(response);
        return m.Success ? PyText.Strip(m.Groups[1].Value) : Fallback;
    }

    /// <summary>"flexible-extract": the last match of "(-?[$0-9.,]{2,})|(-?[0-9]+)", its first non-empty group, stripped.</summary>
    public static string FlexibleExtract(string response)
    {
        var ms = Flexible().Matches(response);
        if (ms.Count == 0) return Fallback;
        var m = ms[^1];
        var g = m.Groups[1].Success && m.Groups[1].Length > 0 ? m.Groups[1].Value
            : m.Groups[2].Success && m.Groups[2].Length > 0 ? m.Groups[2].Value : Fallback;
        return PyText.Strip(g);
    }

    /// <summary>exact_match normalisation: remove ",", "$", everything through the last "#### ", one trailing "."; lower case.</summary>
    public static string Normalize(string s)
    {
        s = s.Replace(",", "", StringComparison.Ordinal).Replace("$", "", StringComparison.Ordinal);
        s = UpToHashes().Replace(s, "");
        s = TrailingPeriod().Replace(s, "");
        return s.ToLowerInvariant();
    }

    /// <summary>exact_match of an extracted answer against the reference (the full gsm8k answer).</summary>
    public static bool IsCorrect(string extracted, string target) => Normalize(extracted) == Normalize(target);
}
