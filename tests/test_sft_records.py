"""SFT records: the prompt is the generator's, token by token; the answer and the token annotations are exact.

Positions are checked by decoding them back with the tokenizer and comparing with the entity and label strings,
on the tiny byte-level BPE tokenizer (fast) and on SmolLM2's real one (slow).
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import spacy
from generator_settings import generator_config
from spacy.tokens import Doc, Span
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from spacy_fsner.decoding.encoding import encode_completion, encode_prompt
from spacy_fsner.decoding.generator import ConstrainedGenerator
from spacy_fsner.pipeline.task import FewShotNERTask, make_ner_task
from spacy_fsner.prompts.templates import alpaca_template_v1, shared_input_template_v1
from spacy_fsner.training.sft_records import SFT_FEATURES, sft_dataset, sft_records

LABELS = ["PER", "LOC", "ORG", "MISC"]
DEFINITIONS = {"PER": "a specific person's name", "LOC": "a named place"}
NLP = spacy.blank("en")


def make_doc(text: str, ents: list[tuple[int, int, str]] = (), sent_starts: list[int] | None = None) -> Doc:
    """A Doc of `text` with `doc.ents` from (start token, end token, label); sentences start at `sent_starts`."""
    doc = NLP(text)
    doc.ents = [Span(doc, start, end, label) for start, end, label in ents]
    if sent_starts is not None:
        for token in doc:
            token.is_sent_start = token.i in sent_starts
    return doc


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def stub_generator(tokenizer: PreTrainedTokenizerBase) -> ConstrainedGenerator:
    """A generator for its `encode` only: no model weights are needed to encode a prompt."""
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=None))
    return ConstrainedGenerator(model, tokenizer, generator_config())


def docs_and_task(template=None) -> tuple[list[Doc], FewShotNERTask]:
    docs = [
        make_doc("Obama visited New York City .", [(0, 1, "PER"), (2, 5, "LOC")]),
        # two sentences: two chunks, entities at the end of the first and the start of the second
        make_doc(
            "Angela Merkel met Emmanuel Macron in Paris . Siemens opened a plant in Zürich",
            [(0, 2, "PER"), (3, 5, "PER"), (6, 7, "LOC"), (8, 9, "ORG"), (13, 14, "LOC")],
            sent_starts=[0, 8],
        ),
        make_doc("Nothing to see here ."),
    ]
    task = make_ner_task(LABELS, DEFINITIONS, template=template)
    task.set_demonstrations([make_doc("Kohl was in Bonn .", [(0, 1, "PER"), (3, 4, "LOC")])])
    return docs, task


@pytest.mark.parametrize(
    "template", [None, alpaca_template_v1(), shared_input_template_v1()], ids=["cllmfs", "alpaca", "shared-input"]
)
def test_prompt_ids_are_the_generators(tokenizer, template) -> None:
    """With every absent label kept, records and requests correspond one to one: the prompt part of each record is
    exactly `ConstrainedGenerator.encode(request)`, and the rest is the gold answer encoded as a training target."""
    docs, task = docs_and_task(template)
    records = sft_records(docs, task, tokenizer, absent_labels=-1)
    prompts = list(task.generate_prompts(docs))
    requests = [(r, label) for p in prompts for r, label in zip(p.requests, p.labels, strict=True)]
    assert len(records) == len(requests) == (1 + 2 + 1) * len(LABELS)
    generator = stub_generator(tokenizer)
    for record, (request, label) in zip(records, requests, strict=True):
        prefix_ids, suffix_ids, tail_ids = generator.encode(request)
        prompt_length = len(prefix_ids) + len(suffix_ids) + len(tail_ids)
        assert record["input_ids"][:prompt_length] == prefix_ids + suffix_ids + tail_ids
        positions = record["label_positions"]
        assert positions and tokenizer.decode([record["input_ids"][i] for i in positions]).strip().rstrip(":") == label
        if template is not None and template.tail(label):  # the label is asked for after the input
            assert positions[0] >= len(prefix_ids) + len(suffix_ids)
        assert record["label"] == label
        answer = [tokenizer.decode(record["input_ids"][a:b]).strip() for a, b in record["entity_spans"]]
        assert record["input_ids"][prompt_length:] == encode_completion(tokenizer, task.template.completion(answer))
    # the answers themselves, in order: docs, chunks, task labels
    answers = [
        (r["label"], [tokenizer.decode(r["input_ids"][a:b]).strip() for a, b in r["entity_spans"]]) for r in records
    ]
    assert [(label, answer) for label, answer in answers if answer] == [
        ("PER", ["Obama"]),
        ("LOC", ["New York City"]),
        ("PER", ["Angela Merkel", "Emmanuel Macron"]),
        ("LOC", ["Paris"]),
        ("LOC", ["Zürich"]),
        ("ORG", ["Siemens"]),
    ]


def test_completion_mask_covers_completion_and_eos(tokenizer) -> None:
    docs, task = docs_and_task()
    for record in sft_records(docs, task, tokenizer, absent_labels=-1):
        ids, mask = record["input_ids"], record["completion_mask"]
        assert len(mask) == len(ids) == len(record["token_types"])
        first = mask.index(1)
        assert mask == [0] * first + [1] * (len(ids) - first)
        assert ids[-1] == tokenizer.eos_token_id
        completion = tokenizer.decode(ids[first:-1])
        assert completion.startswith(task.template.fmt.open) or completion == task.template.fmt.end
        assert completion.endswith(task.template.fmt.end)


def test_token_types_entity_spans_and_label_positions(tokenizer) -> None:
    """Hand-made doc: every token of the sentence typed 0, or 1 + label index inside a gold entity of any label;
    template and completion tokens -1; entity spans and label positions decode to their strings."""
    text = "Obama visited New York City with Siemens ."
    doc = make_doc(text, [(0, 1, "PER"), (2, 5, "LOC"), (6, 7, "ORG")])
    task = make_ner_task(LABELS, DEFINITIONS)
    records = {r["label"]: r for r in sft_records([doc], task, tokenizer, absent_labels=-1)}
    assert list(records) == LABELS
    expected_spans = {"PER": ["Obama"], "LOC": ["New York City"], "ORG": ["Siemens"], "MISC": []}
    for label, record in records.items():
        ids, types = record["input_ids"], record["token_types"]
        assert [tokenizer.decode(ids[a:b]).strip() for a, b in record["entity_spans"]] == expected_spans[label]
        assert tokenizer.decode([ids[i] for i in record["label_positions"]]).strip() == label
        typed = [i for i, t in enumerate(types) if t >= 0]
        # the typed tokens are contiguous and are the sentence, nothing more
        assert typed == list(range(typed[0], typed[-1] + 1))
        assert tokenizer.decode([ids[i] for i in typed]) == text
        assert all(t == -1 for t in types[: typed[0]] + types[typed[-1] + 1 :])
        # tokens of each type decode to the entities of that label (of every label, not only the record's)
        for index, name in enumerate(LABELS):
            runs = _runs([i for i in typed if types[i] == 1 + index])
            assert [tokenizer.decode(ids[a:b]).strip() for a, b in runs] == expected_spans[name]
        outside = "".join(tokenizer.decode([ids[i]]) for i in typed if types[i] == 0)
        assert outside.split() == ["visited", "with", "."]
        # the record's entity spans are exactly the runs of its label's type
        if label != "MISC":
            assert record["entity_spans"] == [
                list(r) for r in _runs([i for i in typed if types[i] == 1 + LABELS.index(label)])
            ]


def _runs(positions: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive positions as [start, end) pairs."""
    runs: list[tuple[int, int]] = []
    for p in positions:
        if runs and runs[-1][1] == p:
            runs[-1] = (runs[-1][0], p + 1)
        else:
            runs.append((p, p + 1))
    return runs


