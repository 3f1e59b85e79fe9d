"""The scores the papers report, each computed the way the paper that reports it does, so numbers compare.

All take spaCy `Example`s (`example.predicted.ents` against `example.reference.ents`); the episode protocols
take one list of Examples per episode (its query sentences). Which entities count is decided once, in
`spans.py` (spaCy's rules), and all counting goes through `counts.tally`.

| function           | an entity is             | aggregation                 | source                      |
| ------------------ | ------------------------ | --------------------------- | --------------------------- |
| `span_exact`       | (type, token span)       | micro over sentences        | spaCy's scorer              |
| `fewnerd_episodes` | (type, token span)       | micro over all episodes     | Few-NERD (Ding et al. 2021) |
| `hou_episodes`     | (type, token span)       | mean of per-episode P, R, F | Hou et al. 2020             |
| `string_level`     | (type, normalised text)  | micro over sentences, sets  | UniNER / GNER               |
| `boundary_errors`  | a predicted span         | share of predictions        | OBP-LLM, Table 5            |
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

from spacy.training import Example

from .counts import PRF, Key, Scores, tally
from .spans import EntSpan, scored_ents

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class EpisodeMean:
    """Per-episode span-exact counts, scored as the unweighted mean of each episode's P, R and F."""

    episodes: tuple[PRF, ...]

    @property
    def p(self) -> float:
        return sum(e.p for e in self.episodes) / len(self.episodes)

    @property
    def r(self) -> float:
        return sum(e.r for e in self.episodes) / len(self.episodes)

    @property
    def f(self) -> float:
        return sum(e.f for e in self.episodes) / len(self.episodes)

    @property
    def n_empty(self) -> int:
        """Episodes with no gold and no predicted entity (each scores P = R = F = 0)."""
        return sum(1 for e in self.episodes if not e.tp + e.fp + e.fn)

    def as_dict(self) -> dict[str, float | int]:
        n_episodes = len(self.episodes)
        return {"p": self.p, "r": self.r, "f": self.f, "n_episodes": n_episodes, "n_empty": self.n_empty}


@dataclass(frozen=True)
class BoundaryErrors:
    """How many predicted spans are boundary errors, out of how many predicted spans."""

    count: int
    n_pred: int

    @property
    def rate(self) -> float:
        return self.count / self.n_pred if self.n_pred else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"rate": self.rate, "count": self.count, "n_pred": self.n_pred}


Result = Scores | EpisodeMean | BoundaryErrors


def normalize_text(text: str) -> str:
    """UniNER's `normalize_answer` (SQuAD's): lowercase, delete ASCII punctuation, delete the articles
    a/an/the, collapse whitespace. Punctuation goes everywhere, not only at the ends:
    "U.S.-based" -> "usbased". Source: universal-ner/universal-ner src/eval/evaluate.py, copied by GNER's
    src/gner_evaluator.py.
    """
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _span_key(ent: EntSpan) -> Key:
    return ent.label, (ent.start, ent.end)


def _string_key(ent: EntSpan) -> Key:
    return ent.label, normalize_text(ent.text)


def _score(examples: Iterable[Example], key: Callable[[EntSpan], Key]) -> Scores:
    return tally(([key(e) for e in ents.gold], [key(e) for e in ents.pred]) for ents in scored_ents(examples))


def span_exact(examples: Iterable[Example]) -> Scores:
    """Span-exact micro P/R/F and per-type P/R/F: an entity is right when its type and its token span both
    equal a gold entity's. Gives the numbers of spaCy's `get_ner_prf` / `Scorer.score_spans(examples,
    "ents")` (same alignment and missing-annotation rules), plus the tp/fp/fn counts; `.to_spacy()` gives
    spaCy's dict. Equals seqeval's strict IOB2 scores on the same tags.
    """
    return _score(examples, _span_key)


