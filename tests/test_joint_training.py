"""The joint template in training: SFT records (one per chunk, typed completion, label subsets), preference pairs
(boundary shifts, wrong types, error feedback) and the contrastive objectives' positions."""

from __future__ import annotations

import pytest
import torch
from spacy.tokens import Span
from test_objectives import collate, lora_model, objective_loss
from test_sft_records import LABELS, NLP, docs_and_task, stub_generator
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from spacy_fsner.decoding.constraint import SubstringConstraint
from spacy_fsner.decoding.encoding import encode_completion
from spacy_fsner.pipeline.task import JOINT_LABEL, make_ner_task
from spacy_fsner.prompts.templates import joint_template_v1
from spacy_fsner.training.objectives.attention import AttentionContrastive
from spacy_fsner.training.objectives.hidden_state import HiddenStateContrastive
from spacy_fsner.training.preference_pairs import (
    boundary_shift_pairs,
    dpo_records,
    error_feedback_pairs,
    wrong_type_pairs,
)
from spacy_fsner.training.sft_records import sft_records


def joint_docs_and_task():
    """The SFT tests' docs and demonstration, with the joint template."""
    return docs_and_task(joint_template_v1())


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


GOLD = [
    [("Obama", "PER"), ("New York City", "LOC")],
    [("Angela Merkel", "PER"), ("Emmanuel Macron", "PER"), ("Paris", "LOC")],
    [("Siemens", "ORG"), ("Zürich", "LOC")],
    [],
]


def _check_records(records, task, tokenizer) -> None:
    """Every record: one chunk, its typed gold answer as completion, entity spans and label positions that decode
    to the entities and the present labels, token types of the entities' labels."""
    assert len(records) == len(GOLD)
    for record, gold in zip(records, GOLD, strict=True):
        ids = record["input_ids"]
        first = record["completion_mask"].index(1)
        assert ids[first:] == encode_completion(tokenizer, task.template.completion(gold))
        assert record["label"] == JOINT_LABEL
        entities = [tokenizer.decode(ids[a:b]).strip() for a, b in record["entity_spans"]]
        assert entities == [text for text, _ in gold]
        for (a, b), (_, label) in zip(record["entity_spans"], gold, strict=True):
            assert set(record["token_types"][a:b]) == {1 + LABELS.index(label)}
            assert b <= first  # the entity tokens are the input's, not the completion's
        named = tokenizer.decode([ids[i] for i in record["label_positions"]])
        for label in {label for _, label in gold}:
            assert label in named
        prompt = tokenizer.decode(ids[:first])
        listed = prompt.split("Types: ")[1].split(".\n")[0].split(", ")
        assert {label for _, label in gold} <= set(listed) <= set(LABELS)


def test_joint_sft_records_one_per_chunk_with_typed_completions(tokenizer) -> None:
    docs, task = joint_docs_and_task()
    records = sft_records(docs, task, tokenizer, absent_labels=-1, seed=3)
    _check_records(records, task, tokenizer)
    # the label subsets and orders vary, deterministically with the seed
    listed = [tokenizer.decode(r["input_ids"]).split("Types: ")[1].split(".\n")[0] for r in records]
    again = [
        tokenizer.decode(r["input_ids"]).split("Types: ")[1].split(".\n")[0]
        for r in sft_records(docs, task, tokenizer, absent_labels=-1, seed=3)
    ]
    assert listed == again
    many = [
        tokenizer.decode(r["input_ids"]).split("Types: ")[1].split(".\n")[0]
        for seed in range(8)
        for r in sft_records(docs, task, tokenizer, absent_labels=-1, seed=seed)
    ]
    assert len(set(many)) > 4 and any(s.count(",") < len(LABELS) - 1 for s in many)
    assert any(s != ", ".join(LABELS) and sorted(s.split(", ")) == sorted(LABELS) for s in many)  # shuffled
    # no absent label: only the present ones (and one for the chunk without entities)
    for record, gold in zip(sft_records(docs, task, tokenizer, absent_labels=0), GOLD, strict=True):
        listed = tokenizer.decode(record["input_ids"]).split("Types: ")[1].split(".\n")[0].split(", ")
        assert set(listed) == ({label for _, label in gold} or set(listed)) and len(listed) >= 1


def test_joint_sft_prompt_with_all_labels_in_order_is_the_generators(tokenizer) -> None:
    """When the record happens to list every label in the task's order, its prompt is the inference request's."""
    docs, task = joint_docs_and_task()
    generator = stub_generator(tokenizer)
    requests = [r for p in task.generate_prompts(docs) for r in p.requests]
    matched = 0
    for seed in range(30):
        for record, request in zip(
            sft_records(docs, task, tokenizer, absent_labels=-1, seed=seed), requests, strict=True
        ):
            prefix, suffix, tail = generator.encode(request)
            if ", ".join(LABELS) + "." in tokenizer.decode(record["input_ids"]):
                matched += 1
                assert record["input_ids"][: len(prefix) + len(suffix)] == prefix + suffix + tail
    assert matched > 0


