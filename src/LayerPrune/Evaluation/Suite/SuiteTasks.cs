namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// The pruning papers' zero-shot suite (ShortGPT, SLEB, Shortened-LLaMA, LLM-Streamline, ReplaceMe): the kinds
/// registered with <see cref="EvalTasks"/>, and which of their metrics the report's suite table and average use.
/// </summary>
public static class SuiteTasks
{
    /// <summary>The suite's task kinds, in the order the papers print them.</summary>
    public static IReadOnlyList<TaskKind> Kinds { get; } =
    [
        ArcTask.EasyKind, ArcTask.ChallengeKind, PiqaTask.Kind, OpenBookQaTask.Kind, WinograndeTask.Kind, LambadaTask.Kind,
        WikitextTask.Kind, QmsumTask.Kind,
    ];
}