def test_label_position_is_in_the_instruction_not_header_or_demonstrations(tokenizer) -> None:
    """Alpaca's header says "a task": a label named `task`, also written in a demonstration, is found where the
    instruction names it."""
    template = alpaca_template_v1()
    task = make_ner_task(["task", "LOC"], template=template)
    task.set_demonstrations([make_doc("The task was done in Rome .", [(1, 2, "task"), (5, 6, "LOC")])])
    doc = make_doc("A task in Oslo .", [(1, 2, "task"), (3, 4, "LOC")])
    (record,) = [r for r in sft_records([doc], task, tokenizer, absent_labels=0) if r["label"] == "task"]
    prefix = task.prompt_prefix("task")
    part, start = template.label_offset("task", task.prompt_context)
    assert part == "prefix"
    assert start == prefix.index("extract task") + len("extract ") > prefix.index("task")
    offsets = tokenizer(prefix, return_offsets_mapping=True)["offset_mapping"]
    positions = record["label_positions"]
    assert tokenizer.decode([record["input_ids"][i] for i in positions]).strip() == "task"
    assert offsets[positions[0]][0] <= start < offsets[positions[-1]][1]
    assert [tokenizer.decode(record["input_ids"][a:b]).strip() for a, b in record["entity_spans"]] == ["task"]


def test_absent_labels_sampled_per_chunk_with_a_seed(tokenizer) -> None:
    task = make_ner_task(LABELS)
    docs = [make_doc(f"Obama spoke on day {i} .", [(0, 1, "PER")]) for i in range(40)]

    def labels(absent: int, seed: int = 0) -> list[list[str]]:
        records = sft_records(docs, task, tokenizer, absent_labels=absent, seed=seed)
        per_chunk, current = [], None
        for r in records:
            if r["label"] == "PER":
                current = []
                per_chunk.append(current)
            current.append(r["label"])
        return per_chunk

    assert labels(0) == [["PER"]] * 40
    assert all(len(chunk) == 2 for chunk in labels(1))
    assert all(len(chunk) == 3 and len(set(chunk)) == 3 for chunk in labels(2))
    assert labels(-1) == labels(3) == labels(10) == [LABELS] * 40  # task label order, all absent labels
    assert labels(1, seed=0) == labels(1, seed=0)
    assert labels(1, seed=0) != labels(1, seed=1)
    drawn = Counter(chunk[1] for chunk in labels(1))
    assert set(drawn) == {"LOC", "ORG", "MISC"}  # every absent label gets drawn over 40 chunks


