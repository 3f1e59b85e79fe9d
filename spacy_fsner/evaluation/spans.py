"""Which gold and predicted entities of a spaCy `Example` get scored, in the reference's token indices.

One place for the rules, so every score sees the same entities. They are those of spaCy's `get_ner_prf`
(what `EntityRecognizer.score` and spacy-llm's NER task use):
- an example whose reference has no entity annotation at all is skipped;
- a predicted entity is mapped onto the reference tokens through `example.alignment` (the two docs may be
  tokenised differently) and covers the first to the last reference token it aligns with;
- a predicted entity over reference tokens whose annotation is missing (`ent_iob == 0`) is neither right nor
  wrong and is left out, as is one that aligns with no reference token (whitespace only).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from spacy.training import Example


@dataclass(frozen=True)
class EntSpan:
    """An entity: its type, its token range [start, end) in the reference doc, and its text in its own doc."""

    label: str
    start: int
    end: int
    text: str

    def overlaps(self, other: EntSpan) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class ExampleEnts:
    """The gold and predicted entities of one example that are scored."""

    gold: tuple[EntSpan, ...]
    pred: tuple[EntSpan, ...]


def example_ents(example: Example) -> ExampleEnts | None:
    """The scored entities of `example`, or None when its reference has no entity annotation."""
    reference = example.reference
    if not reference.has_annotation("ENT_IOB"):
        return None
    gold = tuple(EntSpan(ent.label_, ent.start, ent.end, ent.text) for ent in reference.ents)
    x2y = example.alignment.x2y
    pred = []
    for ent in example.predicted.ents:
        indices = x2y[ent.start : ent.end]
        if not len(indices):
            continue
        start, end = int(indices[0]), int(indices[-1]) + 1
        if all(token.ent_iob != 0 for token in reference[start:end]):
            pred.append(EntSpan(ent.label_, start, end, ent.text))
    return ExampleEnts(gold, tuple(pred))


def scored_ents(examples: Iterable[Example]) -> Iterator[ExampleEnts]:
    """`example_ents` of each annotated example; raises TypeError on anything that is not an `Example`."""
    for i, example in enumerate(examples):
        if not isinstance(example, Example):
            raise TypeError(
                f"item {i} is a {type(example).__name__}, not a spacy.training.Example: build one per "
                "sentence with Example(predicted_doc, reference_doc) (episodes, lists of lists of "
                "Examples, go to fewnerd_episodes or hou_episodes)"
            )
        ents = example_ents(example)
        if ents is not None:
            yield ents
