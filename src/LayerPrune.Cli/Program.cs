using System.CommandLine;
using LayerPrune.Cli;
using LayerPrune.Cli.Commands;

var root = new RootCommand("""
    layerprune: remove whole decoder layers from Hugging Face LLMs (Gromov et al., "The Unreasonable Ineffectiveness
    of the Deeper Layers"): measure layer similarity, prune, heal with QLoRA, evaluate, and sweep.
    Layer indices are always 0-based. Progress goes to stderr; --json output goes to stdout.
    """);
foreach (var option in Cli.GlobalOptions) root.Options.Add(option);
root.Subcommands.Add(InfoCommand.Create());
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(EvalCommand.Create());
root.Subcommands.Add(SimilarityCommand.Create());
root.Subcommands.Add(PruneCommand.Create());
root.Subcommands.Add(SweepCommand.Create());
root.Subcommands.Add(HealCommand.Create());
root.Subcommands.Add(ExportCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(DownloadCommand.Create());
return Cli.Run(root, args);
