namespace LayerPrune.Data;

/// <summary>Python <c>str</c> helpers where .NET differs: Python's whitespace set (str.isspace) and len() in code points.</summary>
public static class PyText
{
    /// <summary>Python's str.isspace for one UTF-16 unit: .NET's set plus U+001C..U+001F (file/group/record/unit separators).</summary>
    public static bool IsSpace(char c) => char.IsWhiteSpace(c) || (c >= '\u001c' && c <= '\u001f');

    /// <summary>Python <c>s.strip()</c>.</summary>
    public static string Strip(string s) => RStrip(LStrip(s));

    /// <summary>Python <c>s.lstrip()</c>.</summary>
    public static string LStrip(string s)
    {
        int i = 0;
        while (i < s.Length && IsSpace(s[i])) i++;
        return s[i..];
    }

    /// <summary>Python <c>s.rstrip()</c>.</summary>
    public static string RStrip(string s)
    {
        int e = s.Length;
        while (e > 0 && IsSpace(s[e - 1])) e--;
        return s[..e];
    }

    /// <summary>Python <c>len(s)</c>: the number of Unicode code points (a surrogate pair counts once).</summary>
    public static int Len(string s)
    {
        int n = 0;
        foreach (var _ in s.EnumerateRunes()) n++;
        return n;
    }

    /// <summary>Python <c>s.capitalize()</c>: first character upper case, the rest lower case.</summary>
    public static string Capitalize(string s)
    {
        if (s.Length == 0) return s;
        int first = char.IsSurrogatePair(s, 0) ? 2 : 1;
        return s[..first].ToUpperInvariant() + s[first..].ToLowerInvariant();
    }
}
