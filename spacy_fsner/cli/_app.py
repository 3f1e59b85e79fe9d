from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

app = typer.Typer(
    name="spacy_fsner",
    help="Few-shot NER for spaCy: fetch real models (fetch-model) or build a tiny one (tiny-model), convert data "
    "(convert), sample episodes (sample-episodes), train (train), evaluate (evaluate), compare scores (compare) and "
    "measure throughput (benchmark), ship a trained adapter inside the package (ship-adapter), and annotate a corpus "
    "into resumable shards, here or on a Ray cluster (annotate).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Few-shot NER for spaCy (keeps `python -m spacy_fsner COMMAND` a group even with one command)."""


def fail(message: str) -> NoReturn:
    """Bad input as one line, `error: MESSAGE` on stderr, and exit 1 (not a traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def reported(*kinds: type[Exception]) -> Iterator[None]:
    """The library's errors of `kinds` (they name the problem and the fix) reported by `fail`."""
    try:
        yield
    except kinds as error:
        fail(str(error))
