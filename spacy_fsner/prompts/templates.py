"""Prompt templates, registered in spaCy's `misc` registry.

A prompt has three parts, split where what it shares with other prompts changes, so that the generator computes
each shared part once (a prefix tree of KV caches):

- the *prefix*: the same for every input sentence (header, instructions, demonstrations);
- the *suffix*: starts with the input text;
- the *tail*: what follows the input and depends on the label.

The papers' templates (`PromptTemplate`: CLLMFS, OBP-LLM's alpaca prompt) put the label's instruction first, so
the prefix is per label, the tail is empty, and every label pays for its own copy of the sentence.
`SharedInputTemplate` puts the input first and asks for the label after it: the sentence is computed once and
shared by all its labels, each of which adds only a short tail (cost that hardly grows with the number of labels).
`JointTemplate` asks once per input for the entities of every label, each written with its type, in text order:
the label names (and definitions) sit in the prefix, so one prompt serves every label and absent labels cost
nothing. The model writes the entity list in the template's `ResponseFormat` (typed for the joint template).
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from spacy.util import registry

from ..ty import ResponseFormat

Demonstration = tuple[str, Sequence[str]]
"""An example for the prompt: a text and the entity strings of the label, in order."""

AnnotatedText = tuple[str, Mapping[str, Sequence[str]]]
"""An annotated example: a text and, per label, its entity strings in order (a label missing has none)."""


@dataclass(frozen=True)
class PromptContext:
    """What a prompt depends on besides the input and the label: the task's labels, definitions, demonstrations."""

    labels: tuple[str, ...] = ()
    definitions: Mapping[str, str] = field(default_factory=dict)
    examples: tuple[AnnotatedText, ...] = ()

    def demonstrations(self, label: str) -> list[Demonstration]:
        """The examples as seen by one label: each text with that label's entities."""
        return [(text, list(entities.get(label, ()))) for text, entities in self.examples]


@dataclass(frozen=True)
class PromptTemplate:
    header: str
    instruction: str
    """Mentions `{label}` and `{definition}` (the rendered `definition` clause, or "" without a definition)."""
    definition: str
    """Clause for a label definition; mentions `{label}` and `{definition}`."""
    input: str
    """Wraps the input text; mentions `{text}` once."""
    response: str
    """The fixed opening of every response; the model continues after it."""
    fmt: ResponseFormat

    def __post_init__(self) -> None:
        if self.input.count("{text}") != 1:
            raise ValueError(f"A template's `input` must contain '{{text}}' exactly once, got {self.input!r}.")

    def prompt_prefix(self, label: str, context: PromptContext) -> str:
        """The part before the input text (the label's instruction and demonstrations: one per label here)."""
        return self.prefix(label, context.definitions.get(label), context.demonstrations(label))

    def tail(self, label: str) -> str:
        """The part after the suffix: empty here (the label was asked for before the input)."""
        return ""

    def label_offset(self, label: str, context: PromptContext) -> tuple[str, int]:
        """Which part ("prefix" or "tail") mentions the label in the instruction, and at which char offset.

        Found from the template's `{label}` field rather than by searching for the label's string, which may occur
        earlier (a label named "task" in the alpaca header) or in a demonstration.
        """
        definition = context.definitions.get(label)
        clause = self.definition.format(label=label, definition=definition) if definition else ""
        return "prefix", len(self.header) + field_offset(self.instruction, "label", label=label, definition=clause)

    def prefix(self, label: str, definition: str | None, demonstrations: Sequence[Demonstration] = ()) -> str:
        """Header, the instruction for `label`, the demonstrations (texts with that label's entities)."""
        clause = self.definition.format(label=label, definition=definition) if definition else ""
        before_text = self.input.split("{text}")[0]
        # a demonstration is rendered exactly like a live input followed by its answer
        shots = "".join(
            before_text + self.suffix(text) + self.completion(ents) + "\n\n" for text, ents in demonstrations
        )
        return self.header + self.instruction.format(label=label, definition=clause) + shots + before_text

    def suffix(self, text: str) -> str:
        """The input part of the prompt: the text, the end of the input block and the response opening."""
        return text + self.input.split("{text}")[1] + self.response

    def completion(self, entities: Sequence[str]) -> str:
        """What the model should write for `entities` (training target)."""
        return self.fmt.render(entities)

    def definition_lines(self, context: PromptContext) -> str:
        """`definition` rendered for every label of `context` that has a definition, in label order (the templates
        that list all labels' definitions once, before the input)."""
        return "".join(
            self.definition.format(label=name, definition=context.definitions[name])
            for name in context.labels
            if context.definitions.get(name)
        )

    def boilerplate(self) -> str:
        """All fixed text of the template, to train tiny tokenizers on."""
        context = PromptContext(("LABEL",), {"LABEL": "a definition"}, (("An example .", {"LABEL": ["example"]}),))
        return "\n".join(
            [
                self.prompt_prefix("LABEL", context),
                self.suffix("Some input ."),
                self.tail("LABEL"),
                self.completion(["A", "B"]),
                self.completion([]),
            ]
        )


