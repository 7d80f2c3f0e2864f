using LayerPrune.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>
/// A frozen weight in bitsandbytes NF4 (QLoRA, Dettmers et al. 2023), as produced by
/// bitsandbytes.functional.quantize_4bit(quant_type="nf4"): the weight is flattened and split into blocks of
/// <see cref="BlockSize"/> (64) values; each block stores its absmax (fp32) and one 4-bit code per value, the
/// index of the nearest NF4 level to value·(1/absmax). Two codes per byte, the first element in the high nibble.
/// With double quantization (compress_statistics=True) the absmax values minus their mean are themselves
/// quantized blockwise (256) with the 8-bit dynamic map.
/// </summary>
public sealed class Nf4Weight : IQuantizedWeight
{
    /// <summary>The NF4 levels (bitsandbytes csrc kernels, dDequantizeNF4 / create_normal_map).</summary>
    static readonly float[] Levels =
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>
    /// Decision thresholds of the bitsandbytes kernel dQuantizeNF4 (csrc/kernels.cu), the midpoints between
    /// adjacent levels written as float literals; code = number of thresholds t with x &gt; t.
    /// </summary>
    static readonly float[] ThresholdValues =
    [
        -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
        -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
        0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
        0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
    ];

    /// <summary>Byte b → (level[b &gt;&gt; 4], level[b &amp; 15]): 512 floats.</summary>
    static readonly float[] PairValues = Enumerable.Range(0, 256).SelectMany(b => new[] { Levels[b >> 4], Levels[b & 15] }).ToArray();

    /// <summary>Absmax values per block of the second quantization (bitsandbytes: 256).</summary>
    public const int DoubleQuantBlockSize = 256;

    /// <summary>The 16 NF4 levels, code 0 … 15.</summary>
    public static IReadOnlyList<float> Codebook => Levels;
    /// <summary>The 15 decision thresholds between codes (bitsandbytes dQuantizeNF4).</summary>
    public static IReadOnlyList<float> Thresholds => ThresholdValues;

    /// <summary>Shape of the quantized weight.</summary>
    public long[] Shape { get; }
    /// <summary>Number of elements.</summary>
    public long Numel { get; }
    /// <summary>Elements per absmax block.</summary>
    public int BlockSize { get; }
    /// <summary>Number of absmax blocks.</summary>
    public long Blocks => (Numel + BlockSize - 1) / BlockSize;
    /// <summary>uint8 [ceil(numel/2)]: code of element 2k in the high nibble of byte k, element 2k+1 in the low.</summary>
    public Tensor Packed { get; }
    /// <summary>fp32 [blocks] absmax per block; null when double-quantized.</summary>
    public Tensor? Absmax { get; }
    /// <summary>Whether the absmax values are themselves quantized.</summary>
    public bool DoubleQuant => QuantizedAbsmax is not null;
    /// <summary>Double quant: uint8 [blocks], codes of (absmax − <see cref="AbsmaxOffset"/>) in the dynamic map.</summary>
    public Tensor? QuantizedAbsmax { get; }
    /// <summary>Double quant: fp32 [ceil(blocks/256)], absmax of each block of centred absmax values ("state2").</summary>
    public Tensor? AbsmaxScale { get; }
    /// <summary>Double quant: the mean of the absmax values that was subtracted before quantizing them.</summary>
    public float AbsmaxOffset { get; }

    /// <summary>Bytes of the stored state: packed codes + absmax (fp32, or uint8 + fp32 state2 + fp32 offset).</summary>
    public long StorageBytes => Packed.NumberOfElements
        + (DoubleQuant ? QuantizedAbsmax!.NumberOfElements + 4 * AbsmaxScale!.NumberOfElements + 4 : 4 * Absmax!.NumberOfElements);

    Nf4Weight(long[] shape, int blockSize, Tensor packed, Tensor? absmax, Tensor? qAbsmax, Tensor? absmaxScale, float offset)
    {
        Shape = shape;
        Numel = shape.Aggregate(1L, (a, b) => a * b);
        BlockSize = blockSize;
        Packed = packed;
        Absmax = absmax;
        QuantizedAbsmax = qAbsmax;
        AbsmaxScale = absmaxScale;
        AbsmaxOffset = offset;
    }

