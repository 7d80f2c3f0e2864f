using System.Collections.Concurrent;
using LayerPrune.Reporting;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace LayerPrune.Cli;

/// <summary>
/// Live progress bars on stderr (Spectre.Console) for interactive terminals. Spectre's Progress API is
/// callback-shaped, so the display runs on a background task for as long as at least one reporter is open;
/// reporters started meanwhile appear as extra rows. Use <see cref="ForCli"/> to pick the right sink.
/// Note: other writes to stderr while a bar is live interleave with it.
/// </summary>
public sealed class SpectreProgressSink : IProgressSink
{
    private readonly IAnsiConsole _console;
    private readonly object _lock = new();
    private readonly Dictionary<int, ProgressTask> _tasks = new();
    // Latest snapshot per Spectre task id, read by the custom columns on Spectre's refresh thread.
    private readonly ConcurrentDictionary<int, ProgressSnapshot> _latest = new();
    private ProgressContext? _context;
    private Task? _display;
    private TaskCompletionSource? _finish;

    /// <summary>Progress drawn on <paramref name="console"/>.</summary>
    public SpectreProgressSink(IAnsiConsole console) => _console = console;

    /// <summary>A Spectre console that writes to stderr, keeping stdout for JSON.</summary>
    public static IAnsiConsole CreateStderrConsole() =>
        AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    /// <summary>
    /// The sink for the CLI: nothing with --quiet; a live bar when stderr is an interactive ANSI terminal
    /// (Spectre renders nothing useful otherwise); plain throttled stderr lines in every other case (logs, CI).
    /// Usage at startup: <c>var sink = SpectreProgressSink.ForCli(quiet);</c>, then pass it to library calls.
    /// </summary>
    public static IProgressSink ForCli(bool quiet)
    {
        if (quiet) return NullProgressSink.Instance;
        try
        {
            var console = CreateStderrConsole();
            var caps = console.Profile.Capabilities;
            if (!Console.IsErrorRedirected && caps.Interactive && caps.Ansi)
                return new SpectreProgressSink(console);
        }
        catch (Exception)
        {
            // Terminal detection failed: fall through to plain lines.
        }
        return new StderrProgressSink();
    }

    /// <inheritdoc/>
    public void OnStart(ProgressSnapshot s)
    {
        lock (_lock)
        {
            var ctx = EnsureDisplay();
            bool known = s.Total > 0;
            var task = ctx.AddTask(Describe(s), autoStart: true, maxValue: known ? s.Total : 1);
            task.IsIndeterminate = !known;
            _tasks[s.Id] = task;
            _latest[task.Id] = s;
        }
    }

    /// <inheritdoc/>
    public void OnAdvance(ProgressSnapshot s)
    {
        lock (_lock)
        {
            if (!_tasks.TryGetValue(s.Id, out var task)) return;
            _latest[task.Id] = s;
            task.Description = Describe(s);
            if (s.Total > 0) task.Value = Math.Min(s.Done, s.Total);
        }
    }

    /// <inheritdoc/>
    public void OnEnd(ProgressSnapshot s)
    {
        lock (_lock)
        {
            if (!_tasks.Remove(s.Id, out var task)) return;
            _latest[task.Id] = s;
            task.Description = Describe(s);
            if (s.Total > 0) task.Value = Math.Min(s.Done, s.Total);
            else { task.IsIndeterminate = false; task.Value = task.MaxValue; }
            task.StopTask();
            if (_tasks.Count > 0) return;

            // Last reporter closed: let Spectre draw its final frame and release the terminal.
            _finish!.TrySetResult();
            try { _display!.Wait(); } catch (AggregateException) { /* display errors must not fail the run */ }
            _display = null; _finish = null; _context = null;
            _latest.Clear();
        }
    }

    private ProgressContext EnsureDisplay()
    {
        if (_context is not null) return _context;
        var ready = new TaskCompletionSource<ProgressContext>(TaskCreationOptions.RunContinuationsAsynchronously);
        var finish = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var progress = _console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(),
                new PercentageColumn(), new CountColumn(this), new RateColumn(this), new EtaColumn(this));
        _display = Task.Run(() => progress.Start(ctx =>
        {
            ready.SetResult(ctx);
            finish.Task.Wait();
        }));
        _finish = finish;
        // If Start throws before calling back (e.g. another live display is active), surface it here.
        Task.WaitAny(ready.Task, _display);
        if (!ready.Task.IsCompleted)
            _display.GetAwaiter().GetResult();
        _context = ready.Task.Result;
        return _context;
    }

    private static string Describe(ProgressSnapshot s) =>
        Markup.Escape(string.IsNullOrEmpty(s.Status) ? s.Label : $"{s.Label} ({s.Status})");

    private ProgressSnapshot? Latest(ProgressTask task) => _latest.TryGetValue(task.Id, out var s) ? s : null;

    private sealed class CountColumn(SpectreProgressSink owner) : ProgressColumn
    {
        protected override bool NoWrap => true;

        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime)
        {
            var s = owner.Latest(task);
            if (s is null) return Text.Empty;
            string count = s.Total > 0 ? $"{s.Done}/{s.Total}" : $"{s.Done}";
            return new Text($"{count} {s.Unit}");
        }
    }

    private sealed class RateColumn(SpectreProgressSink owner) : ProgressColumn
    {
        protected override bool NoWrap => true;

        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime)
        {
            var s = owner.Latest(task);
            return s is null ? Text.Empty : new Text($"{ProgressFormat.Rate(s.Rate)} {s.Unit}/s", new Style(Color.Grey));
        }
    }

    private sealed class EtaColumn(SpectreProgressSink owner) : ProgressColumn
    {
        protected override bool NoWrap => true;

        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime)
        {
            var s = owner.Latest(task);
            if (s is null) return Text.Empty;
            if (s.Finished) return new Text($"done in {ProgressFormat.Duration(s.Elapsed)}", new Style(Color.Green));
            return s.Eta is TimeSpan eta ? new Text($"ETA {ProgressFormat.Duration(eta)}", new Style(Color.Blue)) : Text.Empty;
        }
    }
}
