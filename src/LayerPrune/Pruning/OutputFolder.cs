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

    /// <summary>
    /// Validates an output path without touching the disk (call it before slow work): the path must not be, contain or
    /// lie inside any protected input — compared after resolving symlinks and '..' — and must not exist unless
    /// <paramref name="force"/>. Throws <see cref="LayerPruneException.Invalid"/> naming <paramref name="parameterName"/>
    /// (the caller's parameter that holds <paramref name="path"/>, e.g. "outDir").
    /// </summary>
    public static string Check(string path, bool force, string parameterName, params string[] protectedInputs)
    {
        string flag = parameterName;
        if (string.IsNullOrWhiteSpace(path)) throw LayerPruneException.Invalid(flag, null, "must not be empty");
        string full = Canonical(path);
        if (Path.GetDirectoryName(full) is null) throw LayerPruneException.Invalid(flag, path, "must not be the file-system root");
        foreach (var input in protectedInputs)
        {
            string inFull = Canonical(input);
            if (full == inFull || inFull.StartsWith(full + Path.DirectorySeparatorChar) || full.StartsWith(inFull + Path.DirectorySeparatorChar))
                throw LayerPruneException.Invalid(flag, path, $"must not be, contain or lie inside the input {input}");
        }
        if ((Directory.Exists(full) || System.IO.File.Exists(full)) && !force)
            throw LayerPruneException.Invalid(flag, path, "already exists (use `force` to replace it)");
        if (System.IO.File.Exists(full)) throw LayerPruneException.Invalid(flag, path, "is a file, not a folder");
        return full;
    }

    /// <summary>
    /// Starts writing <paramref name="path"/> (see <see cref="Check"/>). Work goes to a new hidden sibling
    /// ".NAME.tmp-GUID"; a run killed before <see cref="Commit"/> leaves only that sibling behind, which later runs
    /// ignore (each run uses a fresh GUID) and which is safe to delete.
    /// </summary>
    /// <param name="protectedInputs">Folders that must never be replaced or deleted (the input model).</param>
    public static OutputFolder Begin(string path, bool force, string parameterName, params string[] protectedInputs)
    {
        Check(path, force, parameterName, protectedInputs);
        // The final path itself stays as given (a symlink there is replaced, never followed); its parent is resolved.
        string full = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        string parent = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(parent);
        string temp = Path.Combine(parent, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        return new OutputFolder(full, temp);
    }

    /// <summary>Absolute path with '..' removed and every existing symlink component resolved (like realpath -m).</summary>
    public static string Canonical(string path)
    {
        string full = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        if (full.Length == 0) return Path.DirectorySeparatorChar.ToString();
        string root = Path.GetPathRoot(full)!;
        string current = root;
        var parts = full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
        for (int i = 0; i < parts.Length; i++)
        {
            string next = Path.Combine(current, parts[i]);
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            FileSystemInfo? target;
            try { target = info.Exists && info.LinkTarget is not null ? info.ResolveLinkTarget(returnFinalTarget: true) : null; }
            catch (IOException e) { throw LayerPruneException.Usage($"{path}: cannot resolve symbolic link {next} ({e.Message})"); }
            if (target is not null)
            {
                // Re-canonicalize the target (it may itself contain links or '..') and continue below it.
                string rest = string.Join(Path.DirectorySeparatorChar, parts[(i + 1)..]);
                return Canonical(rest.Length == 0 ? target.FullName : Path.Combine(target.FullName, rest));
            }
            current = next;
        }
        return current.Length > root.Length ? current.TrimEnd(Path.DirectorySeparatorChar) : current;
    }

    public string File(string name) => Path.Combine(TempPath, name);

    /// <summary>Moves the finished folder into place (replacing an existing one only now, when force was given).</summary>
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
