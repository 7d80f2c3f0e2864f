using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>
/// bitsandbytes' blockwise 8-bit quantization with the signed "dynamic" map (create_dynamic_map(signed=True),
/// bitsandbytes/functional.py). QLoRA uses it for double quantization of the NF4 absmax values.
/// </summary>
public static class DynamicQuant8
{
    static readonly float[] MapValues = CreateDynamicMap();
    static readonly float[] MidValues = Midpoints(MapValues);

    /// <summary>The 256 sorted values of create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8).</summary>
    public static IReadOnlyList<float> Map => MapValues;

    /// <summary>
    /// Port of bitsandbytes create_dynamic_map. The original computes in float32 torch tensors:
    /// boundaries = torch.linspace(0.1, 1, k); means = (b[:-1] + b[1:]) / 2.0; ±10^(i-6) * means;
    /// plus 0 and 1.0, sorted. The same libtorch ops are used here so the values match bit for bit.
    /// </summary>
    public static float[] CreateDynamicMap(bool signed = true, int maxExponentBits = 7, int totalBits = 8)
    {
        var data = new List<float>();
        int nonSignBits = totalBits - 1; // bitsandbytes: total_bits - (1 if signed else 1)
        int additionalItems = (1 << (nonSignBits - maxExponentBits)) - 1;
        using (NewDisposeScope())
        {
            void AddMeans(int fractionItems, int i)
            {
                var b = linspace(0.1, 1, fractionItems, dtype: ScalarType.Float32);
                var means = (b[..^1] + b[1..]) / 2.0;
                double scale = Math.Pow(10, -(maxExponentBits - 1) + i);
                data.AddRange((means * scale).data<float>().ToArray());
                if (signed) data.AddRange((means * -scale).data<float>().ToArray());
            }
            int last = 0;
            for (int i = 0; i < maxExponentBits; i++)
            {
                int fractionItems = signed
                    ? (1 << (i + nonSignBits - maxExponentBits)) + 1
                    : (1 << (i + nonSignBits - maxExponentBits + 1)) + 1;
                AddMeans(fractionItems, i);
                last = i;
            }
            if (additionalItems > 0) AddMeans(additionalItems + 1, last);
        }
        data.Add(0f);
        data.Add(1.0f);
        if (data.Count != 1 << totalBits)
            throw new LayerPruneException($"create_dynamic_map: {data.Count} values for {totalBits} bits");
        while (data.Count < 256) data.Add(0f);
        data.Sort();
        return data.ToArray();
    }

    static float[] Midpoints(float[] sorted)
    {
        var m = new float[sorted.Length - 1];
        for (int i = 0; i < m.Length; i++) m[i] = (sorted[i] + sorted[i + 1]) * 0.5f;
        return m;
    }

    /// <summary>
    /// Blockwise quantization of a 1-D fp32 tensor: per block absmax (fp32), value·(1/absmax) mapped to the nearest
    /// map entry (midpoint decision, as the bitsandbytes kernel's dQuantize). The last block is zero-padded.
    /// Returns (codes uint8 [n], absmax fp32 [ceil(n/blockSize)]).
    /// </summary>
    public static (Tensor Codes, Tensor Absmax) QuantizeBlockwise(Tensor x, int blockSize = 256)
    {
        if (x.dim() != 1) throw new LayerPruneException($"DynamicQuant8.QuantizeBlockwise: expected a 1-D tensor, got {x.dim()}-D");
        long n = x.shape[0];
        using var scope = NewDisposeScope();
        var blocks = PadToBlocks(x.detach().to(ScalarType.Float32), blockSize);
        var absmax = blocks.abs().amax(1);
        var scaled = blocks * absmax.reciprocal().unsqueeze(1);
        scaled = scaled.nan_to_num(nan: -2.0); // all-zero block: 0·inf = NaN, which the kernel maps to code 0
        using var mids = tensor(MidValues, device: x.device);
        // bucketize(right=false) = number of midpoints strictly below x = index of the nearest map value.
        var codes = bucketize(scaled.flatten(), mids).narrow(0, 0, n).to(ScalarType.Byte);
        return (codes.MoveToOuterDisposeScope(), absmax.MoveToOuterDisposeScope());
    }

    /// <summary>map[code] · absmax[block], fp32, length n.</summary>
    public static Tensor DequantizeBlockwise(Tensor codes, Tensor absmax, int blockSize = 256)
    {
        long n = codes.shape[0];
        using var scope = NewDisposeScope();
        var map = DeviceTables.Get("dynamic8-map", MapValues, [MapValues.Length], codes.device);
        var vals = PadToBlocks(map.index_select(0, codes.to(ScalarType.Int64)), blockSize);
        var result = (vals * absmax.unsqueeze(1)).flatten().narrow(0, 0, n);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>[n] → [ceil(n/blockSize), blockSize], zero-padded at the end.</summary>
    internal static Tensor PadToBlocks(Tensor flat, int blockSize)
    {
        long n = flat.shape[0];
        long nBlocks = (n + blockSize - 1) / blockSize;
        long pad = nBlocks * blockSize - n;
        if (pad == 0) return flat.view(nBlocks, blockSize);
        using var padded = nn.functional.pad(flat, [0, pad]);
        return padded.view(nBlocks, blockSize);
    }
}
