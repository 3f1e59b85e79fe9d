"""Each prediction error of an Example, classified, for people reading a report (`html_report.py`).

The entities are those the scores count (`spans.example_ents`: spaCy's rules, in the reference's token indices).
A predicted entity with the type and token span of a gold entity is right; every other predicted entity is one
error, and a gold entity is missed when no predicted entity overlaps it:

| kind                      | the predicted entity ...                                                   |
| ------------------------- | -------------------------------------------------------------------------- |
| `wrong_type`              | has the token span of a gold entity, but another type                      |
| `wrong_boundary`          | overlaps a gold entity of its type, with other boundaries                  |
| `wrong_type_and_boundary` | overlaps only gold entities of other types, with other boundaries          |
| `false_positive`          | overlaps no gold entity                                                    |
| `missed`                  | (none: a gold entity that no predicted entity overlaps, of any type)       |

A predicted entity that fits several rows takes the first (a span over a PER and a LOC entity, labelled LOC,
is a wrong boundary of the LOC one). So a sentence's errors other than `missed` are exactly its span-exact false
positives, and its false negatives are its `missed` errors plus the gold entities that a wrong prediction
overlaps (those are shown with that prediction, not counted twice). `wrong_boundary` is the boundary error of
`scores.boundary_errors`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from spacy.training import Example

from .spans import EntSpan, example_ents

KINDS = ("false_positive", "missed", "wrong_boundary", "wrong_type", "wrong_type_and_boundary")
"""Every kind of error, in the order a report lists them."""

KIND_NAMES = {
    "false_positive": "false positive",
    "missed": "missed",
    "wrong_boundary": "wrong boundary",
    "wrong_type": "wrong type",
    "wrong_type_and_boundary": "wrong type and boundary",
}
"""What a person reads for each kind."""


@dataclass(frozen=True)
class EntityError:
    """One error: its kind (one of `KINDS`), the predicted entity (None when missed) and the gold entity it is
    compared with (None for a false positive)."""

    kind: str
    pred: EntSpan | None
    gold: EntSpan | None


def _same_span(a: EntSpan, b: EntSpan) -> bool:
    return (a.start, a.end) == (b.start, b.end)


def _classify_prediction(pred: EntSpan, gold: tuple[EntSpan, ...]) -> EntityError:
    """The error of a predicted entity that equals no gold entity (see the module's table)."""
    overlapping = [g for g in gold if g.overlaps(pred)]
    rules = (
        ("wrong_type", lambda g: _same_span(g, pred)),
        ("wrong_boundary", lambda g: g.label == pred.label),
        ("wrong_type_and_boundary", lambda g: True),
    )
    for kind, rule in rules:
        match = next((g for g in overlapping if rule(g)), None)
        if match is not None:
            return EntityError(kind, pred, match)
    return EntityError("false_positive", pred, None)


def classify(example: Example) -> list[EntityError]:
    """The errors of one example: its wrong predictions in the order of their tokens, then its missed gold
    entities in theirs. Empty when every entity is right or when the reference has no entity annotation."""
    ents = example_ents(example)
    if ents is None:
        return []
    exact = {(g.label, g.start, g.end) for g in ents.gold}
    wrong = [p for p in ents.pred if (p.label, p.start, p.end) not in exact]
    errors = [_classify_prediction(p, ents.gold) for p in sorted(wrong, key=lambda e: (e.start, e.end))]
    for g in sorted(ents.gold, key=lambda e: (e.start, e.end)):
        if not any(p.overlaps(g) for p in ents.pred):
            errors.append(EntityError("missed", None, g))
    return errors


def count_errors(examples: Iterable[Example]) -> Counter[str]:
    """How many errors of each kind the examples hold (every kind of `KINDS` present, 0 when none)."""
    counts = Counter(dict.fromkeys(KINDS, 0))
    for example in examples:
        counts.update(error.kind for error in classify(example))
    return counts
