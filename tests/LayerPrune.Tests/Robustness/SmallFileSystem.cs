using System.Diagnostics;

namespace LayerPrune.Tests.Robustness;

/// <summary>
/// A tmpfs of a given size mounted on a fresh temp folder (root only), optionally filled up with a filler file so only a
/// few KB stay free; unmounted (and the folder removed) on Dispose.
/// </summary>
public sealed class SmallFileSystem : IDisposable
{
    public string Path { get; }
    public string this[string name] => System.IO.Path.Combine(Path, name);

    SmallFileSystem(string path) => Path = path;

    /// <summary>Why tmpfs tests cannot run here (null when they can): probed once by mounting and unmounting a tmpfs.</summary>
    public static readonly Lazy<string?> Unavailable = new(() =>
    {
        if (!OperatingSystem.IsLinux()) return "needs Linux (tmpfs)";
        if (Environment.UserName != "root")
            return "needs root to mount a small tmpfs (run the tests as root to include the disk-full cases)";
        try
        {
            using var probe = Mount("64k");
            return null;
        }
        catch (Exception e) { return $"cannot mount a tmpfs here ({e.Message})"; }
    });

    /// <summary>
    /// Mounts a tmpfs of <paramref name="size"/> (e.g. "1m"); with <paramref name="leaveFree"/>, fills it up to that many bytes.
    /// </summary>
    public static SmallFileSystem Mount(string size, long? leaveFree = null)
    {
        string dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "layerprune-tmpfs-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        Exec("mount", "-t", "tmpfs", "-o", $"size={size}", "tmpfs", dir);
        var fs = new SmallFileSystem(dir);
        if (leaveFree is long free)
        {
            long available = new DriveInfo(dir).AvailableFreeSpace;
            using var filler = File.Create(fs["filler"]);
            filler.Write(new byte[Math.Max(0, available - free)]);
        }
        return fs;
    }

    /// <summary>Entries on the file system other than the test's own filler, as names relative to its root.</summary>
    public string[] Leftovers() => Directory.EnumerateFileSystemEntries(Path, "*", SearchOption.AllDirectories)
        .Select(e => System.IO.Path.GetRelativePath(Path, e)).Where(e => e != "filler").Order(StringComparer.Ordinal).ToArray();

    static void Exec(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new IOException($"{file} {string.Join(' ', args)}: exit {p.ExitCode}: {err.Trim()}");
    }

    public void Dispose()
    {
        try { Exec("umount", Path); } finally { try { Directory.Delete(Path); } catch (IOException) { } }
    }
}

/// <summary>A fact that is reported as skipped, with the reason, where a small tmpfs cannot be mounted.</summary>
public sealed class TmpfsFactAttribute : FactAttribute
{
    public TmpfsFactAttribute()
    {
        if (SmallFileSystem.Unavailable.Value is { } why) Skip = why;
    }
}
