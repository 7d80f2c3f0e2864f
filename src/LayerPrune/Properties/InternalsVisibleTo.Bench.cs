// The bench measures the NF4 loops at a chosen thread count (Nf4Kernels.MaxThreads).
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("LayerPrune.Bench")]
