"""Bootstrap intervals for F1 and paired differences (evaluation/intervals.py), and how evaluate reports them."""

from __future__ import annotations

import numpy as np
import pytest
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.vocab import Vocab

from spacy_fsner.evaluation.intervals import bootstrap_f1, paired_difference, unit_counts
from spacy_fsner.evaluation.report import compare_markdown, to_markdown
from spacy_fsner.evaluation.scores import fewnerd_episodes, hou_episodes

VOCAB = Vocab()


def _example(words, gold, pred):
    def doc(ents):
        d = Doc(VOCAB, words=words)
        d.ents = [Span(d, s, e, label) for label, s, e in ents]
        return d

    return Example(doc(pred), doc(gold))


RIGHT = _example(["Anna", "met", "Bob"], [("PER", 0, 1), ("PER", 2, 3)], [("PER", 0, 1), ("PER", 2, 3)])
HALF = _example(["Anna", "met", "Bob"], [("PER", 0, 1), ("PER", 2, 3)], [("PER", 0, 1), ("LOC", 1, 2)])
WRONG = _example(["Anna", "met", "Bob"], [("PER", 0, 1)], [("LOC", 2, 3)])
EPISODES = [[RIGHT], [HALF, WRONG], [WRONG], [RIGHT, HALF], [HALF], [RIGHT, WRONG, WRONG]]


def test_unit_counts_are_each_units_span_exact_counts():
    counts = unit_counts(EPISODES)
    assert counts.shape == (6, 3)
    assert counts[0].tolist() == [2, 0, 0] and counts[1].tolist() == [1, 2, 2]
    assert counts.sum(axis=0).tolist() == [9, 7, 7]


def test_estimates_are_the_protocols_scores_and_lie_in_their_intervals():
    counts = unit_counts(EPISODES)
    micro = bootstrap_f1(counts, statistic="micro")
    mean = bootstrap_f1(counts, statistic="mean")
    assert micro.estimate == pytest.approx(fewnerd_episodes(EPISODES).f)
    assert mean.estimate == pytest.approx(hou_episodes(EPISODES).f)
    for interval in (micro, mean):
        assert 0.0 <= interval.low < interval.estimate < interval.high <= 1.0
        assert (interval.n_units, interval.resamples, interval.level) == (6, 1000, 0.95)


def test_same_seed_same_interval_and_more_units_a_narrower_one():
    counts = unit_counts(EPISODES)
    assert bootstrap_f1(counts, seed=3) == bootstrap_f1(counts, seed=3)
    few, many = bootstrap_f1(counts), bootstrap_f1(np.tile(counts, (50, 1)))
    assert few.estimate == pytest.approx(many.estimate)
    assert many.high - many.low < (few.high - few.low) / 3


def test_identical_units_give_a_point_interval():
    interval = bootstrap_f1(unit_counts([[HALF]] * 5))
    assert interval.low == interval.high == interval.estimate == pytest.approx(0.5)


def test_paired_difference_cancels_what_both_systems_share():
    a = unit_counts(EPISODES)
    same = paired_difference(a, a)
    assert same.estimate == same.low == same.high == 0.0
    better = a.copy()
    better[:, 0] += 1  # one more true positive in every unit
    difference = paired_difference(better, a)
    assert difference.estimate > 0 and difference.low > 0, "a system better on every unit is told apart"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bootstrap_f1(unit_counts([[RIGHT]])), "at least 2 units"),
        (lambda: bootstrap_f1(unit_counts(EPISODES), resamples=10), "at least 100"),
        (lambda: bootstrap_f1(unit_counts(EPISODES), statistic="macro"), "micro"),
        (lambda: bootstrap_f1(unit_counts(EPISODES), level=95), "between 0 and 1"),
        (lambda: paired_difference(unit_counts(EPISODES), unit_counts(EPISODES[:3])), "same units"),
    ],
)
def test_bad_arguments_say_what_to_use(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_reports_show_the_interval():
    interval = bootstrap_f1(unit_counts(EPISODES))
    markdown = to_markdown({"fewnerd_episodes": fewnerd_episodes(EPISODES), "fewnerd_episodes_interval": interval})
    assert f"{100 * interval.low:.2f}-{100 * interval.high:.2f}" in markdown
    assert "6 episodes, 1000 draws" in markdown
    run = {
        "settings": {"headline": "fewnerd_episodes"},
        "results": {
            "fewnerd_episodes": fewnerd_episodes(EPISODES).as_dict(),
            "fewnerd_episodes_interval": interval.as_dict(),
        },
    }
    assert f"{100 * interval.low:.2f}-{100 * interval.high:.2f}" in compare_markdown({"run": run})
