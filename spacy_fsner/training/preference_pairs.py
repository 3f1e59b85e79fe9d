"""Preference pairs for DPO (OBP-LLM, Sec. 3.4): a prompt, a chosen answer and a rejected one.

Three kinds, each about one (chunk, label) prompt exactly as the task builds it (with a joint template, one prompt
per chunk whose answers list every label's entities with their types, in text order):

- "boundary": the gold answer against the same answer with one entity's start or end moved by one spaCy token
  (`boundary_shift_pairs`), to sharpen the model's sense of where an entity ends;
- "error": the gold answer against what the stage-2 model answered on the training data, where that differs
  (`error_feedback_pairs`), so the model unlearns its own mistakes;
- "type" (joint templates only): the gold answer against the same answer with one entity given another label
  (`wrong_type_pairs`).

Answers are lists of entity texts (joint: (text, label) pairs), rendered in the template's response format.
`dpo_records` encodes the prompt as the generator does (`encode_prompt`) and each answer as a training target
(`encode_completion`).
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset, Features, List, Value
from spacy.tokens import Doc, Span
from transformers import PreTrainedTokenizerBase

from ..decoding.encoding import encode_completion, encode_prompt
from ..pipeline.task import JOINT_LABEL, FewShotNERTask
from ..ty import GenerationRequest, ResponseFormat
from .settings import PAIR_KINDS
from .sft_records import GoldChunk, check_placed, entities_in, gold_chunks

DPO_FEATURES = Features(
    {
        "prompt_input_ids": List(Value("int64")),
        "chosen_input_ids": List(Value("int64")),
        "rejected_input_ids": List(Value("int64")),
        "prompt": Value("string"),
        "chosen": Value("string"),
        "rejected": Value("string"),
    }
)
"""Columns of `dpo_dataset`."""


@dataclass
class PreferencePair:
    """One prompt (`prefix` + `suffix` + `tail`, as `GenerationRequest` splits it), a chosen and a rejected
    answer."""

    prefix: str
    suffix: str
    chosen: list
    """Entity texts of the preferred answer, in order (the gold one); (text, label) pairs for a joint prompt."""
    rejected: list
    kind: str
    """"boundary", "error" or "type"."""
    label: str
    fmt: ResponseFormat = field(default_factory=ResponseFormat)
    """The template's response format, which renders the answers."""
    tail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in PAIR_KINDS:
            raise ValueError(f"A preference pair's kind must be one of {PAIR_KINDS}, got {self.kind!r}.")

    @property
    def prompt(self) -> str:
        return self.prefix + self.suffix + self.tail

    @property
    def chosen_text(self) -> str:
        return self.fmt.render(self.chosen)

    @property
    def rejected_text(self) -> str:
        return self.fmt.render(self.rejected)


def _prompts(chunk: GoldChunk, joint: bool) -> Iterator[tuple[GenerationRequest, str, list[Span]]]:
    """A chunk's prompts, each with its label and the gold entities its answer lists: one per label, or for a joint
    task one for all labels (every entity of the chunk)."""
    if joint:
        yield chunk.requests[0], JOINT_LABEL, list(chunk.entities)
        return
    for request, label in zip(chunk.requests, chunk.labels, strict=True):
        yield request, label, chunk.entities_of(label)


def _item(text: str, label: str, joint: bool) -> str | tuple[str, str]:
    """One entity of an answer: its text, or for a joint prompt (text, label)."""
    return (text, label) if joint else text


def _pair(request: GenerationRequest, chosen: list, rejected: list, kind: str, label: str) -> PreferencePair:
    return PreferencePair(request.prefix, request.suffix, chosen, rejected, kind, label, request.fmt, request.tail)


