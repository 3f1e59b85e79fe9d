"""Counting true positives, false positives and false negatives: the one helper every score uses.

Each score (`scores.py`) differs only in what it counts as "the same entity" (a token span, a normalised
string) and in which unit it counts within (a sentence, an episode). They all reduce to `tally`: per unit, a
set of gold keys and a set of predicted keys, each key starting with the entity type.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: (entity type, identity of the entity within its unit), e.g. ("PER", (0, 2)) or ("PER", "john smith").
Key = tuple[str, Hashable]


@dataclass(frozen=True)
class PRF:
    """Counts with the precision, recall and F1 they give.

    A ratio whose denominator is 0 is 0.0, as in spaCy's `PRFScore` and in conlleval (the script behind
    Hou et al. 2020's numbers). F1 is computed as 2tp / (2tp + fp + fn), which equals 2PR / (P + R).
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def p(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def r(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    def __add__(self, other: PRF) -> PRF:
        return PRF(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def as_dict(self) -> dict[str, float | int]:
        return {"p": self.p, "r": self.r, "f": self.f, "tp": self.tp, "fp": self.fp, "fn": self.fn}


@dataclass(frozen=True)
class Scores:
    """Micro-averaged counts over all units, and the counts of each entity type (sorted by type)."""

    micro: PRF
    per_type: dict[str, PRF] = field(default_factory=dict)

    @property
    def p(self) -> float:
        return self.micro.p

    @property
    def r(self) -> float:
        return self.micro.r

    @property
    def f(self) -> float:
        return self.micro.f

    def as_dict(self) -> dict[str, Any]:
        """`p r f tp fp fn` of the micro average, and `per_type`: type -> the same six keys."""
        return {**self.micro.as_dict(), "per_type": {k: v.as_dict() for k, v in self.per_type.items()}}


def tally(units: Iterable[tuple[Iterable[Key], Iterable[Key]]]) -> Scores:
    """Count matches unit by unit: `units` yields (gold keys, predicted keys) for each unit.

    Within a unit the keys are sets: a key given twice counts once (spaCy's `Scorer.score_spans`, Few-NERD's
    and UniNER's scorers all compare sets per sentence). A type appears in `per_type` as soon as it occurs
    in the gold or the predicted keys of any unit.
    """
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for gold_keys, pred_keys in units:
        gold, pred = set(gold_keys), set(pred_keys)
        for label, _ in gold & pred:
            counts[label][0] += 1
        for label, _ in pred - gold:
            counts[label][1] += 1
        for label, _ in gold - pred:
            counts[label][2] += 1
    per_type = {label: PRF(*counts[label]) for label in sorted(counts)}
    return Scores(sum(per_type.values(), PRF()), per_type)
