using System.Runtime.InteropServices;
using System.Text;

namespace LayerPrune.Pruning;

/// <summary>
/// An exclusive claim on an output path for one run: the hidden sibling file ".NAME.lock", held open with
/// <see cref="FileShare.None"/> (an OS-level lock: flock(LOCK_EX) on Unix, a sharing lock on Windows) and holding the
/// owner's pid. The operating system drops the lock when the owner exits or is killed, so a lock file left behind by a
/// dead run is free and is simply taken over. Only the holder deletes the file (while still holding it).
/// </summary>
public sealed class OutputLock : IDisposable
{
    /// <summary>The lock file, ".NAME.lock" next to the output path.</summary>
    public string LockPath { get; }

    /// <summary>The output path this lock claims (absolute).</summary>
    public string OutputPath { get; }

    FileStream? _stream;

    OutputLock(string outputPath, string lockPath, FileStream stream)
    {
        OutputPath = outputPath;
        LockPath = lockPath;
        _stream = stream;
    }

    /// <summary>The lock file that guards <paramref name="outputPath"/>: ".NAME.lock" in the same parent folder.</summary>
    public static string LockPathFor(string outputPath)
    {
        string full = Path.GetFullPath(outputPath).TrimEnd(Path.DirectorySeparatorChar);
        return Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.lock");
    }

    /// <summary>
    /// Claims <paramref name="outputPath"/> or fails at once (never waits): a second run on the same path gets a one-line
    /// error naming <paramref name="parameterName"/> and the other run's pid. Creates the parent folder if needed.
    /// </summary>
    /// <exception cref="LayerPruneException">Another live process holds the lock.</exception>
    public static OutputLock Acquire(string outputPath, string parameterName)
    {
        string full = Path.GetFullPath(outputPath).TrimEnd(Path.DirectorySeparatorChar);
        string lockPath = LockPathFor(full);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        for (int attempt = 0; ; attempt++)
        {
            FileStream stream;
            try { stream = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
            catch (IOException e) when (IsLockedByOther(e))
            {
                string owner = ReadOwner(lockPath) is int pid ? $"pid {pid}" : "another process";
                string other = parameterName.StartsWith('-') ? parameterName : $"`{parameterName}`";
                throw LayerPruneException.Failed(parameterName, outputPath, $"another run ({owner}) is writing it (lock {lockPath}); "
                    + $"wait for it to finish or choose another {other}");
            }
            // The previous holder may have deleted the file between our open and our lock: then lock the new file.
            if (IsUnlinked(stream) && attempt < 100)
            {
                stream.Dispose();
                continue;
            }
            try
            {
                stream.SetLength(0);
                stream.Write(Encoding.ASCII.GetBytes($"{Environment.ProcessId}\n"));
                stream.Flush();
            }
            catch
            {
                TryDelete(lockPath);
                stream.Dispose();
                throw;
            }
            return new OutputLock(full, lockPath, stream);
        }
    }

    /// <summary>
    /// Deletes the lock file (while still holding it, so no other run can lock a file about to vanish), then releases it.
    /// </summary>
    public void Dispose()
    {
        if (_stream is null) return;
        TryDelete(LockPath);
        _stream.Dispose();
        _stream = null;
    }

    static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    // EWOULDBLOCK from flock is EAGAIN: 11 on Linux, 35 on macOS/BSD; Windows: ERROR_SHARING_VIOLATION / ERROR_LOCK_VIOLATION.
    static bool IsLockedByOther(IOException e) => e.GetType() == typeof(IOException)
        && (OperatingSystem.IsWindows() ? (e.HResult & 0xFFFF) is 32 or 33 : e.HResult == (OperatingSystem.IsLinux() ? 11 : 35));

    /// <summary>Linux: a locked descriptor whose file was unlinked shows as "PATH (deleted)" in /proc/self/fd.</summary>
    static bool IsUnlinked(FileStream stream)
    {
        if (!OperatingSystem.IsLinux()) return false;
        var descriptor = new FileInfo($"/proc/self/fd/{stream.SafeFileHandle.DangerousGetHandle()}");
        try { return descriptor.LinkTarget?.EndsWith(" (deleted)") == true; }
        catch (IOException) { return false; }
    }

    /// <summary>
    /// The pid in a lock file that another process holds. .NET's own readers take a shared flock and would fail on the
    /// holder's exclusive one, so on Unix the file is read with plain open/read (advisory locks do not block them).
    /// </summary>
    static int? ReadOwner(string lockPath)
    {
        // The holder writes its pid right after locking: give it a moment.
        for (int i = 0; i < 20; i++)
        {
            if (ReadPid(lockPath) is int pid) return pid;
            Thread.Sleep(10);
        }
        return null;
    }

    static int? ReadPid(string lockPath)
    {
        if (OperatingSystem.IsWindows()) return null;
        // glibc's soname first (a bare "libc" resolves only where the libc.so development link exists), then the generic name.
        if (OperatingSystem.IsLinux())
        {
            try { return ReadPid(lockPath, LibcSo6.open, LibcSo6.read, LibcSo6.close); }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        }
        try { return ReadPid(lockPath, Libc.open, Libc.read, Libc.close); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
    }

    static int? ReadPid(string lockPath, Func<string, int, int> open, Func<int, byte[], nint, nint> read, Func<int, int> close)
    {
        var bytes = new byte[32];
        int fd = open(lockPath, 0); // O_RDONLY
        if (fd < 0) return null;
        long n;
        try { n = read(fd, bytes, bytes.Length); }
        finally { _ = close(fd); }
        return n > 0 && int.TryParse(Encoding.ASCII.GetString(bytes, 0, (int)n).Trim(), out int pid) ? pid : null;
    }

    static class LibcSo6
    {
        [DllImport("libc.so.6", SetLastError = true)]
        public static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

        [DllImport("libc.so.6", SetLastError = true)]
        public static extern nint read(int fd, byte[] buffer, nint count);

        [DllImport("libc.so.6")]
        public static extern int close(int fd);
    }

    static class Libc
    {
        [DllImport("libc", SetLastError = true)]
        public static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

        [DllImport("libc", SetLastError = true)]
        public static extern nint read(int fd, byte[] buffer, nint count);

        [DllImport("libc")]
        public static extern int close(int fd);
    }
}