def test_joint_records_on_smollm2(smollm2_dir) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    docs, task = joint_docs_and_task()
    _check_records(sft_records(docs, task, tokenizer, absent_labels=-1), task, tokenizer)


def test_contrastive_objectives_find_the_entity_tokens_of_joint_records(tiny_model_dir, tokenizer) -> None:
    """The collated joint records: entity spans point at the input's entity tokens (typed), the attention anchor
    exists wherever there are entities, and both objectives give a finite loss with gradients."""
    docs, task = joint_docs_and_task()
    records = sft_records(docs, task, tokenizer, absent_labels=1)
    batch = collate(records, tokenizer.pad_token_id)
    for row, record in enumerate(records):
        for j, (a, b) in enumerate(record["entity_spans"]):
            assert batch.entity_spans[row, j].tolist() == [a, b]
            assert (batch.token_types[row, a:b] > 0).all()
        if record["entity_spans"]:
            assert (batch.label_positions[row] >= 0).any()
    model = lora_model(tiny_model_dir)
    for objective in (AttentionContrastive(layer=-1), HiddenStateContrastive(layer=-1)):
        objective.attach(model)
        loss = objective_loss(objective, model, batch)
        assert torch.isfinite(loss) and loss.requires_grad
        objective.detach()


def test_joint_preference_pairs(tokenizer) -> None:
    docs, task = joint_docs_and_task()
    boundary = boundary_shift_pairs(docs[:1], task)
    chosen = [("Obama", "PER"), ("New York City", "LOC")]
    assert all(p.chosen == chosen and p.kind == "boundary" and p.label == JOINT_LABEL for p in boundary)
    assert [p.rejected for p in boundary] == [
        [("Obama visited", "PER"), ("New York City", "LOC")],
        [("Obama", "PER"), ("visited New York City", "LOC")],
        [("Obama", "PER"), ("York City", "LOC")],
        [("Obama", "PER"), ("New York", "LOC")],
        [("Obama", "PER"), ("New York City .", "LOC")],
    ]
    assert boundary[0].chosen_text == " <<< Obama >>> PER; <<< New York City >>> LOC;\n"
    typed = wrong_type_pairs(docs[:1], task)
    assert len(typed) == 2 and all(p.kind == "type" for p in typed)
    for pair, k in zip(typed, (0, 1), strict=True):
        assert [t for t, _ in pair.rejected] == [t for t, _ in chosen]
        assert pair.rejected[k][1] != chosen[k][1] and pair.rejected[k][1] in LABELS
        assert pair.rejected[1 - k] == chosen[1 - k]
    assert len(wrong_type_pairs(docs[:1], task, per_entity=-1)) == 2 * (len(LABELS) - 1)
    assert wrong_type_pairs(docs, make_ner_task(LABELS)) == []  # per-label answers carry no type
    # every rejected answer is one the constrained decoder could write
    (prompts,) = task.generate_prompts(docs[:1])
    request = prompts.requests[0]
    generator = stub_generator(tokenizer)
    constraint = SubstringConstraint(request.fmt, request.source, request.starts, request.ends, generator.trie)
    for pair in boundary + typed:
        state = constraint.initial()
        for token in encode_completion(tokenizer, pair.rejected_text)[:-1]:
            assert token in constraint.allowed_tokens(state), pair.rejected_text
            state = constraint.advance(state, token)
    records = dpo_records(boundary + typed, tokenizer)
    assert records[0]["prompt_input_ids"] == [i for part in generator.encode(request) for i in part]

    # error feedback from joint predictions: a wrong type and a missed entity
    predicted = NLP(docs[0].text)
    predicted.ents = [Span(predicted, 0, 1, "ORG")]
    (error,) = error_feedback_pairs(docs[:1], [predicted], task)
    assert (error.chosen, error.rejected, error.kind) == (chosen, [("Obama", "ORG")], "error")
    right = NLP(docs[0].text)
    right.ents = [Span(right, 0, 1, "PER"), Span(right, 2, 5, "LOC")]
    assert error_feedback_pairs(docs[:1], [right], task) == []


def test_joint_records_with_retrieved_demonstrations(tokenizer) -> None:
    """With a retriever, each chunk's record shows the demonstrations the task retrieves for that chunk, typed."""
    from spacy_fsner.retrieval.retrievers import random_retriever_v1

    docs, _ = joint_docs_and_task()
    task = make_ner_task(LABELS, None, template=joint_template_v1(), retriever=random_retriever_v1(k=1, seed=1))
    task.set_demonstrations(docs)
    requests = [r for p in task.generate_prompts(docs) for r in p.requests]
    assert len({r.prefix for r in requests}) > 1  # demonstrations differ per chunk
    records = sft_records(docs, task, tokenizer, absent_labels=-1, seed=0)
    assert len(records) == len(requests)
    for record, request in zip(records, requests, strict=True):
        shown = request.prefix.split("### Input:\n")[1].split("\n")[0]  # the retrieved demonstration's text
        assert shown in tokenizer.decode(record["input_ids"])
        assert shown != request.source
