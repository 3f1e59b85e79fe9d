"""Rows of a KV cache as the generator keeps them between prefill steps: selected (a child row starts as a copy of
its parent's) and concatenated (sub-batches of other widths merged by left-padding the cache)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .shared_prefix import SharedPrefix


@dataclass
class Rows:
    """A batch of KV-cache rows: per layer keys/values [rows, kv_heads, width, head_dim], the attention mask
    [rows, width] (0 on pads, which sit left of each row's tokens) and each row's last position. With `shared`,
    every row continues that prefix, which is attended to but not held in the rows (see `shared_prefix`)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    last_position: torch.Tensor
    shared: SharedPrefix | None = None

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def select(self, index: torch.Tensor) -> Rows:
        """Rows `index` (repeats allowed): a child row starts as a copy of its parent's."""
        return Rows(
            [k.index_select(0, index) for k in self.keys],
            [v.index_select(0, index) for v in self.values],
            self.mask.index_select(0, index),
            self.last_position.index_select(0, index),
            self.shared,
        )

    def cache(self) -> DynamicCache:
        return DynamicCache(ddp_cache_data=list(zip(self.keys, self.values, strict=True)))

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        """The rows of `parts` in one batch, each right-aligned in the widest width (left-padding the cache)."""
        if len(parts) == 1:
            return parts[0]
        width = max(part.width for part in parts)
        return Rows(
            [_right_aligned([p.keys[i] for p in parts], width, dim=-2) for i in range(len(parts[0].keys))],
            [_right_aligned([p.values[i] for p in parts], width, dim=-2) for i in range(len(parts[0].values))],
            _right_aligned([p.mask for p in parts], width, dim=-1),
            torch.cat([p.last_position for p in parts]),
            parts[0].shared,
        )


def _right_aligned(tensors: list[torch.Tensor], width: int, dim: int) -> torch.Tensor:
    """`tensors` stacked along dim 0, each zero-padded on the left of `dim` to `width`."""
    first = tensors[0]
    shape = list(first.shape)
    shape[0], shape[dim] = sum(t.shape[0] for t in tensors), width
    out = first.new_zeros(shape)
    row = 0
    for t in tensors:
        out[row : row + t.shape[0]].narrow(dim, width - t.shape[dim], t.shape[dim]).copy_(t)
        row += t.shape[0]
    return out
