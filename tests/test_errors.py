"""`spacy_fsner.evaluation.errors`: each wrong prediction and each missed entity, classified, on hand-built docs."""

import pytest
import spacy
from hypothesis import given
from hypothesis import strategies as st
from spacy.tokens import Doc, Span
from spacy.training import Example

from spacy_fsner.evaluation.errors import KINDS, classify, count_errors
from spacy_fsner.evaluation.scores import boundary_errors, span_exact

NLP = spacy.blank("en")
WORDS = "Angela Merkel met Ann Smith in New York and Berlin .".split()


def _doc(ents: list[tuple[int, int, str]], words: list[str] = WORDS) -> Doc:
    doc = Doc(NLP.vocab, words=words)
    doc.ents = [Span(doc, start, end, label=label) for start, end, label in ents]
    return doc


def _example(gold: list[tuple[int, int, str]], pred: list[tuple[int, int, str]]) -> Example:
    return Example(_doc(pred), _doc(gold))


def _described(example: Example) -> list[tuple]:
    """(kind, predicted text and type, gold text and type) of each error."""
    return [
        (
            error.kind,
            error.pred and (error.pred.text, error.pred.label),
            error.gold and (error.gold.text, error.gold.label),
        )
        for error in classify(example)
    ]


GOLD = [(0, 2, "PER"), (3, 5, "PER"), (6, 8, "LOC"), (9, 10, "LOC")]


def test_right_predictions_are_no_errors():
    assert classify(_example(GOLD, GOLD)) == []


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        ([(0, 2, "PER"), (2, 3, "PER")], ("false_positive", ("met", "PER"), None)),
        ([(1, 2, "PER")], ("wrong_boundary", ("Merkel", "PER"), ("Angela Merkel", "PER"))),
        ([(0, 3, "PER")], ("wrong_boundary", ("Angela Merkel met", "PER"), ("Angela Merkel", "PER"))),
        ([(0, 2, "LOC")], ("wrong_type", ("Angela Merkel", "LOC"), ("Angela Merkel", "PER"))),
        ([(0, 1, "LOC")], ("wrong_type_and_boundary", ("Angela", "LOC"), ("Angela Merkel", "PER"))),
    ],
)
def test_each_kind_of_wrong_prediction(pred, expected):
    gold = [(0, 2, "PER")]
    assert _described(_example(gold, pred)) == [expected]


def test_a_gold_entity_that_no_prediction_overlaps_is_missed():
    assert _described(_example([(9, 10, "LOC")], [])) == [("missed", None, ("Berlin", "LOC"))]
    # a prediction of another type over it is a wrong type, not also a miss
    assert [e.kind for e in classify(_example([(9, 10, "LOC")], [(9, 10, "PER")]))] == ["wrong_type"]


def test_a_prediction_over_two_gold_entities_is_compared_with_the_one_of_its_type():
    # "Ann Smith in New York" labelled LOC: overlaps PER "Ann Smith" and LOC "New York"
    described = _described(_example([(3, 5, "PER"), (6, 8, "LOC")], [(3, 8, "LOC")]))
    assert described == [("wrong_boundary", ("Ann Smith in New York", "LOC"), ("New York", "LOC"))]


def test_errors_come_in_token_order_with_the_misses_last():
    pred = [(0, 2, "PER"), (2, 3, "LOC"), (6, 8, "PER"), (9, 10, "LOC")]
    kinds = [e.kind for e in classify(_example(GOLD, pred))]
    assert kinds == ["false_positive", "wrong_type", "missed"]  # Ann Smith missed
    assert count_errors([_example(GOLD, pred), _example(GOLD, [])]) == {
        "false_positive": 1,
        "missed": 5,
        "wrong_boundary": 0,
        "wrong_type": 1,
        "wrong_type_and_boundary": 0,
    }


def test_no_errors_where_the_reference_has_no_entity_annotation_or_the_prediction_is_on_unannotated_tokens():
    unannotated = Doc(NLP.vocab, words=WORDS)
    assert classify(Example(_doc([(0, 2, "PER")]), unannotated)) == []
    partly = Doc(NLP.vocab, words=WORDS, ents=["B-PER", "I-PER", *["O"] * 7, None, None])  # Berlin, "." unknown
    assert classify(Example(_doc([(0, 2, "PER"), (9, 10, "LOC")]), partly)) == []


@st.composite
def _spans(draw, n: int = 12) -> list[tuple[int, int, str]]:
    """Non-overlapping typed spans over n tokens."""
    cuts = sorted(draw(st.sets(st.integers(0, n), max_size=8)))
    spans = []
    for start, end in zip(cuts, cuts[1:], strict=False):
        if draw(st.booleans()):
            spans.append((start, end, draw(st.sampled_from(["PER", "LOC"]))))
    return spans


@given(gold=_spans(), pred=_spans())
def test_the_errors_add_up_to_the_span_exact_counts(gold, pred):
    words = [f"w{i}" for i in range(12)]
    example = Example(_doc(pred, words), _doc(gold, words))
    counts = count_errors([example])
    scores = span_exact([example]).micro
    assert set(counts) == set(KINDS)
    assert sum(counts.values()) - counts["missed"] == scores.fp
    assert counts["missed"] <= scores.fn
    alone = [g for g in gold if not any(p[0] < g[1] and g[0] < p[1] for p in pred)]
    assert counts["missed"] == len(alone)
    assert counts["wrong_boundary"] == boundary_errors([example]).count
