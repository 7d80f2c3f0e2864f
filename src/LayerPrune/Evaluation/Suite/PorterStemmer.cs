namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// The Porter stemmer (Porter 1980, "An algorithm for suffix stripping") in the form Google's rouge-score uses:
/// NLTK's <c>PorterStemmer()</c>, whose default mode NLTK_EXTENSIONS adds to the paper: an irregular-forms table
/// (sky/skies, dying, lying, tying, news, innings, outings, cannings, howe, proceed, exceed, succeed); words of at most
/// 2 letters unchanged; "ies"/"ied" of 4-letter words → "ie"; step 1c's y → i only after a consonant that is not the
/// first letter; step 2's "alli" → "al" tried first and re-stemmed, "bli" → "ble" (for the paper's "abli"), "fulli" →
/// "ful" and "logi" → "log"; the *o condition also true for a 2-letter vowel-consonant stem. Input is lower case.
/// </summary>
public static class PorterStemmer
{
    static readonly Dictionary<string, string> Irregular = new()
    {
        ["sky"] = "sky", ["skies"] = "sky", ["dying"] = "die", ["lying"] = "lie", ["tying"] = "tie", ["news"] = "news",
        ["innings"] = "inning", ["inning"] = "inning", ["outings"] = "outing", ["outing"] = "outing",
        ["cannings"] = "canning", ["canning"] = "canning", ["howe"] = "howe",
        ["proceed"] = "proceed", ["exceed"] = "exceed", ["succeed"] = "succeed",
    };

    /// <summary>The stem of <paramref name="word"/> (lower-cased first).</summary>
    public static string Stem(string word)
    {
        ArgumentNullException.ThrowIfNull(word);
        string w = word.ToLowerInvariant();
        if (Irregular.TryGetValue(w, out var irregular)) return irregular;
        if (w.Length <= 2) return w;
        w = Step1a(w);
        w = Step1b(w);
        w = Step1c(w);
        w = Step2(w);
        w = Step3(w);
        w = Step4(w);
        w = Step5a(w);
        return Step5b(w);
    }

    // A consonant is a letter other than a, e, i, o, u, and other than y preceded by a consonant.
    static bool IsConsonant(string w, int i) =>
        w[i] switch
        {
            'a' or 'e' or 'i' or 'o' or 'u' => false,
            'y' => i == 0 || !IsConsonant(w, i - 1),
            _ => true,
        };

    // m: the number of vowel-consonant boundaries ([C](VC)^m[V]).
    static int Measure(string stem)
    {
        int m = 0;
        for (int i = 1; i < stem.Length; i++)
            if (!IsConsonant(stem, i - 1) && IsConsonant(stem, i)) m++;
        return m;
    }

    static bool HasVowel(string stem)
    {
        for (int i = 0; i < stem.Length; i++)
            if (!IsConsonant(stem, i)) return true;
        return false;
    }

    static bool EndsDoubleConsonant(string w) => w.Length >= 2 && w[^1] == w[^2] && IsConsonant(w, w.Length - 1);

    // *o: ends consonant-vowel-consonant with the last not w, x or y; or (extension) is a 2-letter vowel-consonant word.
    static bool EndsCvc(string w) =>
        (w.Length >= 3 && IsConsonant(w, w.Length - 3) && !IsConsonant(w, w.Length - 2) && IsConsonant(w, w.Length - 1)
         && w[^1] is not ('w' or 'x' or 'y'))
        || (w.Length == 2 && !IsConsonant(w, 0) && IsConsonant(w, 1));

    /// <summary>The first rule whose suffix ends the word decides: replaced when its condition holds on the stem, else the
    /// word is left as is.</summary>
    static string FirstRule(string w, (string Suffix, string Replacement, Func<string, bool>? Condition)[] rules)
    {
        foreach (var (suffix, replacement, condition) in rules)
        {
            if (!w.EndsWith(suffix, StringComparison.Ordinal)) continue;
            string stem = w[..^suffix.Length];
            return condition is null || condition(stem) ? stem + replacement : w;
        }
        return w;
    }

