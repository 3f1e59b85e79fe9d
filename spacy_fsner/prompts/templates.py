"""Prompt templates of the papers, registered in spaCy's `misc` registry.

A prompt is split where the input text starts: the *prefix* (header, instruction for one label, demonstrations)
is the same for every input and is computed once per batch (KV cache); the *suffix* carries the input text and
the fixed start of the response. The model then writes the entity list in the template's `ResponseFormat`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spacy.util import registry

from ..decoding.constraint import ResponseFormat

Demonstration = tuple[str, Sequence[str]]
"""An example for the prompt: a text and the entity strings of the label, in order."""


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

    def prefix(self, label: str, definition: str | None, demonstrations: Sequence[Demonstration] = ()) -> str:
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

    def boilerplate(self) -> str:
        """All fixed text of the template, to train tiny tokenizers on."""
        return "\n".join(
            [
                self.prefix("LABEL", "a definition", [("An example .", ["example"])]),
                self.suffix("Some input ."),
                self.completion(["A", "B"]),
                self.completion([]),
            ]
        )


@registry.misc("spacy_fsner.CLLMFSTemplate.v1")
def cllmfs_template_v1() -> PromptTemplate:
    """CLLMFS (Sec. 3.1): one instruction per label, response wrapped in `<im_start>`/`<im_end>`."""
    return PromptTemplate(
        header="",
        instruction="### Instruction:\nPlease extract the entity of {label} in the input sentence given below"
        "{definition}.\n\n",
        definition=", the entity of {label} refers to {definition}",
        input="### Input:\n{text}\n\n",
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
        definition=", the entity of {label} refers to {definition}",
        input="### Input:\n{text}\n\n",
        response="### Response:\nThe entities I extracted for you are",
        fmt=ResponseFormat(open=" <<< ", close=" >>>", end="."),
    )
