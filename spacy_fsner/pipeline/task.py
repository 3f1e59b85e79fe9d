"""The NER task: Docs to prompts, generations back to spans. Registered for spacy-llm as `spacy_fsner.NER.v1`.

With a joint template (`JointTemplate`, a typed response format) the task asks one prompt per chunk for every label
(its `DocPrompts` label is `JOINT_LABEL`) and reads each entity's label from the response.

It follows spacy-llm's task protocol (non-sharding: one `DocPrompts` per doc), so the same task and model run in
the `fsner` component and in spacy-llm's own `llm` component.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Iterable  # noqa: UP035  spacy-llm's type check reads typing.Iterable's `_name`

import srsly
from spacy import util
from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example
from spacy.util import registry
from spacy_llm.registry import registry as llm_registry

from ..decoding.alignment import align_jointly
from ..decoding.parsing import parse_generation
from ..prompts.templates import AnnotatedText, JointTemplate, PromptContext, PromptTemplate, cllmfs_template_v1
from ..retrieval.retrievers import Retriever
from ..ty import DocGenerations, DocPrompts, GenerationRequest
from .chunking import MAX_CHUNK_TOKENS, chunk_doc, token_boundaries
from .resolve import resolve_entities

JOINT_LABEL = ""
"""The `DocPrompts` label of a joint request: it asks for every label of its `fmt.labels`, and each entity's label is
read from the response."""

REPORT_KEY = "fsner"
"""`doc.user_data[REPORT_KEY]`: what could not be placed for this doc (see `FewShotNERTask.annotate`). The default
`report_key`: an `fsner` component writes under its own name, so that two of them keep apart."""


def label_setting(
    labels: Sequence[str] | str,
    label_definitions: Mapping[str, str] | None = None,
    *,
    required: bool = True,
) -> tuple[list[str], dict[str, str]]:
    """A component's or task's `labels` and `label_definitions` settings, checked: the labels as a list ("PER,ORG,LOC",
    as spacy-llm's tasks take them, handy on a command line, is split on commas), present (unless not `required`:
    a task that gets them later from `initialize` or `add_label`), unique, non-blank; definitions only for known
    labels. The one check of every label set of the `fsner` and `el4ner` components and of `spacy_fsner.NER.v1`."""
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",") if label.strip()]
    labels, definitions = list(labels), dict(label_definitions or {})
    if required and not labels:
        raise ValueError("`labels` is empty: pass the entity types to extract, e.g. labels=['PER', 'LOC'].")
    blank = [label for label in labels if not isinstance(label, str) or not label.strip()]
    if blank:
        raise ValueError(f"`labels` contains empty or non-string labels {blank!r}: remove them.")
    spaced = [label for label in labels if len(label.split()) > 1]
    if spaced:
        raise ValueError(
            f"`labels` contains {spaced!r}, labels with whitespace inside: list the labels separately, as a list "
            "(labels=['PER', 'LOC']) or one comma-separated string ('PER,LOC')."
        )
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"`labels` lists {duplicates} more than once: list each label once.")
    unknown = sorted(set(definitions) - set(labels))
    if unknown:
        raise ValueError(
            f"`label_definitions` defines {unknown}, which are not in `labels` {labels}: add them to "
            "`labels` or remove their definitions."
        )
    return labels, definitions


class LabelSet:
    """Labels and their definitions, set through `label_setting` (the `fsner` task and the `el4ner` component)."""

    _labels: list[str]
    _definitions: dict[str, str]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self._labels)

    @property
    def label_definitions(self) -> dict[str, str]:
        return dict(self._definitions)

    def set_labels(self, labels: Sequence[str] | str, label_definitions: dict[str, str] | None = None) -> None:
        self._labels, self._definitions = label_setting(labels, label_definitions)


class FewShotNERTask(LabelSet):
    """One prompt per (chunk, label); entities placed in order, all labels of a chunk together; conflicts resolved
    by score.

    Demonstrations are either fixed (`set_demonstrations` without a retriever: every prompt shows the same ones) or
    retrieved per chunk (with a `retriever`: `set_demonstrations` makes the docs its pool, and each chunk's prompts
    show the pool sentences most similar to it).
    """

    def __init__(
        self,
        labels: Sequence[str] | str,
        label_definitions: dict[str, str] | None,
        template: PromptTemplate,
        max_chunk_tokens: int,
        overwrite_ents: bool,
        spans_key: str,
        retriever: Retriever | None,
        report_key: str,
    ) -> None:
        """Every setting explicit: `make_ner_task` (`spacy_fsner.NER.v1`) and the `fsner` factory hold the defaults."""
        # no labels yet is allowed here (spacy-llm's tasks get them from `initialize` or `add_label`)
        self._labels, self._definitions = label_setting(labels, label_definitions, required=False)
        self._template = template
        if max_chunk_tokens < 1:
            raise ValueError(f"max_chunk_tokens must be >= 1, got {max_chunk_tokens}")
        self._max_chunk_tokens = max_chunk_tokens
        self._overwrite_ents = overwrite_ents
        self._spans_key = spans_key
        self._examples: list[AnnotatedText] = []
        self._retriever = retriever
        self.report_key = report_key

    @property
    def retriever(self) -> Retriever | None:
        return self._retriever

    @property
    def template(self) -> PromptTemplate:
        return self._template

    def add_label(self, label: str, label_definition: str | None = None) -> int:
        """Add a label (spacy-llm's `LabeledTask`); returns 0 when it was already there."""
        if label in self._labels:
            return 0
        definitions = {**self._definitions, **({label: label_definition} if label_definition else {})}
        self._labels, self._definitions = label_setting([*self._labels, label], definitions)
        return 1

    def clear(self) -> None:
        self._labels, self._definitions, self._examples = [], {}, []

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]] | None = None,
        nlp: Language | None = None,
        labels: list[str] | None = None,
        n_prompt_examples: int = 0,
    ) -> None:
        """`nlp.initialize(get_examples)` in spacy-llm's `llm` component, as its NER task does it: the labels are, by
        precedence, `labels`, the task's own, or those of the examples' entities; the first `n_prompt_examples` of
        the examples' reference docs (-1: all) become the demonstrations (with a retriever: all of them, its pool)."""
        if n_prompt_examples < -1:
            raise ValueError(f"n_prompt_examples must be -1 (all), 0 or a positive count, got {n_prompt_examples}.")
        docs = [example.reference for example in get_examples()] if get_examples is not None else []
        labels = labels or self._labels or sorted({ent.label_ for doc in docs for ent in doc.ents})
        self.set_labels(labels, {k: v for k, v in self._definitions.items() if k in labels})
        if self._retriever is not None:
            if docs:
                self.set_demonstrations(docs)
        elif n_prompt_examples:
            self.set_demonstrations(docs if n_prompt_examples == -1 else docs[:n_prompt_examples])

    def set_demonstrations(self, docs: Iterable[Doc]) -> None:
        """Use annotated docs (`doc.ents`) as in-prompt examples: all of them, in order (every label's entities of
        each doc), or, with a retriever, as its pool."""
        if self._retriever is not None:
            self._retriever.fit(list(docs))
            self._examples = []
            return
        self._examples = [
            (doc.text, {label: [e.text for e in doc.ents if e.label_ == label] for label in self._labels})
            for doc in docs
        ]

    @property
    def demonstrations(self) -> list[AnnotatedText]:
        return list(self._examples)

    @property
    def prompt_context(self) -> PromptContext:
        """Labels, definitions and demonstrations, as the template renders them."""
        return PromptContext(tuple(self._labels), dict(self._definitions), tuple(self._examples))

    def _context(self, retrieved: tuple[int, ...] | None) -> PromptContext:
        """The prompt context with the fixed demonstrations (None) or the pool examples `retrieved` (best first;
        shown best last, next to the input)."""
        if retrieved is None:
            return self.prompt_context
        pool = self._retriever.pool
        examples = tuple(pool[i].annotated for i in reversed(retrieved))
        return PromptContext(tuple(self._labels), dict(self._definitions), examples)

    def prompt_prefix(self, label: str) -> str:
        return self._template.prompt_prefix(label, self.prompt_context)

    @property
    def joint(self) -> bool:
        """Whether the template asks for all labels in one prompt per chunk (a typed response)."""
        return isinstance(self._template, JointTemplate)

    def chunk_contexts(self, docs: Iterable[Doc]) -> list[list[PromptContext]]:
        """Per doc, per chunk (as `generate_prompts` cuts them), the prompt context its prompts render: the fixed
        demonstrations, or those the retriever picks for the chunk."""
        chunks = [chunk_doc(doc, self._max_chunk_tokens) for doc in docs]
        return [[self._context(key) for key in doc_keys] for doc_keys in self._retrieved(chunks)]

    def _retrieved(self, chunks: list[list[Span]]) -> list[list[tuple[int, ...] | None]]:
        """Per doc, per chunk, the ids of its demonstrations in the pool (None: the fixed demonstrations)."""
        if self._retriever is None:
            return [[None] * len(doc_chunks) for doc_chunks in chunks]
        flat = [chunk for doc_chunks in chunks for chunk in doc_chunks]
        retrieved = iter(self._retriever.retrieve(flat))
        return [[tuple(next(retrieved)) for _ in doc_chunks] for doc_chunks in chunks]

    def generate_prompts(self, docs: Iterable[Doc]) -> Iterable[DocPrompts]:
        if not self._labels:
            raise ValueError("The fsner task has no labels: add them with `add_label` or the `labels` setting.")
        docs = list(docs)
        chunks = [chunk_doc(doc, self._max_chunk_tokens) for doc in docs]
        joint = self.joint
        labels = [JOINT_LABEL] if joint else self._labels
        fmt = self._template.format_for(self._labels) if joint else self._template.fmt
        tails = {label: self._template.tail(label) for label in labels}
        keys = self._retrieved(chunks)
        prefixes: dict[tuple[str, tuple[int, ...] | None], str] = {}  # rendered once per label and demonstrations
        for doc_chunks, doc_keys in zip(chunks, keys, strict=True):
            prompts = DocPrompts()
            for chunk, shots in zip(doc_chunks, doc_keys, strict=True):
                starts, ends = token_boundaries(chunk)
                text, offset = chunk.text, chunk.start_char
                suffix = self._template.suffix(text)
                for label in labels:
                    key = (label, shots)
                    if key not in prefixes:
                        prefixes[key] = self._template.prompt_prefix(label, self._context(shots))
                    request = GenerationRequest(prefixes[key], suffix, text, starts, ends, fmt, tails[label])
                    prompts.requests.append(request)
                    prompts.labels.append(label)
                    prompts.offsets.append(offset)
            yield prompts

    # spacy-llm hands each doc's responses over wrapped in a one-item list; the annotation is what its type
    # check expects for a non-sharding task.
    def parse_responses(self, docs: Iterable[Doc], responses: Iterable[DocGenerations]) -> Iterable[Doc]:
        for doc, response in zip(docs, responses, strict=True):
            if isinstance(response, list | tuple):
                (response,) = response
            yield self.annotate(doc, response)

    def annotate(self, doc: Doc, response: DocGenerations) -> Doc:
        """Place every generated entity, record what could not be placed, and set `doc.ents`/`doc.spans`.

        The answers of all labels about one chunk are placed together (`align_jointly`), so an entity string that
        occurs twice goes where no other label's entity already is. A joint (typed) answer is placed in order like
        one label's, and each entity takes the label written after it; one without a label of the request (its
        label unfinished, or, unconstrained, not a task label) is reported under "untyped".
        """
        candidates: list[tuple[Span, float]] = []
        report: dict[str, list] = {"unplaced": [], "repeated": [], "unterminated": [], "unfinished": [], "too_long": []}
        prompts = response.prompts
        if len(response.generations) != len(prompts.requests) or len(prompts.labels) != len(prompts.requests):
            raise ValueError(
                f"{len(prompts.requests)} requests, {len(prompts.labels)} labels and {len(response.generations)} "
                "generations for one doc: they must correspond one to one."
            )
        chunks: dict[tuple[int, str], list[int]] = {}
        for i, (request, offset) in enumerate(zip(prompts.requests, prompts.offsets, strict=True)):
            chunks.setdefault((offset, request.source), []).append(i)
        for (offset, source), indices in chunks.items():
            parsed = [parse_generation(response.generations[i]) for i in indices]
            request = prompts.requests[indices[0]]
            alignments = align_jointly(
                source, [[e.text for e in p.entities] for p in parsed], set(request.starts), set(request.ends)
            )
            for i, answer, alignment in zip(indices, parsed, alignments, strict=True):
                label, generation = prompts.labels[i], response.generations[i]
                typed = generation.fmt.typed
                written = [(e.label or "") if typed else label for e in answer.entities]
                for index, start, end in alignment.spans:
                    if typed and written[index] not in generation.fmt.labels:
                        entity = answer.entities[index]
                        untyped = {"label": entity.label, "text": entity.text, "offset": offset}
                        report.setdefault("untyped", []).append(untyped)
                        continue
                    span = doc.char_span(offset + start, offset + end, label=written[index])
                    candidates.append((span, answer.entities[index].score))
                for key, found in (("unplaced", alignment.unplaced), ("repeated", alignment.repeated)):
                    report[key] += [
                        {"label": written[j], "text": answer.entities[j].text, "offset": offset} for j in found
                    ]
                if answer.unterminated is not None:
                    report["unterminated"].append({"label": label, "text": answer.unterminated, "offset": offset})
                if generation.too_long:
                    report["too_long"].append({"label": label, "offset": offset, "chars": len(source)})
                elif not generation.finished:
                    report["unfinished"].append({"label": label, "offset": offset})
        candidates.sort(key=lambda c: (c[0].start, c[0].end, c[0].label_))
        group = SpanGroup(doc, name=self._spans_key, spans=[span for span, _ in candidates])
        group.attrs["scores"] = [score for _, score in candidates]
        doc.spans[self._spans_key] = group
        doc.ents = resolve_entities(candidates, list(doc.ents), self._overwrite_ents)
        doc.user_data[self.report_key] = report
        return doc

    def scorer(self, examples: Iterable[Example]) -> dict[str, Any]:
        return get_ner_prf(examples)

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        """Labels, definitions and demonstrations (they change with `adapt`, so the config alone is not enough), and
        the retrieval index; each can be left out by name (`exclude=["retriever"]`)."""
        getters: dict[str, Callable[[], Any]] = {
            "labels": lambda: self._labels,
            "label_definitions": lambda: self._definitions,
            "examples": lambda: self._examples,
        }
        if self._retriever is not None and self._retriever.fitted:
            getters["retriever"] = self._retriever.to_bytes
        return util.to_bytes(getters, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = ()) -> FewShotNERTask:
        data = srsly.msgpack_loads(bytes_data)
        exclude = list(exclude)

        def set_labels(labels: list[str]) -> None:
            kept = {k: v for k, v in self._definitions.items() if k in labels}
            self.set_labels(labels, kept if "label_definitions" in exclude else data.get("label_definitions", {}))

        def set_examples(examples: list) -> None:
            self._examples = [(text, {k: list(v) for k, v in entities.items()}) for text, entities in examples]

        def set_retriever(index: bytes) -> None:
            if self._retriever is None:
                raise ValueError(
                    "The saved fsner component has a retrieval index, but this one is configured without a "
                    "`retriever`: configure the retriever it was saved with (see its config.cfg)."
                )
            self._retriever.from_bytes(index)

        if "demonstrations" in data:  # saved by an earlier version: per label, the same texts in the same order
            per_label = data.pop("demonstrations")
            texts = [text for text, _ in next(iter(per_label.values()), [])]
            data["examples"] = [(text, {k: v[i][1] for k, v in per_label.items()}) for i, text in enumerate(texts)]
        setters = {"labels": set_labels, "examples": set_examples, "retriever": set_retriever}
        util.from_dict(data, setters, exclude)
        return self


