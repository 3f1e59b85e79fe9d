"""Adapting the `fsner` component to a few-shot episode; strategies are registered in spaCy's `misc` registry and
chosen by the component's `adaptation` setting. `FewShotNER.adapt(support, labels, label_definitions)` sets the
episode's labels, then calls the strategy with the component and the support docs.

- `spacy_fsner.InContextAdaptation.v1` (the default, here): the support docs become in-prompt demonstrations.
- `spacy_fsner.FineTuneAdaptation.v1` (`training.adaptation`): a LoRA adapter trained on the support docs; it
  lives with the trainers and is imported only when a config names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from spacy.tokens import Doc
from spacy.util import registry

if TYPE_CHECKING:
    from .fsner import FewShotNER


def check_support_docs(support: Sequence[Doc]) -> None:
    """An error naming what `adapt` takes when the support set holds something other than spaCy Docs."""
    if isinstance(support, Doc | str):
        support = [support]
    wrong = next((item for item in support if not isinstance(item, Doc)), None)
    if wrong is not None:
        raise TypeError(
            f"adapt takes spaCy Docs with gold entities as its support set, found {type(wrong).__name__} "
            f"{str(wrong)[:40]!r}: make one with `doc = nlp.make_doc(text)` and `doc.ents = [...]`, or pass "
            "`example.reference` of spaCy Examples."
        )


@runtime_checkable
class Adaptation(Protocol):
    """What `FewShotNER.adapt` calls once the task has the episode's labels."""

    def __call__(self, component: FewShotNER, support: Sequence[Doc]) -> None: ...


class InContextAdaptation:
    """The support docs as in-prompt demonstrations for every label; the model as loaded."""

    def __call__(self, component: FewShotNER, support: Sequence[Doc]) -> None:
        restore = getattr(component.model, "restore_model", None)
        if callable(restore):
            restore()
        component.task.set_demonstrations(support)


@registry.misc("spacy_fsner.InContextAdaptation.v1")
def in_context_adaptation_v1() -> InContextAdaptation:
    """Each episode's support docs as in-prompt demonstrations (the default)."""
    return InContextAdaptation()
