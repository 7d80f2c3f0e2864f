namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// lm_eval/api/metrics.py bootstrap_stderr, used for the metrics it lists as bootstrappable (perplexity among them):
/// iters resamples with replacement of the per-document values, in chunks of 1000 each seeded by its chunk index,
/// the aggregate of each resample, and the sample standard deviation of those aggregates. The harness's default
/// bootstrap_iters is 100000. The draws come from .NET's seeded <see cref="Random"/>, not Python's Mersenne Twister,
/// so the stderr agrees with the harness's to its own sampling noise, not digit for digit.
/// </summary>
public static class Bootstrap
{
    /// <summary>The harness's default number of resamples.</summary>
    public const int DefaultIters = 100_000;

    /// <summary>The bootstrap standard error of <paramref name="aggregate"/> over <paramref name="xs"/>.</summary>
    public static double Stderr(IReadOnlyList<double> xs, Func<double[], double> aggregate, int iters = DefaultIters)
    {
        if (xs.Count < 2 || iters < 2) return double.NaN;
        int chunk = Math.Min(1000, iters);
        int chunks = iters / chunk;
        var res = new double[chunks * chunk];
        Parallel.For(0, chunks, c =>
        {
            var rnd = new Random(c);
            var sample = new double[xs.Count];
            for (int r = 0; r < chunk; r++)
            {
                for (int i = 0; i < sample.Length; i++) sample[i] = xs[rnd.Next(xs.Count)];
                res[c * chunk + r] = aggregate(sample);
            }
        });
        return Metrics.SampleStddev(res);
    }

    /// <summary>The harness's perplexity aggregation: exp(−mean(log-likelihoods)).</summary>
    public static double Perplexity(IReadOnlyList<double> lls) => Math.Exp(-lls.Average());
}
