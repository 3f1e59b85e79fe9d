"""The training objectives side by side on the same data and budget.

For each variant (SFT, SFT+CL, SFT+CL+noise: configs/cllmfs.cfg; SFT+attention CL: configs/obp.cfg with the same
CLLMFS template) and each seed: train on the first `--train-sentences` CoNLL-2003 training sentences with entities for
`--steps` steps, then span F1 and the boundary-error rate on the first `--test-sentences` test sentences, and the
seconds per training step. Optionally a DPO stage after the SFT runs of `--dpo-variants` (`--dpo-steps`), with the
boundary-error rate before and after. Prints a Markdown table (mean and spread over seeds) and writes one JSON per run.

    python -m bench.training_objectives --model smollm2-135m-instruct --steps 100 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from itertools import islice
from pathlib import Path

from bench.common import (
    CLLMFS,
    CONLL_LABELS,
    REPO,
    add_training_arguments,
    base_parser,
    corpus,
    seconds_per_step,
    set_threads,
)
from bench.common import OBJECTIVES as VARIANTS


def score(pipeline: Path, gold: Path, limit: int) -> dict[str, float]:
    import spacy
    from spacy.tokens import DocBin

    from spacy_fsner.evaluation.protocols import evaluate_corpus

    nlp = spacy.load(pipeline)
    docs = list(islice(DocBin().from_disk(gold).get_docs(nlp.vocab), limit))
    results = evaluate_corpus(nlp, docs, batch_size=64, progress=False)
    return {"f": results["span_exact"].f, "boundary_error_rate": results["boundary_errors"].rate}


def cell(runs: list[dict], key: str) -> str:
    """Mean and half the range over seeds, in percent."""
    values = [100 * r[key] for r in runs]
    return f"{statistics.mean(values):.2f} ± {(max(values) - min(values)) / 2:.2f}"


def main() -> None:
    parser = base_parser(__doc__)
    add_training_arguments(parser, train_sentences=150)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--test-sentences", type=int, default=200)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the config's")
    parser.add_argument("--dpo-steps", type=int, default=0, help="DPO after SFT (0: none)")
    parser.add_argument("--dpo-variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--dpo-batch-size", type=int, default=4, help="pairs per DPO step")
    parser.add_argument("--dpo-learning-rate", type=float, default=5e-6, help="the paper's 5e-6 by default")
    parser.add_argument("--feedback-docs", type=int, default=0, help="training docs predicted for error feedback")
    parser.add_argument("--definitions", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="CoNLL answers are short")
    parser.add_argument("--output", type=Path, default=Path("bench/results/objectives"))
    args = parser.parse_args()
    from spacy_fsner.training.run import run_training  # here, not above: --help stays fast

    set_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    train = corpus(args.data / "eng.train", args.output / "train.spacy", args.train_sentences, True)
    test = corpus(args.data / "eng.testb", args.output / "test.spacy", args.test_sentences, False)
    labels: dict = {"components.fsner.labels": list(CONLL_LABELS)}
    if args.definitions:  # the ones the in-context bench uses: label names alone (LOC, MISC) say little
        labels |= {f"components.fsner.label_definitions.{k}": v for k, v in CONLL_LABELS.items()}
    rows: dict[str, list[dict]] = {}
    for variant in args.variants:
        config, extra = VARIANTS[variant]
        for seed in args.seeds:
            out = args.output / f"{variant}-seed{seed}"
            base = {
                **labels,
                "components.fsner.model.max_new_tokens": args.max_new_tokens,
                "paths.train": str(train),
                "paths.base_model": args.model,
                "train.batch_size": args.batch_size,
                "train.seed": seed,
                "train.save_steps": 10**6,
            }
            if (out / "result.json").exists():  # a run of an interrupted comparison: kept, not repeated
                run = json.loads((out / "result.json").read_text())
            else:
                overrides = {**base, "train.max_steps": args.steps, **extra}
                if args.learning_rate is not None:
                    overrides["train.learning_rate"] = args.learning_rate
                start = time.perf_counter()
                run_training(REPO / "configs" / config, out / "sft", overrides)
                run = {
                    "variant": variant,
                    "seed": seed,
                    "seconds_per_step": seconds_per_step(out / "sft", args.steps),
                    "wall_seconds": time.perf_counter() - start,
                    **score(out / "sft" / "pipeline", test, args.test_sentences),
                }
            if args.dpo_steps and variant in args.dpo_variants and "dpo_f" not in run:  # also after a kept SFT run
                dpo = {
                    **base,
                    "train.max_steps": args.dpo_steps,
                    "train.batch_size": args.dpo_batch_size,
                    "train.learning_rate": args.dpo_learning_rate,
                    "train.dpo.feedback_docs": args.feedback_docs,
                    "paths.adapter": str(out / "sft" / "adapter"),
                    "components.fsner.template": CLLMFS,
                }
                run_training(REPO / "configs" / "obp_dpo.cfg", out / "dpo", dpo)
                after = score(out / "dpo" / "pipeline", test, args.test_sentences)
                run |= {"dpo_f": after["f"], "dpo_boundary_error_rate": after["boundary_error_rate"]}
                run |= {"dpo_steps": args.dpo_steps, "dpo_learning_rate": args.dpo_learning_rate}
            (out / "result.json").write_text(json.dumps(run, indent=2) + "\n")
            rows.setdefault(variant, []).append(run)
            print(json.dumps(run), flush=True)
    print(
        f"\n{args.model}: {args.train_sentences} CoNLL-2003 train sentences, {args.steps} steps of batch "
        f"{args.batch_size}, seeds {args.seeds}; span F1 on {args.test_sentences} test sentences\n"
    )
    print(
        "| variant | span F1 (mean ± spread) | boundary-error rate | s/step |"
        + (" F1 after DPO | boundary errors after DPO |" if args.dpo_steps else "")
    )
    print("|---|---:|---:|---:|" + ("---:|---:|" if args.dpo_steps else ""))
    for variant, runs in rows.items():
        line = f"| {variant} | {cell(runs, 'f')} | {cell(runs, 'boundary_error_rate')} | "
        line += f"{statistics.mean(r['seconds_per_step'] for r in runs):.2f} |"
        if args.dpo_steps:
            dpo = [r for r in runs if "dpo_f" in r]
            line += f" {cell(dpo, 'dpo_f')} | {cell(dpo, 'dpo_boundary_error_rate')} |" if dpo else " - | - |"
        print(line)


if __name__ == "__main__":
    main()
