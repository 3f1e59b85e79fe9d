"""Task quality of demonstration retrieval and of EL4NER: span F1 on Few-NERD INTER dev 5-way
5~10-shot episodes, each episode's support set as the pool.

Runs (`--runs`, each written to `--output/<run>.json` and skipped when that file exists, so an interrupted bench
resumes):

- `all-K`: the fixed demonstrations of the pipeline without a retriever (the whole support set in every prompt);
- `random-K`, `sentence-K`, `word-K`: K retrieved demonstrations per sentence (SmolLM2, shared-input template);
  `sentence@minilm-K`, `word@minilm-K`: the same with all-MiniLM-L6-v2 embeddings instead of SmolLM2's own;
- `el4ner`, `el4ner-<member>` (one member alone), `el4ner-no-<stage>` (one stage off), `el4ner-reject<share>`
  (`reject_share`, e.g. `el4ner-reject1.0`): the EL4NER component with SmolLM2 and Gemma-3-270M as members.

    python -m bench.retrieval_episodes --episodes ../ep/dev_5_5.jsonl --limit 10 --runs random-1 sentence-1 word-1
"""

from __future__ import annotations

import json
import time
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import MEMBERS, TEMPLATES, add_episode_arguments, base_parser, el4ner_pipeline, set_threads

if TYPE_CHECKING:  # spaCy and the library are imported where they are used: --help stays fast
    from spacy.language import Language

EMBEDDINGS = {"model": "model", "minilm": "all-minilm-l6-v2"}


def fsner_pipeline(
    model: str, retriever: str | None, k: int, max_new_tokens: int, embeddings: str = "model"
) -> Language:
    import spacy

    from spacy_fsner.cli.evaluate import RETRIEVERS

    nlp = spacy.blank("en")
    config = {
        "labels": ["placeholder"],  # each episode sets its own types
        "template": {"@misc": TEMPLATES["shared"]},
        "model": {"@llm_models": "spacy_fsner.CausalLM.v1", "name": model, "max_new_tokens": max_new_tokens},
    }
    if retriever is not None:
        config["retriever"] = {"@misc": RETRIEVERS[retriever], "k": k}
        if embeddings != "model":
            config["retriever"]["embeddings"] = EMBEDDINGS[embeddings]
    nlp.add_pipe("fsner", config=config)
    return nlp


def build(run: str, k: int, max_new_tokens: int) -> Language:
    if run.startswith("el4ner"):
        from spacy_fsner.ensemble.el4ner import EL4NER_STAGES

        rest = run.removeprefix("el4ner").removeprefix("-")
        members, stages, reject_share = list(MEMBERS), {}, 0.5
        if rest in MEMBERS:
            members = [rest]
        elif rest.startswith("no-"):
            stages = {rest.removeprefix("no-").replace("-", "_"): False}
            if next(iter(stages)) not in EL4NER_STAGES:
                raise ValueError(f"unknown stage in {run!r}: the stages are {list(EL4NER_STAGES)}")
        elif rest.startswith("reject"):
            reject_share = float(rest.removeprefix("reject"))
        elif rest:
            raise ValueError(f"unknown run {run!r}")
        return el4ner_pipeline(members, stages, k, max_new_tokens, reject_share)
    name, _, shots = run.rpartition("-")
    name, _, embeddings = name.partition("@")
    retriever = None if name == "all" else name
    return fsner_pipeline(MEMBERS["smollm2"], retriever, int(shots), max_new_tokens, embeddings or "model")


def main() -> None:
    parser = base_parser(__doc__)
    add_episode_arguments(parser, limit=10, k_help="EL4NER: demonstrations per prompt")
    parser.add_argument("--runs", nargs="+", default=["random-3", "sentence-3", "word-3"])
    parser.add_argument("--output", type=Path, default=Path("bench/results/retrieval_episodes"))
    args = parser.parse_args()
    import spacy

    from spacy_fsner.data.episodes import read_episodes
    from spacy_fsner.evaluation.protocols import evaluate_episodes

    set_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    episodes = list(islice(read_episodes(args.episodes, spacy.blank("en").vocab), args.start, args.start + args.limit))
    rows = []
    for run in args.runs:
        path = args.output / f"{run}.json"
        if path.exists():
            rows.append(json.loads(path.read_text()))
            continue
        nlp = build(run, args.k, args.max_new_tokens)
        start = time.perf_counter()
        results = evaluate_episodes(nlp, episodes, progress=False)
        seconds = (time.perf_counter() - start) / len(episodes)
        few = results["fewnerd_episodes"]
        row = {
            "run": run,
            "start": args.start,
            "episodes": len(episodes),
            "f": few.f,
            "p": few.p,
            "r": few.r,
            **{key: getattr(few.micro, key) for key in ("tp", "fp", "fn")},
            "s_per_episode": seconds,
        }
        path.write_text(json.dumps(row, indent=2) + "\n")
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{args.episodes.name}, episodes {args.start}-{args.start + len(episodes) - 1}, Few-NERD protocol\n")
    print("| run | P | R | F1 | s/episode |\n|---|---:|---:|---:|---:|")
    for r in rows:
        scores = " | ".join(f"{100 * r[key]:.2f}" for key in ("p", "r", "f"))
        print(f"| {r['run']} | {scores} | {r['s_per_episode']:.1f} |")


if __name__ == "__main__":
    main()
