using System.Text;

namespace LayerPrune.Evaluation;

/// <summary>
/// RFC 4180 CSV reader (what Python's csv.reader reads with the default dialect): comma separators, fields in double
/// quotes may hold commas, newlines and doubled quotes (<c>""</c> = one quote); records end at LF or CRLF outside
/// quotes; a quote inside an unquoted field is kept literally. Empty lines are skipped. Each record carries the
/// 1-based line it starts on, for error messages.
/// </summary>
public static class Csv
{
    /// <summary>One record: the 1-based line it starts on and its fields.</summary>
    public sealed record Record(int Line, IReadOnlyList<string> Fields);

    /// <summary>The records of the UTF-8 (BOM-aware) file <paramref name="path"/>.</summary>
    public static IEnumerable<Record> ReadFile(string path)
    {
        if (!File.Exists(path)) throw new LayerPruneException($"{path}: file not found");
        using var reader = new StreamReader(path, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        foreach (var r in Read(reader, path)) yield return r;
    }

    /// <summary>The records of <paramref name="reader"/>; <paramref name="sourceName"/> prefixes error messages.</summary>
    public static IEnumerable<Record> Read(TextReader reader, string sourceName)
    {
        var fields = new List<string>();
        var field = new StringBuilder();
        int line = 1, recordLine = 1;
        bool inQuotes = false, afterQuote = false, recordHasContent = false;
        int c;
        while ((c = reader.Read()) != -1)
        {
            char ch = (char)c;
            if (inQuotes)
            {
                if (ch == '"')
                {
                    if (reader.Peek() == '"')
                    {
                        reader.Read();
                        field.Append('"');
                    }
                    else
                    {
                        inQuotes = false;
                        afterQuote = true;
                    }
                }
                else
                {
                    if (ch == '\n') line++;
                    field.Append(ch);
                }
                continue;
            }
            switch (ch)
            {
                case '"':
                    if (afterQuote)
                        throw new LayerPruneException($"{sourceName}:{line}: unexpected quote after a closing quote");
                    if (field.Length == 0) inQuotes = true;
                    else field.Append('"'); // a quote inside an unquoted field is literal, as in Python's csv
                    recordHasContent = true;
                    break;
                case ',':
                    fields.Add(field.ToString());
                    field.Clear();
                    afterQuote = false;
                    recordHasContent = true;
                    break;
                case '\r':
                    if (reader.Peek() == '\n') break; // CRLF: the LF ends the record
                    goto case '\n';
                case '\n':
                    if (recordHasContent || field.Length > 0)
                    {
                        fields.Add(field.ToString());
                        yield return new Record(recordLine, fields.ToArray());
                    }
                    fields.Clear();
                    field.Clear();
                    afterQuote = false;
                    recordHasContent = false;
                    line++;
                    recordLine = line;
                    break;
                default:
                    if (afterQuote)
                        throw new LayerPruneException($"{sourceName}:{line}: unexpected character '{ch}' after a closing quote");
                    field.Append(ch);
                    recordHasContent = true;
                    break;
            }
        }
        if (inQuotes) throw new LayerPruneException($"{sourceName}:{recordLine}: quoted field is not closed before the end of the file");
        if (recordHasContent || field.Length > 0)
        {
            fields.Add(field.ToString());
            yield return new Record(recordLine, fields.ToArray());
        }
    }
}
