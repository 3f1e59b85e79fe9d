"""What a training config's `[train]` section reads (`TrainSettings`, with `[train.lora]` and `[train.dpo]`), and
how its keys become trainer arguments (`TrainSettings.trainer_arguments`). Cheap to import (no trl).

The defaults here are the stage's defaults (the papers' values where they give them); the trainer configs
(`ContrastiveSFTConfig`, `PreferenceDPOConfig`) and the episode fine-tuning (`FineTuneAdaptation`) take theirs from
here where a value means the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base_config import TrainerDefaults

TRAINING_STAGES = ("sft", "dpo")
"""sft: next-token loss on the answers plus the configured contrastive objectives (none for source-domain
training); dpo: preference pairs (boundary shifts, error feedback) with the SFT term mixed in."""

PAIR_KINDS = ("boundary", "error", "type")
"""Kinds of preference pairs: boundary shifts of gold entities, the current pipeline's errors, and (joint templates
only; none for the others) gold entities given a wrong type."""


@dataclass
class LoraSettings:
    """A new LoRA adapter (paper values: r 8, alpha 16); `target_modules` a list or "all-linear"."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            task_type="CAUSAL_LM",
        )


@dataclass
class DPOSettings:
    """`[train.dpo]` (OBP-LLM: beta 0.1, SFT weight alpha 0.2)."""

    beta: float = 0.1
    sft_weight: float = 0.2
    pairs: list[str] = field(default_factory=lambda: list(PAIR_KINDS))
    feedback_docs: int = 0
    """Error feedback predicts only the first `feedback_docs` training docs (0: all; prediction is the slow part)."""


@dataclass
class TrainSettings:
    """`[train]`: what a stage does and how long (the papers' values are the defaults where they give them)."""

    stage: str = "sft"
    seed: int = 0
    absent_labels: int = 1
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 8
    gradient_accumulation: int = 1
    learning_rate: float = 3e-4
    warmup_ratio: float = 0.1
    """Fraction of the training steps to warm up over (see `TrainerDefaults.resolve_warmup`)."""
    max_length: int | None = None
    neftune_alpha: float = 0.0
    """Noise on the input embeddings during SFT (NEFTune's alpha, IF-WRANER's regularisation); 0: off."""
    save_steps: int = 50
    logging_steps: int = TrainerDefaults.logging_steps
    threads: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)
    dpo: DPOSettings = field(default_factory=DPOSettings)
    objectives: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stage not in TRAINING_STAGES:
            raise ValueError(f"[train] stage = {self.stage!r}: use one of {list(TRAINING_STAGES)}.")
        unknown = sorted(set(self.dpo.pairs) - set(PAIR_KINDS))
        if unknown or not self.dpo.pairs:
            raise ValueError(f"[train.dpo] pairs = {self.dpo.pairs}: use a non-empty subset of {list(PAIR_KINDS)}.")
        if self.stage == "dpo" and self.objectives:
            raise ValueError("[train.objectives] are SFT terms: remove them from a DPO stage's config.")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"[train] max_steps = {self.max_steps}: use -1 to train for `epochs`, or a number of steps >= 1."
            )

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> TrainSettings:
        section = dict(section)
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"[train] has unknown settings {unknown}: the settings are {sorted(known)}.")
        lora = LoraSettings(**section.pop("lora", {}))
        dpo = DPOSettings(**section.pop("dpo", {}))
        objectives = section.pop("objectives", {})
        return cls(**section, lora=lora, dpo=dpo, objectives=objectives)

    def trainer_arguments(self) -> dict[str, Any]:
        """The trainer arguments both stages take from `[train]`, under transformers' names; a stage's config adds
        its own (NEFTune for SFT; beta, SFT weight and max_length for DPO). Checkpoints every `save_steps` steps (a
        killed run resumes from the last one) and a progress bar."""
        return {
            "num_train_epochs": self.epochs,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation,
            "learning_rate": self.learning_rate,
            "warmup_ratio": self.warmup_ratio,
            "logging_steps": self.logging_steps,
            "save_strategy": "steps",
            "save_steps": self.save_steps,
            "seed": self.seed,
            "disable_tqdm": False,
        }
