using System.Text.Json.Nodes;
using LayerPrune.Data;

namespace LayerPrune.Evaluation;

/// <summary>
/// One multiple-choice item as lm-evaluation-harness scores it: the model is asked for log P(continuation | context)
/// for every continuation; the prediction is the argmax (acc) or the argmax of logprob / <see cref="NormLengths"/>
/// (acc_norm).
/// </summary>
/// <param name="Context">The full prompt (description + few-shot examples + this item's doc_to_text).</param>
/// <param name="Continuations">target_delimiter + choice text, for each choice (e.g. " A", " yes").</param>
/// <param name="Gold">Index of the correct continuation.</param>
/// <param name="Subject">MMLU subject (per-subject accuracy); null for other tasks.</param>
public sealed record EvalDoc(string Context, IReadOnlyList<string> Continuations, int Gold, string? Subject = null)
{
    /// <summary>
    /// Lengths used by acc_norm: the harness divides by <c>len(choice)</c> of doc_to_choice, i.e. the choice text
    /// <em>without</em> the target delimiter, counted in Python characters (code points)
    /// (lm_eval/api/task.py, ConfigurableTask.process_results: <c>completion_len = [float(len(i)) for i in choices]</c>).
    /// </summary>
    public required IReadOnlyList<int> NormLengths { get; init; }

    /// <summary>The document as the harness holds it (after process_docs), for the samples file's "doc"; null when
    /// the task keeps none.</summary>
    public JsonObject? Row { get; init; }

    /// <summary>Builds a doc from doc_to_choice strings: continuation = <paramref name="targetDelimiter"/> + choice.</summary>
    public static EvalDoc FromChoices(string context, IReadOnlyList<string> choices, int gold, string? subject = null,
        string targetDelimiter = " ", string source = "")
    {
        if (choices.Count < 2) throw new LayerPruneException($"{source}: need at least 2 choices, got {choices.Count}");
        if (gold < 0 || gold >= choices.Count)
            throw new LayerPruneException($"{source}: gold index {gold} is outside 0..{choices.Count - 1}");
        return new EvalDoc(context, choices.Select(c => targetDelimiter + c).ToArray(), gold, subject)
        {
            NormLengths = choices.Select(PyText.Len).ToArray(),
        };
    }
}

/// <summary>One generate_until item (gsm8k): greedy generation from <see cref="Prompt"/> until a stop sequence.</summary>
/// <param name="Prompt">Few-shot examples + "Question: ...\nAnswer:".</param>
/// <param name="Target">The reference (doc_to_target: the full gsm8k answer ending with "#### N").</param>
/// <param name="StopSequences">The harness's generation_kwargs.until.</param>
public sealed record GenerationDoc(string Prompt, string Target, IReadOnlyList<string> StopSequences)
{
    /// <summary>The document as the harness holds it, for the samples file's "doc"; null when the task keeps none.</summary>
    public JsonObject? Row { get; init; }
}
