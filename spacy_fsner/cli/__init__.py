"""Typer commands behind `python -m spacy_fsner` (also what project.yml calls).

Each command lives in its own module and registers itself on the shared `app`; heavy libraries are imported
inside the commands so `--help` stays fast.
"""

from ._app import app

__all__ = ["app"]

from . import (  # noqa: E402,F401  (register the commands)
    annotate,
    benchmark,
    compare,
    convert,
    evaluate,
    fetch_model,
    sample_episodes,
    ship_adapter,
    tiny_model,
    train,
)
