"""Collate pre-tokenized SFT records that carry the contrastive objectives' columns.

TRL's collator pads `input_ids` / `labels` (right padding) and ignores every other column. This wrapper lets it do
that and adds the objectives' columns as padded tensors aligned with `input_ids`:
`token_types` [B, T] (pad -1), `label_positions` [B, P] (pad -1), `entity_spans` [B, J, 2] (pad -1), and `label`
as a list of strings. TRL truncates `input_ids`/`labels` to `max_length` during dataset preparation but not the
extra columns, so they are cut here the same way (`truncation_mode`); a span cut by truncation is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .objectives import OBJECTIVE_COLUMNS


@dataclass
class ContrastiveCollator:
    """Wraps a collator of pre-tokenized records (`input_ids`, `labels`) and adds the objective columns."""

    base: Callable[[list[dict[str, Any]]], dict[str, Any]]
    truncation_mode: Literal["keep_start", "keep_end"] = "keep_start"

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base([{k: v for k, v in ex.items() if k not in OBJECTIVE_COLUMNS} for ex in examples])
        if "token_types" not in examples[0]:
            return batch
        if "attention_mask" not in batch:
            raise ValueError(
                "Contrastive objectives need padded batches with an attention mask: turn off `padding_free` and "
                "`packing` in the SFTConfig."
            )
        length = batch["input_ids"].shape[1]
        size = len(examples)
        max_positions = max([1, *(len(ex.get("label_positions") or ()) for ex in examples)])
        max_spans = max([1, *(len(ex.get("entity_spans") or ()) for ex in examples)])
        token_types = torch.full((size, length), -1, dtype=torch.long)
        label_positions = torch.full((size, max_positions), -1, dtype=torch.long)
        entity_spans = torch.full((size, max_spans, 2), -1, dtype=torch.long)
        for row, ex in enumerate(examples):
            n = len(ex["input_ids"])
            types = list(ex["token_types"])
            if len(types) < n:
                raise ValueError(
                    f"A record has {len(types)} token_types for {n} input_ids: token_types must give one value per "
                    "token of the untruncated record. Fix the dataset builder."
                )
            # positions in the original record -> positions after TRL's truncation
            offset = len(types) - n if self.truncation_mode == "keep_end" else 0
            token_types[row, :n] = torch.tensor(types[offset : offset + n], dtype=torch.long)
            kept = [p - offset for p in ex.get("label_positions") or () if 0 <= p - offset < n]
            label_positions[row, : len(kept)] = torch.tensor(kept, dtype=torch.long)
            spans = [
                (s - offset, e - offset) for s, e in ex.get("entity_spans") or () if s - offset >= 0 and e - offset <= n
            ]
            if spans:
                entity_spans[row, : len(spans)] = torch.tensor(spans, dtype=torch.long)
        batch["token_types"] = token_types
        batch["label_positions"] = label_positions
        batch["entity_spans"] = entity_spans
        if "label" in examples[0]:
            batch["label"] = [ex["label"] for ex in examples]
        return batch