def string_level(examples: Iterable[Example]) -> Scores:
    """String-level P/R/F as UniNER and GNER report it: per example (their unit is the sentence or passage),
    the SET of (type, `normalize_text(entity text)`) pairs of the gold and of the predicted entities;
    counts summed over examples (micro). Under set semantics two mentions of the same string with the same
    type count once, wherever they are. UniNER also normalises the type string; our types come from a fixed
    label set, so the raw label is kept (same counts unless two labels normalise alike). UniNER adds 1e-10 to
    each denominator; we do not (a relative difference of about 1e-10 / denominator).
    """
    return _score(examples, _string_key)


def boundary_errors(examples: Iterable[Example]) -> BoundaryErrors:
    """Boundary-error rate as OBP-LLM's Table 5 reports it: a predicted span is a boundary error when it is
    not an exact match but overlaps (shares at least one token with) a gold span of the same type, i.e. the
    type is right and a boundary is off. rate = count / number of predicted spans (the spans `span_exact`
    scores, so n_pred = tp + fp there); 0.0 when nothing is predicted. The paper reports the relative change
    of this rate between two systems; compute that from two results.
    """
    count = n_pred = 0
    for ents in scored_ents(examples):
        exact = {_span_key(g) for g in ents.gold}
        pred = {_span_key(p): p for p in ents.pred}
        n_pred += len(pred)
        count += sum(
            1
            for key, p in pred.items()
            if key not in exact and any(g.label == p.label and g.overlaps(p) for g in ents.gold)
        )
    return BoundaryErrors(count, n_pred)


def _checked_episodes(episodes: Sequence[Sequence[Example]]) -> list[list[Example]]:
    if isinstance(episodes, Example):
        raise TypeError("got one Example: pass a list of episodes, each a list of Examples")
    checked = []
    for i, episode in enumerate(episodes):
        if isinstance(episode, Example):
            raise TypeError(
                f"episode {i} is a single Example, not a list: pass one list of Examples per episode "
                "(for a flat list of Examples, use span_exact)"
            )
        episode = list(episode)
        if not episode:
            raise ValueError(
                f"episode {i} has no examples: every episode must hold its query sentences; check the "
                "prediction step or drop the episode"
            )
        checked.append(episode)
    if not checked:
        raise ValueError("no episodes to score: pass a list with one list of Examples per episode")
    return checked


def fewnerd_episodes(episodes: Sequence[Sequence[Example]]) -> Scores:
    """Few-NERD's protocol: span-exact tp/fp/fn summed over the query sentences of all episodes, then P/R/F
    once (thunlp/Few-NERD util/framework.py accumulates correct/pred/label counts over all episodes).
    """
    return span_exact(chain.from_iterable(_checked_episodes(episodes)))


def hou_episodes(episodes: Sequence[Sequence[Example]]) -> EpisodeMean:
    """Hou et al. 2020's protocol: span-exact P, R and F1 of each episode, then their means over episodes
    (AtmaHou/FewShotTagging utils/tester.py runs conlleval per episode and averages its F1). The mean F is the
    mean of per-episode F, not the F of the mean P and R. As in conlleval, a ratio with a zero denominator is
    0, so an episode with no gold and no predicted entity scores P = R = F = 0 and pulls the mean down; the
    result counts such episodes in `n_empty`. (We keep full precision; conlleval rounds to 0.01%.)
    """
    return EpisodeMean(tuple(span_exact(episode).micro for episode in _checked_episodes(episodes)))


def score_all(
    examples: Sequence[Example] | None = None, *, episodes: Sequence[Sequence[Example]] | None = None
) -> dict[str, Result]:
    """Every score here on either a flat list of `examples` or a list of `episodes` (then the
    sentence-level scores run over all query sentences and both episode protocols are added).
    """
    if (examples is None) == (episodes is None):
        raise ValueError(
            "pass exactly one of examples (a flat list of Examples) or episodes= (one list of Examples per episode)"
        )
    if episodes is not None:
        episodes = _checked_episodes(episodes)
        examples = list(chain.from_iterable(episodes))
    else:
        examples = list(examples)
    results: dict[str, Result] = {
        "span_exact": span_exact(examples),
        "string_level": string_level(examples),
        "boundary_errors": boundary_errors(examples),
    }
    if episodes is not None:
        results["fewnerd_episodes"] = fewnerd_episodes(episodes)
        results["hou_episodes"] = hou_episodes(episodes)
    return results
