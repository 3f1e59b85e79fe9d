"""`PreferenceDPOConfig`: the `DPOConfig` of `PreferenceDPOTrainer` for OBP-LLM's DPO stage (as TRL keeps
`dpo_config.py` beside `dpo_trainer.py`).

What it changes from TRL's `DPOConfig`: the shared defaults of `TrainerDefaults` (CPU safety, no activation
checkpointing, logging every step, no intermediate checkpoints), the paper's learning rate (5e-6) and warm-up (0.1
of the steps, `[train] warmup_ratio`'s default), and `sft_weight`, the weight of the SFT term mixed into the loss:

    loss = -log sigmoid(beta * margin) + sft_weight * NLL(chosen completion tokens)

which is TRL's `loss_type=["sigmoid", "sft"]`, `loss_weights=[1.0, sft_weight]` (`["sigmoid"]` alone for 0).
`beta` is TRL's field (default 0.1, the paper's). `max_length` (TRL's, default 1024) bounds prompt + longer answer;
a longer pair raises (see `PreferenceDPOTrainer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig

from .base_config import WARMUP_RATIO_HELP, TrainerDefaults
from .settings import DPOSettings, TrainSettings


@dataclass
class PreferenceDPOConfig(TrainerDefaults, DPOConfig):
    """`DPOConfig` for `PreferenceDPOTrainer`: TRL's fields, `TrainerDefaults`' defaults, and the fields below."""

    sft_weight: float = field(
        default=DPOSettings.sft_weight,
        metadata={
            "help": "Weight of the token-mean NLL of the chosen completion added to the sigmoid DPO loss (OBP-LLM's "
            "alpha); 0: pure sigmoid DPO. Sets `loss_type` and `loss_weights` unless they are given."
        },
    )
    loss_type: list[str] | None = field(
        default=None,
        metadata={"help": "TRL's loss terms; None: ['sigmoid', 'sft'], or ['sigmoid'] when sft_weight is 0."},
    )
    learning_rate: float = field(default=5e-6, metadata={"help": "The initial AdamW learning rate (the paper's)."})
    warmup_ratio: float | None = field(default=TrainSettings.warmup_ratio, metadata={"help": WARMUP_RATIO_HELP})

    def __post_init__(self) -> None:
        if self.sft_weight < 0:
            raise ValueError(f"sft_weight must be >= 0 (0 turns the SFT term off), got {self.sft_weight}.")
        if self.loss_type is None:
            if self.loss_weights is not None:
                raise ValueError(
                    f"loss_weights {self.loss_weights} without loss_type: give both, or neither and set sft_weight."
                )
            mixed = self.sft_weight > 0
            self.loss_type = ["sigmoid", "sft"] if mixed else ["sigmoid"]
            self.loss_weights = [1.0, self.sft_weight] if mixed else [1.0]
        super().__post_init__()
