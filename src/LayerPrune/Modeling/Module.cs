using System.Globalization;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>
/// A part of a model with named children and named tensors, like torch.nn.Module: the names a module registers are
/// its HF attribute names, so state-dict names ("model.layers.3.self_attn.q_proj.weight"), the list of linears,
/// disposal and train/eval mode all come from this one tree.
/// </summary>
/// <remarks>
/// Not TorchSharp's nn.Module on purpose: its parameters are nn.Parameter objects (requires_grad on, owned by the module),
/// while here every base weight is a frozen view of the memory-mapped checkpoint, and a linear's weight can be swapped for
/// its NF4 form or merged in place. This tree only names what the modules hold; it never copies a tensor.
/// </remarks>
public abstract class Module : IDisposable
{
    readonly List<(string Name, Module Module)> _children = [];
    readonly List<(string Name, Tensor Tensor)> _tensors = [];

    /// <summary>True after <see cref="Train"/>(true): dropout and other training-only behaviour is on (default off).</summary>
    public bool Training { get; private set; }

    /// <summary>Registers child <paramref name="name"/>, built from the weights under that name (HF: self.name = Module(...)).</summary>
    protected T Add<T>(string name, Weights w, Func<Weights, T> build) where T : Module
    {
        var child = build(w.At(name));
        _children.Add((name, child));
        return child;
    }

    /// <summary>Registers an already built child under <paramref name="name"/>.</summary>
    protected T Add<T>(string name, T child) where T : Module
    {
        _children.Add((name, child));
        return child;
    }

    /// <summary>Registers own tensor <paramref name="name"/> of <paramref name="shape"/>, read from <paramref name="w"/>.</summary>
    protected Tensor Param(string name, Weights w, params long[] shape)
    {
        var t = w.Required(name, shape);
        _tensors.Add((name, t));
        return t;
    }

    /// <summary>Direct children with their attribute names, in registration order (HF named_children).</summary>
    public virtual IEnumerable<(string Name, Module Module)> NamedChildren() => _children;

    /// <summary>Tensors held by this module itself, e.g. "weight" and "bias" (absent ones are not listed).</summary>
    protected virtual IEnumerable<(string Name, Tensor Tensor)> OwnTensors() => _tensors;

    /// <summary>Every descendant with its dotted name below <paramref name="prefix"/> (HF named_modules, without the root).</summary>
    public IEnumerable<(string Name, Module Module)> NamedModules(string prefix = "")
    {
        foreach (var (name, child) in NamedChildren())
        {
            string full = Join(prefix, name);
            yield return (full, child);
            foreach (var sub in child.NamedModules(full))
                yield return sub;
        }
    }

    /// <summary>The descendants of type <typeparamref name="T"/> with their dotted names, e.g. every Linear.</summary>
    public IEnumerable<(string Name, T Module)> NamedModules<T>(string prefix = "") where T : Module
    {
        foreach (var (name, m) in NamedModules(prefix))
            if (m is T t)
                yield return (name, t);
    }

    /// <summary>Every tensor of this module and its descendants with its dotted name (HF state_dict; no copies).</summary>
    public IEnumerable<(string Name, Tensor Tensor)> StateDict(string prefix = "")
    {
        foreach (var (name, t) in OwnTensors())
            yield return (Join(prefix, name), t);
        foreach (var (name, child) in NamedChildren())
            foreach (var entry in child.StateDict(Join(prefix, name)))
                yield return entry;
    }

    /// <summary>Sets training mode on this module and every descendant (HF module.train(mode); eval = Train(false)).</summary>
    public void Train(bool on = true)
    {
        Training = on;
        OnTrainingChanged(on);
        foreach (var (_, child) in NamedChildren())
            child.Train(on);
    }

    /// <summary>Called by <see cref="Train"/> for modules with state outside the tree (e.g. a linear's LoRA adapter).</summary>
    protected virtual void OnTrainingChanged(bool on) { }

    /// <summary>Disposes this module's tensors and then its children (mapping views: frees no checkpoint bytes).</summary>
    public virtual void Dispose()
    {
        foreach (var (_, t) in OwnTensors())
            t.Dispose();
        foreach (var (_, child) in NamedChildren())
            child.Dispose();
        GC.SuppressFinalize(this);
    }

    static string Join(string prefix, string name) => prefix.Length == 0 ? name : $"{prefix}.{name}";
}

/// <summary>Where tensors come from while modules are built: a checkpoint, or a recorder listing what a config needs.</summary>
public interface IWeightSource
{
    /// <summary>The tensor <paramref name="name"/> (full HF name) of <paramref name="shape"/>; it must exist.</summary>
    Tensor Required(string name, long[] shape);

    /// <summary>
    /// The tensor if the checkpoint has it, else null. With <paramref name="read"/> false the tensor is only declared
    /// (a stored copy is shape-checked but not read) and null is returned.
    /// </summary>
    Tensor? Optional(string name, long[] shape, bool read);
}

/// <summary>An <see cref="IWeightSource"/> seen from one module: names are relative to <see cref="Prefix"/>.</summary>
public sealed class Weights(IWeightSource source, string prefix = "")
{
    /// <summary>The dotted name of the module these weights belong to, with a trailing dot ("" at the root).</summary>
    public string Prefix => prefix;

    /// <summary>The weights of child <paramref name="path"/> (one name or a dotted path, e.g. "model.layers.3").</summary>
    public Weights At(string path) => new(source, $"{prefix}{path}.");

    /// <summary>The weights of list element <paramref name="index"/> (e.g. layer 3 under "model.layers").</summary>
    public Weights At(int index) => At(index.ToString(CultureInfo.InvariantCulture));

    /// <summary>Required tensor <paramref name="name"/> of <paramref name="shape"/> below <see cref="Prefix"/>.</summary>
    public Tensor Required(string name, params long[] shape) => source.Required(prefix + name, shape);

    /// <summary>Optional tensor <paramref name="name"/> (see <see cref="IWeightSource.Optional"/>).</summary>
    public Tensor? Optional(string name, long[] shape, bool read = true) => source.Optional(prefix + name, shape, read);
}
