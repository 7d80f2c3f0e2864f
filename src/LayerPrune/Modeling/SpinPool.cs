using System.Diagnostics;

namespace LayerPrune.Modeling;

/// <summary>
/// The worker threads of the batch-1 kernels (<see cref="Gemv"/>, <see cref="DecodeLayer"/>): a decode token dispatches a
/// hundred short parallel loops (each 0.05–2 ms), so a worker that just finished one spins for 0.2 ms waiting for the next
/// instead of sleeping (ggml's thread pool does the same); after <see cref="SpinMicroseconds"/> idle it blocks. The calling
/// thread works too, so <c>threads</c> = 2 uses one worker. One loop runs at a time (a second caller waits for it).
/// </summary>
internal static class SpinPool
{
    /// <summary>How long an idle worker spins before it blocks (LP_SPIN_US overrides, for measurements).</summary>
    public static readonly int SpinMicroseconds =
        int.TryParse(Environment.GetEnvironmentVariable("LP_SPIN_US"), out int us) && us >= 0 ? us : 200;

    static readonly object Gate = new(), SleepLock = new();
    static readonly List<Thread> Workers = [];
    // _ticket = generation << 16 | number of workers taking part: read at once, so a worker late for one loop can never
    // count itself into the next.
    static long _ticket;
    static int _sleepers, _next, _chunks, _done;
    static Action<int>? _body;
    static Exception? _error;

    /// <summary>Calls <paramref name="body"/>(c) for c = 0 … chunks − 1 on up to <paramref name="threads"/> threads (this one
    /// included); chunks are taken in order from a shared counter, so a thread held up by the OS takes fewer.</summary>
    public static void For(int chunks, int threads, Action<int> body)
    {
        if (threads <= 1 || chunks <= 1)
        {
            for (int c = 0; c < chunks; c++) body(c);
            return;
        }
        lock (Gate)
        {
            int helpers = Math.Min(threads, chunks) - 1;
            while (Workers.Count < helpers)
            {
                int index = Workers.Count;
                var t = new Thread(() => Worker(index)) { IsBackground = true, Name = $"LayerPrune decode worker {index}" };
                Workers.Add(t);
                t.Start();
            }
            _body = body;
            _chunks = chunks;
            _next = 0;
            _done = 0;
            _error = null;
            Interlocked.Exchange(ref _ticket, ((_ticket >> 16) + 1 << 16) | (long)helpers);
            if (Volatile.Read(ref _sleepers) > 0)
                lock (SleepLock) Monitor.PulseAll(SleepLock);
            Work();
            var spin = new SpinWait();
            while (Volatile.Read(ref _done) < helpers) spin.SpinOnce(sleep1Threshold: -1);
            _body = null;
            if (_error is { } e) throw new AggregateException(e);
        }
    }

    static void Work()
    {
        var body = _body!;
        int c;
        while ((c = Interlocked.Increment(ref _next) - 1) < _chunks)
        {
            try { body(c); }
            catch (Exception e) { _error ??= e; }
        }
    }

    static void Worker(int index)
    {
        long seen = 0;
        long spinTicks = Stopwatch.Frequency * SpinMicroseconds / 1_000_000;
        while (true)
        {
            long start = Stopwatch.GetTimestamp();
            var spin = new SpinWait();
            while (Interlocked.Read(ref _ticket) == seen && Stopwatch.GetTimestamp() - start < spinTicks)
                spin.SpinOnce(sleep1Threshold: -1);
            if (Interlocked.Read(ref _ticket) == seen)
            {
                lock (SleepLock)
                {
                    Interlocked.Increment(ref _sleepers);
                    while (Interlocked.Read(ref _ticket) == seen) Monitor.Wait(SleepLock);
                    Interlocked.Decrement(ref _sleepers);
                }
            }
            seen = Interlocked.Read(ref _ticket);
            if (index < (int)(seen & 0xFFFF))
            {
                Work();
                Interlocked.Increment(ref _done);
            }
        }
    }
}
