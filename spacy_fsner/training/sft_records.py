"""Supervised fine-tuning records from annotated Docs: the prompts the component builds, the answers it should write.

Why the records come from the task: a model must be trained on exactly the prompt it sees at inference (template,
label definitions, demonstrations, chunking) and on the same token ids (prefix and suffix encoded separately, as
`encode_prompt` defines, so the generator's cached prefix stays valid). So every prompt here is a request of
`FewShotNERTask.generate_prompts`; only the answers come from the gold `doc.ents`.

One record per (chunk, label) for each label with a gold entity in the chunk, plus some labels without one (the
model must learn to answer with none, but empty answers dominate when all are kept: see `sft_records`). Columns,
the contract with the trainer:

- `input_ids`: prefix ids + suffix ids + tail ids + completion ids (the completion encoded on its own, then EOS).
- `completion_mask`: 1 on the completion tokens (EOS included), else 0.
- `token_types`: per token, -1 outside the input text (template, demonstrations, completion), 0 for a token of the
  input text outside every gold entity, 1 + the label's index in `task.labels` for a token inside a gold entity of
  any label (for contrastive losses over entity representations). A token is inside the text or an entity when its
  chars (the tokenizer's offset mapping; byte-level BPE tokens include their leading space) overlap it; a token
  overlapping two entities takes the first one's type.
- `label_positions`: positions of the label's name where the instruction mentions it (in the prefix, or in the tail
  of a template that asks for the label after the input): the attention anchor of OBP-LLM's contrastive loss.
- `entity_spans`: `[start, end)` token positions of each gold entity of this record's label, in order.
- `label`: the record's label.

A joint task (`JointTemplate`) gives one record per chunk instead: its prompt lists the chunk's present labels
plus a random subset of the absent ones, in a shuffled order (so that the model reads the label list rather than
learning its positions), the completion lists the gold entities of every label in text order with their types,
`label_positions` covers the names of every present label in that list, `entity_spans` every gold entity of the
chunk, and `label` is `JOINT_LABEL` ("").
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset, Features, List, Value
from spacy.tokens import Doc, Span
from transformers import PreTrainedTokenizerBase

from ..decoding.encoding import encode_completion, encode_prompt
from ..pipeline.task import JOINT_LABEL, FewShotNERTask
from ..prompts.templates import PromptContext
from ..ty import GenerationRequest
from .settings import PromptVariety

SFT_FEATURES = Features(
    {
        "input_ids": List(Value("int64")),
        "completion_mask": List(Value("int64")),
        "token_types": List(Value("int64")),
        "label_positions": List(Value("int64")),
        "entity_spans": List(List(Value("int64"), length=2)),
        "label": Value("string"),
    }
)
"""Column types of `sft_dataset`, fixed so that a dataset whose records all lack entities keeps them."""

Offsets = list[tuple[int, int]]


@dataclass(frozen=True)
class GoldChunk:
    """One piece of an annotated doc as the task prompts it, with the gold entities inside it."""

    doc_index: int
    offset: int
    """Char offset of the chunk in its doc."""
    requests: tuple[GenerationRequest, ...]
    """One per task label, in the order of `labels`."""
    labels: tuple[str, ...]
    entities: tuple[Span, ...]
    """The gold entities inside the chunk, of every label, in order."""

    @property
    def text(self) -> str:
        return self.requests[0].source

    def entities_of(self, label: str) -> list[Span]:
        return [e for e in self.entities if e.label_ == label]


def check_labels(docs: Iterable[Doc], task: FewShotNERTask) -> None:
    """Every entity label in `docs` must be a task label: a prompt is only ever built for the task's labels."""
    unknown = sorted({e.label_ for doc in docs for e in doc.ents} - set(task.labels))
    if unknown:
        raise ValueError(
            f"The annotated docs have entities labelled {unknown}, which the task does not know (its labels: "
            f"{list(task.labels)}). Add them to the labels (`--labels`, or `labels` in the component's config) or "
            "remove those entities from the data."
        )


def entities_in(entities: Sequence[Span], start: int, end: int) -> list[Span]:
    """The entities that lie inside the chars `[start, end)`, in order."""
    return [e for e in entities if e.start_char >= start and e.end_char <= end]


def gold_chunks(docs: Iterable[Doc], task: FewShotNERTask) -> Iterator[GoldChunk]:
    """The chunks of `docs` with their requests (from `task.generate_prompts`) and gold entities.

    Raises a ValueError for entity labels the task does not know, and for an entity that lies in no chunk (it
    crosses a chunk boundary, so no prompt can ask for it): nothing is dropped silently.
    """
    docs = list(docs)
    check_labels(docs, task)
    for doc_index, (doc, prompts) in enumerate(zip(docs, task.generate_prompts(docs), strict=True)):
        entities = list(doc.ents)
        by_offset: dict[int, list[int]] = {}
        for i, offset in enumerate(prompts.offsets):
            by_offset.setdefault(offset, []).append(i)
        chunks = []
        for offset, indices in by_offset.items():
            requests = tuple(prompts.requests[i] for i in indices)
            inside = entities_in(entities, offset, offset + len(requests[0].source))
            chunks.append(
                GoldChunk(doc_index, offset, requests, tuple(prompts.labels[i] for i in indices), tuple(inside))
            )
        check_placed(doc_index, entities, [(c.offset, c.offset + len(c.text)) for c in chunks])
        yield from chunks


