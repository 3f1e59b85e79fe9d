"""Choosing `doc.ents` from scored candidates of several labels."""

from __future__ import annotations

from collections.abc import Sequence

from spacy.tokens import Span


def resolve_entities(candidates: Sequence[tuple[Span, float]], existing: Sequence[Span], overwrite: bool) -> list[Span]:
    """Non-overlapping entities: highest score first (ties: longer, then earlier).

    Existing entities win every conflict unless `overwrite`; then predictions win and the existing entities
    that overlap none of them are kept (spaCy's EntityRuler behaves the same way).
    """
    ranked = sorted(candidates, key=lambda c: (-c[1], -(c[0].end - c[0].start), c[0].start))
    taken: set[int] = set()
    chosen: list[Span] = []

    def place(span: Span) -> None:
        tokens = range(span.start, span.end)
        if taken.isdisjoint(tokens):
            taken.update(tokens)
            chosen.append(span)

    first, second = ([c[0] for c in ranked], existing) if overwrite else (existing, [c[0] for c in ranked])
    for span in [*first, *second]:
        place(span)
    return sorted(chosen, key=lambda s: (s.start, s.end))
