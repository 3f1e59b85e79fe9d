"""Preference pairs for DPO: boundary shifts and error feedback, exact on hand-made docs; token ids as the generator
encodes prompts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import spacy
from generator_settings import generator_config
from spacy.tokens import Doc, Span, SpanGroup
from test_sft_records import make_doc  # tests/ is on sys.path under pytest
from transformers import AutoTokenizer

from spacy_fsner.decoding.encoding import encode_completion
from spacy_fsner.decoding.generator import ConstrainedGenerator
from spacy_fsner.pipeline.task import make_ner_task
from spacy_fsner.prompts.templates import alpaca_template_v1
from spacy_fsner.training.preference_pairs import (
    DPO_FEATURES,
    PreferencePair,
    boundary_shift_pairs,
    dpo_dataset,
    dpo_records,
    error_feedback_pairs,
)
from spacy_fsner.ty import GenerationRequest, ResponseFormat

LABELS = ["PER", "LOC", "ORG"]
NLP = spacy.blank("en")


def summary(pairs: list[PreferencePair]) -> list[tuple[str, list[str], list[str]]]:
    return [(p.label, p.chosen, p.rejected) for p in pairs]


def test_boundary_shifts_one_token_entity_at_the_start_and_entity_at_the_end() -> None:
    doc = make_doc("Obama visited New York City", [(0, 1, "PER"), (2, 5, "LOC")])
    pairs = boundary_shift_pairs([doc], make_ner_task(LABELS))
    assert summary(pairs) == [
        # one token at the start: no start left (outside), no start right / end left (empty)
        ("PER", ["Obama"], ["Obama visited"]),
        # at the end: no end right (outside)
        ("LOC", ["New York City"], ["visited New York City"]),
        ("LOC", ["New York City"], ["York City"]),
        ("LOC", ["New York City"], ["New York"]),
    ]
    assert {p.kind for p in pairs} == {"boundary"}


def test_boundary_shifts_two_entities_in_one_sentence() -> None:
    """Each entity is shifted with the other left as it is; a shift may run into the other entity."""
    doc = make_doc("They met in Paris London and Rome .", [(3, 4, "LOC"), (4, 5, "LOC"), (6, 7, "LOC")])
    pairs = boundary_shift_pairs([doc], make_ner_task(LABELS))
    gold = ["Paris", "London", "Rome"]
    assert summary(pairs) == [
        ("LOC", gold, ["in Paris", "London", "Rome"]),
        ("LOC", gold, ["Paris London", "London", "Rome"]),
        ("LOC", gold, ["Paris", "Paris London", "Rome"]),
        ("LOC", gold, ["Paris", "London and", "Rome"]),
        ("LOC", gold, ["Paris", "London", "and Rome"]),
        ("LOC", gold, ["Paris", "London", "Rome ."]),
    ]


def test_boundary_shifts_skip_whitespace_tokens_and_repeats_and_use_the_chunk() -> None:
    """Shifts step over whitespace tokens and stay inside the sentence; a rejected answer already paired (both
    boundaries of the middle "Ho" give "Ho Ho") is not repeated; labels without entities give no pair."""
    doc = make_doc("Visit  Rome now . Ho Ho Ho", [(2, 3, "LOC"), (6, 7, "PER")], sent_starts=[0, 5])
    assert [t.text for t in doc][:3] == ["Visit", " ", "Rome"]
    pairs = boundary_shift_pairs([doc], make_ner_task(LABELS))
    assert summary(pairs) == [
        ("LOC", ["Rome"], ["Visit  Rome"]),
        ("LOC", ["Rome"], ["Rome now"]),
        ("PER", ["Ho"], ["Ho Ho"]),
    ]
    assert pairs[0].suffix.startswith("Visit  Rome now .") and "Ho" not in pairs[0].suffix
    assert pairs[2].suffix.startswith("Ho Ho Ho")


def test_pairs_carry_the_tasks_prompt_and_render_the_answers() -> None:
    task = make_ner_task(LABELS, {"PER": "a person"}, template=alpaca_template_v1())
    task.set_demonstrations([make_doc("Kohl was in Bonn .", [(0, 1, "PER"), (3, 4, "LOC")])])
    doc = make_doc("Obama visited Rome .", [(0, 1, "PER")])
    (pair,) = boundary_shift_pairs([doc], task)
    (prompts,) = task.generate_prompts([doc])
    request = prompts.requests[0]
    assert (pair.prefix, pair.suffix, pair.fmt) == (request.prefix, request.suffix, request.fmt)
    assert pair.prefix == task.prompt_prefix("PER")
    assert pair.prompt == pair.prefix + pair.suffix
    assert pair.chosen_text == " <<< Obama >>>."
    assert pair.rejected_text == " <<< Obama visited >>>."
    assert PreferencePair("p", "s", [], ["x"], "error", "PER").rejected_text == " <<< x >>> <im_end>"
    with pytest.raises(ValueError, match="kind"):
        PreferencePair("p", "s", [], [], "other", "PER")


GOLD_TEXT = "Obama visited New York City . Siemens hired Merkel ."


def gold_doc() -> Doc:
    return make_doc(GOLD_TEXT, [(0, 1, "PER"), (2, 5, "LOC"), (6, 7, "ORG"), (8, 9, "PER")], sent_starts=[0, 6])


def test_error_feedback_missing_extra_wrong_boundary_and_correct() -> None:
    """Sentence 1: PER missing, LOC with a wrong boundary, an extra ORG. Sentence 2: all correct, no pair."""
    predicted = make_doc(GOLD_TEXT, [(0, 1, "ORG"), (3, 5, "LOC"), (6, 7, "ORG"), (8, 9, "PER")])
    pairs = error_feedback_pairs([gold_doc()], [predicted], make_ner_task(LABELS))
    assert summary(pairs) == [
        ("PER", ["Obama"], []),
        ("LOC", ["New York City"], ["York City"]),
        ("ORG", [], ["Obama"]),
    ]
    assert {p.kind for p in pairs} == {"error"}
    assert all(p.suffix.startswith("Obama visited New York City .") for p in pairs)
    assert pairs[0].rejected_text == " <im_end>"


def test_error_feedback_perfect_prediction_gives_no_pair_and_order_matters() -> None:
    assert error_feedback_pairs([gold_doc()], [gold_doc()], make_ner_task(LABELS)) == []
    gold = make_doc("Paris and Rome", [(0, 1, "LOC"), (2, 3, "LOC")])
    only_rome = make_doc("Paris and Rome", [(2, 3, "LOC")])
    assert summary(error_feedback_pairs([gold], [only_rome], make_ner_task(LABELS))) == [
        ("LOC", ["Paris", "Rome"], ["Rome"])
    ]


def test_error_feedback_from_a_span_group_and_unknown_predicted_labels() -> None:
    """With `spans_key`, the candidates of the span group are the answers (overlaps across labels included);
    predicted labels the task does not know are ignored."""
    predicted = make_doc(GOLD_TEXT, [(0, 1, "PER"), (2, 5, "DATE")])
    predicted.spans["fsner"] = SpanGroup(
        predicted,
        spans=[Span(predicted, 0, 1, "PER"), Span(predicted, 0, 1, "ORG"), Span(predicted, 2, 5, "LOC")]
        + [Span(predicted, 6, 7, "ORG"), Span(predicted, 8, 9, "PER")],
    )
    task = make_ner_task(LABELS)
    assert summary(error_feedback_pairs([gold_doc()], [predicted], task, spans_key="fsner")) == [("ORG", [], ["Obama"])]
    assert summary(error_feedback_pairs([gold_doc()], [predicted], task)) == [
        ("LOC", ["New York City"], []),
        ("PER", ["Merkel"], []),
        ("ORG", ["Siemens"], []),
    ]
    with pytest.raises(ValueError, match="no span group 'other'"):
        error_feedback_pairs([gold_doc()], [predicted], task, spans_key="other")


def test_error_feedback_bad_input() -> None:
    task = make_ner_task(LABELS)
    with pytest.raises(ValueError, match="1 gold docs but 2 predicted docs"):
        error_feedback_pairs([gold_doc()], [gold_doc(), gold_doc()], task)
    with pytest.raises(ValueError, match="different texts"):
        error_feedback_pairs([gold_doc()], [make_doc("Something else .")], task)
    crossing = make_doc(GOLD_TEXT, [(4, 7, "ORG")])
    with pytest.raises(ValueError, match="predicted entities ORG 'City . Siemens'.*cross a chunk boundary"):
        error_feedback_pairs([gold_doc()], [crossing], task)
    with pytest.raises(ValueError, match=r"\['MISC'\].*--labels"):
        boundary_shift_pairs([make_doc("A B", [(0, 1, "MISC")])], task)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_dpo_records_encode_like_the_generator(tokenizer) -> None:
    task = make_ner_task(LABELS)
    pairs = boundary_shift_pairs([gold_doc()], task)
    records = dpo_records(pairs, tokenizer)
    generator = ConstrainedGenerator(
        SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=None)), tokenizer, generator_config()
    )
    assert len(records) == len(pairs) > 0
    for pair, record in zip(pairs, records, strict=True):
        request = GenerationRequest(pair.prefix, pair.suffix, "", (), (), pair.fmt, pair.tail)
        assert record["prompt_input_ids"] == sum(generator.encode(request), [])
        assert record["chosen_input_ids"] == encode_completion(tokenizer, pair.chosen_text)
        assert record["rejected_input_ids"] == encode_completion(tokenizer, pair.rejected_text)
        assert record["chosen_input_ids"][-1] == tokenizer.eos_token_id
        assert (record["prompt"], record["chosen"], record["rejected"]) == (
            pair.prompt,
            pair.chosen_text,
            pair.rejected_text,
        )
    dataset = dpo_dataset(pairs, tokenizer)
    assert dataset.features == DPO_FEATURES and [dict(row) for row in dataset] == records
    longest = max(
        len(r["prompt_input_ids"]) + max(len(r["chosen_input_ids"]), len(r["rejected_input_ids"])) for r in records
    )
    assert dpo_records(pairs, tokenizer, max_length=longest) == records
    with pytest.raises(ValueError, match=r"Preference pair \d+ \(boundary, label '\w+'.*max_length"):
        dpo_records(pairs, tokenizer, max_length=longest - 1)
    fmt = ResponseFormat()
    assert dpo_records([PreferencePair("a", "b", [], [], "error", "PER", fmt)], tokenizer)[0]["chosen"] == fmt.end
