namespace LayerPrune.Pruning;

/// <summary>
/// Writes an output folder atomically: everything goes into a hidden sibling temp folder that is renamed into place
/// only when complete, so an interrupted run never leaves a half-written folder under the final name.
/// </summary>
public sealed class OutputFolder : IDisposable
{
    public string FinalPath { get; }
    public string TempPath { get; }
    bool _committed;

    OutputFolder(string finalPath, string tempPath) { FinalPath = finalPath; TempPath = tempPath; }

    /// <param name="protectedInputs">Folders that must never be replaced or deleted (the input model).</param>
    public static OutputFolder Begin(string path, bool force, string flag, params string[] protectedInputs)
    {
        string full = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        foreach (var input in protectedInputs)
        {
            string inFull = Path.GetFullPath(input).TrimEnd(Path.DirectorySeparatorChar);
            if (full == inFull || inFull.StartsWith(full + Path.DirectorySeparatorChar) || full.StartsWith(inFull + Path.DirectorySeparatorChar))
                throw new LayerPruneException($"{flag} {path}: must not be, contain or lie inside the input {input}");
        }
        if ((Directory.Exists(full) || System.IO.File.Exists(full)) && !force)
            throw new LayerPruneException($"{flag} {path}: already exists (use --force to replace it)");
        string parent = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(parent);
        string temp = Path.Combine(parent, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        return new OutputFolder(full, temp);
    }

    public string File(string name) => Path.Combine(TempPath, name);

    /// <summary>Moves the finished folder into place (replacing an existing one only now, when --force was given).</summary>
    public void Commit()
    {
        string? old = null;
        if (Directory.Exists(FinalPath))
        {
            old = FinalPath + $".old-{Guid.NewGuid():N}";
            Directory.Move(FinalPath, old);
        }
        else if (System.IO.File.Exists(FinalPath)) System.IO.File.Delete(FinalPath);
        Directory.Move(TempPath, FinalPath);
        _committed = true;
        if (old is not null) Directory.Delete(old, recursive: true);
    }

    public void Dispose()
    {
        if (!_committed && Directory.Exists(TempPath))
            try { Directory.Delete(TempPath, recursive: true); } catch (IOException) { } // best effort; never under the final name
    }
}
