namespace LayerPrune;

/// <summary>
/// A user-facing failure: bad input, missing file, impossible request. The CLI prints only the message (one line) and
/// exits with <see cref="ExitCode"/>: 2 for usage errors (bad flag values), 1 for failures.
/// </summary>
public sealed class LayerPruneException(string message, Exception? inner = null) : Exception(message, inner)
{
    public int ExitCode { get; init; } = 1;

    /// <summary>A bad command-line value (exit code 2).</summary>
    public static LayerPruneException Usage(string message) => new(message) { ExitCode = 2 };
}
