"""Seconds per training step and peak memory of each objective and of DPO, against plain SFT.

Every configuration trains the same model on the same CoNLL-2003 training sentences for `--steps` steps of
`--batch-size`, each in a process of its own so that its peak resident memory (`ru_maxrss`) is its own. A `load`
row builds the pipeline and loads the model without training: the memory every run starts from. Targets: a
contrastive term adds at most 15% to the SFT step; DPO's peak memory is at most 1.2x SFT's.

    python -m bench.training_cost --model smollm2-135m-instruct --steps 12 --batch-size 8 --repeats 2

DPO trains on boundary-shift pairs only here (error feedback adds a prediction pass before training, not to the
step); `dpo` uses `--batch-size` pairs (twice the sequences of an SFT batch), `dpo-half` half as many pairs (the
same number of sequences as SFT).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import (
    CLLMFS,
    OBJECTIVES,
    REPO,
    add_training_arguments,
    base_parser,
    corpus,
    seconds_per_step,
    set_threads,
)

VARIANTS = {
    "load": OBJECTIVES["sft"],
    **OBJECTIVES,
    "dpo": ("obp_dpo.cfg", {"components.fsner.template": CLLMFS, "train.dpo.pairs": ["boundary"]}),
    "dpo-half": ("obp_dpo.cfg", {"components.fsner.template": CLLMFS, "train.dpo.pairs": ["boundary"]}),
}


def child(variant: str, args: argparse.Namespace) -> dict:
    """One configuration in this process: seconds per step and this process's peak resident memory."""
    import torch

    from spacy_fsner.training.run import run_training

    set_threads(args.threads)
    config, extra = VARIANTS[variant]
    batch = max(1, args.batch_size // 2) if variant == "dpo-half" else args.batch_size
    with tempfile.TemporaryDirectory(prefix="fsner-cost-") as tmp:
        train = corpus(args.data / "eng.train", Path(tmp) / "train.spacy", args.train_sentences, with_entities=True)
        overrides = {
            "paths.train": str(train),
            "paths.base_model": args.model,
            "train.batch_size": batch,
            "train.max_steps": args.steps,
            "train.save_steps": 10**6,
            "train.threads": args.threads,
            **extra,
        }
        result: dict = {"variant": variant, "batch_size": batch}
        if variant == "load":
            from spacy_fsner.training.run import build_pipeline, load_config

            nlp = build_pipeline(load_config(REPO / "configs" / config, overrides), ["LOC", "MISC", "ORG", "PER"])
            nlp.get_pipe("fsner").model.generator  # noqa: B018  loads the model
        else:
            run_training(REPO / "configs" / config, Path(tmp) / "out", overrides)
            result["seconds_per_step"] = seconds_per_step(Path(tmp) / "out", args.steps)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if torch.cuda.is_available():  # on a GPU the memory that matters is the device's
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def median_row(runs: list[dict]) -> dict:
    """One variant's repeats: the median seconds per step, the largest peak memory."""
    row = dict(runs[0], repeats=len(runs), peak_rss_mib=max(r["peak_rss_mib"] for r in runs))
    if "peak_cuda_mib" in row:
        row["peak_cuda_mib"] = max(r["peak_cuda_mib"] for r in runs)
    if "seconds_per_step" in row:
        row["seconds_per_step"] = statistics.median(r["seconds_per_step"] for r in runs)
    return row


def main() -> None:
    parser = base_parser(__doc__, threads=2)
    add_training_arguments(parser, train_sentences=100)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the variants (median s/step)")
    parser.add_argument("--output", type=Path, default=Path("bench/results/training_cost.json"))
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = args.data.resolve()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args)), flush=True)
        return
    runs: dict[str, list[dict]] = {variant: [] for variant in args.variants}
    for _ in range(args.repeats):  # round robin: a change in the machine's load hits every variant alike
        for variant in args.variants:
            command = [sys.executable, "-m", __spec__.name, "--child", variant, *sys.argv[1:]]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
            runs[variant].append(json.loads(lines[-1].removeprefix("RESULT ")))
            print(json.dumps(runs[variant][-1]), flush=True)
    rows = [median_row(variant_runs) for variant_runs in runs.values()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    by_name = {row["variant"]: row for row in rows}
    sft, load = by_name.get("sft"), by_name.get("load")
    print(
        f"\n{args.model}: {args.steps} steps, {args.train_sentences} CoNLL-2003 train sentences, "
        f"{args.threads} threads, median of {args.repeats} round(s)\n"
    )
    print("| run | batch | s/step | x SFT | peak RSS MiB | x SFT | above load MiB | x SFT |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        step = row.get("seconds_per_step")
        cells = [row["variant"], str(row["batch_size"]), f"{step:.2f}" if step else "-"]
        cells.append(f"{step / sft['seconds_per_step']:.2f}" if step and sft else "-")
        cells += [f"{row['peak_rss_mib']:.0f}", f"{row['peak_rss_mib'] / sft['peak_rss_mib']:.2f}" if sft else "-"]
        if load and sft and row is not load:
            above, sft_above = row["peak_rss_mib"] - load["peak_rss_mib"], sft["peak_rss_mib"] - load["peak_rss_mib"]
            cells += [f"{above:.0f}", f"{above / sft_above:.2f}"]
        else:
            cells += ["-", "-"]
        print("| " + " | ".join(cells) + " |")
    if sft and "peak_cuda_mib" in sft:
        print("\n| run | peak GPU MiB (allocated) | x SFT |\n|---|---:|---:|")
        for row in rows:
            print(
                f"| {row['variant']} | {row['peak_cuda_mib']:.0f} | {row['peak_cuda_mib'] / sft['peak_cuda_mib']:.2f} |"
            )


if __name__ == "__main__":
    main()
