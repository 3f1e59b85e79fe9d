"""`ContrastiveSFTTrainer`: TRL's SFTTrainer plus weighted contrastive objectives (CLLMFS Eq. 6, OBP-LLM Eq. 4).

    loss = NLL(completion tokens) + sum_o weight_o * L_o

The NLL is TRL's own (fused LM head, completion-only on pre-tokenized records with `completion_mask`); each
objective captures its activations with forward hooks during that same forward pass, so the contrastive terms cost
no extra forward (except CLLMFS's noise view, see `HiddenStateContrastive`). Every term is logged: `nll` and each
objective's `name` (e.g. `cl_hidden`, `cl_attention`, unweighted) appear in `trainer.state.log_history` next to
TRL's `loss` (the total).

On several processes (`accelerate launch`, see docs/scaling.md): the NLL is TRL's (token counts summed over the
processes); each objective is a mean over one micro-batch, divided by the accumulation steps like TRL's MoE aux loss,
and the processes' gradients are averaged, so the update is that of one process accumulating the same micro-batches.
Each micro-batch is numbered as on one process (`batch_index`), and an objective's random draws are seeded from
that number: the same run on 1 or N processes gives the same adapter, to float tolerance. The logged values are
means over the processes. On a sharded model (FSDP, DeepSpeed) the objectives' extra pass runs through the wrapped
model (`ContrastiveObjective.sharded_model`).

Activation checkpointing works (non-reentrant, transformers' default): the hooks keep the first capture of a step,
and the recomputation during backward is ignored (tested: same loss and gradients with and without it). It is off
in `ContrastiveSFTConfig` (`sft_config.py`, through `TrainerDefaults`) because the small models trained here do not
need the memory, and it costs time (about 20% by TRL's estimate). Reentrant checkpointing runs the layers without
autograd: the objectives then raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler
from trl import SFTTrainer

from .collator import ContrastiveCollator
from .fused_head import score_labelled_positions
from .objectives import OBJECTIVE_COLUMNS, ContrastiveBatch, ContrastiveObjective


class ContrastiveSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss adds `sum(weight * objective)`; objectives are `ContrastiveObjective`s (disabled ones,
    e.g. `contrastive=False`, are skipped). Takes the same arguments as `SFTTrainer`, plus `objectives`."""

    def __init__(self, *args: Any, objectives: Sequence[ContrastiveObjective] = (), **kwargs: Any) -> None:
        # hooks go on the final model (peft-wrapped by SFTTrainer when `peft_config` is given); collator wrapped
        score_labelled_positions()
        super().__init__(*args, **kwargs)
        self.objectives = [objective for objective in objectives if objective.enabled]
        names = [objective.name for objective in self.objectives]
        if len(set(names)) != len(names) or "nll" in names:
            raise ValueError(f"Objective names must be unique and not 'nll' (they are log keys), got {names}.")
        if self.objectives and (self.args.packing or self.padding_free):
            raise ValueError("Contrastive objectives need one record per row: set packing=False, padding_free=False.")
        if self.args.completion_only_loss is None:
            raise ValueError(
                "Set completion_only_loss=True in the SFTConfig (`ContrastiveSFTConfig` does): with pre-tokenized "
                "records TRL's default (None) puts the loss on the prompt tokens too."
            )
        columns = getattr(self.train_dataset, "column_names", None)
        if self.objectives and columns is not None and "token_types" not in columns:
            raise ValueError(
                f"The training dataset has no `token_types` column (columns: {columns}); the contrastive objectives "
                f"need {list(OBJECTIVE_COLUMNS[:3])} in every record (see `ContrastiveBatch`)."
            )
        # the objective columns must reach compute_loss as padded tensors
        if not isinstance(self.data_collator, ContrastiveCollator):
            self.data_collator = ContrastiveCollator(self.data_collator, self.args.truncation_mode)
        for objective in self.objectives:
            objective.attach(self.model)
        self._batch_count = (-1, 0)  # (optimizer step, micro-batches seen in it) on this process

    def _batch_index(self) -> int:
        """This micro-batch's number among the run's micro-batches, counted as on one process: the trainer's sampler
        deals consecutive batches to the processes in turn, so the n-th micro-batch of process r is number
        n * processes + r (and one process accumulating N times the steps sees the same numbers, in order)."""
        step, seen = self._batch_count
        if step != self.state.global_step:
            step, seen = self.state.global_step, 0
        self._batch_count = (step, seen + 1)
        local = step * self.args.gradient_accumulation_steps + seen
        return local * self.accelerator.num_processes + self.accelerator.process_index

    def _get_train_sampler(self, train_dataset=None):
        """transformers' sampler; `group_by_length` on several processes groups by the global batch and draws its
        order from a generator seeded with the run's seed. (transformers draws it from the global random state, which
        parts ways between processes as soon as LoRA's dropout has drawn masks for batches of other shapes: from the
        second epoch on, the processes would deal out different orders, some records twice and others never.) On one
        process it is left as transformers makes it, so that a run started before keeps its order when resumed."""
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler) and self.args.world_size > 1:
            per_process = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
            sampler.batch_size = per_process * self.args.world_size  # the global batch
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            sampler.generator = torch.Generator().manual_seed(seed)
        return sampler

    def _set_signature_columns_if_needed(self) -> None:
        # keep the objective columns, which `remove_unused_columns` would drop (not inputs of the model's forward)
        super()._set_signature_columns_if_needed()
        self._signature_columns = [
            *self._signature_columns,
            *(c for c in OBJECTIVE_COLUMNS if c not in self._signature_columns),
        ]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # NLL from TRL (objective columns removed: the model's forward does not take them) + weighted objectives
        batch = ContrastiveBatch.pop_from(inputs)
        index = self._batch_index() if self.model.training and self.objectives else None
        sharded = model if self.is_fsdp_enabled or self.is_deepspeed_enabled else None
        for objective in self.objectives:
            objective.reset()
            objective.batch_index, objective.sharded_model = index, sharded
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if not self.objectives:
            return result
        if batch is None:
            raise ValueError(
                f"The batch has none of the columns {list(OBJECTIVE_COLUMNS)} that the objectives need: build the "
                "dataset with them (see `ContrastiveBatch`)."
            )
        nll = result[0] if return_outputs else result
        mode = "train" if self.model.training else "eval"
        # like TRL's aux loss: with num_items_in_batch the Trainer does not divide the loss by the accumulation steps
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        total, values = nll, [nll.detach() * steps]
        try:
            for objective in self.objectives:
                value = objective.compute(batch)
                total = total + objective.weight * value / steps
                values.append(value.detach())
        finally:
            for objective in self.objectives:
                objective.reset()
                objective.batch_index, objective.sharded_model = None, None
        # means over the processes (every process gathers, every micro-batch: the same collectives everywhere); with
        # num_items_in_batch TRL's NLL is already scaled by the number of processes, so its mean is the run's NLL
        gathered = self.accelerator.gather(torch.stack(values)[None]).float().mean(0).tolist()
        for name, value in zip(["nll", *(objective.name for objective in self.objectives)], gathered, strict=True):
            self._metrics[mode][name].append(value)
        return (total, result[1]) if return_outputs else total

    def remove_hooks(self) -> None:
        """Detach the objectives' hooks from the model (e.g. before saving or generating with it)."""
        for objective in self.objectives:
            objective.detach()
