"""How EL4NER pools its members' answers: a vote on each span's type, and their pooled "No" to each typed span."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

REJECTIONS = ("probability", "votes")
"""The ways of pooling the validation answers (`pooled_rejection`)."""


def vote(labels: Sequence[str], member_scores: Sequence[Sequence[float]]) -> tuple[str, float, float]:
    """Type classification by vote: each member's scores (log-probabilities, one per label) vote for its best label;
    the most votes win, ties going to the highest summed log-probability. Returns the label, its share of the votes
    and that sum."""
    votes: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for scores in member_scores:
        best = max(range(len(scores)), key=lambda j: scores[j])
        votes[labels[best]] += 1
        totals[labels[best]] += scores[best]
    label = max(votes, key=lambda name: (votes[name], totals[name]))
    return label, votes[label] / len(member_scores), totals[label]


def pooled_rejection(answers: Sequence[Sequence[float]], rejection: str) -> float:
    """The members' pooled "No" to one validation question, from each member's (Yes, No) log-probabilities:
    "votes", the share whose No beats their Yes; "probability", the mean probability of No among {Yes, No}."""
    if rejection == "votes":
        return sum(no > yes for yes, no in answers) / len(answers)
    # the margin is capped so that exp cannot overflow
    return sum(1.0 / (1.0 + math.exp(min(yes - no, 700.0))) for yes, no in answers) / len(answers)
