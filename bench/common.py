"""What the bench scripts share: their argument parser and thread setting, and the settings and helpers that more
than one script uses (so that no script imports another).

Heavy libraries (torch, spaCy) are imported inside the functions: `--help` and this module stay light.
"""

from __future__ import annotations

import argparse
import json
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacy.language import Language

REPO = Path(__file__).resolve().parents[1]
"""The repository root (the shipped configs are `REPO / "configs"`)."""

SMOLLM2 = "smollm2-135m-instruct"
CONLL = Path("../shared/data/conll2003")
"""CoNLL-2003's directory (eng.train, eng.testb), relative to the working directory: the repository root, where
`python -m bench.<script>` runs."""

TEMPLATES = {
    "cllmfs": "spacy_fsner.CLLMFSTemplate.v1",
    "alpaca": "spacy_fsner.AlpacaTemplate.v1",
    "shared": "spacy_fsner.SharedInputTemplate.v1",
    "joint": "spacy_fsner.JointTemplate.v1",
}
CLLMFS = {"@misc": TEMPLATES["cllmfs"]}
"""The CLLMFS template as a config block (a `components.fsner.template` override)."""

CONLL_LABELS = {
    "PER": "the name of a specific person",
    "LOC": "the name of a specific place, such as a country, city or river",
    "ORG": "the name of a specific organisation, company, team or institution",
    "MISC": "a named nationality, event, work or other proper name that is not a person, place or organisation",
}
"""CoNLL-2003's types with the definitions the in-context and training benches give them."""

OBJECTIVES = {
    "sft": ("cllmfs.cfg", {"train.objectives.cl.contrastive": False, "train.objectives.cl.noise": False}),
    "sft+cl": ("cllmfs.cfg", {"train.objectives.cl.noise": False}),
    "sft+cl+noise": ("cllmfs.cfg", {}),
    "sft+attention-cl": ("obp.cfg", {"components.fsner.template": CLLMFS}),
}
"""Each training objective as (config file under configs/, overrides): SFT, + hidden-state CL, + CL + noise
(CLLMFS), + attention CL (OBP-LLM, with the CLLMFS template)."""

MEMBERS = {"smollm2": SMOLLM2, "gemma": "gemma3-270m"}
"""EL4NER's members by short name: their `fetch-model` names."""


def base_parser(doc: str | None, *, threads: int | None = 0) -> argparse.ArgumentParser:
    """A bench script's parser: its docstring as the description (laid out as written) and `--threads` with the
    default `threads` (None: no such option)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if threads is not None:
        parser.add_argument("--threads", type=int, default=threads, help="CPU threads for torch (0: torch's default)")
    return parser


def add_training_arguments(parser: argparse.ArgumentParser, *, train_sentences: int) -> None:
    """The training benches' model, data and batch: --model, --data (CoNLL-2003), --train-sentences, --batch-size."""
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--data", type=Path, default=CONLL)
    parser.add_argument("--train-sentences", type=int, default=train_sentences)
    parser.add_argument("--batch-size", type=int, default=8)


def add_episode_arguments(
    parser: argparse.ArgumentParser, *, limit: int, k_help: str = "demonstrations per prompt"
) -> None:
    """The episode benches' data and prompts: --episodes, --start, --limit, --k, --max-new-tokens."""
    parser.add_argument("--episodes", type=Path, required=True, help="Few-NERD episode JSONL (sample-episodes)")
    parser.add_argument("--start", type=int, default=0, help="skip the first episodes (to extend an earlier run)")
    parser.add_argument("--limit", type=int, default=limit, help="N episodes")
    parser.add_argument("--k", type=int, default=3, help=k_help)
    parser.add_argument("--max-new-tokens", type=int, default=32)


def set_threads(n: int) -> int:
    """torch's CPU threads set to `n` (0: left as they are); returns the number torch uses now."""
    import torch

    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def corpus(path: Path, out: Path, n: int, with_entities: bool) -> Path:
    """The first `n` sentences of the corpus at `path` (only those with entities when `with_entities`) as a DocBin
    at `out`."""
    import spacy
    from spacy.tokens import DocBin

    from spacy_fsner.data.readers import read_docs

    docs = (d for d in read_docs(path, spacy.blank("en").vocab) if d.ents or not with_entities)
    DocBin(docs=list(islice(docs, n))).to_disk(out)
    return out


def seconds_per_step(run: Path, steps: int) -> float:
    """A training run's seconds per step, from the trainer's runtime in `run`/metrics.json."""
    history = json.loads((run / "metrics.json").read_text())["log_history"]
    runtime = next(e["train_runtime"] for e in history if "train_runtime" in e)
    return runtime / steps


def el4ner_pipeline(
    members: list[str], stages: dict[str, bool], k: int, max_new_tokens: int, reject_share: float = 0.5
) -> Language:
    """A blank pipeline with the `el4ner` component on `members` (short names of `MEMBERS`); each episode sets the
    labels."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe(
        "el4ner",
        config={
            "labels": ["placeholder"],
            "members": {
                m: {"@llm_models": "spacy_fsner.CausalLM.v1", "name": MEMBERS[m], "max_new_tokens": max_new_tokens}
                for m in members
            },
            "retriever": {"@misc": "spacy_fsner.SpanRetriever.v1", "k": k},
            "stages": stages,
            "reject_share": reject_share,
        },
    )
    return nlp


def paired_table(rows: dict[str, list[dict]], resamples: int, *, score: str, unit: str) -> list[str]:
    """A Markdown table of configurations run on the same units (episodes or documents), each a list of
    `{"tp", "fp", "fn", "seconds"}` per unit: F1 with its 95% bootstrap interval (units resampled), the paired
    difference from the first configuration with its interval (the same draws for both), the counts and the mean
    seconds per unit."""
    import numpy as np

    from spacy_fsner.evaluation.intervals import bootstrap_f1, paired_difference

    counts = {name: np.array([[r["tp"], r["fp"], r["fn"]] for r in done]) for name, done in rows.items()}
    first = next(iter(counts))
    lines = [
        f"| configuration | {score} | 95% interval | paired difference from {first} | TP/FP/FN | s/{unit} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, these in counts.items():
        f1 = bootstrap_f1(these, resamples=resamples)
        difference = "-"
        if name != first:
            d = paired_difference(these, counts[first], resamples=resamples)
            difference = f"{100 * d.estimate:+.2f} ({100 * d.low:+.2f} to {100 * d.high:+.2f})"
        seconds = sum(r["seconds"] for r in rows[name]) / len(rows[name])
        lines.append(
            f"| {name} | {100 * f1.estimate:.2f} | {100 * f1.low:.2f}-{100 * f1.high:.2f} | {difference} | "
            f"{int(these[:, 0].sum())}/{int(these[:, 1].sum())}/{int(these[:, 2].sum())} | {seconds:.1f} |"
        )
    return lines