def check_placed(
    doc_index: int, entities: Sequence[Span], ranges: Sequence[tuple[int, int]], whose: str = "gold"
) -> None:
    """Every entity of a doc must lie inside one of its chunks (`ranges`: their chars, in order); name those that
    do not, and the fix."""
    starts = [a for a, _ in ranges]
    lost = []
    for entity in entities:
        i = bisect_right(starts, entity.start_char) - 1
        if i < 0 or entity.end_char > ranges[i][1]:
            lost.append(entity)
    if lost:
        described = ", ".join(f"{e.label_} {e.text!r} (chars {e.start_char}-{e.end_char})" for e in lost)
        raise ValueError(
            f"Doc {doc_index}: the {whose} entities {described} cross a chunk boundary, so no prompt can ask for "
            "them. Fix the sentence boundaries (`doc.sents`) so that no entity crosses one, or raise the task's "
            "`max_chunk_tokens` (the window length for long sentences)."
        )


def overlaps(start: int, end: int, a: int, b: int) -> bool:
    """Whether a token's chars `[start, end)` overlap `[a, b)`; a zero-width token counts where strictly inside."""
    return start < b and end > a


class _OffsetEncoder:
    """Char offsets of the tokens `encode_prompt` gives, cached per text (a prefix serves many records)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"{type(tokenizer).__name__} is a slow tokenizer, which gives no char offsets per token; load a fast "
                "one (`AutoTokenizer.from_pretrained(name, use_fast=True)`)."
            )
        self.tokenizer = tokenizer
        self._cache: dict[tuple[str, bool], Offsets] = {}

    def offsets(self, text: str, ids: list[int], special_tokens: bool) -> Offsets:
        key = (text, special_tokens)
        if key not in self._cache:
            encoded = self.tokenizer(text, add_special_tokens=special_tokens, return_offsets_mapping=True)
            if encoded["input_ids"] != ids:
                raise RuntimeError(
                    "Encoding with offsets gave other ids than `encode_prompt` for "
                    f"{text[:60]!r}: keep `_OffsetEncoder` in step with `encode_prompt`."
                )
            self._cache[key] = [tuple(o) for o in encoded["offset_mapping"]]
        return self._cache[key]


def sft_records(
    docs: Iterable[Doc],
    task: FewShotNERTask,
    tokenizer: PreTrainedTokenizerBase,
    *,
    absent_labels: int = 1,
    seed: int = 0,
    max_length: int | None = None,
    variety: PromptVariety | None = None,
) -> list[dict[str, Any]]:
    """SFT records (columns: see the module docstring) for the prompts `task` builds for `docs`.

    For each chunk: a record for every label with a gold entity in it, plus `absent_labels` of the labels without
    one, drawn with a `random.Random(seed)` shared by all chunks (-1: all of them; 0: none). Keeping every empty
    answer lets the model learn to answer "none" to everything (the first SmolLM2 runs, 70% empty answers, did).
    Records follow the docs, chunks and the task's label order. A doc without annotation gives records with
    empty answers. Raises a ValueError for labels the task does not know, entities that cross a chunk boundary,
    and a record longer than `max_length` tokens (nothing is truncated). `variety` varies the prompts of a joint
    task (definitions, demonstrations, label names; see `PromptVariety`); the other templates take none.
    """
    if absent_labels < -1:
        raise ValueError(f"absent_labels must be -1 (all), 0 or a positive count, got {absent_labels}.")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 or None, got {max_length}.")
    encoder = _OffsetEncoder(tokenizer)
    rng = random.Random(seed)
    variety = variety or PromptVariety()
    if task.joint:
        return _joint_records(list(docs), task, tokenizer, encoder, rng, absent_labels, max_length, variety)
    if variety.active:
        raise ValueError(
            "[train.variety] varies the prompts of the joint template only: use `spacy_fsner.JointTemplate.v1` or "
            "remove [train.variety]."
        )
    label_offsets: dict[str, tuple[str, int]] = {}
    context = task.prompt_context
    records: list[dict[str, Any]] = []
    for chunk in gold_chunks(docs, task):
        present = {e.label_ for e in chunk.entities}
        absent = [label for label in chunk.labels if label not in present]
        count = len(absent) if absent_labels == -1 else min(absent_labels, len(absent))
        kept = present | set(rng.sample(absent, count))
        for request, label in zip(chunk.requests, chunk.labels, strict=True):
            if label not in kept:
                continue
            if label not in label_offsets:
                label_offsets[label] = task.template.label_offset(label, context)
            answer = chunk.entities_of(label)
            completion = task.template.completion([e.text for e in answer])
            places = [(label, label_offsets[label])]
            record = _Record(chunk, request.prefix, request, places, answer, completion, label, task.labels)
            _add_record(record, chunk, label, max_length, tokenizer, encoder, records)
    return records


def _joint_records(
    docs: list[Doc],
    task: FewShotNERTask,
    tokenizer: PreTrainedTokenizerBase,
    encoder: _OffsetEncoder,
    rng: random.Random,
    absent_labels: int,
    max_length: int | None,
    variety: PromptVariety,
) -> list[dict[str, Any]]:
    """One record per chunk of a joint task: the present labels and a random number (0 to `absent_labels`; -1: to
    all) of the absent ones, shuffled; at least one label. The demonstrations are the chunk's, as the task
    renders them (showing only the record's labels), or with `variety`, other chunks some of the time; `variety`
    also leaves out present labels (and their entities), drops the definitions and renames the labels some of the
    time (random draws only for what it varies, so the default records are those of a run without it)."""
    contexts = [context for doc_contexts in task.chunk_contexts(docs) for context in doc_contexts]
    chunks = list(gold_chunks(docs, task))
    # demonstrations come from the shorter half of the chunks: a record stays within a few times a sentence's length
    short = sorted(range(len(chunks)), key=lambda i: (len(chunks[i].text), i))[: max(2, len(chunks) // 2)]
    styles = {style: label_names(task.labels, style) for style in NAME_STYLES}
    records: list[dict[str, Any]] = []
    for index, (chunk, context) in enumerate(zip(chunks, contexts, strict=True)):
        names = styles[rng.choice(NAME_STYLES[1:]) if variety.names and rng.random() < variety.names else "full"]
        present = _unique(names[label] for label in task.labels if chunk.entities_of(label))
        absent = [name for name in _unique(names[label] for label in task.labels) if name not in present]
        if present and absent and variety.omit_present and rng.random() < variety.omit_present:
            present = rng.sample(present, rng.randint(0, len(present) - 1))
        cap = len(absent) if absent_labels == -1 else min(absent_labels, len(absent))
        shown = present + rng.sample(absent, rng.randint(0, cap))
        if not shown:
            shown = [rng.choice(absent)]
        rng.shuffle(shown)
        definitions = _renamed_definitions(context.definitions, names)
        if variety.definitions < 1.0 and rng.random() >= variety.definitions:
            definitions = {}
        examples = context.examples
        if not examples and variety.demonstrations and rng.random() < variety.demonstrations and len(chunks) > 1:
            count = min(rng.randint(1, variety.shots), len(short) - 1)
            picked = [i for i in rng.sample(short, count + 1) if i != index][:count]  # never the chunk itself
            examples = tuple(_annotated(chunks[i], names) for i in picked)
        shown_context = PromptContext(tuple(shown), definitions, examples)
        prefix = task.template.prompt_prefix(JOINT_LABEL, shown_context)
        places = [(name, task.template.label_offset(name, shown_context)) for name in present]
        entities = [e for e in chunk.entities if names[e.label_] in present]
        completion = task.template.completion([(e.text, names[e.label_]) for e in entities])
        record = _Record(chunk, prefix, chunk.requests[0], places, entities, completion, JOINT_LABEL, task.labels)
        _add_record(record, chunk, JOINT_LABEL, max_length, tokenizer, encoder, records)
    return records


NAME_STYLES = ("full", "coarse", "fine")
"""How a record names the labels (`PromptVariety.names`): as they are, by the part before the first `-`, by the
part after it."""


def label_names(labels: Sequence[str], style: str) -> dict[str, str]:
    """Each label's name in `style` (`NAME_STYLES`). A label without `-` keeps its name; "coarse" merges the labels of
    one coarse type under its name; "fine" keeps the full name of a label whose fine part another label shares
    (`person-other`, `building-other`), and of one whose fine part is another label's name."""
    if style == "full":
        return {label: label for label in labels}
    if style == "coarse":
        return {label: label.split("-", 1)[0] if "-" in label else label for label in labels}
    if style != "fine":
        raise ValueError(f"Unknown label name style {style!r}: use one of {list(NAME_STYLES)}.")
    fine = {label: label.split("-", 1)[1] if "-" in label else label for label in labels}
    counts = Counter(fine.values())
    return {
        label: name if counts[name] == 1 and (name == label or name not in fine) else label
        for label, name in fine.items()
    }


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _renamed_definitions(definitions: Mapping[str, str], names: Mapping[str, str]) -> dict[str, str]:
    """The definitions under the record's label names; a name that merges several labels has none."""
    merged = Counter(names.values())
    return {names[label]: text for label, text in definitions.items() if label in names and merged[names[label]] == 1}


def _annotated(chunk: GoldChunk, names: Mapping[str, str]) -> tuple[str, dict[str, list[str]]]:
    """A gold chunk as a demonstration: its text and, per (renamed) label, its entity strings in order."""
    entities: dict[str, list[str]] = {}
    for entity in chunk.entities:
        entities.setdefault(names[entity.label_], []).append(entity.text)
    return chunk.text, entities


def _add_record(
    record: _Record,
    chunk: GoldChunk,
    label: str,
    max_length: int | None,
    tokenizer: PreTrainedTokenizerBase,
    encoder: _OffsetEncoder,
    records: list[dict[str, Any]],
) -> None:
    """Encode `record` and append it to `records`; a ValueError when it is longer than `max_length` (nothing is
    truncated)."""
    encoded = record.encode(tokenizer, encoder)
    if max_length is not None and len(encoded["input_ids"]) > max_length:
        raise ValueError(
            f"The record for doc {chunk.doc_index}, label {label!r}, chunk at char {chunk.offset} "
            f"({chunk.text[:40]!r}...) has {len(encoded['input_ids'])} tokens, more than max_length "
            f"{max_length}; it is not truncated. Raise `max_length`, lower the task's `max_chunk_tokens`, or "
            "use fewer or shorter demonstrations."
        )
    records.append(encoded)


@dataclass(frozen=True)
class _Record:
    """What one record is about, before encoding: the prompt's parts, where it names its labels (label, (part,
    char offset)), the gold entities of its answer and the completion text."""

    chunk: GoldChunk
    prefix: str
    request: GenerationRequest
    places: list[tuple[str, tuple[str, int]]]
    answer: list[Span]
    completion: str
    label: str
    labels: tuple[str, ...]

    def encode(self, tokenizer: PreTrainedTokenizerBase, encoder: _OffsetEncoder) -> dict[str, Any]:
        chunk, request = self.chunk, self.request
        prefix_ids, suffix_ids, tail_ids = encode_prompt(tokenizer, self.prefix, request.suffix, request.tail)
        suffix_offsets = encoder.offsets(request.suffix, suffix_ids, special_tokens=False)
        label_positions: list[int] = []
        for label, (part, offset) in self.places:
            text, ids, start = (
                (self.prefix, prefix_ids, 0)
                if part == "prefix"
                else (request.tail, tail_ids, len(prefix_ids) + len(suffix_ids))
            )
            if text[offset : offset + len(label)] != label:
                raise RuntimeError(f"The template's label_offset disagrees with its prompt for label {label!r}.")
            part_offsets = encoder.offsets(text, ids, special_tokens=part == "prefix")
            label_positions += [
                start + i for i, (s, e) in enumerate(part_offsets) if overlaps(s, e, offset, offset + len(label))
            ]
        completion_ids = encode_completion(tokenizer, self.completion)

        # char ranges relative to the chunk's text, which starts the suffix
        typed = [
            (e.start_char - chunk.offset, e.end_char - chunk.offset, 1 + self.labels.index(e.label_))
            for e in chunk.entities
        ]
        suffix_types = []
        for s, e in suffix_offsets:
            if not overlaps(s, e, 0, len(chunk.text)):
                suffix_types.append(-1)
            else:
                suffix_types.append(next((kind for a, b, kind in typed if overlaps(s, e, a, b)), 0))

        entity_spans = []
        for entity in self.answer:
            a, b = entity.start_char - chunk.offset, entity.end_char - chunk.offset
            inside = [i for i, (s, e) in enumerate(suffix_offsets) if overlaps(s, e, a, b)]
            if not inside:
                raise RuntimeError(f"No token of the suffix covers the entity {entity.text!r} (chars {a}-{b}).")
            entity_spans.append([len(prefix_ids) + inside[0], len(prefix_ids) + inside[-1] + 1])

        prompt_length = len(prefix_ids) + len(suffix_ids) + len(tail_ids)
        return {
            "input_ids": prefix_ids + suffix_ids + tail_ids + completion_ids,
            "completion_mask": [0] * prompt_length + [1] * len(completion_ids),
            "token_types": [-1] * len(prefix_ids) + suffix_types + [-1] * (len(tail_ids) + len(completion_ids)),
            "label_positions": label_positions,
            "entity_spans": entity_spans,
            "label": self.label,
        }


def sft_dataset(records: Sequence[dict[str, Any]]) -> Dataset:
    """`sft_records` as a `datasets.Dataset` with the column types of `SFT_FEATURES`."""
    return Dataset.from_list(list(records), features=SFT_FEATURES)
