"""`python -m spacy_fsner ship-adapter`: put a trained adapter into the package, found by name, with its card."""

from pathlib import Path

import typer

from ._app import app, fail, reported
from .compare import results_file


@app.command("ship-adapter")
def ship_adapter_command(
    run: Path = typer.Argument(..., exists=True, file_okay=False, help="The --output directory of `train`."),
    name: str = typer.Argument(..., help="The adapter's name (a model config's `adapter` setting finds it by it)."),
    data: str = typer.Option(..., "--data", help="The training data, for the model card (source, split, size)."),
    licence: str = typer.Option(..., "--licence", help="The training data's licence, for the model card."),
    scores: list[str] = typer.Option(
        [], "--scores", help="NAME=FILE: a results file of `evaluate --output` for the card's table (repeatable)."
    ),
    table: Path | None = typer.Option(
        None, "--scores-table", exists=True, dir_okay=False, help="A Markdown file of scores for the card, as it is."
    ),
    command: str = typer.Option("", "--command", help="The training command, for the card (default: from RUN)."),
    to: Path | None = typer.Option(
        None, "--to", file_okay=False, help="Write here instead of the package's adapters folder."
    ),
) -> None:
    """Write RUN's adapter (float16 weights, config naming its base model, README.md model card) into the package's
    adapters folder as NAME; at most 10 MB."""
    from ..evaluation.report import compare_markdown
    from ..models.adapters import SHIPPED
    from ..training.shipping import ship_adapter

    runs = {}
    for item in scores:
        label, _, file = item.partition("=")
        if not file or not Path(file).is_file():
            fail(f"--scores {item!r}: give NAME=FILE with FILE a results file of `evaluate --output`.")
        runs[label] = results_file(Path(file))
    with reported(ValueError, OSError):
        parts = [compare_markdown(runs)] if runs else []
        if table is not None:
            parts.append(table.read_text(encoding="utf-8").strip())
        scores = "\n\n".join(parts) or None
        target = ship_adapter(
            run, to or SHIPPED / name, data=data, licence=licence, scores=scores, command=command or None
        )
    size = sum(f.stat().st_size for f in target.iterdir())
    typer.echo(f"shipped {name}: {target} ({size:,} bytes)")