@dataclass(frozen=True)
class SharedInputTemplate(PromptTemplate):
    """The input first, then the label: `header`, one `definition` line per defined label, the demonstrations,
    then `input` (the text) and `response` (shared by all labels), then `instruction` (the label's tail).

    A demonstration is the input followed by every label's question and answer, each rendered exactly as a live
    tail and completion. The prefix depends on the task (its labels, definitions, demonstrations), not on the
    label or the input, so one KV cache serves every prompt; the suffix serves every label of its sentence.
    `empty_answers`: whether a demonstration also shows the labels it has no entity of, with the empty answer. On,
    SmolLM2 in context answered nothing to everything (the empty lines dominate); off, the default, a demonstration
    lists only the labels it has entities of (see docs/results.md for F1).
    """

    empty_answers: bool

    def __post_init__(self) -> None:
        super().__post_init__()
        if "{definition}" in self.instruction:
            raise ValueError(
                "A SharedInputTemplate's `instruction` is the per-label tail after the input: it may mention "
                "'{label}' but not '{definition}' (definitions are listed once, before the input, via `definition`)."
            )

    def prompt_prefix(self, label: str, context: PromptContext) -> str:
        """The same for every label: header, definitions of all labels, demonstrations, start of the input block."""
        definitions = self.definition_lines(context)
        before_text = self.input.split("{text}")[0]
        shots = "".join(
            before_text
            + self.suffix(text)
            + "".join(
                self.tail(name) + self.completion(entities.get(name, ()))
                for name in context.labels
                if self.empty_answers or entities.get(name)
            )
            + "\n"
            for text, entities in context.examples
        )
        return self.header + definitions + ("\n" if definitions else "") + shots + before_text

    def tail(self, label: str) -> str:
        return self.instruction.format(label=label)

    def label_offset(self, label: str, context: PromptContext) -> tuple[str, int]:
        return "tail", field_offset(self.instruction, "label", label=label)