def test_unannotated_doc_gives_empty_answers(tokenizer) -> None:
    task = make_ner_task(LABELS)
    (record,) = sft_records([make_doc("Nothing to see here .")], task, tokenizer, absent_labels=1)
    assert record["entity_spans"] == []
    assert set(record["token_types"]) == {-1, 0}
    first = record["completion_mask"].index(1)
    assert tokenizer.decode(record["input_ids"][first:-1]) == task.template.fmt.end
    assert sft_records([make_doc("   ")], task, tokenizer) == []  # whitespace only: no chunk, no record


def test_unknown_labels_raise_naming_them_and_the_fix(tokenizer) -> None:
    task = make_ner_task(["PER", "LOC"])
    docs = [make_doc("Obama visited NATO and Google .", [(0, 1, "PER"), (2, 3, "ORG"), (4, 5, "COMPANY")])]
    with pytest.raises(ValueError, match=r"\['COMPANY', 'ORG'\].*--labels"):
        sft_records(docs, task, tokenizer)


def test_entity_across_chunks_raises(tokenizer) -> None:
    doc = make_doc("He met Angela Merkel today .", [(2, 4, "PER")], sent_starts=[0, 3])
    with pytest.raises(ValueError, match=r"Doc 0: .*PER 'Angela Merkel'.*cross a chunk boundary.*max_chunk_tokens"):
        sft_records([doc], make_ner_task(LABELS), tokenizer)


def test_max_length_raises_instead_of_truncating(tokenizer) -> None:
    docs, task = docs_and_task()
    records = sft_records(docs, task, tokenizer, absent_labels=-1)
    longest = max(len(r["input_ids"]) for r in records)
    assert sft_records(docs, task, tokenizer, absent_labels=-1, max_length=longest) == records
    with pytest.raises(ValueError, match=r"doc \d+, label '\w+'.*more than max_length.*Raise `max_length`"):
        sft_records(docs, task, tokenizer, absent_labels=-1, max_length=longest - 1)
    with pytest.raises(ValueError, match="absent_labels"):
        sft_records(docs, task, tokenizer, absent_labels=-2)


def test_dataset_keeps_the_columns(tokenizer) -> None:
    docs, task = docs_and_task()
    records = sft_records(docs, task, tokenizer)
    dataset = sft_dataset(records)
    assert dataset.features == SFT_FEATURES
    assert [dict(row) for row in dataset] == records
    empty = sft_dataset(sft_records([make_doc("Nothing here .")], make_ner_task(LABELS), tokenizer))
    assert empty.features == SFT_FEATURES and empty[0]["entity_spans"] == []


def test_encode_completion_appends_eos(tokenizer) -> None:
    ids = encode_completion(tokenizer, " <<< Obama >>> <im_end>")
    assert ids[:-1] == tokenizer(" <<< Obama >>> <im_end>", add_special_tokens=False)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id
    prefix_ids, suffix_ids = encode_prompt(tokenizer, "### Input:\n", "Obama .")
    assert prefix_ids[0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in suffix_ids


@pytest.mark.slow
def test_real_tokenizer_smollm2(smollm2_dir) -> None:
    """SmolLM2's byte-level BPE (leading spaces inside tokens, emoji split across tokens): the prompt is the
    generator's, and spans, types and label positions decode to their strings."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    task = make_ner_task(["person", "location", "organisation"], {"person": "the name of a person"})
    task.set_demonstrations([make_doc("Kohl was in Bonn .", [(0, 1, "person"), (3, 4, "location")])])
    docs = [
        make_doc(
            "Zoë Saldaña flew from São Paulo to Kraków 😀 .", [(0, 2, "person"), (4, 6, "location"), (7, 8, "location")]
        ),
        make_doc("The  UN and 東京 met", [(2, 3, "organisation"), (4, 5, "location")]),
    ]
    records = sft_records(docs, task, tokenizer, absent_labels=-1)
    generator = stub_generator(tokenizer)
    requests = [(r, label) for p in task.generate_prompts(docs) for r, label in zip(p.requests, p.labels, strict=True)]
    expected = {
        (0, "person"): ["Zoë Saldaña"],
        (0, "location"): ["São Paulo", "Kraków"],
        (1, "organisation"): ["UN"],
        (1, "location"): ["東京"],
    }
    for i, (record, (request, label)) in enumerate(zip(records, requests, strict=True)):
        prefix_ids, suffix_ids, tail_ids = generator.encode(request)
        ids = record["input_ids"]
        assert ids[: len(prefix_ids) + len(suffix_ids) + len(tail_ids)] == prefix_ids + suffix_ids + tail_ids
        assert [tokenizer.decode(ids[a:b]).strip() for a, b in record["entity_spans"]] == expected.get(
            (i // 3, label), []
        )
        assert tokenizer.decode([ids[p] for p in record["label_positions"]]).strip() == label
        typed = [p for p, t in enumerate(record["token_types"]) if t >= 0]
        assert tokenizer.decode([ids[p] for p in typed]) == request.source
