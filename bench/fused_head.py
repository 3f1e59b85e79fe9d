"""The LM head of a training step at the labelled positions only (`spacy_fsner.training.fused_head`) against TRL's
fused head over every position, which is TRL's choice off Triton (a CPU): one forward + backward of a LoRA model on
the same random batch, alternated for a number of rounds; the loss is printed too (the same for both).

    python -m bench.fused_head --rounds 2 --steps 2 --batch-size 8 --length 150 --labelled 15 --threads 1
"""

from __future__ import annotations

import time

from bench.common import SMOLLM2, base_parser, set_threads


def main() -> None:
    parser = base_parser(__doc__, threads=1)
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="forward + backward passes timed per round and variant")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=150, help="tokens per sequence")
    parser.add_argument("--labelled", type=int, default=15, help="labelled (answer) tokens at each sequence's end")
    args = parser.parse_args()
    threads = set_threads(args.threads)

    import torch
    import trl.trainer.utils as trl_utils
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from spacy_fsner.models.loading import model_location
    from spacy_fsner.training.fused_head import score_labelled_positions

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_location(args.model), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    trl_utils.add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))
    ids = torch.randint(0, model.config.vocab_size, (args.batch_size, args.length))
    labels = ids.clone()
    labels[:, : args.length - args.labelled] = -100
    every = trl_utils._use_triton
    print(f"| variant | s/step | loss |  ({args.model}, {args.batch_size} x {args.length} tokens, {threads} threads)")
    print("|---|---:|---:|")
    for _ in range(args.rounds):
        for name in ("every position", "labelled positions"):
            if name == "every position":
                trl_utils._use_triton = every
            else:
                score_labelled_positions()
            start = time.perf_counter()
            for _ in range(args.steps):
                model.zero_grad()
                out = model(input_ids=ids, labels=labels, fused_lm_head=True)
                out.loss.backward()
            print(f"| {name} | {(time.perf_counter() - start) / args.steps:.2f} | {out.loss.item():.4f} |", flush=True)


if __name__ == "__main__":
    main()
