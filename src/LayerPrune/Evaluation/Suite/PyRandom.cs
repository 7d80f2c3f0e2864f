namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// CPython's <c>random.Random</c> as far as lm-evaluation-harness's few-shot sampler uses it: the MT19937 generator
/// seeded as <c>random.seed(int)</c> seeds it (init_by_array over the 32-bit words of |seed|, Modules/_randommodule.c),
/// <c>getrandbits(k)</c> for k ≤ 32, <c>_randbelow</c> and <c>sample</c> (Lib/random.py, the pool algorithm for small
/// populations and the rejection set for large ones), so that <c>sample</c> returns the indices Python returns.
/// </summary>
public sealed class PyRandom
{
    const int N = 624, M = 397;
    readonly uint[] _mt = new uint[N];
    int _mti;

    /// <summary>random.Random(<paramref name="seed"/>).</summary>
    public PyRandom(long seed)
    {
        var key = new List<uint>();
        ulong a = seed == long.MinValue ? 1UL << 63 : (ulong)Math.Abs(seed);
        do
        {
            key.Add((uint)a);
            a >>= 32;
        } while (a != 0);
        InitByArray(key);
    }

    void InitGenrand(uint s)
    {
        _mt[0] = s;
        for (_mti = 1; _mti < N; _mti++)
            _mt[_mti] = 1812433253u * (_mt[_mti - 1] ^ (_mt[_mti - 1] >> 30)) + (uint)_mti;
    }

    void InitByArray(List<uint> key)
    {
        InitGenrand(19650218u);
        int i = 1, j = 0;
        for (int k = Math.Max(N, key.Count); k > 0; k--)
        {
            _mt[i] = (_mt[i] ^ ((_mt[i - 1] ^ (_mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint)j;
            i++;
            j++;
            if (i >= N) { _mt[0] = _mt[N - 1]; i = 1; }
            if (j >= key.Count) j = 0;
        }
        for (int k = N - 1; k > 0; k--)
        {
            _mt[i] = (_mt[i] ^ ((_mt[i - 1] ^ (_mt[i - 1] >> 30)) * 1566083941u)) - (uint)i;
            i++;
            if (i >= N) { _mt[0] = _mt[N - 1]; i = 1; }
        }
        _mt[0] = 0x80000000u;   // MSB is 1, assuring a non-zero initial array
    }

    /// <summary>genrand_uint32.</summary>
    public uint NextUInt32()
    {
        static uint Twist(uint upper, uint lower, uint far)
        {
            uint y = (upper & 0x80000000u) | (lower & 0x7fffffffu);
            return far ^ (y >> 1) ^ ((y & 1) != 0 ? 0x9908b0dfu : 0u);
        }
        if (_mti >= N)
        {
            int kk;
            for (kk = 0; kk < N - M; kk++) _mt[kk] = Twist(_mt[kk], _mt[kk + 1], _mt[kk + M]);
            for (; kk < N - 1; kk++) _mt[kk] = Twist(_mt[kk], _mt[kk + 1], _mt[kk + (M - N)]);
            _mt[N - 1] = Twist(_mt[N - 1], _mt[0], _mt[M - 1]);
            _mti = 0;
        }
        uint x = _mt[_mti++];
        x ^= x >> 11;
        x ^= (x << 7) & 0x9d2c5680u;
        x ^= (x << 15) & 0xefc60000u;
        x ^= x >> 18;
        return x;
    }

    /// <summary>getrandbits(k), 1 ≤ k ≤ 32: the top k bits of one 32-bit draw.</summary>
    public uint GetRandBits(int k)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(k, 32);
        return NextUInt32() >> (32 - k);
    }

    /// <summary>random(): 53 bits from two draws (a &gt;&gt; 5, b &gt;&gt; 6).</summary>
    public double NextDouble()
    {
        uint a = NextUInt32() >> 5, b = NextUInt32() >> 6;
        return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
    }

    /// <summary>_randbelow_with_getrandbits(n): k = n.bit_length(); draw k bits until the value is below n.</summary>
    public int RandBelow(int n)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        int k = 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)n);
        uint r = GetRandBits(k);
        while (r >= (uint)n) r = GetRandBits(k);
        return (int)r;
    }

    /// <summary>The indices <c>random.sample(range(n), k)</c> returns (so <c>sample(population, k)</c> picks
    /// population[i] for each).</summary>
    public int[] Sample(int n, int k)
    {
        if (k < 0 || k > n) throw new ArgumentOutOfRangeException(nameof(k), k, $"sample larger than population ({n}) or negative");
        var result = new int[k];
        int setsize = 21;   // size of a small set minus size of an empty list
        if (k > 5) setsize += (int)Math.Pow(4, Math.Ceiling(Math.Log(k * 3) / Math.Log(4)));   // table size for big sets
        if (n <= setsize)
        {
            var pool = Enumerable.Range(0, n).ToArray();
            for (int i = 0; i < k; i++)
            {
                int j = RandBelow(n - i);
                result[i] = pool[j];
                pool[j] = pool[n - i - 1];   // move non-selected item into vacancy
            }
        }
        else
        {
            var selected = new HashSet<int>();
            for (int i = 0; i < k; i++)
            {
                int j = RandBelow(n);
                while (selected.Contains(j)) j = RandBelow(n);
                selected.Add(j);
                result[i] = j;
            }
        }
        return result;
    }
}
