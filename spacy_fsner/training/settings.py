"""Settings shared by every trainer here: the LoRA adapter, and the trainer arguments that keep a CPU run safe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


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


def trainer_defaults(output_dir: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Arguments every trainer config starts from; `overrides` decide `use_cpu`.

    bf16 only on a GPU that has it (TRL defaults to bf16, which fails on a CPU-only machine); no activation
    checkpointing; report_to=[] (no external loggers); logging every step; no intermediate checkpoints unless asked.
    """
    on_gpu = torch.cuda.is_available() and not overrides.get("use_cpu", False)
    return {
        "output_dir": str(output_dir),
        "use_cpu": not on_gpu,
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        "activation_checkpointing": False,
        "report_to": [],
        "logging_steps": 1,
        "save_strategy": "no",
    }
