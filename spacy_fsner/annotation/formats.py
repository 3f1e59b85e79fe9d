"""What one shard holds: a batch of records run through the pipeline and encoded as DocBin or JSONL bytes.

`annotate_shard` is the whole work of a shard, the same in this process and in a Ray actor, so both paths write
the same bytes: `nlp.pipe` over the shard's texts in input order (batches of `batch_size`, starting afresh at
each shard), each record's `meta` kept, then one encoding:

- `spacy`: a DocBin with user data (`doc.user_data["meta"]`, and what the pipeline stores there, such as the
  fsner component's report), entities and span groups (`doc.spans["fsner"]` with its scores);
- `jsonl`: one object per document, `{"text": ..., **meta, "ents": [{"start", "end", "label", "text",
  "score"}]}` with character offsets; `score` is the entity's log-probability when a span group of the
  pipeline carries scores (the fsner component's does), else absent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, DocBin

from .inputs import Record

OUTPUT_FORMATS = {"spacy": ".spacy", "jsonl": ".jsonl"}
"""Output format -> the suffix of its shard files."""

META_KEY = "meta"
"""`doc.user_data[META_KEY]`: a JSONL record's fields other than `text` (absent when it has none)."""

RESERVED_FIELDS = {"spacy": (), "jsonl": ("ents",)}
"""Input fields each output format writes itself (an input record must not carry them)."""


def check_format(output_format: str) -> str:
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {output_format!r}: use one of {', '.join(OUTPUT_FORMATS)}")
    return output_format


def annotate_shard(
    nlp: Language,
    records: Sequence[Record],
    *,
    batch_size: int,
    output_format: str,
    on_doc: Callable[[int], object] | None = None,
) -> bytes:
    """The shard's bytes: `records` through `nlp.pipe` (in order), encoded as `output_format`; `on_doc(1)` is called
    as each doc comes out of the pipeline (a progress bar's update)."""
    return encode_docs(annotated_docs(nlp, records, batch_size=batch_size, on_doc=on_doc), output_format)


def annotated_docs(
    nlp: Language, records: Iterable[Record], *, batch_size: int, on_doc: Callable[[int], object] | None = None
) -> Iterator[Doc]:
    """The docs of `records` as `nlp.pipe` gives them, one at a time, each record's meta in its user data."""
    for doc, meta in nlp.pipe(((r.text, r.meta) for r in records), as_tuples=True, batch_size=batch_size):
        if meta:
            doc.user_data[META_KEY] = meta
        if on_doc is not None:
            on_doc(1)
        yield doc


def encode_docs(docs: Iterable[Doc], output_format: str) -> bytes:
    """One shard file's bytes: a DocBin (with user data) or JSONL lines (see the module's docstring)."""
    if check_format(output_format) == "spacy":
        return DocBin(docs=docs, store_user_data=True).to_bytes()
    return "".join(json.dumps(doc_record(doc), ensure_ascii=False) + "\n" for doc in docs).encode("utf-8")


def doc_record(doc: Doc) -> dict[str, Any]:
    """A doc as JSONL output writes it: text, its meta's fields, entities with character offsets (and scores)."""
    scores = entity_scores(doc)
    ents = []
    for ent in doc.ents:
        entry: dict[str, Any] = {"start": ent.start_char, "end": ent.end_char, "label": ent.label_, "text": ent.text}
        score = scores.get((ent.start_char, ent.end_char, ent.label_))
        if score is not None:
            entry["score"] = score
        ents.append(entry)
    return {"text": doc.text, **doc.user_data.get(META_KEY, {}), "ents": ents}


def entity_scores(doc: Doc) -> dict[tuple[int, int, str], float]:
    """(start char, end char, label) -> score, from the span groups that carry one score per span in
    `attrs["scores"]` (the fsner component's `doc.spans["fsner"]`); the best score when several give one."""
    scores: dict[tuple[int, int, str], float] = {}
    for group in doc.spans.values():
        values = group.attrs.get("scores")
        if not isinstance(values, list) or len(values) != len(group):
            continue
        for span, score in zip(group, values, strict=True):
            key = (span.start_char, span.end_char, span.label_)
            scores[key] = max(score, scores.get(key, score))
    return scores