@dataclass(frozen=True)
class JointTemplate(PromptTemplate):
    """One prompt per input for all labels: `header`, `instruction` (mentions `{labels}`, the label names joined by
    ", "), one `definition` line per defined label, the demonstrations, then `input` (the text) and `response`.
    The response lists every entity with its type, in text order, in the typed `fmt`, e.g.
    ` <<< Angela Merkel >>> PER; <<< Paris >>> LOC;` then `fmt.end`.

    A demonstration is its input followed by its typed answer, rendered exactly as a live input and completion; it
    shows only the entities of the context's labels (a training record may ask for a subset of the labels). The
    prefix depends on the task (labels, definitions, demonstrations), not on the label or the input, so one KV
    cache serves every prompt. The `label` argument of the `PromptTemplate` methods is ignored (one prompt serves
    them all); a request's `fmt` carries the labels the constrained decoder may write (`format_for`).
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.fmt.typed:
            raise ValueError("A JointTemplate's response format must be typed (set `label_close`, e.g. ';').")
        if "{labels}" not in self.instruction:
            raise ValueError(f"A JointTemplate's `instruction` must mention '{{labels}}', got {self.instruction!r}.")

    def format_for(self, labels: Sequence[str]) -> ResponseFormat:
        """The response format of a prompt that asks for `labels` (the names the decoder may write)."""
        return dataclasses.replace(self.fmt, labels=tuple(labels))

    def prompt_prefix(self, label: str | None, context: PromptContext) -> str:
        """Header, the label list, definitions of all labels, demonstrations, start of the input block."""
        definitions = self.definition_lines(context)
        before_text = self.input.split("{text}")[0]
        shots = "".join(
            before_text + self.suffix(text) + self.completion(typed_entities(text, entities, context.labels)) + "\n"
            for text, entities in context.examples
        )
        instruction = self.instruction.format(labels=", ".join(context.labels))
        return self.header + instruction + definitions + "\n" + shots + before_text

    def label_offset(self, label: str, context: PromptContext) -> tuple[str, int]:
        """Where the label list names `label` in the prefix."""
        if label not in context.labels:
            raise ValueError(f"The label {label!r} is not among the prompt's labels {list(context.labels)}.")
        joined = ", ".join(context.labels)
        before = sum(len(name) + 2 for name in context.labels[: context.labels.index(label)])
        return "prefix", len(self.header) + field_offset(self.instruction, "labels", labels=joined) + before

    def completion(self, entities: Sequence[tuple[str, str]]) -> str:
        """What the model should write for the (text, label) pairs `entities`, in text order (training target)."""
        return self.fmt.render(entities)

    def boilerplate(self) -> str:
        context = PromptContext(("LABEL",), {"LABEL": "a definition"}, (("An example .", {"LABEL": ["example"]}),))
        return "\n".join(
            [
                self.prompt_prefix(None, context),
                self.suffix("Some input ."),
                self.completion([("A", "LABEL"), ("B", "LABEL")]),
                self.completion([]),
            ]
        )


def typed_entities(text: str, entities: Mapping[str, Sequence[str]], labels: Sequence[str]) -> list[tuple[str, str]]:
    """An annotated text's entities of `labels` as (text, label) pairs in text order.

    `entities` lists each label's strings in order but not where they are: each is placed at its first occurrence
    after the label's previous one, preferring occurrences not inside a longer word; strings not found go last."""
    placed = []
    for label in labels:
        position = 0
        for entity in entities.get(label, ()):
            start = _find_word(text, entity, position)
            placed.append((start if start >= 0 else len(text), len(entity), entity, label))
            position = start + len(entity) if start >= 0 else position
    placed.sort(key=lambda item: (item[0], item[1]))
    return [(entity, label) for _, _, entity, label in placed]


def _find_word(text: str, entity: str, position: int) -> int:
    """The first occurrence of `entity` in `text` at or after `position` not inside a longer word, else the first."""
    pattern = rf"(?<!\w){re.escape(entity)}(?!\w)" if entity else re.escape(entity)
    match = re.compile(pattern).search(text, position)
    return match.start() if match else text.find(entity, position)


def field_offset(pattern: str, name: str, **values: str) -> int:
    """Char offset, in `pattern.format(**values)`, where the field `{name}` first appears."""
    formatter = string.Formatter()
    position = 0
    for literal, field_name, spec, conversion in formatter.parse(pattern):
        position += len(literal)
        if field_name is None:
            continue
        if field_name == name:
            return position
        value = formatter.convert_field(formatter.get_field(field_name, (), values)[0], conversion)
        position += len(formatter.format_field(value, spec or ""))
    raise ValueError(
        f"The template text {pattern!r} does not mention '{{{name}}}': training needs the label's position in the "
        "prompt (and prompts of different labels would be identical). Add it."
    )


