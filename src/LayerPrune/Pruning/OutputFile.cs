namespace LayerPrune.Pruning;

/// <summary>
/// Writes one output file atomically: the content goes to a hidden sibling temp file that is renamed over the final
/// name when complete, so a reader (or a resumed run) sees the old file or the new one, never half of one. The temp file
/// is ".NAME.tmp-GUID", the convention of <see cref="OutputFolder"/> that <see cref="DiskFull"/> names by its final path.
/// </summary>
public static class OutputFile
{
    /// <summary>Writes <paramref name="text"/> (UTF-8) to <paramref name="path"/> atomically.</summary>
    public static void WriteAllText(string path, string text) => Write(path, tmp => File.WriteAllText(tmp, text));

    /// <summary>Calls <paramref name="write"/> with a temp path beside <paramref name="path"/>, then renames it into place
    /// (replacing an existing file); the temp file is removed when <paramref name="write"/> throws.</summary>
    public static void Write(string path, Action<string> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        string full = Path.GetFullPath(path);
        string tmp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid():N}");
        try
        {
            write(tmp);
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    /// <summary>Deletes the temp files that writes into <paramref name="dir"/> left when the process was killed mid-write
    /// (".NAME.tmp-GUID", and "NAME.tmp" of earlier versions).</summary>
    public static void RemoveLeftovers(string dir)
    {
        if (!Directory.Exists(dir)) return;
        foreach (var f in Directory.EnumerateFiles(dir, ".*.tmp-*").Concat(Directory.EnumerateFiles(dir, "*.tmp")))
            File.Delete(f);
    }

    /// <summary>
    /// Checks before slow work that <paramref name="path"/> can be written: its folder exists and it is not a folder.
    /// Throws <see cref="LayerPruneException.Invalid"/> naming <paramref name="parameterName"/>.
    /// </summary>
    public static void Check(string path, string parameterName)
    {
        if (string.IsNullOrWhiteSpace(path)) throw LayerPruneException.Invalid(parameterName, path, "must not be empty");
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw LayerPruneException.Invalid(parameterName, path, "is a folder; give a file name");
        string? parent = Path.GetDirectoryName(full);
        if (parent is null || !Directory.Exists(parent))
            throw LayerPruneException.Invalid(parameterName, path, $"folder {parent} does not exist");
    }
}
