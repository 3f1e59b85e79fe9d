"""EL4NER: an ensemble of small LLMs doing in-context NER in stages (SPEC 3; papers/el4ner-abstract.md).

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
token boundaries) and the `template`; classification and validation score fixed options (`decoding.scoring`).
The pool (retrieval index) is built by `initialize` or `adapt` (an episode's support set) and saved with the
pipeline. `doc.ents` gets the non-overlapping winners (by vote share, then length); `doc.spans[spans_key]` every
typed span with its `votes`, `rejections` (the members' pooled No, see `rejection`) and `validated` flag in `.attrs`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import srsly
from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example
from spacy.vocab import Vocab

from ..decoding.alignment import align_in_order
from ..decoding.parsing import parse_generation
from ..pipeline.batched import BatchedPipe
from ..pipeline.chunking import chunk_doc, token_boundaries
from ..pipeline.resolve import resolve_entities
from ..pipeline.task import labels_setting, validate_labels
from ..prompts.templates import PromptContext, PromptTemplate
from ..retrieval.embeddings import embeddings_from_spec
from ..retrieval.retrievers import PoolExample, RandomRetriever, Retriever
from ..ty import GenerationRequest
from .members import Member, as_member

EL4NER_STAGES = ("pre_extraction", "span_retrieval", "union", "vote", "validation")
ENTITY = "entity"
"""The one label of the extraction prompts (types come later)."""


@dataclass
class Candidate:
    """A span of one chunk (chars relative to the chunk) and what the stages found about it."""

    start: int
    end: int
    text: str
    label: str = ""
    votes: float = 0.0
    """Share of the voting members that chose `label`."""
    score: float = 0.0
    """Summed log-probability of `label` over the members that voted for it."""
    rejections: float = 0.0
    """The validating members' pooled "No": their mean probability of it, or the share answering it (`rejection`)."""
    validated: bool = True


@dataclass
class _Chunk:
    doc: int
    span: Span
    starts: tuple[int, ...] = field(init=False)
    ends: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.starts, self.ends = token_boundaries(self.span)

    @property
    def text(self) -> str:
        return self.span.text