INPUT_SECTION = "### Input:\n{text}\n\n"
"""The input sentence in every template here (alpaca's section heading)."""

PAPERS_DEFINITION = ", the entity of {label} refers to {definition}"
"""A label's definition inside the papers' per-label instruction (CLLMFS, OBP-LLM)."""

DEFINITION_LINE = "{label}: {definition}.\n"
"""A label's definition as a line of its own (shared-input template, EL4NER's scoring prompts)."""


@registry.misc("spacy_fsner.CLLMFSTemplate.v1")
def cllmfs_template_v1() -> PromptTemplate:
    """CLLMFS (Sec. 3.1): one instruction per label, response wrapped in `<im_start>`/`<im_end>`."""
    return PromptTemplate(
        header="",
        instruction="### Instruction:\nPlease extract the entity of {label} in the input sentence given below"
        "{definition}.\n\n",
        definition=PAPERS_DEFINITION,
        input=INPUT_SECTION,
        response="### Response:\n<im_start> I can extract entities for you, the extracted entities are",
        fmt=ResponseFormat(open=" <<< ", close=" >>>", end=" <im_end>"),
    )


@registry.misc("spacy_fsner.AlpacaTemplate.v1")
def alpaca_template_v1() -> PromptTemplate:
    """OBP-LLM (Figure 3): the alpaca-lora prompt; the response ends with a full stop."""
    return PromptTemplate(
        header="Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n",
        instruction="### Instruction:\nI want you to extract {label} entities from the following input sentence"
        "{definition}.\n\n",
        definition=PAPERS_DEFINITION,
        input=INPUT_SECTION,
        response="### Response:\nThe entities I extracted for you are",
        fmt=ResponseFormat(open=" <<< ", close=" >>>", end="."),
    )


@registry.misc("spacy_fsner.SharedInputTemplate.v1")
def shared_input_template_v1(
    header: str = "### Instruction:\nCopy from the input sentence the entities of the type named after it, each as "
    "<<< entity >>>, in order; write nothing when it has none.\n\n",
    instruction: str = "{label}:",
    definition: str = DEFINITION_LINE,
    input: str = INPUT_SECTION,
    response: str = "### Entities:\n",
    empty_answers: bool = False,
) -> PromptTemplate:
    """The input before the label, so that one sentence's KV cache serves all its labels (throughput: 18 labels
    cost little more than 4). One short question line per label; each answer ends with a newline.

    Every part can be set from a config (`[components.fsner.template]`), `empty_answers = true` included (see
    `SharedInputTemplate`); the defaults are the prompt docs/results.md measures."""
    return SharedInputTemplate(
        header=header,
        instruction=instruction,
        definition=definition,
        input=input,
        response=response,
        fmt=ResponseFormat(open=" <<< ", close=" >>>", end="\n"),
        empty_answers=empty_answers,
    )


JOINT_HEADER = (
    "### Instruction:\nCopy from the input sentence every entity of the types listed below, in order, each as "
    "<<< entity >>> followed by its type and a semicolon; write nothing when it has none.\n"
)
"""The joint template's instruction, before its list of labels."""


@registry.misc("spacy_fsner.JointTemplate.v1")
def joint_template_v1(
    header: str = JOINT_HEADER,
    instruction: str = "Types: {labels}.\n",
    definition: str = DEFINITION_LINE,
    input: str = INPUT_SECTION,
    response: str = "### Entities:\n",
) -> JointTemplate:
    """One prompt per sentence for all labels, each entity written with its type (` <<< Paris >>> LOC;`): the label
    names sit in the shared prefix, so absent labels cost nothing and 18 labels cost little more than 4.

    Every part can be set from a config (`[components.fsner.template]`); `instruction` must mention `{labels}`."""
    typed = ResponseFormat(open=" <<< ", close=" >>>", end="\n", label_open=" ", label_close=";")
    return JointTemplate(header, instruction, definition, input, response, typed)
