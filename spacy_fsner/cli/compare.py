"""`python -m spacy_fsner compare`: results files of `evaluate --output` side by side (before and after training)."""

import json
from pathlib import Path

import typer

from ..evaluation.report import compare_markdown
from ._app import app, fail, reported


@app.command("compare")
def compare_command(
    results: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="JSON files of `evaluate --output`"),
    names: str = typer.Option("", "--names", help="comma-separated row names (default: the file names)"),
    output: Path | None = typer.Option(None, "--output", "-o", dir_okay=False, help="also write the table here"),
) -> None:
    """Print one Markdown table: each file's headline P/R/F, boundary-error rate and F1 relative to the first."""
    labels = [n.strip() for n in names.split(",")] if names else [p.stem for p in results]
    if len(labels) != len(results):
        raise typer.BadParameter(f"--names gives {len(labels)} names for {len(results)} files: give one per file.")
    if len(set(labels)) != len(labels):
        raise typer.BadParameter(f"--names has repeated names ({names!r}): give each file its own name.")
    runs = {label: results_file(path) for label, path in zip(labels, results, strict=True)}
    with reported(ValueError):
        table = compare_markdown(runs)
    typer.echo(table)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(table + "\n", encoding="utf-8")


def results_file(path: Path) -> dict:
    """The results of one `evaluate --output` file; `error: ...` and exit 1 for a file that is not one."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        fail(
            f"{path} is not a results file of `evaluate --output` (not JSON: {error}); pass the JSON files "
            "that `python -m spacy_fsner evaluate ... --output FILE` writes."
        )
    if not isinstance(results, dict):
        fail(f"{path} holds JSON, but not the results object `evaluate --output` writes.")
    return results
