// The bench measures the NF4 loops at a chosen thread count (CpuLoops.MaxThreads).
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("LayerPrune.Bench")]