def boundary_shift_pairs(docs: Iterable[Doc], task: FewShotNERTask) -> list[PreferencePair]:
    """For every (chunk, label) with gold entities, and every such entity, up to four rejected answers: its start
    one token left or right, or its end one token left or right, the other entities unchanged.

    A token here is a non-whitespace spaCy token (whitespace tokens at the edges are skipped over), so every
    rejected entity is one the constrained decoder could write. Shifts that leave the chunk or empty the entity
    are skipped, as is a rejected answer equal to the gold one or to an earlier rejected answer of the same
    prompt (e.g. "Ho Ho" from moving either boundary of the middle "Ho" of "Ho Ho Ho"). Pairs follow the docs,
    chunks, the task's label order, the entities, then: start left, start right, end left, end right. A joint
    task's shifted entity keeps its label.
    """
    pairs: list[PreferencePair] = []
    joint = task.joint
    for chunk in gold_chunks(docs, task):
        for request, label, entities in _prompts(chunk, joint):
            chosen = [_item(e.text, e.label_, joint) for e in entities]
            seen = {tuple(chosen)}
            for k, entity in enumerate(entities):
                start, end = entity.start_char - chunk.offset, entity.end_char - chunk.offset
                for a, b in _shifts(request.starts, request.ends, start, end):
                    rejected = [*chosen[:k], _item(request.source[a:b], entity.label_, joint), *chosen[k + 1 :]]
                    if tuple(rejected) in seen:
                        continue
                    seen.add(tuple(rejected))
                    pairs.append(_pair(request, list(chosen), rejected, "boundary", label))
    return pairs


def wrong_type_pairs(
    docs: Iterable[Doc], task: FewShotNERTask, *, per_entity: int = 1, seed: int = 0
) -> list[PreferencePair]:
    """For a joint task: for every gold entity, `per_entity` rejected answers (-1: one per other label) that give it
    another of the task's labels, drawn with `random.Random(seed)`, the other entities unchanged. None for a
    per-label task (its answers carry no label). Pairs follow the docs, chunks and entities."""
    if not task.joint:
        return []
    rng = random.Random(seed)
    pairs: list[PreferencePair] = []
    for chunk in gold_chunks(docs, task):
        for request, label, entities in _prompts(chunk, joint=True):
            chosen = [(e.text, e.label_) for e in entities]
            for k, entity in enumerate(entities):
                others = [other for other in task.labels if other != entity.label_]
                count = len(others) if per_entity == -1 else min(per_entity, len(others))
                for other in rng.sample(others, count):
                    rejected = [*chosen[:k], (entity.text, other), *chosen[k + 1 :]]
                    pairs.append(_pair(request, list(chosen), rejected, "type", label))
    return pairs


def _shifts(starts: Sequence[int], ends: Sequence[int], start: int, end: int) -> Iterator[tuple[int, int]]:
    """Char ranges of the entity `[start, end)` with one boundary moved by one token (`starts`/`ends`: the chunk's
    non-whitespace tokens, see `token_boundaries`)."""
    first, last = bisect_left(starts, start), bisect_right(ends, end) - 1  # the entity's first and last token
    if first > last:
        return
    if first > 0:
        yield starts[first - 1], ends[last]
    if first < last:
        yield starts[first + 1], ends[last]
        yield starts[first], ends[last - 1]
    if last + 1 < len(ends):
        yield starts[first], ends[last + 1]


def error_feedback_pairs(
    gold_docs: Iterable[Doc],
    predicted_docs: Iterable[Doc],
    task: FewShotNERTask,
    *,
    spans_key: str | None = None,
) -> list[PreferencePair]:
    """For every (chunk, label) where the predicted entity texts (in order) differ from the gold ones: chosen the
    gold answer, rejected the predicted one (either may be empty).

    `predicted_docs` are the same texts, in the same order, as the stage-2 model annotated them. Its entities are
    read from `doc.ents`, or from `doc.spans[spans_key]` (e.g. "fsner": every answer of the model before
    conflicts across labels were resolved, closer to what it wrote per prompt). Predicted entities of labels the
    task does not know are ignored (e.g. entities the component kept); chunks are the gold docs'. For a joint task
    the answers compared are every label's entities of the chunk with their types, in text order.
    """
    gold_docs, predicted_docs = list(gold_docs), list(predicted_docs)
    if len(gold_docs) != len(predicted_docs):
        raise ValueError(
            f"{len(gold_docs)} gold docs but {len(predicted_docs)} predicted docs: pass the model's predictions "
            "for the same docs, in the same order."
        )
    for i, (gold, predicted) in enumerate(zip(gold_docs, predicted_docs, strict=True)):
        if gold.text != predicted.text:
            raise ValueError(
                f"Gold doc {i} and predicted doc {i} have different texts ({gold.text[:40]!r}... vs "
                f"{predicted.text[:40]!r}...): pass the model's predictions for the same docs, in the same order."
            )
    labels = set(task.labels)
    predictions = [_predicted(doc, i, spans_key, labels) for i, doc in enumerate(predicted_docs)]
    chunks_of_doc: dict[int, list[GoldChunk]] = {}
    for chunk in gold_chunks(gold_docs, task):
        chunks_of_doc.setdefault(chunk.doc_index, []).append(chunk)
    pairs: list[PreferencePair] = []
    joint = task.joint
    for doc_index, predicted in enumerate(predictions):
        chunks = chunks_of_doc.get(doc_index, [])
        check_placed(doc_index, predicted, [(c.offset, c.offset + len(c.text)) for c in chunks], "predicted")
        for chunk in chunks:
            inside = entities_in(predicted, chunk.offset, chunk.offset + len(chunk.text))
            for request, label, entities in _prompts(chunk, joint):
                chosen = [_item(e.text, e.label_, joint) for e in entities]
                rejected = [_item(e.text, e.label_, joint) for e in inside if joint or e.label_ == label]
                if chosen != rejected:
                    pairs.append(_pair(request, chosen, rejected, "error", label))
    return pairs


