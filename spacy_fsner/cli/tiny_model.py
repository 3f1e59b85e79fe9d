from pathlib import Path

import typer

from ._app import app


@app.command("tiny-model")
def tiny_model(
    output: Path = typer.Argument(..., help="Directory to write the model and tokenizer to."),
    text: Path | None = typer.Option(None, "--text", help="Text file to train the tokenizer on (default: built-in)."),
    hidden_size: int = typer.Option(64, help="Hidden size."),
    layers: int = typer.Option(2, help="Number of transformer layers."),
    heads: int = typer.Option(4, help="Attention heads."),
    kv_heads: int = typer.Option(2, help="Key/value heads (grouped-query attention)."),
    intermediate_size: int = typer.Option(128, help="MLP size."),
    vocab_size: int = typer.Option(1024, help="Tokenizer vocabulary size (bytes + merges + specials)."),
    seed: int = typer.Option(0, help="Seed for the random weights."),
) -> None:
    """Build a randomly initialised Llama-architecture model with a byte-level BPE tokenizer."""
    from ..models.tiny import TinyModelSpec, build_tiny_model, tokenizer_texts

    spec = TinyModelSpec(hidden_size, layers, heads, kv_heads, intermediate_size, vocab_size, seed=seed)
    build_tiny_model(output, tokenizer_texts(text), spec)
    typer.echo(f"Saved a tiny Llama ({layers} layers, hidden {hidden_size}) and its tokenizer to {output}")
