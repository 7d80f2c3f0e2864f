namespace LayerPrune.Pruning;

/// <summary>
/// Writes an output folder atomically: everything goes into a hidden sibling temp folder that is renamed into place
/// only when complete, so an interrupted run never leaves a half-written folder under the final name. From
/// <see cref="Begin"/> to <see cref="Dispose"/> the run holds the output path's <see cref="OutputLock"/>, so a second
/// run on the same path fails at once instead of replacing the first one's output.
/// </summary>
public sealed class OutputFolder : IDisposable
{
    /// <summary>The output folder (absolute; its parent resolved, the last component as given).</summary>
    public string FinalPath { get; }

    /// <summary>The hidden sibling ".NAME.tmp-GUID" that receives the files until <see cref="Commit"/>.</summary>
    public string TempPath { get; }

    readonly string _parameterName;
    readonly bool _force, _existedAtStart;
    readonly OutputLock _lock;
    bool _committed, _keepTemp;

    OutputFolder(string finalPath, string tempPath, string parameterName, bool force, bool existedAtStart, OutputLock outputLock)
    {
        FinalPath = finalPath;
        TempPath = tempPath;
        _parameterName = parameterName;
        _force = force;
        _existedAtStart = existedAtStart;
        _lock = outputLock;
    }

    /// <summary>
    /// Validates an output path without touching the disk (call it before slow work): the path must not be, contain or
    /// lie inside any protected input — compared after resolving symlinks and '..' — and must not exist unless
    /// <paramref name="force"/>. Throws <see cref="LayerPruneException.Invalid"/> naming <paramref name="parameterName"/>.
    /// </summary>
    public static string Check(string path, bool force, string parameterName, params string[] protectedInputs)
    {
        if (string.IsNullOrWhiteSpace(path))
            throw LayerPruneException.Invalid(parameterName, null, "must not be empty");
        string full = Canonical(path);
        if (Path.GetDirectoryName(full) is null)
            throw LayerPruneException.Invalid(parameterName, path, "must not be the file-system root");
        foreach (var input in protectedInputs)
        {
            string inFull = Canonical(input);
            if (full == inFull || inFull.StartsWith(full + Path.DirectorySeparatorChar)
                || full.StartsWith(inFull + Path.DirectorySeparatorChar))
                throw LayerPruneException.Invalid(parameterName, path, $"must not be, contain or lie inside the input {input}");
        }
        if ((Directory.Exists(full) || System.IO.File.Exists(full)) && !force)
            throw LayerPruneException.Invalid(parameterName, path, "already exists (use `force` to replace it)");
        if (System.IO.File.Exists(full))
            throw LayerPruneException.Invalid(parameterName, path, "is a file, not a folder");
        return full;
    }

    /// <summary>
    /// Starts writing <paramref name="path"/> (see <see cref="Check"/>): takes the path's <see cref="OutputLock"/> (fails at
    /// once, naming the other run's pid, when another run holds it), repeats the checks under the lock, removes what killed
    /// earlier runs left (their ".NAME.tmp-*" folders; a folder moved aside by an interrupted forced commit is moved back),
    /// and creates a fresh hidden sibling ".NAME.tmp-GUID" for the work.
    /// </summary>
    /// <param name="protectedInputs">Folders that must never be replaced or deleted (the input model).</param>
    /// <param name="path">The output folder.</param>
    /// <param name="force">Replace an existing non-empty folder.</param>
    /// <param name="parameterName">The parameter errors name (e.g. "outPath").</param>
    public static OutputFolder Begin(string path, bool force, string parameterName, params string[] protectedInputs)
    {
        Check(path, force, parameterName, protectedInputs);
        // The final path itself stays as given (a symlink there is replaced, never followed); its parent is resolved.
        string full = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        string parent = Path.GetDirectoryName(full)!, name = Path.GetFileName(full);
        var outputLock = OutputLock.Acquire(full, parameterName);
        try
        {
            // Holding the lock, nobody else writes these names: whatever is there was left by a dead run.
            RecoverInterruptedRuns(parent, name, full);
            Check(path, force, parameterName, protectedInputs); // another run may have committed between the first check and the lock
            bool existed = Directory.Exists(full);
            string temp = Path.Combine(parent, $".{name}.tmp-{Guid.NewGuid():N}");
            Directory.CreateDirectory(temp);
            return new OutputFolder(full, temp, parameterName, force, existed, outputLock);
        }
        catch
        {
            outputLock.Dispose();
            throw;
        }
    }

    /// <summary>Temp folders of killed runs are deleted; a folder that a killed forced commit had moved aside comes back.</summary>
    static void RecoverInterruptedRuns(string parent, string name, string full)
    {
        var leftovers = Directory.EnumerateDirectories(parent, $".{name}.*").Select(d => (path: d, file: Path.GetFileName(d))).ToList();
        var movedAside = leftovers.Where(d => d.file.StartsWith($".{name}.old-", StringComparison.Ordinal)).Select(d => d.path).ToList();
        if (!Directory.Exists(full) && !System.IO.File.Exists(full) && movedAside.Count > 0)
        {
            string newest = movedAside.OrderByDescending(Directory.GetLastWriteTimeUtc).First();
            Directory.Move(newest, full);
            movedAside.Remove(newest);
        }
        var temps = leftovers.Where(d => d.file.StartsWith($".{name}.tmp-", StringComparison.Ordinal)).Select(d => d.path);
        var stale = temps.Concat(movedAside);
        foreach (var dir in stale) Directory.Delete(dir, recursive: true);
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

    /// <summary>The path of <paramref name="name"/> inside the temp folder (where the run writes it).</summary>
    public string File(string name) => Path.Combine(TempPath, name);

    /// <summary>
    /// Moves the finished folder into place. An existing folder is replaced only when force was given and it already
    /// existed at <see cref="Begin"/>; a folder (or file) that appeared meanwhile is never touched: the commit fails and
    /// this run's output stays in <see cref="TempPath"/>.
    /// </summary>
    public void Commit()
    {
        bool isFile = System.IO.File.Exists(FinalPath), isDir = Directory.Exists(FinalPath);
        if (isFile || (isDir && !(_force && _existedAtStart)))
        {
            _keepTemp = true;
            throw LayerPruneException.Failed(_parameterName, FinalPath, "was created by another program while this run was writing; "
                + $"left it untouched (this run's output is in {TempPath})");
        }
        string? old = null;
        if (isDir)
        {
            old = Path.Combine(Path.GetDirectoryName(FinalPath)!, $".{Path.GetFileName(FinalPath)}.old-{Guid.NewGuid():N}");
            Directory.Move(FinalPath, old);
        }
        Directory.Move(TempPath, FinalPath);
        _committed = true;
        if (old is not null) Directory.Delete(old, recursive: true);
    }

    /// <summary>Deletes the temp folder unless committed (or kept by a refused commit) and releases the lock.</summary>
    public void Dispose()
    {
        if (!_committed && !_keepTemp && Directory.Exists(TempPath))
            try { Directory.Delete(TempPath, recursive: true); } catch (IOException) { } // best effort; never under the final name
        _lock.Dispose();
    }
}
