"""`TrainerDefaults`: the trainer arguments that every trainer config here changes from TRL's, in one place.

It is a mixin, not a `TrainingArguments` subclass: put it first among the bases of a TRL config
(`class ContrastiveSFTConfig(TrainerDefaults, SFTConfig)`), so its fields replace the same fields of TRL's config and
its `__post_init__` runs before TRL's. (A dataclass that subclassed `TrainingArguments` would carry every field of it
with transformers' defaults and, placed first, would undo TRL's own defaults such as `bf16=None`.)

Why each default:

- `use_cpu` None: train on the CPU exactly when no CUDA GPU is present.
- `bf16` None: bf16 mixed precision only on a GPU that supports it. TRL turns bf16 on by default, and on a CPU-only
  machine that raises ("... use_cpu") when the config is built.
- `activation_checkpointing` False: TRL turns it on (through the deprecated `gradient_checkpointing`); the models
  trained here do not need the memory and it costs about 20% of the time.
- `report_to` "none": no external loggers (`metrics.json` and `curves.png` hold the log).
- `logging_steps` 1: every step in `trainer.state.log_history` (NLL, each objective, DPO rewards).
- `save_strategy` "no": no intermediate checkpoints unless a run asks for them (`run_training` does).
- `ddp_find_unused_parameters` False: on several processes (DDP), every trainable parameter (LoRA's) takes part in
  every forward, so the search for unused ones (transformers' default, True) is a wasted traversal of the graph.
- `warmup_ratio`: the warm-up as a fraction of the training steps, written into `warmup_steps` (see
  `resolve_warmup`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

WARMUP_RATIO_HELP = (
    "Fraction of the training steps over which the learning rate warms up, in [0, 1). transformers 5 has no "
    "`warmup_ratio`; it reads a float below 1 in `warmup_steps` as this fraction, so the value is written there. "
    "None: `warmup_steps` as given."
)


@dataclass
class TrainerDefaults:
    """Defaults shared by `ContrastiveSFTConfig` and `PreferenceDPOConfig` (see the module docstring)."""

    use_cpu: bool | None = field(
        default=None, metadata={"help": "Train on the CPU. None: on the CPU exactly when no CUDA GPU is present."}
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 mixed precision. None: on when training on a GPU that supports it and fp16 is off (TRL's "
            "default, on everywhere, fails on a CPU-only machine)."
        },
    )
    activation_checkpointing: bool | None = field(
        default=False,
        metadata={
            "help": "Recompute activations in the backward pass to save memory (about 20%% slower). Off: the models "
            "trained here do not need it (TRL turns it on)."
        },
    )
    report_to: None | str | list[str] = field(
        default="none", metadata={"help": "External loggers; none: the log stays in `trainer.state.log_history`."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every this many optimizer steps."})
    save_strategy: str = field(
        default="no", metadata={"help": "When to save checkpoints; no: only what the caller saves at the end."}
    )
    save_total_limit: int | None = field(
        default=2,
        metadata={"help": "Checkpoints kept (the newest); a killed run resumes from the last. None: all of them."},
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "DDP looks for parameters without gradient each step; off: LoRA's all take part."},
    )
    warmup_ratio: float | None = field(default=None, metadata={"help": WARMUP_RATIO_HELP})

    def __post_init__(self) -> None:
        self.resolve_device()
        self.resolve_warmup()
        super().__post_init__()  # TRL's config, then transformers' TrainingArguments

    def resolve_device(self) -> None:
        """`use_cpu` and `bf16` left at None get the values this machine supports (before TRL sets bf16 on)."""
        if self.use_cpu is None:
            self.use_cpu = not torch.cuda.is_available()
        if self.bf16 is None:
            self.bf16 = (
                not self.use_cpu and not self.fp16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            )

    def resolve_warmup(self) -> None:
        """Write `warmup_ratio` into `warmup_steps`, the one place where the ratio becomes transformers' argument.

        transformers 5 dropped `TrainingArguments.warmup_ratio`; `warmup_steps` takes an int (steps) or a float in
        [0, 1) (a ratio of the total steps). Giving both (different) is ambiguous and raises.
        """
        if self.warmup_ratio is None:
            return
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(
                f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}; for a number of steps set "
                "warmup_ratio=None and warmup_steps=N."
            )
        if self.warmup_steps and self.warmup_steps != self.warmup_ratio:  # equal: already resolved (a rebuilt config)
            raise ValueError(
                f"Both warmup_ratio ({self.warmup_ratio}) and warmup_steps ({self.warmup_steps}) are set: give one "
                "(warmup_ratio=None to count the warm-up in steps)."
            )
        self.warmup_steps = self.warmup_ratio
