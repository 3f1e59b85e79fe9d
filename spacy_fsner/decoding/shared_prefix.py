"""Attention over a prompt prefix shared by every row of a batch, without copying it into each row.

The generator computes a shared prefix (instruction, demonstrations) once. Copying its KV cache into every row
costs memory and memory traffic in proportion to rows x prefix length, at every prefill and every decode step
(the cache grows by concatenation, and grouped-query attention repeats the KV heads). Instead the rows' cache holds
only what follows the prefix, and attention is split in two (as in Hydragen / cascade attention): the queries of
all rows against the one prefix (a single matrix product that reads the prefix once), and each row against its own
keys under its mask; one softmax runs over both.

It is an attention implementation registered with transformers' `AttentionInterface` as `fsner_shared_prefix`.
Without a `shared_prefix` argument in the forward call it is exactly `sdpa` (training and `generate` use it
unchanged); with one, the model must get explicit `position_ids` (the prefix's length added) and an attention mask
that covers the rows' own tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

NAME = "fsner_shared_prefix"


@dataclass
class SharedPrefix:
    """The KV cache of one prompt prefix: per layer keys and values [kv_heads, length, head_dim]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[-2]


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    shared_prefix: SharedPrefix | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query [B, Hq, T, d]; key/value [B, Hkv, L, d] (the rows' own tokens); mask: boolean [B, 1, T, L] (True:
    attend) or None (causal). Returns [B, T, Hq, d] like `sdpa_attention_forward`."""
    if shared_prefix is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if kwargs.get("softcap") is not None:
        raise ValueError("fsner_shared_prefix attention does not support attention logit softcapping.")
    batch, q_heads, length, dim = query.shape
    kv_heads, keys_length = key.shape[1], key.shape[2]
    groups = q_heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    prefix_keys = shared_prefix.keys[module.layer_idx]  # [Hkv, P, d]
    prefix_values = shared_prefix.values[module.layer_idx]
    # query head h * groups + j reads KV head h (transformers' repeat_kv order)
    q = query.reshape(batch, kv_heads, groups * length, dim).float()
    prefix_scores = torch.matmul(q, prefix_keys.float().transpose(-1, -2)) * scale  # [B, Hkv, g*T, P]
    own_scores = torch.matmul(q, key.float().transpose(-1, -2)) * scale  # [B, Hkv, g*T, L]
    own_scores = own_scores.view(batch, kv_heads, groups, length, keys_length)
    if attention_mask is None:  # causal: query t sees the row's keys up to its own position
        allowed = torch.ones(length, keys_length, dtype=torch.bool, device=query.device).tril(keys_length - length)
        attention_mask = allowed[None, None]
    if attention_mask.dtype == torch.bool:
        own_scores = own_scores.masked_fill(~attention_mask[:, :, None], float("-inf"))
    else:
        own_scores = own_scores + attention_mask[:, :, None].float()
    own_scores = own_scores.view(batch, kv_heads, groups * length, keys_length)
    probs = torch.cat([prefix_scores, own_scores], dim=-1).softmax(-1)
    prefix_length = prefix_keys.shape[-2]
    out = torch.matmul(probs[..., :prefix_length], prefix_values.float())
    out = out + torch.matmul(probs[..., prefix_length:], value.float())
    out = out.to(query.dtype).view(batch, q_heads, length, dim)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, shared_prefix_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_shared_prefix_attention(model: PreTrainedModel) -> bool:
    """Switch `model` to `fsner_shared_prefix` when it runs on sdpa (the default); False when it runs on another
    implementation (flash attention, eager), which is then kept and prefixes are copied into the rows instead."""
    if model.config._attn_implementation == NAME:
        return True
    if model.config._attn_implementation != "sdpa":
        return False
    model.set_attn_implementation(NAME)
    return True