    /// <summary>Quantizes <paramref name="weight"/> (any float dtype; values taken as fp32) to NF4.</summary>
    public static Nf4Weight Quantize(Tensor weight, bool doubleQuant = false, int blockSize = 64)
    {
        Validate(weight, blockSize);
        if (weight.device_type != DeviceType.CPU)
            return QuantizeReference(weight, doubleQuant, blockSize);
        long n = weight.NumberOfElements;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        // bf16 is read as it is stored (a view of the checkpoint mapping); other dtypes are converted to fp32 first,
        // exactly as the reference path does.
        var src = weight.dtype == ScalarType.BFloat16 ? weight.detach() : weight.detach().to(ScalarType.Float32);
        src = src.contiguous();
        long nBytes = (n + 1) / 2;
        var packed = empty(nBytes, ScalarType.Byte);
        var absmax = empty((n + blockSize - 1) / blockSize, ScalarType.Float32);
        Nf4Kernels.Quantize(CpuLoops.Address(src), src.dtype == ScalarType.BFloat16, n, blockSize,
            CpuLoops.Address(packed), CpuLoops.Address(absmax));
        return Create(weight, doubleQuant, blockSize, packed, absmax);
    }

    /// <summary>
    /// The torch-op form of <see cref="Quantize"/> (bucketize on the thresholds), kept as the reference the CPU loops are
    /// tested against bit for bit, and for other devices.
    /// </summary>
    public static Nf4Weight QuantizeReference(Tensor weight, bool doubleQuant = false, int blockSize = 64)
    {
        Validate(weight, blockSize);
        long n = weight.NumberOfElements;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var flat = weight.detach().to(ScalarType.Float32).flatten();
        // Partial last block: bitsandbytes loads the missing values as 0, which leaves absmax unchanged.
        var blocks = DynamicQuant8.PadToBlocks(flat, blockSize);
        var absmax = blocks.abs().amax(1);
        // The kernel multiplies by the reciprocal: x · (1/absmax).
        var scaled = blocks * absmax.reciprocal().unsqueeze(1);
        // All-zero block: 0·inf = NaN fails every "x > t" test of the kernel, giving code 0 (dequantizes to 0).
        scaled.nan_to_num_(nan: -2.0);
        var thresholds = tensor(ThresholdValues, device: weight.device);
        // bucketize(right=false) counts thresholds strictly below x, i.e. exactly the "x > t" tests of dQuantizeNF4.
        var codes = bucketize(scaled.flatten(), thresholds, outInt32: true);
        long nBytes = (n + 1) / 2;
        var pairs = codes.narrow(0, 0, 2 * nBytes).view(nBytes, 2);
        var packed = pairs.select(1, 0).mul(16).add_(pairs.select(1, 1)).to(ScalarType.Byte);
        return Create(weight, doubleQuant, blockSize, packed, absmax);
    }

    static void Validate(Tensor weight, int blockSize)
    {
        if (blockSize < 2 || blockSize % 2 != 0)
            throw new LayerPruneException($"Nf4Weight.Quantize: blockSize must be a positive even number, got {blockSize}");
        if (!weight.is_floating_point())
            throw new LayerPruneException($"Nf4Weight.Quantize: expected a floating-point weight, got {weight.dtype}");
        if (weight.NumberOfElements == 0) throw new LayerPruneException("Nf4Weight.Quantize: empty weight");
    }

    /// <summary>The weight from its packed codes and exact absmax; double quantization compresses the absmax here.</summary>
    static Nf4Weight Create(Tensor weight, bool doubleQuant, int blockSize, Tensor packed, Tensor absmax)
    {
        Tensor? qAbsmax = null, scale2 = null;
        Tensor? kept = absmax;
        float offset = 0f;
        if (doubleQuant)
        {
            // bitsandbytes quantize_4bit(compress_statistics=True): offset = absmax.mean(); absmax -= offset;
            // qabsmax, state2 = quantize_blockwise(absmax, blocksize=256)
            var mean = absmax.mean();
            offset = mean.item<float>();
            (qAbsmax, scale2) = DynamicQuant8.QuantizeBlockwise(absmax - mean, DoubleQuantBlockSize);
            qAbsmax.MoveToOuterDisposeScope();
            scale2.MoveToOuterDisposeScope();
            kept = null;
        }
        else absmax.MoveToOuterDisposeScope();
        packed.MoveToOuterDisposeScope();
        return new Nf4Weight((long[])weight.shape.Clone(), blockSize, packed, kept, qAbsmax, scale2, offset);
    }

    /// <summary>The per-block absmax in fp32 (expanded from the double-quantized state when needed).</summary>
    public Tensor DequantizeAbsmax()
    {
        if (!DoubleQuant) return Absmax!.clone();
        using var scope = NewDisposeScope();
        var absmax = DynamicQuant8.DequantizeBlockwise(QuantizedAbsmax!, AbsmaxScale!, DoubleQuantBlockSize) + AbsmaxOffset;
        return absmax.MoveToOuterDisposeScope();
    }

