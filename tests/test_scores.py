"""The scores the papers report: hand-computed cases, and cross-checks against spaCy and seqeval on real data."""

import json
import random
import warnings
from pathlib import Path

import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2
from spacy.scorer import Scorer, get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.training.iob_utils import biluo_to_iob, doc_to_biluo_tags
from spacy.util import filter_spans
from spacy.vocab import Vocab

from spacy_fsner.evaluation.report import to_json, to_markdown
from spacy_fsner.evaluation.scores import (
    boundary_errors,
    fewnerd_episodes,
    hou_episodes,
    normalize_text,
    score_all,
    span_exact,
    string_level,
)

VOCAB = Vocab()


def make_doc(words, ents):
    """A fully annotated doc: `ents` are (label, start, end) token spans, every other token is O."""
    doc = Doc(VOCAB, words=words)
    doc.ents = [Span(doc, start, end, label) for label, start, end in ents]
    return doc


def make_example(text, gold, pred):
    words = text.split()
    return Example(make_doc(words, pred), make_doc(words, gold))


def as_spacy_scores(scores, attr: str = "ents"):
    """Our counts in the dict spaCy's scorer returns (every value None when nothing was scored, as spaCy)."""
    if not scores.micro.tp + scores.micro.fp + scores.micro.fn:
        return {f"{attr}_p": None, f"{attr}_r": None, f"{attr}_f": None, f"{attr}_per_type": None}
    per_type = {k: {"p": v.p, "r": v.r, "f": v.f} for k, v in scores.per_type.items()}
    return {f"{attr}_p": scores.p, f"{attr}_r": scores.r, f"{attr}_f": scores.f, f"{attr}_per_type": per_type}


def assert_same_spacy_scores(ours, theirs):
    """Same keys and labels, every number within 1e-9 (spaCy adds 1e-100 to its denominators)."""
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        if isinstance(value, dict):
            assert value.keys() == theirs[key].keys(), key
            for label, prf in value.items():
                assert prf == pytest.approx(theirs[key][label], abs=1e-9), (key, label)
        else:
            assert value == pytest.approx(theirs[key], abs=1e-9), key


# Two sentences, 3 gold and 3 predicted entities: one right, one boundary error ("York" for "New York"),
# one type error ("Apple" as PER instead of ORG).
HAND = [
    make_example("John Smith lives in New York .", [("PER", 0, 2), ("LOC", 4, 6)], [("PER", 0, 2), ("LOC", 5, 6)]),
    make_example("Apple hired Tim Cook .", [("ORG", 0, 1)], [("PER", 0, 1)]),
]


def test_span_exact_hand_case():
    scores = span_exact(HAND)
    assert (scores.micro.tp, scores.micro.fp, scores.micro.fn) == (1, 2, 2)
    assert scores.p == pytest.approx(1 / 3) and scores.r == pytest.approx(1 / 3)
    assert scores.f == pytest.approx(1 / 3)
    per = {label: (prf.tp, prf.fp, prf.fn) for label, prf in scores.per_type.items()}
    assert per == {"LOC": (0, 1, 1), "ORG": (0, 0, 1), "PER": (1, 1, 0)}
    assert scores.per_type["PER"].p == pytest.approx(0.5)
    assert scores.per_type["PER"].r == pytest.approx(1.0)
    assert scores.per_type["PER"].f == pytest.approx(2 / 3)
    assert scores.per_type["ORG"].as_dict() == {"p": 0.0, "r": 0.0, "f": 0.0, "tp": 0, "fp": 0, "fn": 1}


def test_span_exact_to_spacy_equals_spacy_scorers():
    ours = as_spacy_scores(span_exact(HAND))
    assert_same_spacy_scores(ours, Scorer.score_spans(HAND, "ents"))
    assert_same_spacy_scores(ours, get_ner_prf(HAND))
    nothing = [make_example("No entities here .", [], [])]
    assert as_spacy_scores(span_exact(nothing)) == get_ner_prf(nothing)  # all None, as spaCy