@Language.factory(
    "el4ner",
    default_config={
        "labels": [],
        "label_definitions": {},
        "members": {},
        "template": {"@misc": "spacy_fsner.SharedInputTemplate.v1"},
        "retriever": {"@misc": "spacy_fsner.SpanRetriever.v1", "k": 3},
        "stages": {stage: True for stage in EL4NER_STAGES},
        "max_chunk_tokens": 128,
        "overwrite_ents": False,
        "spans_key": "el4ner",
        "seed": 0,
        "reject_share": 0.5,
        "rejection": "probability",
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
) -> EL4NER:
    return EL4NER(
        nlp.vocab,
        name=name,
        labels=labels_setting(labels),
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
    )


REJECTIONS = ("probability", "votes")


def vote(labels: Sequence[str], member_scores: Sequence[Sequence[float]]) -> tuple[str, float, float]:
    """Type classification by vote: each member's scores (log-probabilities, one per label) vote for its best label;
    the most votes win, ties going to the highest summed log-probability. Returns the label, its share of the votes
    and that sum."""
    votes: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for scores in member_scores:
        best = max(range(len(scores)), key=lambda j: scores[j])
        votes[labels[best]] += 1
        totals[labels[best]] += scores[best]
    label = max(votes, key=lambda name: (votes[name], totals[name]))
    return label, votes[label] / len(member_scores), totals[label]


def pooled_rejection(answers: Sequence[Sequence[float]], rejection: str) -> float:
    """The members' pooled "No" to one validation question, from each member's (Yes, No) log-probabilities:
    "votes", the share whose No beats their Yes; "probability", the mean probability of No among {Yes, No}."""
    if rejection == "votes":
        return sum(no > yes for yes, no in answers) / len(answers)
    # the margin is capped so that exp cannot overflow
    return sum(1.0 / (1.0 + math.exp(min(yes - no, 700.0))) for yes, no in answers) / len(answers)


class EL4NER(BatchedPipe):
    def __init__(
        self,
        vocab: Vocab,
        *,
        name: str = "el4ner",
        labels: Sequence[str],
        label_definitions: dict[str, str] | None = None,
        members: dict[str, Any],
        template: PromptTemplate,
        retriever: Retriever,
        stages: dict[str, bool] | None = None,
        max_chunk_tokens: int = 128,
        overwrite_ents: bool = False,
        spans_key: str = "el4ner",
        seed: int = 0,
        reject_share: float = 0.5,
        rejection: str = "probability",
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
        self.retriever = retriever
        self.random = RandomRetriever(k=retriever.k, max_tokens=retriever.max_tokens, seed=seed)
        self.stages = {stage: True for stage in EL4NER_STAGES} | dict(stages or {})
        self.max_chunk_tokens = max_chunk_tokens
        self.overwrite_ents = overwrite_ents
        self.spans_key = spans_key
        first = next(iter(members.values()))  # embeddings = "model": the first member's input embeddings
        retriever.bind(lambda spec: embeddings_from_spec(spec, first))

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self._labels)

    def set_labels(self, labels: Sequence[str], label_definitions: dict[str, str] | None = None) -> None:
        validate_labels(labels, dict(label_definitions or {}))
        self._labels, self._definitions = list(labels), dict(label_definitions or {})

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
        demos = selector.retrieve([c.span for c in chunks])
        extractors = members if self.stages["union"] else members[:1]
        candidates = self.extract(chunks, demos, extractors)
        self.classify(chunks, demos, candidates, members if self.stages["vote"] else members[:1])
        if self.stages["validation"]:
            self.validate(chunks, demos, candidates, members)
        self._annotate(docs, chunks, candidates)
        return docs

    def chunks(self, docs: list[Doc]) -> list[_Chunk]:
        """The pieces of `docs` that prompts carry (at most `max_chunk_tokens` tokens each)."""
        return [_Chunk(i, span) for i, doc in enumerate(docs) for span in chunk_doc(doc, self.max_chunk_tokens)]

    def pre_extract(self, docs: list[Doc], chunks: list[_Chunk], members: list[Member]) -> None:
        """Every member's spans, with random demonstrations, written where the span retriever reads its candidates."""
        key = getattr(self.retriever, "spans_key", "candidates")
        found = self.extract(chunks, self.random.retrieve([c.span for c in chunks]), members)
        for doc in docs:
            doc.spans[key] = []
        for chunk, spans in zip(chunks, found, strict=True):
            offset = chunk.span.start_char
            doc = docs[chunk.doc]
            doc.spans[key].extend([doc.char_span(offset + c.start, offset + c.end) for c in spans])

    def extract(self, chunks: list[_Chunk], demos: list[list[int]], members: list[Member]) -> list[list[Candidate]]:
        """Per chunk, the union (in text order) of the untyped spans every member copies from it."""
        definition = "a name of one of these types: " + ", ".join(self._labels)
        requests = []
        for chunk, ids in zip(chunks, demos, strict=True):
            examples = tuple((e.text, {ENTITY: e.spans}) for e in self._examples(ids))
            context = PromptContext((ENTITY,), {ENTITY: definition}, examples)
            requests.append(
                GenerationRequest(
                    self.template.prompt_prefix(ENTITY, context),
                    self.template.suffix(chunk.text),
                    chunk.text,
                    chunk.starts,
                    chunk.ends,
                    self.template.fmt,
                    self.template.tail(ENTITY),
                )
            )
        found: list[dict[tuple[int, int], Candidate]] = [{} for _ in chunks]
        for member in members:
            for chunk, generation, spans in zip(chunks, member.extract(requests), found, strict=True):
                texts = [e.text for e in parse_generation(generation).entities]
                for _, start, end in align_in_order(chunk.text, texts, set(chunk.starts), set(chunk.ends)).spans:
                    spans.setdefault((start, end), Candidate(start, end, chunk.text[start:end]))
        return [sorted(spans.values(), key=lambda c: (c.start, c.end)) for spans in found]

    def classify(
        self, chunks: list[_Chunk], demos: list[list[int]], candidates: list[list[Candidate]], members: list[Member]
    ) -> None:
        """Each span's type: every member votes for its most probable type; most votes win, then summed score."""
        options = [f" {label}" for label in self._labels]
        for chunk, ids, spans in zip(chunks, demos, candidates, strict=True):
            if not spans:
                continue
            prefix = self._classification_prefix(chunk, ids)
            questions = [(f"{c.text}:", options) for c in spans]
            per_member = [member.score(prefix, questions) for member in members]
            for i, candidate in enumerate(spans):
                candidate.label, candidate.votes, candidate.score = vote(self._labels, [m[i] for m in per_member])

    def validate(
        self, chunks: list[_Chunk], demos: list[list[int]], candidates: list[list[Candidate]], members: list[Member]
    ) -> None:
        """A span whose rejection (is it of its type? the members' mean probability of "No", or the share of members
        answering "No", see `rejection`) reaches `reject_share` is marked not validated."""
        for chunk, ids, spans in zip(chunks, demos, candidates, strict=True):
            if not spans:
                continue
            prefix = self._validation_prefix(chunk, ids)
            questions = [(f"{c.text} is {c.label}?", (" Yes", " No")) for c in spans]
            per_member = [member.score(prefix, questions) for member in members]
            for i, candidate in enumerate(spans):
                candidate.rejections = pooled_rejection([m[i] for m in per_member], self.rejection)
                candidate.validated = candidate.rejections < self.reject_share

    def _examples(self, ids: Sequence[int]) -> list[PoolExample]:
        """The retrieved pool sentences in prompt order: the most similar last."""
        return [self.retriever.pool[i] for i in reversed(ids)]

    def _definitions_text(self) -> str:
        defined = [label for label in self._labels if label in self._definitions]
        return "".join(f"{label}: {self._definitions[label]}.\n" for label in defined)

    def _classification_prefix(self, chunk: _Chunk, ids: Sequence[int]) -> str:
        known = set(self._labels)
        shots = "".join(
            f"### Input:\n{e.text}\n\n### Types:\n"
            + "".join(f"{text}: {label}\n" for label, text in e.mentions if label in known)
            + "\n"
            for e in self._examples(ids)
        )
        header = (
            f"### Instruction:\nGive the type of each entity of the input: one of {', '.join(self._labels)}.\n"
            + self._definitions_text()
            + "\n"
        )
        return header + shots + f"### Input:\n{chunk.text}\n\n### Types:\n"

    def _validation_prefix(self, chunk: _Chunk, ids: Sequence[int]) -> str:
        """Each demonstration once, with a right and a wrong type for each of its entities, then the input."""
        shots = []
        for e in self._examples(ids):
            answers = ""
            for label, text in e.mentions:
                if label not in self._labels:
                    continue
                wrong = self._labels[(self._labels.index(label) + 1) % len(self._labels)]
                answers += f"{text} is {label}? Yes\n" + (f"{text} is {wrong}? No\n" if wrong != label else "")
            if answers:
                shots.append(f"### Input:\n{e.text}\n\n### Answers:\n{answers}\n")
        header = "### Instruction:\nAnswer Yes if the entity is of the type named in the input, else No.\n"
        return header + self._definitions_text() + "\n" + "".join(shots) + f"### Input:\n{chunk.text}\n\n### Answers:\n"

    def _annotate(self, docs: list[Doc], chunks: list[_Chunk], candidates: list[list[Candidate]]) -> None:
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

    def score(self, examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        return get_ner_prf(examples)

    # serialisation: labels, definitions and the pool; members refer to their base models by name ------------------
    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        data = {"labels": self._labels, "label_definitions": self._definitions}
        if self.retriever.pool:
            data["retriever"] = self.retriever.to_bytes()
        return srsly.msgpack_dumps(data)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = ()) -> EL4NER:
        data = srsly.msgpack_loads(bytes_data)
        self.set_labels(data["labels"], data["label_definitions"])
        if "retriever" in data:
            self.retriever.from_bytes(data["retriever"])
        return self

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "el4ner.msgpack").write_bytes(self.to_bytes())

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> EL4NER:
        return self.from_bytes((Path(path) / "el4ner.msgpack").read_bytes())
