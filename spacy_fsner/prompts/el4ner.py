"""EL4NER's prompts (the `el4ner` component, `ensemble/el4ner.py`), registered in spaCy's `misc` registry.

- **extraction** renders the component's `template` (a `PromptTemplate`) for one label, `EXTRACTION_LABEL`, defined
  as any of the task's types (`extraction_context`): the members copy untyped spans.
- **type classification** (`ClassificationTemplate`, `spacy_fsner.EL4NERClassifyTemplate.v1`): the demonstrations
  with each entity's type, then the input; each span is a question (`{text}:`) whose options are the types.
- **self-validation** (`ValidationTemplate`, `spacy_fsner.EL4NERValidateTemplate.v1`): the demonstrations with a
  right and a wrong type for each entity, answered Yes and No, then the input; each typed span is a question
  (`{text} is {label}?`) with the options Yes and No.

Both scoring prompts are: `instruction` (naming the types), one `definition` line per defined type, a blank line,
the demonstrations (each `input` then `response` then its answer lines and a blank line), the live `input` and
`response`. An answer line is the question followed by its option and a newline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from spacy.util import registry

from .templates import DEFINITION_LINE, INPUT_SECTION, PromptContext

EXTRACTION_LABEL = "entity"
"""The one label of the extraction prompts (types come later)."""

EXTRACTION_DEFINITION = "a name of one of these types: {labels}"
"""Its definition; `{labels}`: the task's types, comma-separated."""

Mentions = tuple[str, Sequence[tuple[str, str]]]
"""A demonstration of the scoring prompts: a text and its entities as (label, text) pairs, in order."""


def extraction_context(labels: Sequence[str], examples: Sequence[tuple[str, Sequence[str]]]) -> PromptContext:
    """The extraction prompts' context: `EXTRACTION_LABEL` for every type, demonstrations (text, entity strings)."""
    definition = EXTRACTION_DEFINITION.format(labels=", ".join(labels))
    shots = tuple((text, {EXTRACTION_LABEL: list(spans)}) for text, spans in examples)
    return PromptContext((EXTRACTION_LABEL,), {EXTRACTION_LABEL: definition}, shots)


@dataclass(frozen=True)
class ScoringTemplate:
    """What the classification and validation prompts share (see the module docstring)."""

    instruction: str
    """Mentions `{labels}` (the types, comma-separated) or not."""
    response: str
    """Opens the answer lines after each input."""
    question: str
    """One span's question: mentions `{text}` (the span) and may mention `{label}` (its type)."""
    definition: str
    """One line per defined type: mentions `{label}` and `{definition}`."""
    input: str
    """An input sentence: mentions `{text}`."""

    def header(self, labels: Sequence[str], definitions: Mapping[str, str]) -> str:
        """The instruction and the definitions of the types that have one."""
        defined = "".join(
            self.definition.format(label=label, definition=definitions[label])
            for label in labels
            if label in definitions
        )
        return self.instruction.format(labels=", ".join(labels)) + defined + "\n"

    def block(self, text: str) -> str:
        """An input and the opening of its answers."""
        return self.input.format(text=text) + self.response

    def line(self, text: str, label: str, option: str) -> str:
        """An answer line: the question about `text` (of type `label`) and its `option`."""
        return self.question.format(text=text, label=label) + option + "\n"


@dataclass(frozen=True)
class ClassificationTemplate(ScoringTemplate):
    """Type classification: each span's question has one option per type."""

    option: str
    """A type as the answer to a question."""

    def options(self, labels: Sequence[str]) -> list[str]:
        return [self.option.format(label=label) for label in labels]

    def prompt_prefix(
        self, labels: Sequence[str], definitions: Mapping[str, str], examples: Sequence[Mentions], text: str
    ) -> str:
        """Each demonstration with the type of each of its entities (of the known types), then the input."""
        shots = "".join(
            self.block(shot)
            + "".join(
                self.line(mention, label, self.option.format(label=label))
                for label, mention in mentions
                if label in labels
            )
            + "\n"
            for shot, mentions in examples
        )
        return self.header(labels, definitions) + shots + self.block(text)

    def questions(self, labels: Sequence[str], spans: Sequence[str]) -> list[tuple[str, list[str]]]:
        options = self.options(labels)
        return [(self.question.format(text=span, label=""), options) for span in spans]


@dataclass(frozen=True)
class ValidationTemplate(ScoringTemplate):
    """Self-validation: is this span of this type? Options `yes` and `no`."""

    yes: str
    no: str

    def prompt_prefix(
        self, labels: Sequence[str], definitions: Mapping[str, str], examples: Sequence[Mentions], text: str
    ) -> str:
        """Each demonstration once (if it has entities of the known types), with a right type (Yes) and a wrong one
        (No: the next type in `labels`) for each entity, then the input."""
        shots = []
        for shot, mentions in examples:
            answers = ""
            for label, mention in mentions:
                if label not in labels:
                    continue
                wrong = labels[(labels.index(label) + 1) % len(labels)]
                answers += self.line(mention, label, self.yes) + (
                    self.line(mention, wrong, self.no) if wrong != label else ""
                )
            if answers:
                shots.append(self.block(shot) + answers + "\n")
        return self.header(labels, definitions) + "".join(shots) + self.block(text)

    def questions(self, spans: Sequence[tuple[str, str]]) -> list[tuple[str, tuple[str, str]]]:
        """One question per (span text, type)."""
        return [(self.question.format(text=text, label=label), (self.yes, self.no)) for text, label in spans]


@registry.misc("spacy_fsner.EL4NERClassifyTemplate.v1")
def el4ner_classify_template_v1(
    instruction: str = "### Instruction:\nGive the type of each entity of the input: one of {labels}.\n",
    definition: str = DEFINITION_LINE,
    input: str = INPUT_SECTION,
    response: str = "### Types:\n",
    question: str = "{text}:",
    option: str = " {label}",
) -> ClassificationTemplate:
    """EL4NER's type classification prompt: "Merkel: PER" lines; the options are " PER", " LOC", ..."""
    return ClassificationTemplate(instruction, response, question, definition, input, option)


@registry.misc("spacy_fsner.EL4NERValidateTemplate.v1")
def el4ner_validate_template_v1(
    instruction: str = "### Instruction:\nAnswer Yes if the entity is of the type named in the input, else No.\n",
    definition: str = DEFINITION_LINE,
    input: str = INPUT_SECTION,
    response: str = "### Answers:\n",
    question: str = "{text} is {label}?",
    yes: str = " Yes",
    no: str = " No",
) -> ValidationTemplate:
    """EL4NER's self-validation prompt: "Paris is LOC? Yes" / "Paris is ORG? No" lines."""
    return ValidationTemplate(instruction, response, question, definition, input, yes, no)
