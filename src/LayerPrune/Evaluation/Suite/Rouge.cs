using System.Text.RegularExpressions;

namespace LayerPrune.Evaluation.Suite;

/// <summary>Precision, recall and F-measure of one ROUGE score.</summary>
public readonly record struct RougeScore(double Precision, double Recall, double FMeasure);

/// <summary>
/// ROUGE-N and ROUGE-L as Google's rouge-score computes them (rouge/rouge_scorer.py, tokenize.py, scoring.py), with
/// use_stemmer=True as summarization papers run it:
/// tokens = lower-case text, every run of characters outside [a-z0-9] replaced by a space, split on whitespace, words
/// longer than 3 letters Porter-stemmed (<see cref="PorterStemmer"/>), tokens not matching ^[a-z0-9]+$ dropped.
/// ROUGE-N: clipped n-gram overlap, precision = overlap / max(prediction n-grams, 1), recall = overlap / max(target
/// n-grams, 1). ROUGE-L: longest common subsequence of the token lists, 0 when either is empty. F = 2PR / (P + R), 0
/// when P + R = 0.
/// </summary>
public static partial class Rouge
{
    [GeneratedRegex("[^a-z0-9]+")] private static partial Regex NonAlphanumeric();
    [GeneratedRegex("^[a-z0-9]+$")] private static partial Regex Alphanumeric();

    /// <summary>rouge-score's tokenize(text, stemmer).</summary>
    public static List<string> Tokenize(string text, bool stem = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        // Python's str.lower(); [^a-z0-9] then turns every other letter into a separator.
        var spaced = NonAlphanumeric().Replace(text.ToLowerInvariant(), " ");
        var tokens = new List<string>();
        foreach (var t in spaced.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))
        {
            var s = stem && t.Length > 3 ? PorterStemmer.Stem(t) : t;
            if (Alphanumeric().IsMatch(s)) tokens.Add(s);
        }
        return tokens;
    }

    /// <summary>ROUGE-<paramref name="n"/> of <paramref name="prediction"/> against <paramref name="target"/>.</summary>
    public static RougeScore N(string target, string prediction, int n, bool stem = true) =>
        N(Tokenize(target, stem), Tokenize(prediction, stem), n);

    /// <summary>ROUGE-N of token lists.</summary>
    public static RougeScore N(IReadOnlyList<string> target, IReadOnlyList<string> prediction, int n)
    {
        if (n < 1) throw new ArgumentOutOfRangeException(nameof(n), n, "must be at least 1");
        var t = Ngrams(target, n);
        var p = Ngrams(prediction, n);
        long overlap = t.Sum(kv => Math.Min(kv.Value, p.GetValueOrDefault(kv.Key)));
        double precision = overlap / (double)Math.Max(p.Values.Sum(), 1);
        double recall = overlap / (double)Math.Max(t.Values.Sum(), 1);
        return new RougeScore(precision, recall, F(precision, recall));
    }

    /// <summary>ROUGE-L of <paramref name="prediction"/> against <paramref name="target"/>.</summary>
    public static RougeScore L(string target, string prediction, bool stem = true) => L(Tokenize(target, stem), Tokenize(prediction, stem));

    /// <summary>ROUGE-L of token lists.</summary>
    public static RougeScore L(IReadOnlyList<string> target, IReadOnlyList<string> prediction)
    {
        if (target.Count == 0 || prediction.Count == 0) return new RougeScore(0, 0, 0);
        int lcs = Lcs(target, prediction);
        double precision = lcs / (double)prediction.Count, recall = lcs / (double)target.Count;
        return new RougeScore(precision, recall, F(precision, recall));
    }

    /// <summary>scoring.fmeasure: the harmonic mean, 0 when both are 0.</summary>
    public static double F(double precision, double recall) =>
        precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0;

    /// <summary>The length of the longest common subsequence (dynamic programming, two rows).</summary>
    public static int Lcs(IReadOnlyList<string> a, IReadOnlyList<string> b)
    {
        var prev = new int[b.Count + 1];
        var cur = new int[b.Count + 1];
        for (int i = 1; i <= a.Count; i++)
        {
            for (int j = 1; j <= b.Count; j++)
                cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : Math.Max(prev[j], cur[j - 1]);
            (prev, cur) = (cur, prev);
        }
        return prev[b.Count];
    }

    static Dictionary<string, int> Ngrams(IReadOnlyList<string> tokens, int n)
    {
        var d = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i + n <= tokens.Count; i++)
        {
            var key = string.Join('\u0001', tokens.Skip(i).Take(n));
            d[key] = d.GetValueOrDefault(key) + 1;
        }
        return d;
    }
}
