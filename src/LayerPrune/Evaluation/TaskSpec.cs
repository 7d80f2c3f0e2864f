using System.Globalization;

namespace LayerPrune.Evaluation;

/// <summary>
/// A task as written: <c>KIND:PATH[,shots=N][,OPTION=VALUE]...</c>, KIND one of <see cref="EvalTasks.Kinds"/>
/// (loss, mc, mmlu, boolq, hellaswag, gsm8k). Each kind declares its default and maximum shots, its extra options
/// and how its path is resolved (<see cref="TaskKind"/>); this parser holds no knowledge of any particular kind.
/// </summary>
/// <param name="Kind">The task kind (lower case).</param>
/// <param name="Path">The data file or folder, after the kind's resolution (e.g. a gsm8k folder → its test.jsonl).</param>
/// <param name="NumFewshot">Few-shot examples per prompt.</param>
public sealed record TaskSpec(string Kind, string Path, int NumFewshot)
{
    /// <summary>The spec as written (for the results' config).</summary>
    public string Text { get; init; } = $"{Kind}:{Path}";

    /// <summary>The kind's extra options (e.g. train, dev, subject), by name.</summary>
    public IReadOnlyDictionary<string, string> Options { get; init; } = new Dictionary<string, string>();

    /// <summary>The value of option <paramref name="name"/>, or null when it was not given.</summary>
    public string? Option(string name) => Options.TryGetValue(name, out var v) ? v : null;

    /// <summary>gsm8k's few-shot file (<c>train=</c>, or train.jsonl of a gsm8k folder).</summary>
    public string? TrainPath => Option("train");

    /// <summary>mmlu's dev split for single-file layouts (<c>dev=</c>).</summary>
    public string? DevPath => Option("dev");

    /// <summary>mmlu's subject name for single-file layouts (<c>subject=</c>).</summary>
    public string? Subject => Option("subject");

    /// <summary>Whether the kind generates text (generate_until) rather than scoring log-likelihoods.</summary>
    public bool IsGeneration => EvalTasks.Find(Kind)?.Generates ?? false;

    /// <summary>Parses and checks a spec (kind known, options valid, files present) before any model work.</summary>
    public static TaskSpec Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        int colon = spec.IndexOf(':');
        string kinds = string.Join(", ", EvalTasks.Kinds.Select(k => k.Name));
        if (colon <= 0 || colon == spec.Length - 1)
            throw new LayerPruneException($"task \"{spec}\": expected KIND:PATH with KIND one of {kinds}");
        var name = spec[..colon].Trim().ToLowerInvariant();
        var kind = EvalTasks.Find(name)
            ?? throw new LayerPruneException($"task \"{spec}\": unknown kind \"{name}\" (supported: {kinds})");
        var parts = spec[(colon + 1)..].Split(',');
        int? shots = null;
        var options = new Dictionary<string, string>();
        foreach (var opt in parts.Skip(1))
        {
            int eq = opt.IndexOf('=');
            var key = eq > 0 ? opt[..eq].Trim().ToLowerInvariant() : opt.Trim();
            var val = eq > 0 ? opt[(eq + 1)..].Trim() : "";
            if (key == "shots")
            {
                bool ok = int.TryParse(val, NumberStyles.Integer, CultureInfo.InvariantCulture, out var k) && k >= 0;
                shots = ok ? k : throw new LayerPruneException($"task \"{spec}\": shots must be a non-negative integer, got \"{val}\"");
                continue;
            }
            var known = kind.Options.FirstOrDefault(o => o.Name == key);
            if (known is null || val.Length == 0)
            {
                string list = string.Join(", ", new[] { "shots=N" }.Concat(kind.Options.Select(o => $"{o.Name}={o.Placeholder}")));
                throw new LayerPruneException($"task \"{spec}\": unknown option \"{opt}\" for {name} (options: {list})");
            }
            options[key] = val;
        }
        int n = shots ?? kind.DefaultShots;
        if (n > kind.MaxShots)
            throw new LayerPruneException(kind.MaxShots == 0
                ? $"task \"{spec}\": {name} supports only 0-shot"
                : $"task \"{spec}\": {name} supports at most {kind.MaxShots} shots");
        var parsed = new TaskSpec(name, parts[0], n) { Text = spec, Options = options };
        if (kind.Resolve is not null) parsed = kind.Resolve(parsed);
        bool exists = File.Exists(parsed.Path) || (kind.AllowsFolder && Directory.Exists(parsed.Path));
        if (!exists)
            throw new LayerPruneException($"task \"{spec}\": {(kind.AllowsFolder ? "path" : "file")} not found: {parsed.Path}");
        foreach (var o in kind.Options.Where(o => o.IsFile))
            if (parsed.Option(o.Name) is string f && !File.Exists(f))
                throw new LayerPruneException($"task \"{spec}\": file not found: {f}");
        return parsed;
    }

    /// <summary>Multiple-choice docs of this task (mc, mmlu, boolq, hellaswag). <paramref name="limit"/>: first N items
    /// (per subject for mmlu, like the harness's --limit per subtask).</summary>
    public IReadOnlyList<EvalDoc> LoadDocs(int? limit = null) => EvalTasks.Create(this) is MultipleChoiceTask mc
        ? mc.LoadDocs(limit)
        : throw new LayerPruneException($"task \"{Text}\" is not a multiple-choice task");

    /// <summary>Generation docs (gsm8k).</summary>
    public IReadOnlyList<GenerationDoc> LoadGenerationDocs(int? limit = null) => EvalTasks.Create(this) is Gsm8kTask g
        ? g.LoadDocs(limit)
        : throw new LayerPruneException($"task \"{Text}\" is not a generation task");
}

