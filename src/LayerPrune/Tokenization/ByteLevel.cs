using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace LayerPrune.Tokenization;

/// <summary>GPT-2's reversible byte ↔ printable-char map (openai/gpt-2 encoder.py bytes_to_unicode).</summary>
internal static class ByteLevel
{
    public static readonly char[] ByteToChar = BuildMap();
    private static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, b)).ToDictionary(t => t.c, t => (byte)t.b);

    private static char[] BuildMap()
    {
        var map = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)(256 + n++);
        }
        return map;
    }

    public static string Encode(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    /// <summary>Appends the bytes of a byte-level token; false if it holds a char outside the map.</summary>
    public static bool TryDecode(string token, List<byte> output)
    {
        foreach (char c in token)
            if (!CharToByte.ContainsKey(c)) return false;
        foreach (char c in token) output.Add(CharToByte[c]);
        return true;
    }

    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    public const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|" +
        @" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
}

/// <summary>
/// Splits text by a HF-style regex (Split behaviour "Isolated": matches and the gaps between them are pieces).
/// HF (Rust/Oniguruma) regexes see code points while .NET sees UTF-16 units, so a character outside the BMP
/// would be two chars to .NET (e.g. "🦙abc" must stay one Qwen2 piece): each surrogate pair is replaced by one
/// BMP stand-in of the same class (letter ª, number ², other ¦) before matching.
/// </summary>
internal sealed class RegexSplitter(string pattern)
{
    private readonly Regex _regex = new(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);

    public void Split(string text, List<string> output)
    {
        string probe = text;
        int[]? map = null; // probe index -> text index
        if (text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') >= 0)
        {
            var sb = new StringBuilder(text.Length);
            var m = new List<int>(text.Length + 1);
            for (int i = 0; i < text.Length; i++)
            {
                m.Add(i);
                if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
                {
                    sb.Append(CharUnicodeInfo.GetUnicodeCategory(text, i) switch
                    {
                        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                            or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => '\u00AA',
                        UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => '\u00B2',
                        _ => '\u00A6',
                    });
                    i++;
                }
                else sb.Append(text[i]);
            }
            m.Add(text.Length);
            probe = sb.ToString();
            map = m.ToArray();
        }
        int last = 0;
        for (var match = _regex.Match(probe); match.Success; match = match.NextMatch())
        {
            if (match.Length == 0) continue;
            int start = map?[match.Index] ?? match.Index, end = map?[match.Index + match.Length] ?? match.Index + match.Length;
            if (start > last) output.Add(text[last..start]);
            output.Add(text[start..end]);
            last = end;
        }
        if (last < text.Length) output.Add(text[last..]);
    }
}
