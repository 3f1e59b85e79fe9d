"""`ContrastiveSFTConfig`: the `SFTConfig` of `ContrastiveSFTTrainer` (as TRL keeps `sft_config.py` beside
`sft_trainer.py`).

What it changes from TRL's `SFTConfig`: the shared defaults of `TrainerDefaults` (CPU safety, no activation
checkpointing, logging every step, no intermediate checkpoints, `warmup_ratio`), plus the two the trainer's records
need: `completion_only_loss=True` and no truncation (`max_length=None`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from .base_config import TrainerDefaults


@dataclass
class ContrastiveSFTConfig(TrainerDefaults, SFTConfig):
    """`SFTConfig` for `ContrastiveSFTTrainer`: TRL's fields, `TrainerDefaults`' defaults, and the two below."""

    completion_only_loss: bool | None = field(
        default=True,
        metadata={
            "help": "Loss on the completion tokens only. Must be set: with pre-tokenized records (`input_ids` + "
            "`completion_mask`, what `sft_dataset` builds) TRL's default, None, puts the loss on the prompt too."
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Truncate tokenized records to this many tokens; None: never (`sft_records` checks every "
            "record's length against `[train] max_length` and raises, where truncation would lose the answer)."
        },
    )

    def __post_init__(self) -> None:
        if self.completion_only_loss is None:
            raise ValueError(
                "ContrastiveSFTConfig needs completion_only_loss=True (or False to train on the prompt too): with "
                "pre-tokenized records TRL's default, None, puts the loss on the prompt tokens silently."
            )
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, or None for no truncation, got {self.max_length}.")
        super().__post_init__()