def test_span_exact_follows_spacys_missing_annotation_rules():
    rome = ["Rome", "is", "old"]
    unannotated = Example(make_doc(rome, [("LOC", 0, 1)]), Doc(VOCAB, words=rome))
    words = ["Ada", "met", "Alan", "Turing", "today"]
    partial = Example(
        make_doc(words, [("PER", 0, 1), ("PER", 2, 4)]),
        Doc(VOCAB, words=words, ents=["B-PER", "O", None, None, "O"]),  # "Alan Turing" not annotated
    )
    scores = span_exact([unannotated, partial])
    # The unannotated example is skipped; the prediction over unannotated tokens is neither right nor wrong.
    assert (scores.micro.tp, scores.micro.fp, scores.micro.fn) == (1, 0, 0)
    assert_same_spacy_scores(as_spacy_scores(scores), get_ner_prf([unannotated, partial]))


def test_span_exact_aligns_differently_tokenised_predictions():
    reference = make_doc(["New", "York-based", "Acme", "hired", "Bo"], [("LOC", 0, 2), ("PER", 4, 5)])
    predicted = Doc(VOCAB, words=["New", "York", "-", "based", "Acme", "hired", "Bo"])
    predicted.ents = [Span(predicted, 0, 2, "LOC"), Span(predicted, 4, 5, "ORG")]
    example = Example(predicted, reference)
    scores = span_exact([example])
    # "New York" covers reference tokens 0-1, the gold LOC span; "Acme" as ORG is wrong; "Bo" is missed.
    assert (scores.micro.tp, scores.micro.fp, scores.micro.fn) == (1, 1, 1)
    assert_same_spacy_scores(as_spacy_scores(scores), get_ner_prf([example]))


def test_string_level_uses_normalised_sets():
    example = make_example(
        "The Beatles met the beatles in Paris , and Paris .",
        [("ORG", 0, 2), ("ORG", 3, 5), ("LOC", 6, 7), ("LOC", 9, 10)],
        [("ORG", 1, 2), ("LOC", 6, 7)],
    )
    strings = string_level([example])
    # gold set {("ORG", "beatles"), ("LOC", "paris")} (articles dropped, duplicates once) = predicted set
    assert (strings.micro.tp, strings.micro.fp, strings.micro.fn) == (2, 0, 0)
    assert strings.f == 1.0
    spans = span_exact([example])
    assert (spans.micro.tp, spans.micro.fp, spans.micro.fn) == (1, 1, 3)
    assert spans.f == pytest.approx(1 / 3)


def test_string_level_hand_case():
    # "york" != "new york" and ("PER", "apple") != ("ORG", "apple"): same counts as span-exact here.
    strings = string_level(HAND)
    assert (strings.micro.tp, strings.micro.fp, strings.micro.fn) == (1, 2, 2)
    assert strings.per_type["LOC"].fp == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  The  U.S.-based  Firm ", "usbased firm"),
        ("AN apple a day", "apple day"),
        ("Theater", "theater"),
        ("O'Neil\tand\nSons", "oneil and sons"),
    ],
)
def test_normalize_text_is_uniners_normalize_answer(text, expected):
    assert normalize_text(text) == expected


def test_boundary_errors_hand_case():
    result = boundary_errors(HAND)
    # "York" overlaps the gold LOC "New York": a boundary error.
    # "Apple" as PER overlaps a gold ORG: a type error, not a boundary error.
    assert (result.count, result.n_pred) == (1, 3)
    assert result.rate == pytest.approx(1 / 3)
    assert result.as_dict() == {"rate": pytest.approx(1 / 3), "count": 1, "n_pred": 3}


def test_boundary_errors_without_predictions_is_zero():
    result = boundary_errors([make_example("Paris is big .", [("LOC", 0, 1)], [])])
    assert (result.count, result.n_pred, result.rate) == (0, 0, 0.0)


