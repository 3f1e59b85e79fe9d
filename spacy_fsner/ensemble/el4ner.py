"""EL4NER: an ensemble of small LLMs doing in-context NER in stages (ensemble learning of small-parameter LLMs).

The `el4ner` component (`nlp.add_pipe("el4ner", config={"members": {...}, "labels": [...]})`), for each sentence:

1. **pre-extraction** (`stages.pre_extraction`): every member copies the sentence's entity spans, whatever their
   type, with random pool sentences as demonstrations; the union is written to `doc.spans["candidates"]`.
2. **span-level retrieval** (`stages.span_retrieval`): the `retriever` (`spacy_fsner.SpanRetriever.v1` by default)
   picks the k pool sentences whose entities best match those candidates; switched off, k random ones.
3. **extraction**: every member copies the entity spans again, with the retrieved demonstrations; the union of all
   members' spans is kept for recall (`stages.union`; off: the first member's spans only).
4. **type classification**: every member scores each type for each span (the log-probability of writing the type
   after the span); each member votes for its best type and the most votes win, ties going to the highest summed
   log-probability (`stages.vote`; off: the first member's choice).
5. **self-validation** (`stages.validation`): every member scores "Yes" against "No" for "is this span of this
   type?"; a span whose rejection reaches `reject_share` (half, by default) is dropped (kept in `doc.spans` with
   `validated` false). `rejection` says how the members' answers are pooled: "probability" (the default) averages
   each member's probability of "No" (normalised over Yes/No), so that a sure Yes outweighs an unsure No;
   "votes" counts the members whose "No" beats their "Yes".

Every stage is switchable for ablations. Extraction uses the constrained decoder (spans are copied from the input on
token boundaries) and the `template`; classification and validation score fixed options (`decoding.scoring`) after
the `classification_template` and `validation_template` prompts (`prompts.el4ner`). The stages are in
`ensemble.stages`, the vote and the pooling of the rejections in `ensemble.voting`.
The pool (retrieval index) is built by `initialize` or `adapt` (an episode's support set) and saved with the
pipeline. `doc.ents` gets the non-overlapping winners (by vote share, then length); `doc.spans[spans_key]` every
typed span with its `votes`, `rejections` (the members' pooled No, see `rejection`) and `validated` flag in `.attrs`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import srsly
from spacy import util
from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example
from spacy.vocab import Vocab

from ..pipeline.adaptation import check_support_docs
from ..pipeline.batched import BatchedPipe
from ..pipeline.chunking import MAX_CHUNK_TOKENS, chunk_doc
from ..pipeline.resolve import resolve_entities
from ..pipeline.task import LabelSet
from ..prompts.el4ner import (
    ClassificationTemplate,
    ValidationTemplate,
)
from ..prompts.templates import PromptTemplate
from ..retrieval.embeddings import embeddings_from_spec
from ..retrieval.retrievers import PoolExample, RandomRetriever, Retriever
from .members import Member, as_member
from .stages import Candidate, Chunk, classify, extract, validate
from .voting import REJECTIONS, pooled_rejection, vote  # noqa: F401  (bench/ imports the last two from here)

EL4NER_STAGES = ("pre_extraction", "span_retrieval", "union", "vote", "validation")


@Language.factory(
    "el4ner",
    default_config={
        "labels": [],
        "label_definitions": {},
        "members": {},
        "template": {"@misc": "spacy_fsner.SharedInputTemplate.v1"},
        "retriever": {"@misc": "spacy_fsner.SpanRetriever.v1", "k": 3},
        "stages": {stage: True for stage in EL4NER_STAGES},
        "max_chunk_tokens": MAX_CHUNK_TOKENS,
        "overwrite_ents": False,
        "spans_key": "el4ner",
        "seed": 0,
        "reject_share": 0.5,
        "rejection": "probability",
        "classification_template": {"@misc": "spacy_fsner.EL4NERClassifyTemplate.v1"},
        "validation_template": {"@misc": "spacy_fsner.EL4NERValidateTemplate.v1"},
        "scorer": {"@scorers": "spacy_fsner.ner_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_el4ner(
    nlp: Language,
    name: str,
    labels: list[str] | str,
    label_definitions: dict[str, str],
    members: dict[str, Any],
    template: PromptTemplate,
    retriever: Retriever,
    stages: dict[str, bool],
    max_chunk_tokens: int,
    overwrite_ents: bool,
    spans_key: str,
    seed: int,
    reject_share: float,
    rejection: str,
    classification_template: ClassificationTemplate,
    validation_template: ValidationTemplate,
    scorer: Callable | None,
) -> EL4NER:
    return EL4NER(
        nlp.vocab,
        name=name,
        labels=labels,
        label_definitions=label_definitions,
        members=members,
        template=template,
        retriever=retriever,
        stages=stages,
        max_chunk_tokens=max_chunk_tokens,
        overwrite_ents=overwrite_ents,
        spans_key=spans_key,
        seed=seed,
        reject_share=reject_share,
        rejection=rejection,
        classification_template=classification_template,
        validation_template=validation_template,
        scorer=scorer,
    )


class EL4NER(LabelSet, BatchedPipe):
    """The ensemble component (see the module docstring)."""

    def __init__(
        self,
        vocab: Vocab,
        *,
        name: str = "el4ner",
        labels: Sequence[str] | str,
        label_definitions: dict[str, str] | None,
        members: dict[str, Any],
        template: PromptTemplate,
        retriever: Retriever,
        stages: dict[str, bool] | None,
        max_chunk_tokens: int,
        overwrite_ents: bool,
        spans_key: str,
        seed: int,
        reject_share: float,
        rejection: str,
        classification_template: ClassificationTemplate,
        validation_template: ValidationTemplate,
        scorer: Callable | None = get_ner_prf,
    ) -> None:
        if not members:
            raise ValueError(
                "EL4NER needs at least one member: members = {'smollm2': {'@llm_models': 'spacy_fsner.CausalLM.v1', "
                "'name': 'smollm2-135m-instruct'}, ...}."
            )
        if not 0.0 < reject_share <= 1.0:
            raise ValueError(
                f"reject_share is the share of members whose 'No' drops a span, in (0, 1]; got {reject_share} "
                "(0.5: at least half, the default; 1.0: all of them)."
            )
        self.reject_share = reject_share
        if rejection not in REJECTIONS:
            raise ValueError(
                f"rejection is how the members' validation answers are pooled: one of {list(REJECTIONS)}, got "
                f"{rejection!r} ('probability': the mean probability of No; 'votes': the share of members saying No)."
            )
        self.rejection = rejection
        unknown = sorted(set(stages or {}) - set(EL4NER_STAGES))
        if unknown:
            raise ValueError(f"Unknown EL4NER stages {unknown}: the stages are {list(EL4NER_STAGES)}.")
        self.vocab = vocab
        self.name = name
        self.set_labels(labels, label_definitions)
        self.members = {key: as_member(model, key) for key, model in members.items()}
        self.template = template
        self.classification_template = classification_template
        self.validation_template = validation_template
        self.scorer = scorer
        self.retriever = retriever
        self.random = RandomRetriever(k=retriever.k, max_tokens=retriever.max_tokens, seed=seed)
        self.stages = {stage: True for stage in EL4NER_STAGES} | dict(stages or {})
        self.max_chunk_tokens = max_chunk_tokens
        self.overwrite_ents = overwrite_ents
        self.spans_key = spans_key
        first = next(iter(members.values()))  # embeddings = "model": the first member's input embeddings
        retriever.bind(lambda spec: embeddings_from_spec(spec, first))

    # the pool -----------------------------------------------------------------------------------------------------
    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]] | None = None,
        *,
        nlp: Language | None = None,
        labels: list[str] | None = None,
    ) -> None:
        """The examples' reference docs become the pool of demonstrations (retrieval index)."""
        if labels is not None:
            self.set_labels(labels, {k: v for k, v in self._definitions.items() if k in labels})
        if get_examples is not None:
            self.set_pool([example.reference for example in get_examples()])

    def adapt(
        self, support: Sequence[Doc], labels: Sequence[str] | None = None, label_definitions: dict | None = None
    ) -> None:
        """An episode: its types, and its support set as the pool."""
        check_support_docs(support)
        if labels is not None:
            self.set_labels(labels, label_definitions)
        self.set_pool(support)

    def set_pool(self, docs: Sequence[Doc]) -> None:
        self.retriever.fit(list(docs))

    # prediction ---------------------------------------------------------------------------------------------------
    def _process(self, docs: list[Doc]) -> list[Doc]:
        if not self.retriever.pool:
            raise ValueError(
                "EL4NER has no pool of demonstrations: call nlp.initialize(get_examples) with annotated examples, or "
                "adapt(support_docs) for an episode."
            )
        self.random.pool = self.retriever.pool  # random demonstrations come from the same pool
        chunks = self.chunks(docs)
        members = list(self.members.values())
        if self.stages["pre_extraction"]:
            self.pre_extract(docs, chunks, members)
        selector = self.retriever if self.stages["span_retrieval"] else self.random
        demos = [self._examples(ids) for ids in selector.retrieve([c.span for c in chunks])]
        extractors = members if self.stages["union"] else members[:1]
        candidates = extract(chunks, demos, extractors, self.template, self._labels)
        voters = members if self.stages["vote"] else members[:1]
        classify(chunks, demos, candidates, voters, self.classification_template, self._labels, self._definitions)
        if self.stages["validation"]:
            validate(
                chunks,
                demos,
                candidates,
                members,
                self.validation_template,
                self._labels,
                self._definitions,
                self.rejection,
                self.reject_share,
            )
        self._annotate(docs, chunks, candidates)
        return docs

    def chunks(self, docs: list[Doc]) -> list[Chunk]:
        """The pieces of `docs` that prompts carry (at most `max_chunk_tokens` tokens each)."""
        return [Chunk(i, span) for i, doc in enumerate(docs) for span in chunk_doc(doc, self.max_chunk_tokens)]

    def pre_extract(self, docs: list[Doc], chunks: list[Chunk], members: list[Member]) -> None:
        """Every member's spans, with random demonstrations, written where the span retriever reads its candidates."""
        key = getattr(self.retriever, "spans_key", "candidates")
        demos = [self._examples(ids) for ids in self.random.retrieve([c.span for c in chunks])]
        found = extract(chunks, demos, members, self.template, self._labels)
        for doc in docs:
            doc.spans[key] = []
        for chunk, spans in zip(chunks, found, strict=True):
            offset = chunk.span.start_char
            doc = docs[chunk.doc]
            doc.spans[key].extend([doc.char_span(offset + c.start, offset + c.end) for c in spans])

    def _examples(self, ids: Sequence[int]) -> list[PoolExample]:
        """The retrieved pool sentences in prompt order: the most similar last."""
        return [self.retriever.pool[i] for i in reversed(ids)]

    def _annotate(self, docs: list[Doc], chunks: list[Chunk], candidates: list[list[Candidate]]) -> None:
        found: list[list[tuple[Span, Candidate]]] = [[] for _ in docs]
        for chunk, spans in zip(chunks, candidates, strict=True):
            doc = docs[chunk.doc]
            for c in spans:
                span = doc.char_span(chunk.span.start_char + c.start, chunk.span.start_char + c.end, label=c.label)
                found[chunk.doc].append((span, c))
        for doc, pairs in zip(docs, found, strict=True):
            group = SpanGroup(doc, name=self.spans_key, spans=[span for span, _ in pairs])
            group.attrs["votes"] = [c.votes for _, c in pairs]
            group.attrs["rejections"] = [c.rejections for _, c in pairs]
            group.attrs["validated"] = [c.validated for _, c in pairs]
            doc.spans[self.spans_key] = group
            kept = [(span, c.votes) for span, c in pairs if c.validated]
            doc.ents = resolve_entities(kept, list(doc.ents), self.overwrite_ents)

    # serialisation: labels, definitions and the pool; members refer to their base models by name ------------------
    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        """Labels, definitions and the pool (`retriever`); each can be left out by name (`exclude=["retriever"]`)."""
        getters: dict[str, Callable[[], Any]] = {"labels": lambda: self._labels}
        getters["label_definitions"] = lambda: self._definitions
        if self.retriever.pool:
            getters["retriever"] = self.retriever.to_bytes
        return util.to_bytes(getters, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = ()) -> EL4NER:
        data, exclude = srsly.msgpack_loads(bytes_data), list(exclude)
        definitions = self._definitions if "label_definitions" in exclude else data.get("label_definitions", {})
        setters: dict[str, Callable[[Any], Any]] = {
            "labels": lambda labels: self.set_labels(labels, {k: v for k, v in definitions.items() if k in labels}),
            "retriever": self.retriever.from_bytes,
        }
        util.from_dict(data, setters, exclude)
        return self

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        """`el4ner.msgpack`: what `to_bytes` writes; all of it left out by `exclude=["el4ner"]`."""
        Path(path).mkdir(parents=True, exist_ok=True)
        util.to_disk(path, {"el4ner.msgpack": lambda p: p.write_bytes(self.to_bytes(exclude=exclude))}, exclude)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> EL4NER:
        util.from_disk(path, {"el4ner.msgpack": lambda p: self.from_bytes(p.read_bytes(), exclude=exclude)}, exclude)
        return self
