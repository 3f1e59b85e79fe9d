"""EL4NER's stages over the chunks of a batch (the `el4ner` component, `ensemble/el4ner.py`, runs them in order):
extraction (untyped spans, the union over the members), type classification (a vote) and self-validation (the
members' pooled "No"). Each stage takes, per chunk, its demonstrations in prompt order (the most similar last)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from spacy.tokens import Span

from ..decoding.alignment import align_in_order
from ..decoding.parsing import parse_generation
from ..pipeline.chunking import token_boundaries
from ..prompts.el4ner import EXTRACTION_LABEL, ClassificationTemplate, ValidationTemplate, extraction_context
from ..prompts.templates import PromptTemplate
from ..retrieval.retrievers import PoolExample
from ..ty import GenerationRequest
from .members import Member
from .voting import pooled_rejection, vote


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
class Chunk:
    """A piece of doc `doc` of the batch that prompts carry, and its token boundaries (chars in the chunk)."""

    doc: int
    span: Span
    starts: tuple[int, ...] = field(init=False)
    ends: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.starts, self.ends = token_boundaries(self.span)

    @property
    def text(self) -> str:
        return self.span.text


Demonstrations = Sequence[Sequence[PoolExample]]
"""Per chunk, its demonstrations in prompt order."""


def extract(
    chunks: Sequence[Chunk],
    demos: Demonstrations,
    members: Sequence[Member],
    template: PromptTemplate,
    labels: Sequence[str],
) -> list[list[Candidate]]:
    """Per chunk, the union (in text order) of the untyped spans every member copies from it."""
    requests = []
    for chunk, examples in zip(chunks, demos, strict=True):
        context = extraction_context(labels, [(e.text, e.spans) for e in examples])
        requests.append(
            GenerationRequest(
                template.prompt_prefix(EXTRACTION_LABEL, context),
                template.suffix(chunk.text),
                chunk.text,
                chunk.starts,
                chunk.ends,
                template.fmt,
                template.tail(EXTRACTION_LABEL),
            )
        )
    found: list[dict[tuple[int, int], Candidate]] = [{} for _ in chunks]
    for member in members:
        for chunk, generation, spans in zip(chunks, member.extract(requests), found, strict=True):
            texts = [e.text for e in parse_generation(generation).entities]
            for _, start, end in align_in_order(chunk.text, texts, set(chunk.starts), set(chunk.ends)).spans:
                spans.setdefault((start, end), Candidate(start, end, chunk.text[start:end]))
    return [sorted(spans.values(), key=lambda c: (c.start, c.end)) for spans in found]


def _scored(
    chunks: Sequence[Chunk],
    demos: Demonstrations,
    candidates: Sequence[list[Candidate]],
    members: Sequence[Member],
    template: ClassificationTemplate | ValidationTemplate,
    labels: Sequence[str],
    definitions: dict[str, str],
    questions: Callable[[list[Candidate]], list],
) -> Iterator[tuple[list[Candidate], list[list[list[float]]]]]:
    """Per chunk with spans: its spans and, per member, the scores of their `questions` after the template's prompt."""
    for chunk, examples, spans in zip(chunks, demos, candidates, strict=True):
        if spans:
            prefix = template.prompt_prefix(labels, definitions, [(e.text, e.mentions) for e in examples], chunk.text)
            asked = questions(spans)
            yield spans, [member.score(prefix, asked) for member in members]


def classify(
    chunks: Sequence[Chunk],
    demos: Demonstrations,
    candidates: Sequence[list[Candidate]],
    members: Sequence[Member],
    template: ClassificationTemplate,
    labels: Sequence[str],
    definitions: dict[str, str],
) -> None:
    """Each span's type: every member votes for its most probable type; most votes win, then summed score."""
    ask = lambda spans: template.questions(labels, [c.text for c in spans])  # noqa: E731
    for spans, per_member in _scored(chunks, demos, candidates, members, template, labels, definitions, ask):
        for i, candidate in enumerate(spans):
            candidate.label, candidate.votes, candidate.score = vote(labels, [m[i] for m in per_member])


def validate(
    chunks: Sequence[Chunk],
    demos: Demonstrations,
    candidates: Sequence[list[Candidate]],
    members: Sequence[Member],
    template: ValidationTemplate,
    labels: Sequence[str],
    definitions: dict[str, str],
    rejection: str,
    reject_share: float,
) -> None:
    """A span whose rejection (is it of its type? the members' mean probability of "No", or the share of members
    answering "No", see `rejection`) reaches `reject_share` is marked not validated."""
    ask = lambda spans: template.questions([(c.text, c.label) for c in spans])  # noqa: E731
    for spans, per_member in _scored(chunks, demos, candidates, members, template, labels, definitions, ask):
        for i, candidate in enumerate(spans):
            candidate.rejections = pooled_rejection([m[i] for m in per_member], rejection)
            candidate.validated = candidate.rejections < reject_share
