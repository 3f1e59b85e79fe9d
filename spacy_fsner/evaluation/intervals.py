"""Confidence intervals for F1 by the bootstrap, and paired differences between two systems on the same data.

The unit resampled is the one the protocol counts in: an episode for the episode protocols (Few-NERD's micro F1
over all episodes; Hou et al.'s mean of per-episode F1), a document for a corpus. Each unit is reduced once to
its span-exact (tp, fp, fn); a resample draws units with replacement and scores them the protocol's way. A paired
comparison draws the same units for both systems, so what the two share (hard episodes, easy ones) cancels out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from spacy.training import Example

from .scores import span_exact

STATISTICS = ("micro", "mean")
"""micro: F1 of the counts summed over the drawn units (Few-NERD, spaCy); mean: the mean of the units' F1 (Hou)."""


@dataclass(frozen=True)
class Interval:
    """An estimate with its percentile bootstrap interval (`level` = 0.95: the 2.5th and 97.5th percentiles)."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    n_units: int
    unit: str
    statistic: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def unit_counts(units: Sequence[Sequence[Example]]) -> np.ndarray:
    """Span-exact (tp, fp, fn) of each unit (one list of Examples per episode or document), shape (n, 3)."""
    rows = []
    for unit in units:
        micro = span_exact(unit).micro
        rows.append((micro.tp, micro.fp, micro.fn))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def _f1(counts: np.ndarray, statistic: str) -> np.ndarray:
    """F1 along the last axis of (..., units, 3) counts: micro over the units, or the mean of each unit's F1."""
    if statistic == "micro":
        counts = counts.sum(axis=-2)
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    return f1 if statistic == "micro" else f1.mean(axis=-1)


def _draws(n_units: int, resamples: int, seed: int) -> np.ndarray:
    if n_units < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 units (episodes or documents), got {n_units}")
    if resamples < 100:
        raise ValueError(f"resamples={resamples}: use at least 100 (1000 is the usual choice)")
    return np.random.default_rng(seed).integers(0, n_units, size=(resamples, n_units))


def _interval(estimate: float, samples: np.ndarray, level: float, n_units: int, unit: str, statistic: str):
    if not 0 < level < 1:
        raise ValueError(f"level={level}: use a coverage between 0 and 1, e.g. 0.95")
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(estimate), float(low), float(high), level, len(samples), n_units, unit, statistic)


def bootstrap_f1(
    counts: np.ndarray,
    *,
    baseline: np.ndarray | None = None,
    statistic: str = "micro",
    unit: str = "episodes",
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """F1 of `counts` (`unit_counts`) with its bootstrap interval; the same seed gives the same interval. With
    `baseline` (the other system's counts on the same units): F1(counts) - F1(baseline), each resample drawing the
    same units for both, so an interval that excludes 0 tells the two apart."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r}: use one of {list(STATISTICS)}")
    counts = np.asarray(counts)
    if baseline is not None and np.shape(baseline) != counts.shape:
        raise ValueError(
            f"paired scores need the same units for both systems: got {len(counts)} and {len(baseline)} units"
        )
    draws = _draws(len(counts), resamples, seed)
    estimate, samples = _f1(counts, statistic), _f1(counts[draws], statistic)
    if baseline is not None:
        baseline = np.asarray(baseline)
        estimate, samples = estimate - _f1(baseline, statistic), samples - _f1(baseline[draws], statistic)
    return _interval(estimate, samples, level, len(counts), unit, statistic)


def paired_difference(counts_a: np.ndarray, counts_b: np.ndarray, **settings) -> Interval:
    """F1(a) - F1(b) on the same units with its paired bootstrap interval (`bootstrap_f1`'s settings)."""
    return bootstrap_f1(counts_a, baseline=counts_b, **settings)
