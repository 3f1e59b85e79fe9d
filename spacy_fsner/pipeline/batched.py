"""The part every component of this package shares: docs are processed a batch at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from spacy.pipeline import Pipe
from spacy.tokens import Doc
from spacy.util import minibatch


class BatchedPipe(Pipe):
    """`__call__` and `pipe` over `_process(docs) -> docs`, which sees a whole batch (all its prompts generated
    together); errors go to spaCy's error handler per batch."""

    def _process(self, docs: list[Doc]) -> list[Doc]:
        raise NotImplementedError

    def _warn_once(self) -> None:
        """Say in one warning what went wrong in the docs processed since the last call (nothing by default):
        once per `__call__` or `pipe` call, not once per doc."""

    def __call__(self, doc: Doc) -> Doc:
        try:
            return self._process([doc])[0]
        finally:
            self._warn_once()

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """The fast path: every prompt of `batch_size` docs is generated together."""
        error_handler = self.get_error_handler()
        try:
            for docs in minibatch(stream, size=batch_size):
                try:
                    yield from self._process(docs)
                except Exception as error:
                    error_handler(self.name, self, docs, error)
        finally:
            self._warn_once()