    static bool M0(string s) => Measure(s) > 0;
    static bool M1(string s) => Measure(s) > 1;

    static string Step1a(string w)
    {
        if (w.EndsWith("ies", StringComparison.Ordinal) && w.Length == 4) return w[..^3] + "ie";
        return FirstRule(w, [("sses", "ss", null), ("ies", "i", null), ("ss", "ss", null), ("s", "", null)]);
    }

    static string Step1b(string w)
    {
        if (w.EndsWith("ied", StringComparison.Ordinal)) return w[..^3] + (w.Length == 4 ? "ie" : "i");
        if (w.EndsWith("eed", StringComparison.Ordinal)) return M0(w[..^3]) ? w[..^1] : w;
        string? stem = null;
        foreach (var suffix in new[] { "ed", "ing" })
            if (w.EndsWith(suffix, StringComparison.Ordinal) && HasVowel(w[..^suffix.Length]))
            {
                stem = w[..^suffix.Length];
                break;
            }
        if (stem is null) return w;
        if (stem.EndsWith("at", StringComparison.Ordinal) || stem.EndsWith("bl", StringComparison.Ordinal)
            || stem.EndsWith("iz", StringComparison.Ordinal)) return stem + "e";
        if (EndsDoubleConsonant(stem)) return stem[^1] is 'l' or 's' or 'z' ? stem : stem[..^1];
        return Measure(stem) == 1 && EndsCvc(stem) ? stem + "e" : stem;
    }

    static string Step1c(string w) =>
        w.EndsWith('y') && w.Length > 2 && IsConsonant(w, w.Length - 2) ? w[..^1] + "i" : w;

    static string Step2(string w)
    {
        if (w.EndsWith("alli", StringComparison.Ordinal) && M0(w[..^4])) return Step2(w[..^4] + "al");
        return FirstRule(w,
        [
            ("ational", "ate", M0), ("tional", "tion", M0), ("enci", "ence", M0), ("anci", "ance", M0), ("izer", "ize", M0),
            ("bli", "ble", M0), ("alli", "al", M0), ("entli", "ent", M0), ("eli", "e", M0), ("ousli", "ous", M0),
            ("ization", "ize", M0), ("ation", "ate", M0), ("ator", "ate", M0), ("alism", "al", M0), ("iveness", "ive", M0),
            ("fulness", "ful", M0), ("ousness", "ous", M0), ("aliti", "al", M0), ("iviti", "ive", M0), ("biliti", "ble", M0),
            ("fulli", "ful", M0),
            // 'logi' → 'log' with the 'l' kept in the stem for the measure (so geo-, theo- qualify).
            ("logi", "log", _ => M0(w[..^3])),
        ]);
    }

    static string Step3(string w) => FirstRule(w,
    [
        ("icate", "ic", M0), ("ative", "", M0), ("alize", "al", M0), ("iciti", "ic", M0), ("ical", "ic", M0), ("ful", "", M0),
        ("ness", "", M0),
    ]);

    static string Step4(string w) => FirstRule(w,
    [
        ("al", "", M1), ("ance", "", M1), ("ence", "", M1), ("er", "", M1), ("ic", "", M1), ("able", "", M1), ("ible", "", M1),
        ("ant", "", M1), ("ement", "", M1), ("ment", "", M1), ("ent", "", M1),
        ("ion", "", s => M1(s) && s.Length > 0 && s[^1] is 's' or 't'),
        ("ou", "", M1), ("ism", "", M1), ("ate", "", M1), ("iti", "", M1), ("ous", "", M1), ("ive", "", M1), ("ize", "", M1),
    ]);

    static string Step5a(string w)
    {
        if (!w.EndsWith('e')) return w;
        string stem = w[..^1];
        int m = Measure(stem);
        return m > 1 || (m == 1 && !EndsCvc(stem)) ? stem : w;
    }

    static string Step5b(string w) =>
        w.EndsWith("ll", StringComparison.Ordinal) && Measure(w[..^1]) > 1 ? w[..^1] : w;
}
