"""In-context few-shot quality of real models: the baselines that training must beat.

For each model and template: span F1 on Few-NERD INTER dev 5-way 1~2-shot episodes (each episode's support set
as demonstrations; Few-NERD and Hou protocols) with the seconds per episode, and span F1 on CoNLL-2003 test
sentences with a few CoNLL training sentences as demonstrations. Prints a Markdown table; one JSON per run.

    python -m bench.incontext_quality --models smollm2-135m-instruct gemma3-270m --episodes 50 --sentences 200
"""

from __future__ import annotations

import json
import time
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import CONLL_LABELS, SMOLLM2, TEMPLATES, base_parser, set_threads

if TYPE_CHECKING:  # spaCy, torch and the library are imported where they are used: --help stays fast
    from spacy.language import Language


def build(model: str, template: str, labels: dict[str, str], max_new_tokens: int) -> Language:
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe(
        "fsner",
        config={
            "labels": list(labels),
            "label_definitions": {k: v for k, v in labels.items() if v},
            "template": {"@misc": TEMPLATES[template]},
            "model": {
                "@llm_models": "spacy_fsner.CausalLM.v1",
                "name": model,
                "batch_size": 64,
                "max_new_tokens": max_new_tokens,
            },
        },
    )
    return nlp


def demonstrations(path: Path, vocab, n: int) -> list:
    """The first `n` training sentences with at least two entities whose types together cover all labels early."""
    from spacy_fsner.data.readers import read_docs

    chosen, seen = [], set()
    for doc in read_docs(path, vocab):
        types = {e.label_ for e in doc.ents}
        if len(doc.ents) >= 2 and (types - seen or len(seen) == len(CONLL_LABELS)):
            chosen.append(doc)
            seen |= types
        if len(chosen) == n:
            break
    return chosen


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=[SMOLLM2])
    parser.add_argument("--templates", nargs="+", default=list(TEMPLATES), choices=list(TEMPLATES))
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--demos", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--output", type=Path, default=Path("metrics/incontext"))
    args = parser.parse_args()
    import torch

    from spacy_fsner.data.episodes import read_episodes
    from spacy_fsner.data.readers import read_docs
    from spacy_fsner.evaluation.protocols import evaluate_corpus, evaluate_episodes
    from spacy_fsner.evaluation.report import to_json

    set_threads(args.threads)
    episode_file = args.data / "fewnerd" / "episodes_sample" / "inter" / "dev_5_1.recased.jsonl"
    rows = []
    for model in args.models:
        for template in args.templates:
            nlp = build(model, template, CONLL_LABELS, args.max_new_tokens)
            episodes = list(islice(read_episodes(episode_file, nlp.vocab), args.episodes))
            start = time.perf_counter()
            results = evaluate_episodes(nlp, episodes, batch_size=64, progress=False)
            per_episode = (time.perf_counter() - start) / len(episodes)
            settings = {
                "model": model,
                "template": template,
                "data": str(episode_file),
                "n_episodes": len(episodes),
                "seconds_per_episode": per_episode,
                "threads": torch.get_num_threads(),
            }
            to_json(results, settings, args.output / f"{model}-{template}-fewnerd.json")
            fewnerd, hou = results["fewnerd_episodes"].f, results["hou_episodes"].f

            nlp = build(model, template, CONLL_LABELS, args.max_new_tokens)
            demos = demonstrations(args.data / "conll2003" / "eng.train", nlp.vocab, args.demos)
            nlp.get_pipe("fsner").adapt(demos)
            gold = list(islice(read_docs(args.data / "conll2003" / "eng.testb", nlp.vocab), args.sentences))
            start = time.perf_counter()
            conll = evaluate_corpus(nlp, gold, batch_size=64, progress=False)
            per_sentence = (time.perf_counter() - start) / len(gold)
            to_json(
                conll,
                {
                    "model": model,
                    "template": template,
                    "n_docs": len(gold),
                    "demonstrations": [d.text for d in demos],
                    "seconds_per_sentence": per_sentence,
                },
                args.output / f"{model}-{template}-conll.json",
            )
            rows.append((model, template, fewnerd, hou, per_episode, conll["span_exact"].f, per_sentence))
            print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{args.episodes} Few-NERD INTER dev 5-way 1~2-shot episodes; {args.sentences} CoNLL-2003 test "
        f"sentences with {args.demos} demonstrations; {torch.get_num_threads()} threads\n"
    )
    print("| model | template | Few-NERD F1 | Hou F1 | s/episode | CoNLL F1 | s/sentence |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model, template, fewnerd, hou, per_episode, conll, per_sentence in rows:
        print(
            f"| {model} | {template} | {100 * fewnerd:.2f} | {100 * hou:.2f} | {per_episode:.1f} | "
            f"{100 * conll:.2f} | {per_sentence:.2f} |"
        )


if __name__ == "__main__":
    main()
