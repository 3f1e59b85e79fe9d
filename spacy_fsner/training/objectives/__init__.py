"""Contrastive auxiliary objectives for supervised fine-tuning (CLLMFS and OBP-LLM), registered in spaCy's `misc`.

Both papers add a weighted contrastive term to the next-token loss, computed on internal activations of one decoder
layer: L = L_CE + lambda * L_CL (CLLMFS Eq. 6; OBP-LLM Eq. 4). TRL's SFT forward uses a fused LM head and returns
no hidden states, so an objective captures what it needs with forward hooks on the model's modules:

- `HiddenStateContrastive` (CLLMFS, section 3.6): the output of the chosen decoder layer. A supervised contrastive
  loss over the sentence tokens of the batch, optionally with a second, noised view of the batch ("CL + Noise").
- `AttentionContrastive` (OBP-LLM, section 3.3, Eq. 3): the outputs of the chosen layer's `q_proj` and `k_proj`
  (with LoRA, the hooked module is the LoRA wrapper, so the capture includes the adapter's delta).

Modules: `base` (the batch contract `ContrastiveBatch`, layer resolution, the hook lifecycle of
`ContrastiveObjective`), `hidden_state` (CLLMFS, with its noise view), `attention` (OBP-LLM). Importing this package
registers both objectives (`spacy_fsner.HiddenStateContrastive.v1`, `spacy_fsner.AttentionContrastive.v1`).
"""

from .attention import AttentionContrastive, attention_contrastive_loss, attention_contrastive_v1
from .base import (
    OBJECTIVE_COLUMNS,
    ContrastiveBatch,
    ContrastiveObjective,
    LayerSpec,
    find_decoder,
    resolve_layer,
)
from .hidden_state import HiddenStateContrastive, hidden_state_contrastive_v1, supervised_contrastive_loss

__all__ = [
    "OBJECTIVE_COLUMNS",
    "AttentionContrastive",
    "ContrastiveBatch",
    "ContrastiveObjective",
    "HiddenStateContrastive",
    "LayerSpec",
    "attention_contrastive_loss",
    "attention_contrastive_v1",
    "find_decoder",
    "hidden_state_contrastive_v1",
    "resolve_layer",
    "supervised_contrastive_loss",
]
