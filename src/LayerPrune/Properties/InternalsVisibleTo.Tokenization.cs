// Tokenizer tests build tokenizer.json files from a SentencePiece model's pieces and scores.
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("LayerPrune.Tests")]
