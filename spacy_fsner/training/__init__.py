"""Training: contrastive objectives (CLLMFS, OBP-LLM), the SFT and DPO trainers and their configs, a training stage
from a config (`run_training`), and fine-tuning per episode (`FineTuneAdaptation`).

Cheap to import: the objectives (torch only) and the `[train]` settings load with the package; every other public
name loads its module on first use (trl, datasets and peft come in only where a trainer or its config is built).

Modules: `objectives/` (the contrastive terms), `settings` (`[train]`), `base_config` (the defaults every trainer
config shares), `sft_config` + `sft_trainer`, `dpo_config` + `dpo_trainer` (as TRL pairs them), `sft_records` and
`preference_pairs` (the datasets), `collator`, `run` (a stage from a config), `checkpoints` (resuming),
`adaptation` (per-episode fine-tuning), `curves` (the loss plot).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .base_config import TrainerDefaults
from .objectives import (
    AttentionContrastive,
    ContrastiveBatch,
    ContrastiveObjective,
    HiddenStateContrastive,
    attention_contrastive_v1,
    hidden_state_contrastive_v1,
    resolve_layer,
)
from .settings import DPOSettings, LoraSettings, TrainSettings

if TYPE_CHECKING:
    from .adaptation import FineTuneAdaptation
    from .dpo_config import PreferenceDPOConfig
    from .dpo_trainer import PreferenceDPOTrainer, build_dpo_trainer
    from .run import run_training
    from .sft_config import ContrastiveSFTConfig
    from .sft_trainer import ContrastiveSFTTrainer

_LAZY = {
    "ContrastiveSFTConfig": "sft_config",
    "ContrastiveSFTTrainer": "sft_trainer",
    "FineTuneAdaptation": "adaptation",
    "PreferenceDPOConfig": "dpo_config",
    "PreferenceDPOTrainer": "dpo_trainer",
    "build_dpo_trainer": "dpo_trainer",
    "run_training": "run",
}
"""Public names imported on first access (PEP 562), and their module."""

__all__ = [
    "AttentionContrastive",
    "ContrastiveBatch",
    "ContrastiveObjective",
    "ContrastiveSFTConfig",
    "ContrastiveSFTTrainer",
    "DPOSettings",
    "FineTuneAdaptation",
    "HiddenStateContrastive",
    "LoraSettings",
    "PreferenceDPOConfig",
    "PreferenceDPOTrainer",
    "TrainSettings",
    "TrainerDefaults",
    "attention_contrastive_v1",
    "build_dpo_trainer",
    "hidden_state_contrastive_v1",
    "resolve_layer",
    "run_training",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
