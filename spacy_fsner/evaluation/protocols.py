"""Running a pipeline over gold data and scoring it: a corpus (every sentence, the pipeline as it is) or an
episode file (each episode: adapt the pipeline to its support set and types, then tag its query sentences).

`evaluate` is what `python -m spacy_fsner evaluate` calls; `evaluate_corpus` and `evaluate_episodes` work on
a loaded pipeline and docs/episodes already read. Predicted docs are fresh copies of the gold docs' words and
spaces (no entities), so the scores use the gold tokenization, as the benchmarks do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example

from ..data.readers import Episode, detect_format, read_corpus, read_episodes
from ..log import logger
from .intervals import Interval, bootstrap_f1, unit_counts
from .scores import Result, score_all

PROTOCOLS = ("auto", "corpus", "fewnerd", "hou")
"""auto: episodes when DATA holds episodes, else corpus; fewnerd/hou: episodes, with that protocol first."""

HEADLINES = {"corpus": "span_exact", "fewnerd": "fewnerd_episodes", "hou": "hou_episodes"}
"""The result reported first for each protocol (every score is kept)."""

DEFAULT_COMPONENT = "fsner"


@dataclass
class Evaluation:
    """Scores (the headline first, as `score_all` names them), the settings that produced them, and the examples
    scored: one Example (predicted and gold doc) per document of a corpus, or one list of Examples (the query
    sentences) per episode; `html_report.write_report(evaluation.examples, path)` shows them."""

    results: dict[str, Result | Interval]
    settings: dict[str, Any] = field(default_factory=dict)
    examples: list[Example] | list[list[Example]] = field(default_factory=list, repr=False)


def predict(nlp: Language, gold: Iterable[Doc], *, batch_size: int = 32, progress: bool = False) -> list[Example]:
    """Examples whose predicted docs are `nlp` run over entity-free copies of the gold docs (with a tqdm bar over
    the docs as they come out of the pipeline when `progress`)."""
    gold = list(gold)
    fresh = (Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc]) for doc in gold)
    predicted = nlp.pipe(fresh, batch_size=batch_size)
    if progress:
        from tqdm import tqdm

        predicted = tqdm(predicted, total=len(gold), desc="docs", unit="doc")
    return [Example(pred, ref) for pred, ref in zip(predicted, gold, strict=True)]


def find_adaptable(nlp: Language, name: str | None = None) -> tuple[str, Any]:
    """The component that adapts to an episode (has an `adapt` method): `name`, else the one named "fsner",
    else the only one there is. Raises a ValueError naming the fix when there is none or the choice is unclear.
    """
    if name is not None:
        if name not in nlp.pipe_names:
            raise ValueError(f"the pipeline has no component {name!r}; its components are {nlp.pipe_names}")
        if not callable(getattr(nlp.get_pipe(name), "adapt", None)):
            raise ValueError(
                f"component {name!r} has no adapt method, so it cannot take an episode's support set and types; "
                f"pass the name of an fsner component with --component (components: {nlp.pipe_names})"
            )
        return name, nlp.get_pipe(name)
    adaptable = [(n, pipe) for n, pipe in nlp.pipeline if callable(getattr(pipe, "adapt", None))]
    named = [(n, pipe) for n, pipe in adaptable if n == DEFAULT_COMPONENT]
    if named or len(adaptable) == 1:
        return (named or adaptable)[0]
    if not adaptable:
        raise ValueError(
            f"episode evaluation adapts the pipeline to each episode, but no component of {nlp.pipe_names or '[]'} "
            "has an adapt method: add one (e.g. nlp.add_pipe('fsner', config=...)) and save the pipeline again, "
            "or score a corpus file (CoNLL, token-tag or .spacy) instead"
        )
    raise ValueError(
        f"components {[n for n, _ in adaptable]} can all adapt to an episode: choose one with --component NAME"
    )


def evaluate_corpus(
    nlp: Language, docs: Sequence[Doc], *, batch_size: int = 32, progress: bool = True
) -> dict[str, Result]:
    """Every sentence-level score (`score_all(examples)`) of `nlp` on the gold `docs`."""
    return score_all(corpus_examples(nlp, docs, batch_size=batch_size, progress=progress))


def corpus_examples(
    nlp: Language, docs: Sequence[Doc], *, batch_size: int = 32, progress: bool = True
) -> list[Example]:
    """`nlp`'s predictions on the gold `docs`, as Examples."""
    if not docs:
        raise ValueError("no gold sentences to evaluate: check the data file (and --limit)")
    return predict(nlp, docs, batch_size=batch_size, progress=progress)