def test_boundary_errors_count_wider_and_narrower_spans():
    example = make_example(
        "Tim Cook met Ada in New York City .",
        [("PER", 0, 2), ("PER", 3, 4), ("LOC", 5, 8)],
        [("PER", 0, 1), ("PER", 2, 4), ("LOC", 5, 8)],  # narrower, wider, exact
    )
    adjacent = make_example("Bo met Al .", [("PER", 0, 1), ("PER", 2, 3)], [("PER", 1, 2)])  # touches, no overlap
    result = boundary_errors([example, adjacent])
    assert (result.count, result.n_pred) == (2, 4)


# Episode 1: one entity, found. Episode 2: three entities, one wrong prediction.
EPISODES = [
    [make_example("Paris is nice .", [("LOC", 0, 1)], [("LOC", 0, 1)])],
    [make_example("Anna met Bob in Rome .", [("PER", 0, 1), ("PER", 2, 3), ("LOC", 4, 5)], [("ORG", 4, 5)])],
]


def test_episode_protocols_differ():
    fewnerd = fewnerd_episodes(EPISODES)
    # Few-NERD: tp 1, fp 1, fn 3 summed over episodes -> P 1/2, R 1/4, F 1/3
    assert (fewnerd.micro.tp, fewnerd.micro.fp, fewnerd.micro.fn) == (1, 1, 3)
    assert (fewnerd.p, fewnerd.r) == pytest.approx((1 / 2, 1 / 4))
    assert fewnerd.f == pytest.approx(1 / 3)
    hou = hou_episodes(EPISODES)
    # Hou: episode scores (1, 1, 1) and (0, 0, 0) -> means 1/2
    assert [(e.p, e.r, e.f) for e in hou.episodes] == [(1.0, 1.0, 1.0), (0.0, 0.0, 0.0)]
    assert (hou.p, hou.r, hou.f) == pytest.approx((0.5, 0.5, 0.5))
    assert hou.as_dict()["n_episodes"] == 2


def test_hou_scores_an_episode_without_entities_as_zero():
    empty = [make_example("Nothing to see .", [], [])]
    hou = hou_episodes([EPISODES[0], empty])
    assert (hou.p, hou.r, hou.f, hou.n_empty) == (0.5, 0.5, 0.5, 1)
    assert fewnerd_episodes([EPISODES[0], empty]).f == 1.0


