"""TRL's fused LM head, made to score only the labelled positions on every device.

TRL 1.16's SFT and DPO trainers replace the model's forward with a fused LM head that computes the per-token
log-probabilities in tiles, never the whole logits. On a Triton device (CUDA, XPU) it scores only the positions whose
label counts; elsewhere it scores every position and masks afterwards (so that the number of positions, and the
kernels' shapes, never change: for compiled Neuron kernels). Training here puts the loss on the answer alone (about
15 of 150 tokens), so on a CPU that means the LM head (576 x 49,152 on SmolLM2) and its entropy and accuracy metrics
run over ten times the positions they need. `score_labelled_positions` makes the compact path the choice on every
device: the same loss and gradients (tested), and on SmolLM2 with LoRA on 1 CPU thread a step of 8 x 150 tokens
takes 17.6 s instead of 28.4 s (measured in `docs/results.md`).

The choice is TRL's private `trl.trainer.utils._use_triton`, read by the fused forward alone (the kernels keep their
own reference, so the tiles still run in torch where Triton is missing). A TRL that no longer has it is left as it is.
"""

from __future__ import annotations

import torch


def _compact(device: torch.device) -> bool:
    return True


def score_labelled_positions() -> bool:
    """Make TRL's fused LM head score only the labelled positions; whether the hook point was found."""
    import trl.trainer.utils as trl_utils

    if not hasattr(trl_utils, "_use_triton"):
        return False
    trl_utils._use_triton = _compact
    return True
