using Parquet;
using Parquet.Schema;

namespace LayerPrune.Data;

/// <summary>
/// Reads documents of text for calibration / perplexity / healing:
/// <c>.txt</c> (each non-empty line is one document, e.g. one chapter), <c>.jsonl</c>/<c>.json</c> (one object per line
/// with a string field, default <c>text</c>) or <c>.parquet</c> (a string column, default <c>text</c>).
/// Text files and JSONL are streamed line by line; Parquet one row group at a time.
/// </summary>
public static class TextCorpus
{
    /// <summary>Documents of <paramref name="path"/> in file order. Throws <see cref="LayerPruneException"/> for a missing
    /// file, an unknown extension, a malformed row (FILE:LINE) or a file with no documents.</summary>
    public static IEnumerable<string> Read(string path, string field = "text")
    {
        if (!File.Exists(path)) throw new LayerPruneException($"{path}: file not found");
        var ext = Path.GetExtension(path).ToLowerInvariant();
        IEnumerable<string> docs = ext switch
        {
            ".txt" or ".text" => ReadTxt(path),
            ".jsonl" or ".json" or ".ndjson" => ReadJsonl(path, field),
            ".parquet" => ReadParquet(path, field),
            _ => throw new LayerPruneException($"{path}: unsupported text file type \"{ext}\" (use .txt, .jsonl or .parquet)"),
        };
        return NonEmpty(docs, path);
    }

    private static IEnumerable<string> NonEmpty(IEnumerable<string> docs, string path)
    {
        bool any = false;
        foreach (var d in docs) { any = true; yield return d; }
        if (!any) throw new LayerPruneException($"{path}: no documents (file is empty or has only empty lines/rows)");
    }

    /// <summary>Each line is one document; empty lines are skipped. The line is kept as is (no trimming).</summary>
    private static IEnumerable<string> ReadTxt(string path)
    {
        using var reader = new StreamReader(path, System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        string? line;
        while ((line = reader.ReadLine()) != null)
            if (line.Length > 0) yield return line;
    }

    private static IEnumerable<string> ReadJsonl(string path, string field)
    {
        foreach (var (line, row) in JsonLines.Read(path))
        {
            var text = JsonLines.GetString(row, field, path, line);
            if (text.Length > 0) yield return text;
        }
    }

    private static IEnumerable<string> ReadParquet(string path, string field)
    {
        ParquetReader reader;
        try { reader = ParquetReader.CreateAsync(path).GetAwaiter().GetResult(); }
        catch (Exception e) when (e is not LayerPruneException)
        { throw new LayerPruneException($"{path}: not a readable Parquet file ({e.Message})", e); }
        try
        {
            DataField? df = reader.Schema.GetDataFields().FirstOrDefault(f => f.Name == field);
            if (df is null)
                throw new LayerPruneException(
                    $"{path}: no column \"{field}\" (columns: {string.Join(", ", reader.Schema.GetDataFields().Select(f => f.Name))})");
            // Parquet.Net 6 reports UTF-8 columns as ReadOnlyMemory<char> (older versions: string).
            if ((df.ClrType != typeof(string) && df.ClrType != typeof(ReadOnlyMemory<char>)) || df.IsArray)
                throw new LayerPruneException(
                    $"{path}: column \"{field}\" must be a string column, is {df.ClrType.Name}{(df.IsArray ? "[]" : "")}");
            long rowBase = 0;
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                using var rg = reader.OpenRowGroupReader(g);
                var values = new string?[checked((int)rg.RowCount)];
                rg.ReadAsync(df, values.AsMemory(), null).AsTask().GetAwaiter().GetResult();
                for (int i = 0; i < values.Length; i++)
                {
                    // Parquet rows are numbered from 1 in messages, like lines.
                    var v = values[i] ?? throw new LayerPruneException($"{path}:{rowBase + i + 1}: column \"{field}\" is null");
                    if (v.Length > 0) yield return v;
                }
                rowBase += values.Length;
            }
        }
        finally { reader.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
    }
}
