"""The package logger, `spacy_fsner`, as spaCy's own `spacy` logger: library code reports through it (never `print`).

It writes INFO and above to stderr, so a first-use model download or a discarded checkpoint is seen; lower or
silence it with `logging.getLogger("spacy_fsner").setLevel(logging.WARNING)`. Command-line output is typer's.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("spacy_fsner")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

__all__ = ["logger"]
