"""Configurations compared paired on the same Few-NERD INTER test-type episodes, with intervals that tell them apart.

Episodes are sampled once with a fixed seed (Few-NERD's greedy N-way K~2K-shot sampler) from Few-NERD INTER's test
sentences, whose 17 types no training here ever sees, and kept as JSONL beside the results. Every configuration
runs on the same episodes; each episode's span-exact counts are appended as it finishes, so a run stopped halfway
resumes where it stopped. The table gives, per setting (N-way K-shot), each configuration's Few-NERD F1 (micro over
episodes) with its 95% bootstrap interval (episodes resampled), and its paired difference from the first
configuration with the interval of that difference (the same draws for both; an interval without 0 tells them
apart). A configuration is `NAME:key=value,...` over an in-context pipeline (`template` cllmfs|alpaca|shared,
`model` a fetch name or directory, `adapter` a LoRA directory or shipped adapter's name, `retriever`
word|sentence|span|random with `k`, `max_new_tokens`; `fine_tune` N: a LoRA trained N steps on each episode's support
set, continuing `adapter`, with `objective` attention|hidden|hidden-noise added and the support set also as
demonstrations when `demonstrations=true`), or `NAME:pipeline=DIR` for a saved pipeline (a trained one).

    python -m bench.paired_episodes --configs cllmfs:template=cllmfs shared:template=shared --shots 1 5 --n 100
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import SMOLLM2, TEMPLATES, base_parser, paired_table, set_threads

if TYPE_CHECKING:  # spaCy and the library are imported where they are used: --help stays fast
    from spacy.language import Language

TEST_SENTENCES = Path("../shared/data/fewnerd/inter_sentences/test-inter.txt")
KEYS = (
    "template",
    "model",
    "adapter",
    "retriever",
    "k",
    "pipeline",
    "max_new_tokens",
    "fine_tune",
    "objective",
    "demonstrations",
)


def parse_config(spec: str) -> tuple[str, dict[str, str]]:
    """`NAME:key=value,key=value` as (NAME, settings); unknown keys are an error naming the known ones."""
    name, _, rest = spec.partition(":")
    settings = dict(item.split("=", 1) for item in rest.split(",") if item)
    unknown = sorted(set(settings) - set(KEYS))
    if not name or unknown:
        raise SystemExit(f"--configs {spec!r}: write NAME:key=value,... with keys from {list(KEYS)}")
    return name, settings


def build(settings: dict[str, str]) -> Language:
    """The pipeline of one configuration (labels come from each episode's `adapt`)."""
    import spacy

    from spacy_fsner.cli.evaluate import RETRIEVERS

    if "pipeline" in settings:
        return spacy.load(settings["pipeline"])
    model = {
        "@llm_models": "spacy_fsner.CausalLM.v1",
        "name": settings.get("model", SMOLLM2),
        "adapter": settings.get("adapter"),
        "max_new_tokens": int(settings.get("max_new_tokens", 32)),
    }
    template = {"@misc": TEMPLATES[settings.get("template", "shared")]}
    config = {"labels": ["entity"], "template": template, "model": model}  # each episode's `adapt` sets its types
    if "retriever" in settings:
        config["retriever"] = {"@misc": RETRIEVERS[settings["retriever"]], "k": int(settings.get("k", 3))}
    if "fine_tune" in settings:
        config["adaptation"] = fine_tuning(settings)
    nlp = spacy.blank("en")
    nlp.add_pipe("fsner", config=config)
    return nlp


def fine_tuning(settings: dict[str, str]) -> dict:
    """The `adaptation` block of a configuration with `fine_tune` (steps), `objective` and `demonstrations`."""
    from spacy_fsner.cli.evaluate import FINE_TUNE_OBJECTIVES

    objective = settings.get("objective")
    if objective is not None and objective not in FINE_TUNE_OBJECTIVES:
        raise SystemExit(f"objective={objective!r}: use one of {list(FINE_TUNE_OBJECTIVES)}")
    demonstrations = settings.get("demonstrations", "false").lower()
    if demonstrations not in ("true", "false"):
        raise SystemExit(f"demonstrations={demonstrations!r}: use true or false")
    adaptation = {
        "@misc": "spacy_fsner.FineTuneAdaptation.v1",
        "steps": int(settings["fine_tune"]),
        "demonstrations": demonstrations == "true",
    }
    if objective is not None:
        adaptation["objectives"] = FINE_TUNE_OBJECTIVES[objective]
    return adaptation


def episodes_file(output: Path, ways: int, shots: int, n: int, seed: int) -> Path:
    """The sampled episodes of one setting, written once (the same file for every configuration)."""
    path = output / f"episodes_{ways}w{shots}s_n{n}_seed{seed}.jsonl"
    if not path.is_file():
        import spacy

        from spacy_fsner.data.episodes import write_episodes
        from spacy_fsner.data.readers import read_docs
        from spacy_fsner.data.sampler import sample_episodes

        docs = list(read_docs(TEST_SENTENCES, spacy.blank("en").vocab))
        output.mkdir(parents=True, exist_ok=True)
        write_episodes(path, sample_episodes(docs, ways, shots, n, seed=seed))
    return path


def run(nlp: Language, episodes: list, counts_file: Path) -> list[dict]:
    """Each episode's span-exact counts and seconds, appended to `counts_file` as it finishes; episodes already
    there are not run again."""
    from spacy_fsner.evaluation.intervals import unit_counts
    from spacy_fsner.evaluation.protocols import episode_examples

    done = [json.loads(line) for line in counts_file.read_text().splitlines()] if counts_file.is_file() else []
    for index in range(len(done), len(episodes)):
        start = time.perf_counter()
        examples = episode_examples(nlp, episodes[index : index + 1], progress=False)
        tp, fp, fn = unit_counts(examples)[0].tolist()
        done.append({"episode": index, "tp": tp, "fp": fp, "fn": fn, "seconds": time.perf_counter() - start})
        with counts_file.open("a") as out:
            out.write(json.dumps(done[-1]) + "\n")
        print(f"{counts_file.stem}: episode {index + 1}/{len(episodes)}", flush=True)
    return done


def main() -> None:
    parser = base_parser(__doc__, threads=2)
    parser.add_argument("--configs", nargs="+", required=True, help="NAME:key=value,... (the first is the baseline)")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5], help="K of each K~2K-shot setting")
    parser.add_argument("--n", type=int, default=100, help="episodes per setting")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episode sampler")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap draws")
    parser.add_argument("--output", type=Path, default=Path("bench/results/paired"))
    args = parser.parse_args()
    configs = dict(parse_config(spec) for spec in args.configs)
    threads = set_threads(args.threads)

    from spacy_fsner.data.episodes import read_episodes

    results: dict[int, dict[str, list[dict]]] = {}
    for name, settings in configs.items():
        nlp = build(settings)
        for shots in args.shots:
            path = episodes_file(args.output, args.ways, shots, args.n, args.seed)
            episodes = list(read_episodes(path, nlp.vocab))
            counts_file = args.output / f"{name}_{path.stem.removeprefix('episodes_')}.jsonl"
            results.setdefault(shots, {})[name] = run(nlp, episodes, counts_file)
        (args.output / f"{name}.config.json").write_text(json.dumps(settings, indent=2) + "\n")
    for shots, rows in results.items():
        print(
            f"\n{args.ways}-way {shots}~{2 * shots}-shot, {args.n} Few-NERD INTER test episodes (seed {args.seed}), "
            f"{threads} threads; intervals: 95% bootstrap over episodes ({args.resamples} draws)\n"
        )
        print("\n".join(paired_table(rows, args.resamples, score="Few-NERD F1", unit="episode")))


if __name__ == "__main__":
    main()