def test_hou_mean_f_is_not_f_of_mean_p_and_r():
    episodes = [
        # P 1, R 1/2, F 2/3
        [make_example("A B C D", [("X", 0, 1), ("X", 1, 2)], [("X", 0, 1)])],
        # P 1/3, R 1, F 1/2
        [make_example("A B C D", [("X", 0, 1)], [("X", 0, 1), ("X", 2, 3), ("X", 3, 4)])],
    ]
    hou = hou_episodes(episodes)
    assert (hou.p, hou.r) == pytest.approx((2 / 3, 3 / 4))
    assert hou.f == pytest.approx((2 / 3 + 1 / 2) / 2)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: fewnerd_episodes(HAND), TypeError, "single Example"),
        (lambda: hou_episodes([]), ValueError, "no episodes"),
        (lambda: hou_episodes([HAND, []]), ValueError, "episode 1 has no examples"),
        (lambda: span_exact(EPISODES), TypeError, "fewnerd_episodes or hou_episodes"),
        (lambda: score_all(), ValueError, "exactly one"),
        (lambda: score_all(HAND, episodes=EPISODES), ValueError, "exactly one"),
    ],
)
def test_bad_input_names_the_fix(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_score_all_on_episodes():
    results = score_all(episodes=EPISODES)
    names = ["span_exact", "string_level", "boundary_errors", "fewnerd_episodes", "hou_episodes"]
    assert list(results) == names
    assert results["span_exact"] == results["fewnerd_episodes"]
    assert results["hou_episodes"].f == pytest.approx(0.5)
    assert list(score_all(iter(HAND))) == ["span_exact", "string_level", "boundary_errors"]
    assert score_all(iter(HAND))["string_level"].micro.tp == 1  # an iterator is read once, for every score


def test_markdown_report_hand_case():
    results = score_all(episodes=[HAND[:1], HAND[1:]])
    text = to_markdown(results)
    assert "| span_exact | 33.33 | 33.33 | 33.33 | 1 | 2 | 2 |" in text
    # Hou: episode 1 scores (1/2, 1/2, 1/2), episode 2 (0, 0, 0)
    assert "| hou_episodes | 25.00 | 25.00 | 25.00 | - | - | - |" in text
    assert "| boundary_errors | 33.33 | 1 | 3 |" in text
    assert "### Per type: span_exact" in text
    assert "| PER | 50.00 | 100.00 | 66.67 | 1 | 1 | 0 | 1 |" in text
    assert "| ORG | 0.00 | 0.00 | 0.00 | 0 | 0 | 1 | 1 |" in text


def test_json_report_round_trip(tmp_path):
    results = score_all(HAND)
    settings = {"model": "tiny", "shots": 5, "data": Path("assets/x.spacy")}
    path = to_json(results, settings, tmp_path / "a" / "m.json")
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["settings"] == {"model": "tiny", "shots": 5, "data": "assets/x.spacy"}
    assert written["results"]["span_exact"]["tp"] == 1
    assert written["results"]["span_exact"]["per_type"]["PER"]["fp"] == 1
    assert written["results"]["boundary_errors"]["count"] == 1
    assert to_markdown(written["results"]) == to_markdown(results)


def test_reports_reject_what_they_cannot_render(tmp_path):
    with pytest.raises(TypeError, match="settings as strings"):
        to_json(score_all(HAND), {"seed": {1, 2}}, tmp_path / "m.json")
    with pytest.raises(ValueError, match="cannot render result 'odd'"):
        to_markdown({"odd": {"accuracy": 0.5}})
    with pytest.raises(TypeError, match="as_dict"):
        to_markdown({"odd": 0.5})


# --- real data: perturbed gold predictions, checked against seqeval, spaCy and a GNER-style string scorer ---


def read_conll_iob2(path, max_sents):
    """(words, IOB2 tags) per sentence of a CoNLL file with the tag in the last column; skips -DOCSTART-."""
    sents, words, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        fields = line.split()
        if fields and fields[0] != "-DOCSTART-":
            words.append(fields[0])
            tags.append(fields[-1])
        elif words:
            sents.append((words, tags))
            words, tags = [], []
            if len(sents) == max_sents:
                break
    return sents


def read_fewnerd_io(path, max_sents):
    """(words, IOB2 tags) per sentence of a Few-NERD `token<TAB>tag` IO file (a same-type run: one span)."""
    sents = []
    for words, io_tags in read_conll_iob2(path, max_sents):
        tags = [
            "O" if tag == "O" else ("I-" if i and io_tags[i - 1] == tag else "B-") + tag
            for i, tag in enumerate(io_tags)
        ]
        sents.append((words, tags))
    return sents


def perturb(doc, labels, rng):
    """A prediction for `doc`: gold spans dropped, boundary-shifted, retyped, plus spurious ones."""
    n, spans = len(doc), []
    for ent in doc.ents:
        roll, start, end, label = rng.random(), ent.start, ent.end, ent.label_
        if roll < 0.15:
            continue
        if roll < 0.35:
            if rng.random() < 0.5:
                start = min(max(start + rng.choice((-1, 1)), 0), end - 1)
            else:
                end = max(min(end + rng.choice((-1, 1)), n), start + 1)
        elif roll < 0.5:
            label = rng.choice([other for other in labels if other != label])
        spans.append((start, end, label))
    if rng.random() < 0.3:
        start = rng.randrange(n)
        spans.append((start, min(n, start + rng.randint(1, 3)), rng.choice(labels)))
    pred = Doc(VOCAB, words=[token.text for token in doc])
    pred.ents = filter_spans([Span(pred, start, end, label) for start, end, label in spans])
    return pred


def gner_string_counts(sents):
    """GNER's `parser` + `NEREvaluator` on (words, IOB2 tags) pairs, written from their code: entity strings
    are the words joined by spaces, normalised, deduplicated per sentence."""
    tp = n_pred = n_gold = 0
    for words, gold_tags, pred_tags in sents:
        found = []
        for tags in (gold_tags, pred_tags):
            items, span, label = set(), [], None
            for word, tag in zip(words + ["."], tags + ["O"], strict=True):
                if span and tag[0] in "BO":
                    items.add((label, normalize_text(" ".join(span))))
                    span = []
                if tag != "O":
                    span.append(word)
                    label = tag[2:]
            found.append(items)
        tp += len(found[0] & found[1])
        n_gold += len(found[0])
        n_pred += len(found[1])
    return tp, n_pred - tp, n_gold - tp


@pytest.mark.parametrize(
    ("relpath", "reader", "max_sents"),
    [
        ("conll2003/iob2_variant/test.txt", read_conll_iob2, 4000),
        ("fewnerd/inter_sentences/val-inter-new.txt", read_fewnerd_io, 3000),
    ],
)
def test_scores_match_seqeval_spacy_and_gner_on_real_data(shared_data, relpath, reader, max_sents):
    sents = reader(shared_data / relpath, max_sents)
    labels = sorted({tag[2:] for _, tags in sents for tag in tags if tag != "O"})
    rng = random.Random(13)
    examples = []
    for words, tags in sents:
        gold = Doc(VOCAB, words=words, ents=tags)
        examples.append(Example(perturb(gold, labels, rng), gold))
    y_true = [biluo_to_iob(doc_to_biluo_tags(eg.reference)) for eg in examples]
    y_pred = [biluo_to_iob(doc_to_biluo_tags(eg.predicted)) for eg in examples]
    assert y_true == [tags for _, tags in sents]  # the docs hold exactly the file's entities

    scores = span_exact(examples)
    assert 0.3 < scores.f < 0.95 and scores.micro.fp > 0 and scores.micro.fn > 0  # a real test, not a copy
    for mode in ({"mode": "strict", "scheme": IOB2}, {}):  # strict IOB2, and conlleval-style on valid IOB2
        assert scores.p == pytest.approx(precision_score(y_true, y_pred, **mode), abs=1e-9)
        assert scores.r == pytest.approx(recall_score(y_true, y_pred, **mode), abs=1e-9)
        assert scores.f == pytest.approx(f1_score(y_true, y_pred, **mode), abs=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns about types without predictions
        report = classification_report(y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True)
    for label in labels:
        prf = scores.per_type[label]
        expected = report[label]
        assert (prf.p, prf.r, prf.f) == pytest.approx(
            (expected["precision"], expected["recall"], expected["f1-score"]), abs=1e-9
        )
        assert prf.tp + prf.fn == expected["support"]
    assert_same_spacy_scores(as_spacy_scores(scores), Scorer.score_spans(examples, "ents"))
    assert_same_spacy_scores(as_spacy_scores(scores), get_ner_prf(examples))

    strings = string_level(examples)
    micro = strings.micro
    assert (micro.tp, micro.fp, micro.fn) == gner_string_counts(
        [(words, tags, pred) for (words, tags), pred in zip(sents, y_pred, strict=True)]
    )

    boundary = boundary_errors(examples)
    assert boundary.n_pred == scores.micro.tp + scores.micro.fp
    assert 0 < boundary.count < scores.micro.fp  # retyped and spurious predictions are not boundary errors
