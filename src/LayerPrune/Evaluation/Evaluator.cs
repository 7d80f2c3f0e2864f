using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;

namespace LayerPrune.Evaluation;

/// <summary>One-call evaluation of a task spec: parse, prepare (tokenize) and score. To score one task for several
/// models or layer subsets, prepare it once instead: <c>EvalTasks.Parse(spec).Prepare(tok, options).Score(model, layers)</c>.</summary>
public static class Evaluator
{
    /// <summary>Parses and checks a spec before any model work (a typo fails in milliseconds, not after loading).</summary>
    public static IEvalTask Validate(string spec) => EvalTasks.Parse(spec);

    /// <summary>Scores <paramref name="spec"/> on <paramref name="model"/> (only <paramref name="layers"/>, when given).</summary>
    public static TaskScore Run(CausalLM model, ITextTokenizer tok, string spec, EvalOptions options,
        IReadOnlyList<int>? layers = null, IProgressSink? progress = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        return EvalTasks.Parse(spec).Prepare(tok, options).Score(model, layers, progress);
    }
}
