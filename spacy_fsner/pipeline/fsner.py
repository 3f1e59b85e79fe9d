"""The `fsner` component: Doc <-> prompts glue around the NER task and a causal LM."""

from __future__ import annotations

import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import srsly
from spacy import util
from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc
from spacy.training import Example
from spacy.vocab import Vocab

from ..prompts.templates import PromptTemplate
from ..retrieval.embeddings import embeddings_from_spec
from ..retrieval.retrievers import Retriever
from ..ty import DocGenerations, DocPrompts
from .adaptation import Adaptation, InContextAdaptation, check_support_docs
from .batched import BatchedPipe
from .chunking import MAX_CHUNK_TOKENS
from .task import REPORT_KEY, FewShotNERTask, label_setting

ModelCallable = Callable[[Iterable[Iterable[DocPrompts]]], Iterable[Iterable[DocGenerations]]]

_MODEL_HINT = "{'@llm_models': 'spacy_fsner.CausalLM.v1', 'name': 'models/tiny'}"

DEFAULT_MODEL = {"@llm_models": "spacy_fsner.BaseModel.v1"}
"""The factory's model when a config gives none: SmolLM2-135M-Instruct (fetched on first use) with the shipped base
adapter, trained for the joint template (the factory's default template)."""


@Language.factory(
    "fsner",
    default_config={
        "labels": [],
        "label_definitions": {},
        "template": {"@misc": "spacy_fsner.JointTemplate.v1"},
        "model": DEFAULT_MODEL,
        "max_chunk_tokens": MAX_CHUNK_TOKENS,
        "overwrite_ents": False,
        "spans_key": "fsner",
        "save_io": False,
        "adaptation": {"@misc": "spacy_fsner.InContextAdaptation.v1"},
        "retriever": None,
        "scorer": {"@scorers": "spacy_fsner.ner_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_fsner(
    nlp: Language,
    name: str,
    labels: list[str] | str,
    label_definitions: dict[str, str],
    template: PromptTemplate,
    model: ModelCallable | None,
    max_chunk_tokens: int,
    overwrite_ents: bool,
    spans_key: str,
    save_io: bool,
    adaptation: Adaptation,
    retriever: Retriever | None,
    scorer: Callable | None,
) -> FewShotNER:
    if model is None:
        raise ValueError(f"The fsner component needs a `model`, e.g. model={_MODEL_HINT}.")
    labels, label_definitions = label_setting(labels, label_definitions)
    report_key = REPORT_KEY if name == "fsner" else name
    task = FewShotNERTask(
        labels, label_definitions, template, max_chunk_tokens, overwrite_ents, spans_key, retriever, report_key
    )
    return FewShotNER(nlp.vocab, task, model, name=name, save_io=save_io, adaptation=adaptation, scorer=scorer)


_HINTS = (
    (
        ("unfinished", "unterminated"),
        "'unfinished'/'unterminated': max_new_tokens ran out; raise it in the model config.",
    ),
    (
        ("too_long",),
        "'too_long': a piece of text whose prompt needs more positions than the model has got no prediction; lower "
        "`max_chunk_tokens` (it cannot split a single very long token) or `max_new_tokens`, or use a model with more "
        "positions.",
    ),
    (("repeated",), "'repeated': the model wrote an entity it had already written; it is kept once."),
    (
        ("unplaced",),
        "'unplaced': a string not in the text (unconstrained decoding), listed in the report, not in doc.ents.",
    ),
    (
        ("untyped",),
        "'untyped': a joint answer's entity without one of the task's labels (cut by max_new_tokens, or "
        "unconstrained decoding), listed in the report, not in doc.ents.",
    ),
)
"""What each kind of loss in the report means, for the warning."""


class FewShotNER(BatchedPipe):
    """Sets `doc.ents` (non-overlapping) and `doc.spans[spans_key]` (every candidate, scores in `.attrs`).

    What could not be placed is counted per doc in `doc.user_data[name]` (`doc.user_data["fsner"]` for the default
    name) and in total in `self.stats`, and a warning says so: nothing is dropped silently. `score` is the `scorer`
    setting's (`spacy_fsner.ner_scorer.v1`: P/R/F of `doc.ents`).
    """

    def __init__(
        self,
        vocab: Vocab,
        task: FewShotNERTask,
        model: ModelCallable,
        *,
        name: str = "fsner",
        save_io: bool = False,
        adaptation: Adaptation | None = None,
        scorer: Callable | None = get_ner_prf,
    ) -> None:
        self.vocab = vocab
        self.scorer = scorer
        self.task = task
        self.model = model
        self.name = name
        self.save_io = save_io
        self.adaptation = adaptation if adaptation is not None else InContextAdaptation()
        self.stats: Counter[str] = Counter()
        self._losses: list[tuple[str, dict[str, int]]] = []  # (doc start, losses) of the docs since the last warning
        if task.retriever is not None:  # embeddings = "model": the input embeddings of this component's model
            task.retriever.bind(lambda spec: embeddings_from_spec(spec, self.model))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.task.labels

    def add_label(self, label: str, label_definition: str | None = None) -> int:
        return self.task.add_label(label, label_definition)

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]] | None = None,
        *,
        nlp: Language | None = None,
        labels: list[str] | None = None,  # builtins only: spaCy validates these settings with pydantic
        n_prompt_examples: int = 0,
    ) -> None:
        """`nlp.initialize(get_examples)`, as spacy-llm's NER task does it: the labels are replaced by `labels` when
        given. The examples' reference docs become the retrieval pool when the component has a `retriever`;
        without one, the first `n_prompt_examples` of them (-1: all) become the fixed demonstrations of every prompt
        (0, the default: none, zero-shot prompts)."""
        self.task.initialize(get_examples, nlp, labels, n_prompt_examples)

    def adapt(
        self,
        support: Sequence[Doc],
        labels: Sequence[str] | None = None,
        label_definitions: dict[str, str] | None = None,
    ) -> None:
        """Adapt to a few-shot episode: its labels, then its support docs as the `adaptation` setting says (in-prompt
        demonstrations by default; `spacy_fsner.FineTuneAdaptation.v1`: a LoRA adapter trained on them)."""
        check_support_docs(support)
        if labels is not None:
            self.task.set_labels(labels, label_definitions)
        self.adaptation(self, support)

    def _process(self, docs: list[Doc]) -> list[Doc]:
        prompts = list(self.task.generate_prompts(docs))
        responses = list(self.model([prompt] for prompt in prompts))
        out = list(self.task.parse_responses(docs, responses))
        for doc, response in zip(out, responses, strict=True):
            (generations,) = response
            self._count(doc)
            if self.save_io:
                io = doc.user_data.setdefault("llm_io", {})
                io[self.name] = {"prompt": generations.prompts.texts(), "response": generations.texts()}
        return out

    def _count(self, doc: Doc) -> None:
        report = doc.user_data[self.task.report_key]
        lost = {key: len(items) for key, items in report.items() if items}
        self.stats.update(lost)
        self.stats["docs"] += 1
        if lost:
            self._losses.append((doc.text[:40], lost))

    def _warn_once(self) -> None:
        """One warning for the docs with losses since the last call: how many, what was lost in all, the first."""
        losses, self._losses = self._losses, []
        if not losses:
            return
        total: Counter[str] = Counter()
        for _, lost in losses:
            total.update(lost)
        hints = " ".join(hint for keys, hint in _HINTS if any(key in total for key in keys))
        first, first_lost = losses[0]
        if len(losses) == 1:
            summary = f"{dict(total)} in a doc starting {first!r}"
        else:
            summary = f"{dict(total)} in {len(losses)} docs (the first, starting {first!r}: {first_lost})"
        warnings.warn(
            f"{self.name}: {summary}; see doc.user_data['{self.task.report_key}']. {hints}",
            stacklevel=3,
        )

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        """`task.msgpack` (labels, definitions, demonstrations, retrieval index) and the `model` directory; either
        can be left out by name (`exclude=["model"]`), and the task's own fields too (`exclude=["retriever"]`)."""
        exclude = list(exclude)
        Path(path).mkdir(parents=True, exist_ok=True)
        writers: dict[str, Callable[[Path], Any]] = {
            "task.msgpack": lambda p: p.write_bytes(self.task.to_bytes(exclude=exclude))
        }
        if hasattr(self.model, "to_disk"):
            writers["model"] = self.model.to_disk
        util.to_disk(path, writers, exclude)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> FewShotNER:
        exclude = list(exclude)
        readers: dict[str, Callable[[Path], Any]] = {
            "task.msgpack": lambda p: self.task.from_bytes(p.read_bytes(), exclude=exclude)
        }
        if hasattr(self.model, "from_disk"):
            readers["model"] = lambda p: self.model.from_disk(p) if p.is_dir() else None
        util.from_disk(path, readers, exclude)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            self.to_disk(tmp, exclude=exclude)
            files = {str(f.relative_to(tmp)): f.read_bytes() for f in Path(tmp).rglob("*") if f.is_file()}
        return srsly.msgpack_dumps(files)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = ()) -> FewShotNER:
        """Restores into a directory that lives as long as the component (the model loads from it lazily)."""
        self._bytes_dir = tempfile.TemporaryDirectory()
        root = Path(self._bytes_dir.name)
        for name, data in srsly.msgpack_loads(bytes_data).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return self.from_disk(root, exclude=exclude)
