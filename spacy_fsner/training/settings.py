"""What a training config's `[train]` section reads (`TrainSettings`, with `[train.lora]` and `[train.dpo]`), and
how its keys become trainer arguments (`TrainSettings.trainer_arguments`). Cheap to import (no trl).

The defaults here are the stage's defaults (the papers' values where they give them); the trainer configs
(`ContrastiveSFTConfig`, `PreferenceDPOConfig`) and the episode fine-tuning (`FineTuneAdaptation`) take theirs from
here where a value means the same thing.
"""

from __future__ import annotations

import math
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
class PromptVariety:
    """`[train.variety]`: how joint-template training records vary their prompts, so that a general (base) adapter
    reads the prompt instead of learning one fixed form. Each is a per-record probability (0: never).

    - `definitions`: the shown labels' definitions (from the component's `label_definitions`) are in the prompt
      (1.0, the default: always, as at inference).
    - `demonstrations`: a record without the task's own demonstrations gets 1 to `shots` other training chunks
      (of the shorter half, to keep records short) as demonstrations, rendered as at inference.
    - `omit_present`: one to all of the labels with an entity in the chunk are left out of the prompt and their
      entities out of the answer, so that the model answers for the listed types only (and with nothing when none
      of them occurs).
    - `names`: the labels go by another name style in this record: for `coarse-fine` names (Few-NERD's
      `person-scholar`), the coarse part (`person`, merging the fine types under it) or the fine part (`scholar`,
      unless two labels share it); labels without a `-` keep their name.
    """

    definitions: float = 1.0
    demonstrations: float = 0.0
    shots: int = 2
    omit_present: float = 0.0
    names: float = 0.0

    def __post_init__(self) -> None:
        for name in ("definitions", "demonstrations", "omit_present", "names"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"[train.variety] {name} = {value}: a probability, between 0 and 1.")
        if self.shots < 1:
            raise ValueError(f"[train.variety] shots = {self.shots}: the most demonstrations per record, >= 1.")

    @property
    def active(self) -> bool:
        return self.definitions < 1.0 or bool(self.demonstrations or self.omit_present or self.names)


@dataclass
class TrainSettings:
    """`[train]`: what a stage does and how long (the papers' values are the defaults where they give them)."""

    stage: str = "sft"
    seed: int = 0
    absent_labels: int = 1
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 8
    """Records per forward pass on one process; the global batch (records per optimizer step) is `batch_size *
    gradient_accumulation`, whatever the number of processes (see `batch_layout`)."""
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
    group_by_length: bool = False
    """Batch records of similar length together (less padding: faster on a CPU, where padding is computed)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    dpo: DPOSettings = field(default_factory=DPOSettings)
    objectives: dict[str, Any] = field(default_factory=dict)
    variety: PromptVariety = field(default_factory=PromptVariety)

    def __post_init__(self) -> None:
        if self.stage not in TRAINING_STAGES:
            raise ValueError(f"[train] stage = {self.stage!r}: use one of {list(TRAINING_STAGES)}.")
        unknown = sorted(set(self.dpo.pairs) - set(PAIR_KINDS))
        if unknown or not self.dpo.pairs:
            raise ValueError(f"[train.dpo] pairs = {self.dpo.pairs}: use a non-empty subset of {list(PAIR_KINDS)}.")
        if self.stage == "dpo" and self.objectives:
            raise ValueError("[train.objectives] are SFT terms: remove them from a DPO stage's config.")
        if self.stage == "dpo" and (self.group_by_length or self.variety.active):
            raise ValueError(
                "[train] group_by_length and [train.variety] apply to SFT records: remove them from a DPO stage."
            )
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
        variety = PromptVariety(**section.pop("variety", {}))
        return cls(**section, lora=lora, dpo=dpo, objectives=objectives, variety=variety)

    def batch_layout(self, processes: int = 1) -> tuple[int, int]:
        """(records per forward on each process, accumulation steps) that make the config's global batch,
        `batch_size * gradient_accumulation` records per optimizer step, on `processes` data-parallel processes.

        The accumulation is spread over the processes first: each forward then holds the same `batch_size` records
        as on one process, in the same order (the trainer's sampler deals consecutive batches to the processes in
        turn), so a run gives the same adapter on any number of processes, to float tolerance (LoRA dropout aside:
        its masks are random). What does not divide is taken from the forward's records: `batch_size 8`,
        `gradient_accumulation 1` on 2 processes is 4 records per forward on each; the NLL is the same, but the
        contrastive terms, computed within a forward's records, see fewer of them.
        """
        if processes < 1:
            raise ValueError(f"processes = {processes}: at least 1.")
        shared = math.gcd(self.gradient_accumulation, processes)
        split = processes // shared  # what the accumulation cannot absorb divides each forward's records
        if self.batch_size % split:
            raise ValueError(
                f"[train] batch_size {self.batch_size} x gradient_accumulation {self.gradient_accumulation} (the "
                f"global batch) cannot be shared evenly by {processes} processes: make gradient_accumulation a "
                f"multiple of {processes}, or batch_size a multiple of {split}."
            )
        return self.batch_size // split, self.gradient_accumulation // shared

    def trainer_arguments(self, processes: int = 1) -> dict[str, Any]:
        """The trainer arguments both stages take from `[train]`, under transformers' names, for a run on
        `processes` data-parallel processes (same global batch, see `batch_layout`); a stage's config adds its own
        (NEFTune for SFT; beta, SFT weight and max_length for DPO). Checkpoints every `save_steps` steps (a killed
        run resumes from the last one) and a progress bar."""
        per_device, accumulation = self.batch_layout(processes)
        return {
            "num_train_epochs": self.epochs,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": per_device,
            "gradient_accumulation_steps": accumulation,
            "learning_rate": self.learning_rate,
            "warmup_ratio": self.warmup_ratio,
            "logging_steps": self.logging_steps,
            "save_strategy": "steps",
            "save_steps": self.save_steps,
            "seed": self.seed,
            "disable_tqdm": False,
            "train_sampling_strategy": "group_by_length" if self.group_by_length else "random",
        }
