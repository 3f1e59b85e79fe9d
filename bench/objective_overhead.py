"""What each contrastive term adds to an SFT step, measured paired (target: at most 15% per step).

`bench.training_cost` runs each configuration in a process of its own, which is what peak memory needs but leaves the
step times at the mercy of the machine: rounds minutes apart moved by 10-20% on a shared CPU. Here one process
trains one model (SmolLM2 with the LoRA adapter of `configs/cllmfs.cfg`) and times, on the same batch, one step of
each variant right after another: plain SFT, + hidden-state CL, + CL + noise (CLLMFS, `configs/cllmfs.cfg`), +
attention CL (OBP-LLM, `configs/obp.cfg`), the order rotated every round. A change in the machine's load hits the
variants of a round alike, so the ratio variant / SFT of each round is what the term costs; the table gives the
median over the rounds and its spread.

A step here is the trainer's `training_step` (forward with the objectives' hooks, NLL + weighted terms, backward),
then an optimiser update of the LoRA weights and zeroed gradients, as in training. The objectives are the configs'
own (weights, layer, temperature, noise), attached for their variant's step only. After each round's steps, the
noised view's forward is also timed alone on the same batch (row "noise pass alone"): its ratio to the SFT step is
the noise's share of "CL + noise", with far less spread than the whole steps' ratios.

    python -m bench.objective_overhead --rounds 8 --batch-size 8 --threads 2
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import CLLMFS, REPO, add_training_arguments, base_parser, corpus, set_threads

if TYPE_CHECKING:  # torch and the library are imported where they are used: --help stays fast
    import torch

    from spacy_fsner.training.objectives import HiddenStateContrastive


def objectives() -> dict[str, list]:
    """Variant -> the objectives its step runs with, resolved from the shipped configs."""
    from spacy.util import registry

    from spacy_fsner.training.run import load_config

    cl = load_config(REPO / "configs" / "cllmfs.cfg").interpolate()["train"]["objectives"]["cl"]
    attention = load_config(REPO / "configs" / "obp.cfg").interpolate()["train"]["objectives"]["attention"]

    def resolve(spec: dict, **changes) -> object:
        return registry.resolve({"objective": {**spec, **changes}})["objective"]

    return {
        "sft": [],
        "sft+cl": [resolve(cl, noise=False)],
        "sft+cl+noise": [resolve(cl, noise=True)],
        "sft+attention-cl": [resolve(attention)],
    }


NOISE_PASS = "noise pass alone"
"""The noised view's own forward (`HiddenStateContrastive.noise_view` on the batch's anchors), timed by itself after
each round's steps: the part of "CL + noise" that the CL term alone does not pay."""


def time_noise_pass(objective: HiddenStateContrastive, model: torch.nn.Module, batch: dict) -> float:
    from spacy_fsner.training.objectives import ContrastiveBatch

    inputs = dict(batch)
    contrastive = ContrastiveBatch.pop_from(inputs)
    objective.attach(model)
    try:
        rows = objective.sample_tokens(contrastive.token_types)
        anchors = rows[contrastive.token_types.reshape(-1)[rows] >= 1]
        start = time.perf_counter()
        objective.noise_view(contrastive, anchors)
        return time.perf_counter() - start
    finally:
        objective.detach()


def main() -> None:
    parser = base_parser(__doc__, threads=2)
    add_training_arguments(parser, train_sentences=100)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches, used in turn by the rounds")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds (after one untimed warm-up round)")
    parser.add_argument("--output", type=Path, default=Path("bench/results/objective_overhead.json"))
    args = parser.parse_args()
    import torch

    from spacy_fsner.training.run import prepare_stage

    set_threads(args.threads)
    variants = objectives()
    with tempfile.TemporaryDirectory(prefix="fsner-overhead-") as tmp:
        train = corpus(args.data.resolve() / "eng.train", Path(tmp) / "train.spacy", args.train_sentences, True)
        overrides = {
            "paths.train": str(train),
            "paths.base_model": args.model,
            "components.fsner.template": CLLMFS,
            "train.batch_size": args.batch_size,
            "train.threads": args.threads,
            "train.objectives.cl.contrastive": False,  # the trainer itself runs plain SFT; variants attach their own
            "train.objectives.cl.noise": False,
        }
        stage = prepare_stage(REPO / "configs" / "cllmfs.cfg", overrides)
        trainer, _ = stage.trainer(Path(tmp) / "checkpoints")
        loader = iter(trainer.get_train_dataloader())
        batches = [next(loader) for _ in range(args.batches)]
        model = trainer.model
        trainer.current_gradient_accumulation_steps = 1  # set by `train()`, which this loop replaces
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        names = list(variants)
        times: dict[str, list[float]] = {name: [] for name in [*names, NOISE_PASS]}
        ratios: dict[str, list[float]] = {name: [] for name in [*names, NOISE_PASS]}
        tokens = []
        for round_ in range(args.rounds + 1):
            batch = batches[round_ % len(batches)]
            tokens.append(int(batch["attention_mask"].sum()))
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            seconds = {}
            for name in order:
                trainer.objectives = variants[name]
                for objective in trainer.objectives:
                    objective.attach(model)
                start = time.perf_counter()
                trainer.training_step(model, dict(batch))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                seconds[name] = time.perf_counter() - start
                for objective in trainer.objectives:
                    objective.detach()
            seconds[NOISE_PASS] = time_noise_pass(variants["sft+cl+noise"][0], model, batch)
            if round_ == 0:  # warm-up: first calls allocate and pick kernels
                continue
            for name in [*names, NOISE_PASS]:
                times[name].append(seconds[name])
                ratios[name].append(seconds[name] / seconds["sft"])
            print(json.dumps({"round": round_, **{k: round(v, 3) for k, v in seconds.items()}}), flush=True)
    rows = [
        {
            "variant": name,
            "median_s_per_step": statistics.median(times[name]),
            "median_x_sft": statistics.median(ratios[name]),
            "total_x_sft": sum(times[name]) / sum(times["sft"]),
            "min_x_sft": min(ratios[name]),
            "max_x_sft": max(ratios[name]),
        }
        for name in [*names, NOISE_PASS]
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str) + "\n")
    print(
        f"\n{args.model}: {args.rounds} rounds of {len(names)} paired steps, batches of {args.batch_size} records "
        f"({statistics.mean(tokens):.0f} tokens on average), {args.threads} threads\n"
    )
    print("| variant | median s/step | median x SFT (paired) | min-max x SFT | total s / SFT's |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['variant']} | {row['median_s_per_step']:.2f} | {row['median_x_sft']:.3f} | "
            f"{row['min_x_sft']:.3f}-{row['max_x_sft']:.3f} | {row['total_x_sft']:.3f} |"
        )


if __name__ == "__main__":
    main()