    /// <summary>The 4-bit codes, one per element (int64 [numel]).</summary>
    public Tensor Codes()
    {
        using var scope = NewDisposeScope();
        var hi = Packed.bitwise_right_shift(4);
        var lo = Packed.bitwise_and(15);
        var codes = stack([hi, lo], 1).flatten().narrow(0, 0, Numel).to(ScalarType.Int64);
        return codes.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// level[code] · absmax[block] computed in fp32 (as the bitsandbytes kernel), then cast to <paramref name="dtype"/>.
    /// On the CPU the 16 products of each block are cast once (a [blocks, 16] table, a quarter of the weight's elements)
    /// and every element is one lookup in its block's table, written straight into the result: the same values as
    /// <see cref="DequantizeReference"/>, bit for bit, without the fp32 intermediate of the whole weight.
    /// </summary>
    public Tensor Dequantize(ScalarType dtype)
    {
        if (!CanDequantizeInto(dtype))
            return DequantizeReference(dtype);
        var w = empty(Shape, dtype);
        DequantizeInto(w);
        return w;
    }

    static int ElementSize(ScalarType dtype) => dtype switch
    {
        ScalarType.BFloat16 or ScalarType.Float16 => 2,
        ScalarType.Float32 => 4,
        ScalarType.Float64 => 8,
        _ => 0,
    };

    /// <summary>Whether <see cref="DequantizeInto"/> takes <paramref name="dtype"/> (CPU weights; bf16, fp16, fp32, fp64).</summary>
    public bool CanDequantizeInto(ScalarType dtype) => ElementSize(dtype) != 0 && Packed.device_type == DeviceType.CPU;

    /// <summary>
    /// Writes what <see cref="Dequantize"/> returns into <paramref name="output"/> (contiguous, CPU, <see cref="Numel"/>
    /// elements of a dtype <see cref="CanDequantizeInto"/> takes; its shape is not looked at): lets a caller reuse one
    /// buffer, since a fresh multi-megabyte tensor costs a page fault per 4 KiB page on every use.
    /// </summary>
    public void DequantizeInto(Tensor output)
    {
        var dtype = output.dtype;
        bool fits = output.device_type == DeviceType.CPU && output.is_contiguous() && output.NumberOfElements == Numel;
        if (!CanDequantizeInto(dtype) || !fits)
            throw new LayerPruneException($"Nf4Weight.DequantizeInto: expected a contiguous CPU tensor of {Numel} elements " +
                $"(bf16, fp16, fp32 or fp64), got {output.dtype} [{string.Join(", ", output.shape)}] on {output.device}");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var absmax = DoubleQuant ? DequantizeAbsmax() : Absmax!;
        bool direct = dtype is ScalarType.BFloat16 or ScalarType.Float32;
        if (direct && Nf4Kernels.TablesAreOrdinary(CpuLoops.Address(absmax), Blocks))
        {
            Nf4Kernels.DequantizeFromAbsmax(CpuLoops.Address(Packed), CpuLoops.Address(absmax), Numel, BlockSize,
                dtype == ScalarType.BFloat16, CpuLoops.Address(output));
            return;
        }
        // NaN, ±inf or subnormal products, fp16, fp64: the products cast by torch, a table per block.
        var levels = tensor(Levels);
        var table = (absmax.unsqueeze(1) * levels).to(dtype).contiguous(); // [blocks, 16]
        Nf4Kernels.Dequantize(CpuLoops.Address(Packed), CpuLoops.Address(table), Numel, BlockSize, ElementSize(dtype),
            CpuLoops.Address(output));
    }

    /// <summary>
    /// The torch-op form of <see cref="Dequantize"/>: a 256×2 pair table index_select, × absmax in fp32, then the cast.
    /// The reference the CPU loop is tested against, and the path for other devices and dtypes.
    /// </summary>
    public Tensor DequantizeReference(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        // One lookup per byte in a 256×2 table of (level[hi], level[lo]) gives both elements of the byte, first
        // element first; about 3× faster than unpacking to one index per element.
        var table = DeviceTables.Get("nf4-pairs", PairValues, [256, 2], Packed.device);
        var vals = table.index_select(0, Packed.to(ScalarType.Int32)).view(-1);
        var absmax = DoubleQuant ? DequantizeAbsmax() : Absmax!;
        Tensor w;
        if (vals.shape[0] == Blocks * BlockSize)
            w = vals.view(Blocks, BlockSize).mul_(absmax.unsqueeze(1)).view(Shape);
        else
            w = DynamicQuant8.PadToBlocks(vals, BlockSize).mul_(absmax.unsqueeze(1)).flatten().narrow(0, 0, Numel).view(Shape);
        if (w.dtype != dtype) w = w.to(dtype);
        return w.MoveToOuterDisposeScope();
    }

    /// <summary>Releases the packed codes and scales.</summary>
    public void Dispose()
    {
        Packed.Dispose();
        Absmax?.Dispose();
        QuantizedAbsmax?.Dispose();
        AbsmaxScale?.Dispose();
    }
}
