using System.Globalization;
using System.Text.RegularExpressions;

namespace LayerPrune;

/// <summary>
/// A user-facing failure: bad input, missing file, impossible request, with a one-line message.
/// When it is about one argument, <see cref="ParameterName"/> names the C# parameter or options property
/// (e.g. "n", "MicroBatch"), <see cref="Value"/> holds the offending value as text and <see cref="Problem"/> says what
/// is wrong; a front end (the CLI) renders that with its own names through <see cref="Render"/>.
/// </summary>
public sealed partial class LayerPruneException : Exception
{
    /// <summary>A failure described by a whole message (no single parameter).</summary>
    public LayerPruneException(string message, Exception? inner = null) : base(message, inner) => Problem = message;

    LayerPruneException(string parameterName, string? value, string problem, bool invalidInput)
        : base(Compose(parameterName, value, problem, n => n))
    {
        ParameterName = parameterName;
        Value = value;
        Problem = problem;
        IsInvalidInput = invalidInput;
    }

    /// <summary>The parameter (or options property) the error is about; null when it is about no single one.</summary>
    public string? ParameterName { get; }

    /// <summary>The offending value as shown to users (may be quoted); null when the message shows none.</summary>
    public string? Value { get; }

    /// <summary>
    /// What is wrong. With a <see cref="ParameterName"/>, other parameters it mentions are written `Name` (in backticks)
    /// so that <see cref="Render"/> can show them under a front end's names; otherwise it is the whole message.
    /// </summary>
    public string Problem { get; }

    /// <summary>True when the caller's input is wrong (a bad value, a missing input); false for a failure while working.</summary>
    public bool IsInvalidInput { get; init; }

    /// <summary>A bad argument: "<paramref name="parameterName"/> <paramref name="value"/>: <paramref name="problem"/>".</summary>
    /// <param name="parameterName">C# parameter or options property, e.g. nameof(n).</param>
    /// <param name="value">The value as shown (formatted with the current culture); null to show none.</param>
    /// <param name="problem">What is wrong; other parameters in backticks (`Batch`).</param>
    public static LayerPruneException Invalid(string parameterName, object? value, string problem) =>
        new(parameterName, Show(value), problem, invalidInput: true);

    /// <summary>A failure about an argument's value that is not the caller's mistake (e.g. a device that is not available).</summary>
    public static LayerPruneException Failed(string parameterName, object? value, string problem) =>
        new(parameterName, Show(value), problem, invalidInput: false);

    /// <summary>Invalid input described by a whole message (no single parameter), e.g. a missing model folder.</summary>
    public static LayerPruneException Usage(string message) => new(message) { IsInvalidInput = true };

    /// <summary>
    /// A failure described by a whole message that mentions parameters in backticks (`Force`), which
    /// <see cref="Render"/> shows under a front end's names.
    /// </summary>
    public static LayerPruneException Mentioning(string message) => new(message) { MentionsParameters = true };

    /// <summary>True when a whole-message error names parameters in backticks (see <see cref="Mentioning"/>).</summary>
    public bool MentionsParameters { get; init; }

    /// <summary>The message with every parameter name passed through <paramref name="nameOf"/> (e.g. to a CLI flag).</summary>
    public string Render(Func<string, string> nameOf) => ParameterName is not null
        ? Compose(ParameterName, Value, Problem, nameOf)
        : MentionsParameters ? Mention().Replace(Message, m => nameOf(m.Groups[1].Value)) : Message;

    static string Compose(string parameter, string? value, string problem, Func<string, string> nameOf)
    {
        string head = value is null ? nameOf(parameter) : $"{nameOf(parameter)} {value}";
        string body = Mention().Replace(problem, m => nameOf(m.Groups[1].Value));
        return $"{head}: {body}";
    }

    static string? Show(object? value) => value is null ? null : Convert.ToString(value, CultureInfo.CurrentCulture);

    [GeneratedRegex("`([A-Za-z][A-Za-z0-9]*)`")]
    private static partial Regex Mention();
}