def _predicted(doc: Doc, doc_index: int, spans_key: str | None, labels: set[str]) -> list[Span]:
    """The predicted entities of the task's labels, in order of their chars."""
    if spans_key is None:
        spans = list(doc.ents)
    elif spans_key in doc.spans:
        spans = list(doc.spans[spans_key])
    else:
        raise ValueError(
            f"Predicted doc {doc_index} has no span group {spans_key!r} (it has {sorted(doc.spans)}): pass the "
            "component's `spans_key`, or spans_key=None to read `doc.ents`."
        )
    return sorted((s for s in spans if s.label_ in labels), key=lambda s: (s.start_char, s.end_char))


def dpo_records(
    pairs: Iterable[PreferencePair], tokenizer: PreTrainedTokenizerBase, *, max_length: int | None = None
) -> list[dict[str, Any]]:
    """Token ids and texts per pair: `prompt_input_ids` (prefix, suffix and tail encoded as the generator does),
    `chosen_input_ids`/`rejected_input_ids` (each answer encoded on its own, then EOS), and the texts `prompt`,
    `chosen`, `rejected`.

    Raises a ValueError for a pair whose prompt plus longer answer exceeds `max_length` tokens (nothing is
    truncated).
    """
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 or None, got {max_length}.")
    prefixes: dict[str, list[int]] = {}
    records: list[dict[str, Any]] = []
    for index, pair in enumerate(pairs):
        if pair.prefix not in prefixes:
            prefixes[pair.prefix] = encode_prompt(tokenizer, pair.prefix)[0]
        _, suffix_ids, tail_ids = encode_prompt(tokenizer, "", pair.suffix, pair.tail)
        prompt_ids = prefixes[pair.prefix] + suffix_ids + tail_ids
        chosen_ids = encode_completion(tokenizer, pair.chosen_text)
        rejected_ids = encode_completion(tokenizer, pair.rejected_text)
        length = len(prompt_ids) + max(len(chosen_ids), len(rejected_ids))
        if max_length is not None and length > max_length:
            raise ValueError(
                f"Preference pair {index} ({pair.kind}, label {pair.label!r}, input {pair.suffix[:40]!r}...) needs "
                f"{length} tokens, more than max_length {max_length}; it is not truncated. Raise `max_length`, lower "
                "the task's `max_chunk_tokens`, or use fewer or shorter demonstrations."
            )
        records.append(
            {
                "prompt_input_ids": prompt_ids,
                "chosen_input_ids": chosen_ids,
                "rejected_input_ids": rejected_ids,
                "prompt": pair.prompt,
                "chosen": pair.chosen_text,
                "rejected": pair.rejected_text,
            }
        )
    return records


def dpo_dataset(
    pairs: Iterable[PreferencePair], tokenizer: PreTrainedTokenizerBase, *, max_length: int | None = None
) -> Dataset:
    """`dpo_records` as a `datasets.Dataset` with the column types of `DPO_FEATURES`."""
    return Dataset.from_list(dpo_records(pairs, tokenizer, max_length=max_length), features=DPO_FEATURES)
