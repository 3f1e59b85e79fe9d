"""A pipeline's scores and model card in its meta.json, so that `spacy package` carries them into the package.

`spacy package` reads the pipeline's meta.json: `performance` becomes the Accuracy table of the README.md it
renders (`generate_readme`) and ships inside the package's data directory and as the wheel's long description
(METADATA); `description`, `sources`, `license` and `notes` are that card's text. `write_meta` fills them from an
evaluation (`protocols.evaluate`) and the pipeline's own config:

- `performance`: spaCy's keys, `ents_p`, `ents_r`, `ents_f` and `ents_per_type` ({label: {p, r, f}}), from the
  span-exact scores: spaCy's own on a corpus, Few-NERD's micro scores (counts summed over the episodes' query
  sentences) on episodes; `fsner_evaluation` says which, on what data, with the bootstrap interval when there is one;
- `description` (one line: setuptools refuses a multi-line summary): what the pipeline is, its base model, whether
  it holds an adapter;
- `notes` (Markdown, after spaCy's tables): how to use it, the base model and its licence, the evaluation, the
  training data;
- `sources` (the training data, with licences) and `license` when given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from confection import Config

from ..log import logger
from ..models.fetch import SOURCES
from ..models.loading import travels
from .protocols import Evaluation
from .report import as_plain

SCORE_OF_PROTOCOL = {"corpus": "span_exact", "fewnerd": "fewnerd_episodes", "hou": "fewnerd_episodes"}
"""The result spaCy's `ents_*` keys are taken from: span-exact on a corpus, Few-NERD's micro scores on episodes
(Hou et al.'s mean F1 has no per-type counts)."""

SCORE_TEXT = {
    "span_exact": "span-exact micro scores over the documents (spaCy's scorer)",
    "fewnerd_episodes": "Few-NERD's episode protocol: span-exact counts summed over the query sentences of all "
    "episodes, each episode predicted after adapting to its support set",
}


def performance(evaluation: Evaluation) -> dict[str, Any]:
    """spaCy's `performance` keys from `evaluation`, plus `fsner_evaluation`: which score, protocol and data."""
    settings = evaluation.settings
    protocol = settings.get("protocol")
    if protocol not in SCORE_OF_PROTOCOL:
        raise ValueError(f"the evaluation's settings name no protocol ({protocol!r}): pass what `evaluate` returned")
    name = SCORE_OF_PROTOCOL[protocol]
    if name not in evaluation.results:
        raise ValueError(f"the evaluation has no {name!r} result (it has {sorted(evaluation.results)})")
    plain = as_plain({k: v for k, v in evaluation.results.items() if k in (name, f"{name}_interval")})
    scores = plain[name]
    described = {
        "score": name,
        "meaning": SCORE_TEXT[name],
        "protocol": protocol,
        **{k: settings[k] for k in ("data", "n_docs", "n_episodes", "limit") if k in settings},
    }
    if f"{name}_interval" in plain:
        interval = plain[f"{name}_interval"]
        described["ents_f_interval"] = {k: interval[k] for k in ("low", "high", "level", "unit", "n_units")}
    return {
        "ents_p": scores["p"],
        "ents_r": scores["r"],
        "ents_f": scores["f"],
        "ents_per_type": {label: {k: prf[k] for k in ("p", "r", "f")} for label, prf in scores["per_type"].items()},
        "fsner_evaluation": described,
    }


def _component(config: Config, evaluation: Evaluation) -> str:
    name = evaluation.settings.get("component")
    if name is None:
        fsner = [n for n, c in config["components"].items() if c.get("factory") in ("fsner", "el4ner")]
        name = fsner[0] if fsner else next(iter(config["components"]), None)
    return name


def _base_model(name: str | None) -> str:
    """The base model as the card names it: its origin and licence when it is a fetch-model name."""
    if name is None:
        return "none recorded"
    source = SOURCES.get(name)
    if source is not None:
        return (
            f"`{name}`: {source.original}, licence {source.licence}; not in the package, fetched from the Python "
            "package index into the model cache on first use"
        )
    if not travels(name):
        return (
            f"`{name}`, a local directory: it is not in the package, so on another machine load the pipeline with "
            '`spacy.load(NAME, config={"components.fsner.model.name": "NEW_DIR"})`'
        )
    return f"`{name}` (a Hugging Face hub id, downloaded on first use; not in the package)"


def _saved_base_model(pipeline: Path, component: str | None) -> str | None:
    """The base model a saved CausalLM names in its `model.json` (`CausalLM.to_disk`), for a model config without a
    `name` (a registered default model such as the factory's)."""
    path = pipeline / (component or "") / "model" / "model.json"
    if component is None or not path.is_file():
        return None
    name = json.loads(path.read_text(encoding="utf-8")).get("base_model")
    return name if isinstance(name, str) else None


def _adapter(pipeline: Path, component: str | None, model: Mapping[str, Any]) -> str | None:
    """How the card describes the adapter: inside the pipeline, shipped with spacy-fsner by name, or none."""
    if component is not None and (pipeline / component / "model" / "adapter").is_dir():
        return "a LoRA adapter, inside the package"
    if model.get("adapter"):
        return f"the LoRA adapter `{model['adapter']}`"
    return None


def _usage(labels: Sequence[str]) -> str:
    return "\n".join(
        [
            "### Usage",
            "",
            "Install the wheel (`pip install PACKAGE.whl`), then load the package by its Name (table above):",
            "",
            "```python",
            "import spacy",
            "",
            'nlp = spacy.load("NAME")',
            'doc = nlp("Angela Merkel visited Paris.")',
            "print([(ent.text, ent.label_) for ent in doc.ents])",
            "```",
            "",
            f"It tags {', '.join(f'`{label}`' for label in labels) or 'the labels it is given'}. For other types, "
            'give it a few annotated docs first: `nlp.get_pipe("fsner").adapt(support_docs, labels=[...])`.',
        ]
    )


def _evaluation_notes(scores: Mapping[str, Any]) -> str:
    described = scores["fsner_evaluation"]
    size = f"{described.get('n_docs', '?')} documents"
    if "n_episodes" in described:
        size = f"{described['n_episodes']} episodes, {size} in their query sets"
    line = f"F1 {100 * scores['ents_f']:.2f}"
    interval = described.get("ents_f_interval")
    if interval:
        line += (
            f" (95% bootstrap interval {100 * interval['low']:.2f}-{100 * interval['high']:.2f} over "
            f"{interval['n_units']} {interval['unit']})"
        )
    return (
        f"### Evaluation\n\nThe Accuracy table holds the {described['meaning']}, on `{described.get('data')}` "
        f"({size}): {line}. Per type: `performance.ents_per_type` in meta.json."
    )


def card(pipeline: str | Path, evaluation: Evaluation, scores: Mapping[str, Any]) -> dict[str, str]:
    """`description` and `notes` of the card of the pipeline directory `pipeline` (see the module's docstring)."""
    pipeline = Path(pipeline)
    config = Config().from_disk(pipeline / "config.cfg", interpolate=False).interpolate()
    component = _component(config, evaluation)
    settings = config["components"].get(component, {}) if component else {}
    model = settings.get("model") or {}
    base = model.get("name") if isinstance(model.get("name"), str) else _saved_base_model(pipeline, component)
    adapter = _adapter(pipeline, component, model)
    labels = list(settings.get("labels") or [])
    what = f"with {adapter}" if adapter else "in context (no adapter)"
    description = (
        f"Few-shot named-entity recognition with spacy-fsner: the causal language model {base or 'of its config'} "
        f"{what} tags {', '.join(labels) or 'the labels it is given'} by constrained decoding."
    )
    template = (settings.get("template") or {}).get("@misc", "the default")
    model_lines = [
        "### Model",
        "",
        f"- Base model: {_base_model(base)}.",
        f"- Adapter: {adapter or 'none (the base model in context, with any demonstrations saved in the pipeline)'}.",
        f"- Component `{component}`, prompt template `{template}`.",
    ]
    notes = [_usage(labels), "\n".join(model_lines), _evaluation_notes(scores)]
    return {"description": " ".join(description.split()), "notes": "\n\n".join(notes)}


def _checked_sources(sources: Sequence[Mapping[str, str] | str]) -> list[dict[str, str]]:
    """Each source as spaCy's dict (a plain string, which spaCy's schema also allows, becomes its name)."""
    checked = []
    for source in sources:
        if isinstance(source, str):
            source = {"name": source}
        if not isinstance(source, Mapping) or not isinstance(source.get("name"), str) or not source["name"]:
            raise ValueError(f"source {source!r}: give each source as a dict with a 'name' (and 'license', 'url')")
        if not all(isinstance(value, str) for value in source.values()):
            raise ValueError(f"source {source!r}: every value must be a string (spaCy's meta schema)")
        checked.append(dict(source))
    return checked


def _sources_notes(sources: Sequence[Mapping[str, str]]) -> str:
    lines = [f"- {s['name']}" + (f" (licence: {s['license']})" if s.get("license") else "") for s in sources]
    return "### Training data\n\n" + "\n".join(lines)


def write_meta(
    pipeline: str | Path,
    evaluation: Evaluation,
    *,
    sources: Sequence[Mapping[str, str] | str] = (),
    licence: str | None = None,
) -> Path:
    """Write `evaluation` (of the pipeline saved in the directory `pipeline`) into its meta.json as `performance`,
    with the card's `description` and `notes`; `sources` (spaCy's form: [{"name", "license", "url"}], the training
    data; default: those meta.json has) and `licence` (the package's) when given. Other meta fields and performance
    keys are kept. Returns the meta.json path."""
    pipeline = Path(pipeline)
    meta_path = pipeline / "meta.json"
    if not pipeline.is_dir() or not meta_path.is_file() or not (pipeline / "config.cfg").is_file():
        kind = "a file" if pipeline.is_file() else "not a pipeline directory (no meta.json and config.cfg)"
        raise ValueError(
            f"{pipeline} is {kind}: pass the directory of a saved pipeline (what nlp.to_disk or `train` wrote, "
            "e.g. training/obp/pipeline) to write its scores into its meta.json"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    sources = _checked_sources(sources or meta.get("sources") or [])
    scores = performance(evaluation)
    meta["performance"] = {**meta.get("performance", {}), **scores}
    fields = card(pipeline, evaluation, scores)
    if sources:
        meta["sources"] = sources
        fields["notes"] += "\n\n" + _sources_notes(sources)
    else:
        logger.warning(
            f"{meta_path}: no training data recorded for the model card; name it (evaluate --source and "
            "--source-licence, or sources=[{'name': ..., 'license': ...}])."
        )
    meta.update(fields)
    if licence:
        meta["license"] = licence
    elif not meta.get("license"):
        logger.warning(f"{meta_path}: the package has no licence; give one (evaluate --licence, or licence=).")
    if (pipeline / "README.md").exists():
        logger.warning(
            f"{pipeline / 'README.md'} exists, so `spacy package` ships it instead of the card it renders from "
            "meta.json: delete it to ship the card."
        )
    meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return meta_path