def evaluate_episodes(
    nlp: Language,
    episodes: Sequence[Episode],
    *,
    component: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Result]:
    """For each episode: `adapt(episode.support, labels=episode.types)` on the adaptable component (see
    `find_adaptable`), tag the query sentences; then `score_all(episodes=...)` (Few-NERD's and Hou et al.'s
    protocols and the sentence-level scores over all query sentences). The pipeline stays adapted to the last
    episode.
    """
    return score_all(
        episodes=episode_examples(nlp, episodes, component=component, batch_size=batch_size, progress=progress)
    )


def episode_examples(
    nlp: Language,
    episodes: Sequence[Episode],
    *,
    component: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> list[list[Example]]:
    """Each episode's query sentences as Examples, predicted after `adapt` to its support set and types."""
    if not episodes:
        raise ValueError("no episodes to evaluate: check the episode file (and --limit)")
    _, pipe = find_adaptable(nlp, component)
    if progress:
        from tqdm import tqdm

        episodes = tqdm(episodes, desc="episodes", unit="ep")
    per_episode = []
    for episode in episodes:
        pipe.adapt(episode.support, labels=episode.types)
        per_episode.append(predict(nlp, episode.query, batch_size=batch_size))
    return per_episode


def resolve_protocol(data: str | Path, protocol: str = "auto", data_format: str = "auto") -> str:
    """The protocol to run on `data` ("corpus", "fewnerd" or "hou"): auto picks fewnerd for an episode file,
    corpus otherwise. Raises a ValueError when an episode protocol is asked of a file without episodes."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if Path(data).suffix == ".spacy":
        episodic = False
    elif data_format == "auto":
        episodic = detect_format(data) == "episodes"
    else:
        episodic = data_format == "episodes"
    if protocol == "auto":
        return "fewnerd" if episodic else "corpus"
    if protocol != "corpus" and not episodic:
        raise ValueError(
            f"protocol {protocol!r} scores episodes, but {data} holds sentences, not Few-NERD episodes: use "
            "--protocol corpus, or sample episodes first (python -m spacy_fsner sample-episodes)"
        )
    return protocol


def _component_settings(nlp: Language, name: str | None, stats_before: Counter[str]) -> dict[str, Any]:
    """The evaluated component's name, labels and model name, and its counters of what it could not place
    during this run (fsner's `stats`), where the component has them."""
    if name is None:
        return {}
    pipe = nlp.get_pipe(name)
    settings: dict[str, Any] = {"component": name}
    if hasattr(pipe, "labels"):
        settings["labels"] = list(pipe.labels)
    component_config = nlp.config.interpolate()["components"].get(name, {})  # ${paths.*} resolved
    model = component_config.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str):
        settings["model"] = model["name"]
    if isinstance(component_config.get("adaptation"), dict):
        settings["adaptation"] = dict(component_config["adaptation"])
    if isinstance(getattr(pipe, "stats", None), Counter):
        settings["component_stats"] = dict(pipe.stats - stats_before)
    return settings


def _stats(nlp: Language, name: str | None) -> Counter[str]:
    stats = getattr(nlp.get_pipe(name), "stats", None) if name is not None else None
    return Counter(stats) if isinstance(stats, Counter) else Counter()


def _corpus_component(nlp: Language, name: str | None) -> str | None:
    """The component a corpus run describes in its settings: `name`, else the adaptable one if any."""
    if name is not None:
        if name not in nlp.pipe_names:
            raise ValueError(f"the pipeline has no component {name!r}; its components are {nlp.pipe_names}")
        return name
    try:
        return find_adaptable(nlp)[0]
    except ValueError:
        return None


def _warn_label_mismatch(nlp: Language, name: str | None, docs: Sequence[Doc], data: str | Path) -> None:
    """A warning when the component's labels and the gold data's entity types differ: gold entities of a type it
    does not predict are all misses, its entities of a type the gold data lacks all false positives."""
    labels = getattr(nlp.get_pipe(name), "labels", None) if name is not None else None
    if not labels:
        return
    gold = sorted({ent.label_ for doc in docs for ent in doc.ents})
    unpredicted = [label for label in gold if label not in labels]
    if not unpredicted and all(label in gold for label in labels):
        return
    overlap = "none of them" if len(unpredicted) == len(gold) else f"only {sorted(set(gold) & set(labels))}"
    logger.warning(
        f"The pipeline's labels {sorted(labels)} differ from the entity types of {data} {gold} ({overlap} in "
        f"common): gold entities of {unpredicted or 'no type'} cannot be found, so the scores count them as misses. "
        "Evaluate on data with the pipeline's types, or set the pipeline's labels to the data's (e.g. "
        "`--components.fsner.labels` when training, `adapt(support, labels=...)`)."
    )


def _nlp_name(nlp: Language) -> str:
    """`lang_name` of a pipeline in memory (from its meta), for the settings."""
    return f"{nlp.meta.get('lang', nlp.lang)}_{nlp.meta.get('name', 'pipeline')}"


def _headline_first(results: dict[str, Result], protocol: str) -> dict[str, Result]:
    """The protocol's headline result first, the other episode protocol (if any) next, then the rest."""
    first = [HEADLINES[protocol], *(k for k in ("fewnerd_episodes", "hou_episodes") if k in results)]
    return {k: results[k] for k in dict.fromkeys([*first, *results])}


def evaluate(
    pipeline: str | Path | Language,
    data: str | Path,
    *,
    protocol: str = "auto",
    component: str | None = None,
    batch_size: int = 32,
    limit: int = 0,
    data_format: str = "auto",
    scheme: str = "auto",
    progress: bool = True,
    resamples: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Score a pipeline (a directory or a loaded `Language`) on a corpus or an episode file (see `PROTOCOLS`).

    limit: only the first `limit` docs or episodes (0: all). data_format/scheme: as for `read_docs` (a
    `.spacy` file is always read as a DocBin). The settings record what produced the numbers. The headline F1
    (and, for episodes, Hou et al.'s mean F1) comes with a 95% bootstrap interval over `resamples` draws of the
    documents or episodes (`intervals`; `<score>_interval` in the results; none with 0 resamples or with a single
    doc or episode).
    """
    if limit < 0:
        raise ValueError(f"limit={limit}: use 0 for no limit or a positive number of docs/episodes")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: use a positive number of docs per batch")
    protocol = resolve_protocol(data, protocol, data_format)
    if isinstance(pipeline, Language):
        nlp, pipeline_name = pipeline, _nlp_name(pipeline)
    else:
        import spacy

        nlp, pipeline_name = spacy.load(pipeline), str(pipeline)
    settings: dict[str, Any] = {
        "pipeline": pipeline_name,
        "data": str(data),
        "protocol": protocol,
        "headline": HEADLINES[protocol],
        "batch_size": batch_size,
        "limit": limit,
        "resamples": resamples,
        "seed": seed,
    }
    if protocol == "corpus":
        name = _corpus_component(nlp, component)
        before = _stats(nlp, name)
        docs = read_corpus(data, nlp, data_format=data_format, scheme=scheme, limit=limit)
        _warn_label_mismatch(nlp, name, docs, data)
        examples = corpus_examples(nlp, docs, batch_size=batch_size, progress=progress)
        results = score_all(examples)
        if resamples and len(examples) > 1:  # an interval needs two units to resample
            counts = unit_counts([[example] for example in examples])
            results["span_exact_interval"] = bootstrap_f1(counts, unit="documents", resamples=resamples, seed=seed)
        settings["n_docs"] = len(docs)
        settings.update(_component_settings(nlp, name, before))
    else:
        name, _ = find_adaptable(nlp, component)  # fail before reading the episodes
        before = _stats(nlp, name)
        episodes = list(islice(read_episodes(data, nlp.vocab), limit or None))
        per_episode = episode_examples(nlp, episodes, component=name, batch_size=batch_size, progress=progress)
        results = score_all(episodes=per_episode)
        if resamples and len(per_episode) > 1:
            counts = unit_counts(per_episode)
            for score, statistic in (("fewnerd_episodes", "micro"), ("hou_episodes", "mean")):
                results[f"{score}_interval"] = bootstrap_f1(
                    counts, statistic=statistic, unit="episodes", resamples=resamples, seed=seed
                )
        settings["n_episodes"] = len(episodes)
        settings["n_docs"] = sum(len(e.query) for e in episodes)
        settings["types"] = sorted({t for e in episodes for t in e.types})
        settings.update(_component_settings(nlp, name, before))  # its labels: the last episode's types
        examples = per_episode
    return Evaluation(_headline_first(results, protocol), settings, examples)
