"""What an ensemble member can do: write constrained entity lists, and score fixed options.

A member is built from any model config of the `llm_models` registry: a `spacy_fsner.CausalLM.v1` (SmolLM2,
Gemma-3, a Llama on a GPU) is wrapped in `LMMember`; an object that already has `extract` and `score` (a scripted
member in the tests) is used as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..decoding.scoring import score_options
from ..ty import Generation, GenerationRequest


@runtime_checkable
class Member(Protocol):
    def extract(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One constrained generation per request (the entities it copies from the input)."""
        ...

    def score(self, prefix: str, questions: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Per question, the log-probability of each option after `prefix + question`."""
        ...


class LMMember:
    """A `CausalLM` as a member: its generator extracts, `score_options` scores."""

    def __init__(self, lm) -> None:
        self.lm = lm

    def extract(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return self.lm.generator.generate(list(requests))

    def score(self, prefix: str, questions: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        generator = self.lm.generator
        return score_options(generator.model, generator.tokenizer, prefix, questions)


def as_member(model, name: str) -> Member:
    if isinstance(model, Member):
        return model
    if hasattr(model, "generator"):
        return LMMember(model)
    raise TypeError(
        f"EL4NER member {name!r} is a {type(model).__name__}, which can neither generate constrained answers nor "
        "score options: use a model config such as {'@llm_models': 'spacy_fsner.CausalLM.v1', 'name': ...}."
    )
