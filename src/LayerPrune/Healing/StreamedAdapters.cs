using LayerPrune.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>
/// LoRA adapters of an offloaded model (streamed heal): the adapters and their optimizer state stay resident for every
/// layer, while the frozen base layers are read from the checkpoint per use. Every layer the model builds
/// (<see cref="CausalLM.LayerLoaded"/>) gets its adapters attached, borrowed: freeing the layer after its use leaves them alive.
/// </summary>
sealed class StreamedAdapters : IDisposable
{
    readonly CausalLM _model;
    readonly List<(string Linear, LoraAdapter Adapter)>[] _byLayer;

    /// <summary>The adapters by full module name, in the order they were initialised (that of the resident model).</summary>
    public IReadOnlyList<(string Name, LoraAdapter Adapter)> Adapters { get; }

    StreamedAdapters(CausalLM model, List<(string, LoraAdapter)>[] byLayer, IReadOnlyList<(string, LoraAdapter)> adapters)
    {
        _model = model;
        _byLayer = byLayer;
        Adapters = adapters;
        model.LayerLoaded = Attach;
    }

    /// <summary>
    /// Creates the adapters of every layer of <paramref name="model"/> (offloaded) exactly as <c>LoraInjector.Inject</c>
    /// does on the resident model: same order, one generator, so the same initial values; each layer is read once for it.
    /// </summary>
    public static StreamedAdapters Create(CausalLM model, LoraSettings settings, long seed)
    {
        var byLayer = Enumerable.Range(0, model.NumLayers).Select(_ => new List<(string, LoraAdapter)>()).ToArray();
        var adapters = LoraInjector.Inject(Linears(model, byLayer), settings, seed);
        return new StreamedAdapters(model, byLayer, adapters);
    }

    /// <summary>
    /// The linears of layer 0, 1, … (see <see cref="CausalLM.LinearsLayerByLayer"/>); once a layer's linears are adapted its
    /// adapters are moved to <paramref name="byLayer"/> and the layer is freed.
    /// </summary>
    static IEnumerable<(string Name, Linear Linear)> Linears(CausalLM model, List<(string, LoraAdapter)>[] byLayer) =>
        model.LinearsLayerByLayer((i, layer) =>
        {
            foreach (var (name, linear) in layer.Linears())
            {
                if (linear.Adapter is not LoraAdapter adapter) continue;
                byLayer[i].Add((name, adapter));
                linear.Adapter = null;
            }
            layer.Dispose();
        });

    void Attach(int i, DecoderLayer layer)
    {
        if (_byLayer[i].Count == 0) return;
        var linears = layer.Linears().ToDictionary(l => l.name, l => l.linear, StringComparer.Ordinal);
        foreach (var (name, adapter) in _byLayer[i])
            linears[name].Adapter = new Borrowed(adapter);
    }

    /// <summary>Stops attaching and frees the adapters (the model no longer computes the healed model).</summary>
    public void Dispose()
    {
        if (_model.LayerLoaded == Attach)
            _model.LayerLoaded = null;
        foreach (var (_, adapter) in Adapters)
            adapter.Dispose();
    }

    /// <summary>An adapter a streamed layer uses but does not own (freeing the layer keeps it).</summary>
    sealed class Borrowed(LoraAdapter adapter) : ILinearAdapter
    {
        public bool Training
        {
            get => adapter.Training;
            set => adapter.Training = value;
        }

        public Tensor Forward(Tensor x) => adapter.Forward(x);

        public void Dispose() { }
    }
}
