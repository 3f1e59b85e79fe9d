"""Training: contrastive objectives (CLLMFS, OBP-LLM) and the SFT trainer that adds them to the NLL.

`objectives` only needs torch; import `sft_trainer` (trl) where a trainer is built.
"""

from .objectives import (
    AttentionContrastive,
    ContrastiveBatch,
    ContrastiveObjective,
    HiddenStateContrastive,
    attention_contrastive_v1,
    hidden_state_contrastive_v1,
    resolve_layer,
)

__all__ = [
    "AttentionContrastive",
    "ContrastiveBatch",
    "ContrastiveObjective",
    "HiddenStateContrastive",
    "attention_contrastive_v1",
    "hidden_state_contrastive_v1",
    "resolve_layer",
]