/// <summary>An extra option of a task kind, written <c>NAME=VALUE</c> after the path.</summary>
/// <param name="Name">Option name (lower case).</param>
/// <param name="Placeholder">What the value is, in help and errors: "FILE" (must exist) or e.g. "NAME".</param>
public sealed record TaskOption(string Name, string Placeholder)
{
    /// <summary>Whether the value names a file that must exist.</summary>
    public bool IsFile => Placeholder == "FILE";
}

/// <summary>A registered task kind: how its spec is parsed and how its task object is made.</summary>
/// <param name="Name">The KIND of <c>KIND:PATH</c>.</param>
/// <param name="Create">Makes the task of a parsed spec.</param>
public sealed record TaskKind(string Name, Func<TaskSpec, IEvalTask> Create)
{
    /// <summary>Shots when the spec gives none.</summary>
    public int DefaultShots { get; init; }

    /// <summary>The most shots the kind supports (0: 0-shot only).</summary>
    public int MaxShots { get; init; }

    /// <summary>Options besides shots=N.</summary>
    public IReadOnlyList<TaskOption> Options { get; init; } = [];

    /// <summary>Whether the path may be a folder.</summary>
    public bool AllowsFolder { get; init; }

    /// <summary>Rewrites a parsed spec before the existence checks (e.g. a folder → its files).</summary>
    public Func<TaskSpec, TaskSpec>? Resolve { get; init; }

    /// <summary>Whether the kind generates text (generate_until) instead of scoring log-likelihoods.</summary>
    public bool Generates { get; init; }
}

/// <summary>The registry of task kinds: <see cref="Parse"/> turns a spec string into its task object.</summary>
public static class EvalTasks
{
    static readonly object Lock = new();
    static List<TaskKind> _kinds =
        [LossTask.Kind, McTask.Kind, MmluTask.Kind, BoolqTask.Kind, HellaswagTask.Kind, Gsm8kTask.Kind, .. Suite.SuiteTasks.Kinds];

    /// <summary>The registered kinds, in registration order.</summary>
    public static IReadOnlyList<TaskKind> Kinds => Volatile.Read(ref _kinds);

    /// <summary>Adds a kind, or replaces the kind of the same name.</summary>
    public static void Register(TaskKind kind)
    {
        ArgumentNullException.ThrowIfNull(kind);
        lock (Lock)
        {
            var next = Kinds.Where(k => k.Name != kind.Name).Append(kind).ToList();
            Volatile.Write(ref _kinds, next);
        }
    }

    /// <summary>The kind named <paramref name="name"/>, or null.</summary>
    public static TaskKind? Find(string name) => Kinds.FirstOrDefault(k => k.Name == name);

    /// <summary>Parses and checks <paramref name="spec"/> and makes its task.</summary>
    public static IEvalTask Parse(string spec) => Create(TaskSpec.Parse(spec));

    /// <summary>The task of a parsed spec.</summary>
    public static IEvalTask Create(TaskSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var kind = Find(spec.Kind) ?? throw new LayerPruneException($"task \"{spec.Text}\": unknown kind \"{spec.Kind}\"");
        return kind.Create(spec);
    }
}