@llm_registry.llm_tasks("spacy_fsner.NER.v1")
def make_ner_task(
    labels: list[str] | str = [],  # noqa: B006  (read only; spaCy's config shows the default)
    label_definitions: dict[str, str] | None = None,
    template: PromptTemplate | None = None,
    max_chunk_tokens: int = MAX_CHUNK_TOKENS,
    overwrite_ents: bool = False,
    spans_key: str = "fsner",
    retriever: Retriever | None = None,
    report_key: str = REPORT_KEY,
) -> FewShotNERTask:
    """The few-shot NER task for spacy-llm's `llm` component (and the engine of the `fsner` component).

    `labels` as the `fsner` component takes them (a list, or "PER,LOC"); none (the default) until `initialize`
    (from its `labels` or the examples' entities) or `add_label` gives them: prompting without labels is an error.
    """
    template = template if template is not None else cllmfs_template_v1()
    return FewShotNERTask(
        labels, label_definitions, template, max_chunk_tokens, overwrite_ents, spans_key, retriever, report_key
    )


@registry.scorers("spacy_fsner.ner_scorer.v1")
def make_ner_scorer() -> Callable[[Iterable[Example]], dict[str, Any]]:
    """Span-exact P/R/F over `doc.ents`, overall and per type (spaCy's `get_ner_prf`)."""
    return get_ner_prf
