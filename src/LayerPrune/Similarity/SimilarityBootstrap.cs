using System.Text.Json.Nodes;

namespace LayerPrune.Similarity;

/// <summary>
/// How stable l*(n) is for block size n: the share of bootstrap resamples whose argmin is l*(n) (the full-data choice)
/// and the 95 % percentile interval of the resampled distance d(l*(n), l*(n)+n).
/// </summary>
public sealed record BootstrapChoice(int N, int Start, double ArgminFrequency, double Low, double High);

/// <summary>
/// Bootstrap over calibration samples of the angular distance (each sample contributes its own matrix; a resample
/// draws S of the S samples with replacement and averages their matrices). Seeded: the same seed gives the same result.
/// </summary>
public sealed record SimilarityBootstrap(int Resamples, int Seed, bool ProtectLast, IReadOnlyList<BootstrapChoice> Choices)
{
    /// <summary>Choices with an argmin frequency below this are flagged unstable.</summary>
    public const double StableFrequency = 0.95;

    /// <summary>Resamples <paramref name="r"/>'s per-sample matrices <paramref name="resamples"/> times.</summary>
    public static SimilarityBootstrap Run(SimilarityResult r, int resamples, int seed, bool protectLast = false)
    {
        if (resamples < 1) throw new ArgumentOutOfRangeException(nameof(resamples), resamples, "at least 1 resample");
        var per = r.PerSample ?? throw new ArgumentException("the similarity result holds no per-sample matrices", nameof(r));
        int L = r.Layers, S = per.Count, maxN = BlockChoice.MaxBlockSize(L, protectLast);
        var full = Enumerable.Range(1, maxN).Select(n => r.BestFor(n, SimilarityMetric.Angular, protectLast)).ToArray();
        var hits = new int[maxN];
        var values = Enumerable.Range(0, maxN).Select(_ => new double[resamples]).ToArray();
        var rng = new Random(seed);
        var mean = new double[L + 1, L + 1];
        for (int k = 0; k < resamples; k++)
        {
            Array.Clear(mean);
            for (int s = 0; s < S; s++)
            {
                var m = per[rng.Next(S)];
                for (int a = 0; a <= L; a++) for (int b = a; b <= L; b++) mean[a, b] += m[a, b] / S;
            }
            for (int n = 1; n <= maxN; n++)
            {
                var best = BlockChoice.Best(mean, n, protectLast);
                if (best.Start == full[n - 1].Start) hits[n - 1]++;
                values[n - 1][k] = mean[full[n - 1].Start, full[n - 1].EndExclusive];
            }
        }
        var choices = full.Select((b, i) => new BootstrapChoice(b.N, b.Start, (double)hits[i] / resamples,
                                                                Percentile(values[i], 0.025), Percentile(values[i], 0.975))).ToList();
        return new SimilarityBootstrap(resamples, seed, protectLast, choices);
    }

    /// <summary>numpy.percentile's default (linear interpolation between order statistics), q in [0, 1].</summary>
    public static double Percentile(double[] xs, double q)
    {
        var s = xs.Order().ToArray();
        double pos = q * (s.Length - 1);
        int lo = (int)Math.Floor(pos), hi = (int)Math.Ceiling(pos);
        return s[lo] + (s[hi] - s[lo]) * (pos - lo);
    }

    /// <summary>The choices whose argmin frequency is below <see cref="StableFrequency"/>.</summary>
    public IEnumerable<BootstrapChoice> Unstable => Choices.Where(c => c.ArgminFrequency < StableFrequency);

    /// <summary>similarity.json's "bootstrap" section.</summary>
    public JsonObject ToJson() => new()
    {
        ["definition"] = "resamples of the calibration samples with replacement; per n: argmin_frequency = share of resamples whose " +
                         "angular-distance argmin is start (the full-data l*(n)); distance_ci95 = 2.5 and 97.5 percentiles of the " +
                         $"resampled d(start, start+n); unstable = argmin_frequency < {StableFrequency}",
        ["resamples"] = Resamples,
        ["seed"] = Seed,
        ["protect_last"] = ProtectLast,
        ["per_n"] = new JsonArray(Choices.Select(c => (JsonNode?)new JsonObject
        {
            ["n"] = c.N, ["start"] = c.Start, ["end_exclusive"] = c.Start + c.N, ["argmin_frequency"] = c.ArgminFrequency,
            ["distance_ci95"] = new JsonArray(c.Low, c.High), ["unstable"] = c.ArgminFrequency < StableFrequency,
        }).ToArray()),
    };
}
