"""Training throughput on one process against DDP on several (`accelerate launch`), on the same global batch.

The same SFT stage (a `bench.common.OBJECTIVES` variant, by default CLLMFS's CL + noise) trains `--steps` steps of
`--batch-size` x `--accumulation` records per optimizer step: on one process with `--threads` torch threads
(accumulating), and under `accelerate launch --config_file configs/accelerate/ddp_cpu.yaml` on `--processes`
processes with `--threads / --processes` threads each (each process one share of the global batch; on a GPU machine
the processes take one GPU each). Same records, same global batch, same cores. Samples/s is the global batch x steps
over the trainer's own runtime (model loading and saving excluded); each run is a process of its own, the
configurations alternate for `--repeats` rounds, and the table gives the median.

    python -m bench.ddp_throughput --steps 6 --batch-size 4 --accumulation 2 --threads 2 --repeats 2
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import OBJECTIVES, REPO, add_training_arguments, base_parser, corpus
from spacy_fsner.training.settings import TrainSettings

DDP_CPU = REPO / "configs" / "accelerate" / "ddp_cpu.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train(processes: int, args, train_file: Path, output: Path) -> float:
    """One run's samples per second (global batch x steps / the trainer's runtime)."""
    config, extra = OBJECTIVES[args.variant]
    overrides = {
        "paths.train": str(train_file),
        "paths.base_model": args.model,
        "train.max_steps": args.steps,
        "train.batch_size": args.batch_size,
        "train.gradient_accumulation": args.accumulation,
        "train.save_steps": 10**6,
        "train.threads": max(1, args.threads // processes),
        **extra,
    }
    if processes == 1:
        command = [sys.executable, "-m", "spacy_fsner", "train"]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CPU)]
        command += ["--num_processes", str(processes), "--main_process_port", str(free_port())]
        command += ["-m", "spacy_fsner", "train"]
    command += [str(REPO / "configs" / config), "--output", str(output)]
    command += [a for key, value in overrides.items() for a in (f"--{key}", json.dumps(value))]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode:
        sys.exit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    history = json.loads((output / "metrics.json").read_text())["log_history"]
    runtime = next(entry["train_runtime"] for entry in history if "train_runtime" in entry)
    return args.steps * args.batch_size * args.accumulation / runtime


def main() -> None:
    parser = base_parser(__doc__, threads=2)
    add_training_arguments(parser, train_sentences=64)
    parser.set_defaults(batch_size=4)
    parser.add_argument("--accumulation", type=int, default=2, help="micro-batches per step on one process")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--variant", default="sft+cl+noise", choices=list(OBJECTIVES))
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the two configurations (median)")
    parser.add_argument("--output", type=Path, default=Path("bench/results/ddp_throughput.json"))
    args = parser.parse_args()
    if args.threads < args.processes:
        sys.exit(f"--threads {args.threads} < --processes {args.processes}: give each process a thread at least.")
    TrainSettings(batch_size=args.batch_size, gradient_accumulation=args.accumulation).batch_layout(args.processes)
    counts = [1, args.processes]
    rates: dict[int, list[float]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="fsner-ddp-") as tmp:
        train_file = corpus(args.data.resolve() / "eng.train", Path(tmp) / "train.spacy", args.train_sentences, True)
        for round_ in range(args.repeats):  # alternating: a change in the machine's load hits both alike
            for processes in counts:
                rate = train(processes, args, train_file, Path(tmp) / f"run-{processes}-{round_}")
                rates[processes].append(rate)
                print(json.dumps({"processes": processes, "round": round_, "samples_per_s": rate}), flush=True)
    median = {n: statistics.median(values) for n, values in rates.items()}
    settings = TrainSettings(batch_size=args.batch_size, gradient_accumulation=args.accumulation)
    rows = [
        {
            "processes": n,
            "threads_each": max(1, args.threads // n),
            "per_forward": settings.batch_layout(n)[0],
            "samples_per_s": median[n],
            "seconds_per_step": args.batch_size * args.accumulation / median[n],
            "ratio": median[n] / median[1],
            "runs": rates[n],
        }
        for n in counts
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2, default=str))
    global_batch = args.batch_size * args.accumulation
    print(
        f"\n{args.model}, {args.variant}: {args.steps} steps of {global_batch} records (global batch), "
        f"{args.train_sentences} CoNLL-2003 train sentences, {args.threads} threads in all, median of "
        f"{args.repeats} round(s)\n"
    )
    print("| processes | threads each | records per forward | s/step | samples/s | x 1 process |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['processes']} | {row['threads_each']} | {row['per_forward']} | {row['seconds_per_step']:.2f} | "
            f"{row['samples_per_s']:.2f} | {row['ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
