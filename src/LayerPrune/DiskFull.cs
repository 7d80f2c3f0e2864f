using System.Text.RegularExpressions;

namespace LayerPrune;

/// <summary>Recognises "no space left on device" (and quota) failures and explains them in one line naming the path.</summary>
public static partial class DiskFull
{
    // ENOSPC is 28 and EDQUOT 122 on Linux (69 on macOS); Windows: ERROR_HANDLE_DISK_FULL 39, ERROR_DISK_FULL 112.
    /// <summary>True when <paramref name="e"/> says the file system is full (or the user's quota is used up).</summary>
    public static bool Is(Exception e) => e is IOException && (OperatingSystem.IsWindows()
        ? (e.HResult & 0xFFFF) is 39 or 112
        : e.HResult is 28 || (OperatingSystem.IsLinux() ? e.HResult == 122 : e.HResult == 69));

    [GeneratedRegex(@"'([^']+)'\s*\.?\s*$")]
    private static partial Regex QuotedPath();

    [GeneratedRegex(@"(^|[\\/])\.([^\\/]+)\.tmp-[0-9a-f]{32}(?=[\\/]|$)")]
    private static partial Regex HiddenTempFolder();

    [GeneratedRegex(@"\.tmp$")]
    private static partial Regex TempSuffix();

    /// <summary>
    /// The path the failed write was for, as the user knows it: a file inside an output's hidden temp sibling
    /// ".NAME.tmp-GUID" (see <see cref="Pruning.OutputFolder"/>) is named by its final path NAME/…, and a file "X.tmp" written
    /// to be renamed to X is named X; null when unknown.
    /// </summary>
    public static string? PathOf(IOException e)
    {
        var m = QuotedPath().Match(e.Message);
        return m.Success ? TempSuffix().Replace(HiddenTempFolder().Replace(m.Groups[1].Value, "$1$2"), "") : null;
    }

    /// <summary>"PATH: no space left on device (…)" as a <see cref="LayerPruneException"/> (exit code 1).</summary>
    public static LayerPruneException Explain(IOException e, string? fallbackPath = null, string? note = null)
    {
        string path = PathOf(e) ?? fallbackPath ?? "output";
        string kept = note ?? "nothing was written under the final name";
        return new LayerPruneException($"{path}: no space left on device ({kept}; free space and run again)", e);
    }
}
