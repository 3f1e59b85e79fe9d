"""OBP-LLM's attention-based contrastive objective (section 3.3, Eq. 3) on the outputs of one decoder layer's
`q_proj` and `k_proj` (with LoRA, the hooked module is the LoRA wrapper, so the capture includes the adapter's delta).
Registered as `spacy_fsner.AttentionContrastive.v1`."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from spacy.util import registry
from torch import Tensor, nn

from .base import PAPER_LAYER, ContrastiveBatch, ContrastiveObjective, LayerSpec, init_defaults


def _head_dim(attention: nn.Module, config: Any) -> int:
    head_dim = getattr(attention, "head_dim", None) or getattr(config, "head_dim", None)
    if not head_dim:
        head_dim = config.hidden_size // config.num_attention_heads
    return int(head_dim)


def attention_contrastive_loss(
    queries: Tensor,
    keys: Tensor,
    head_dim: int,
    token_types: Tensor,
    label_positions: Tensor,
    entity_spans: Tensor,
    formula: Literal["eq3", "infonce"] = "eq3",
    temperature: float = 0.1,
) -> Tensor:
    """OBP-LLM Eq. 3 on q_proj / k_proj outputs.

    queries: [B, T, Hq * head_dim]; keys: [B, T, Hk * head_dim] (grouped-query attention: Hk <= Hq). Heads are
    averaged, then: anchor e^Q = normalise(mean of Q over the label's tokens); positive e^{K,pos}_j =
    normalise(mean of K over entity j's tokens); negatives e^{K,neg}_{j,k} = normalise(K) of the token just left of
    entity j and the token just right of it (k = 1, 2; skipped when outside the sequence or the sentence, or inside
    another entity of the record's label). With c(.,.) the cosine similarity:

    formula="eq3" (the paper, reading the sum over k inside the sum over j since n_{i,j,k} depends on j):
        L = -1/N sum_i log sigmoid( sum_j [ c(e^Q_i, e^{K,pos}_{i,j}) - sum_k c(e^Q_i, e^{K,neg}_{i,j,k}) ] )
        over the N records of the batch with at least one entity (a record without entities has no pair).
    formula="infonce" (alternative, with a temperature tau): per entity j,
        -log( exp(c_pos / tau) / (exp(c_pos / tau) + sum_k exp(c_neg_k / tau)) ), averaged over all entities.
    """
    batch_size, length, _ = queries.shape
    q = queries.float().reshape(batch_size, length, -1, head_dim).mean(2)  # [B, T, hd]
    k = keys.float().reshape(batch_size, length, -1, head_dim).mean(2)
    device = q.device
    positions = torch.arange(length, device=device)

    spans = entity_spans.to(device)
    valid_span = (spans[..., 0] >= 0) & (spans[..., 1] > spans[..., 0]) & (spans[..., 1] <= length)  # [B, J]
    has_entity = valid_span.any(1)
    if not has_entity.any():
        return queries.sum() * 0.0 + keys.sum() * 0.0

    label_mask = torch.zeros(batch_size, length, dtype=torch.bool, device=device)
    lp = label_positions.to(device)
    valid_lp = (lp >= 0) & (lp < length)
    label_mask[torch.arange(batch_size, device=device)[:, None].expand_as(lp)[valid_lp], lp[valid_lp]] = True
    lacking = has_entity & ~label_mask.any(1)
    if lacking.any():
        rows = lacking.nonzero().squeeze(-1).tolist()
        raise ValueError(
            f"Record(s) at batch rows {rows} have entities but no `label_positions`: the attention objective needs "
            "the token positions of the label's name in the instruction. Fix the dataset builder."
        )
    anchor = (q * label_mask[..., None]).sum(1) / label_mask.sum(1, keepdim=True).clamp(min=1)
    anchor = F.normalize(anchor, dim=-1)  # [B, hd]

    # [B, J, T] membership of each token in each entity span
    inside = (positions >= spans[..., 0:1]) & (positions < spans[..., 1:2]) & valid_span[..., None]
    span_mean = torch.einsum("bjt,btd->bjd", inside.float(), k) / inside.sum(-1, keepdim=True).clamp(min=1)
    cos_pos = (F.normalize(span_mean, dim=-1) * anchor[:, None]).sum(-1)  # [B, J]

    in_any_entity = inside.any(1)  # [B, T]
    neighbours = torch.stack([spans[..., 0] - 1, spans[..., 1]], dim=-1)  # [B, J, 2]
    clamped = neighbours.clamp(0, length - 1)
    rows = torch.arange(batch_size, device=device)[:, None, None].expand_as(clamped)
    types = token_types.to(device)
    valid_neg = (
        valid_span[..., None]
        & (neighbours >= 0)
        & (neighbours < length)
        & (types[rows, clamped] >= 0)
        & ~in_any_entity[rows, clamped]
    )
    neg_keys = F.normalize(k[rows, clamped], dim=-1)  # [B, J, 2, hd]
    cos_neg = (neg_keys * anchor[:, None, None]).sum(-1)  # [B, J, 2]

    if formula == "eq3":
        # OBP-LLM Eq. 3
        score = ((cos_pos - (cos_neg * valid_neg).sum(-1)) * valid_span).sum(1)  # [B]
        return -F.logsigmoid(score[has_entity]).mean()
    if formula == "infonce":
        logits = torch.cat([cos_pos[..., None], cos_neg.masked_fill(~valid_neg, float("-inf"))], dim=-1)
        per_entity = -F.log_softmax(logits / temperature, dim=-1)[..., 0]
        return per_entity[valid_span].mean()
    raise ValueError(f"`formula` must be 'eq3' or 'infonce', got {formula!r}.")


class AttentionContrastive(ContrastiveObjective):
    """OBP-LLM's attention-based contrastive term (section 3.3, Eq. 3; Eq. 4: lambda = 0.01, layer 26 of 32) on
    the chosen layer's `self_attn.q_proj` / `k_proj` outputs (before RoPE, as the paper's "output of the Q/K
    projector"). See `attention_contrastive_loss` for the formula."""

    def __init__(
        self,
        weight: float = 0.01,
        layer: LayerSpec = PAPER_LAYER,
        formula: Literal["eq3", "infonce"] = "eq3",
        temperature: float = 0.1,
        name: str = "cl_attention",
    ) -> None:
        super().__init__(weight, layer, name)
        if formula not in ("eq3", "infonce"):
            raise ValueError(f"`formula` must be 'eq3' (the paper's Eq. 3) or 'infonce', got {formula!r}.")
        if temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        self.formula = formula
        self.temperature = temperature

    def modules_to_hook(self, decoder: nn.Module, index: int) -> dict[str, nn.Module]:
        attention = getattr(decoder.layers[index], "self_attn", None)
        if attention is None or not hasattr(attention, "q_proj") or not hasattr(attention, "k_proj"):
            raise ValueError(
                f"Decoder layer {index} has no `self_attn.q_proj` / `self_attn.k_proj`: the attention objective "
                "needs separate Q and K projections (Llama-style attention)."
            )
        config = getattr(self._model, "config", None)
        self.head_dim = _head_dim(attention, config)
        return {"q": attention.q_proj, "k": attention.k_proj}

    def compute(self, batch: ContrastiveBatch) -> Tensor:
        return attention_contrastive_loss(
            self.captured("q"),
            self.captured("k"),
            self.head_dim,
            batch.token_types,
            batch.label_positions,
            batch.entity_spans,
            self.formula,
            self.temperature,
        )


_DEFAULTS = init_defaults(AttentionContrastive)


@registry.misc("spacy_fsner.AttentionContrastive.v1")
def attention_contrastive_v1(
    weight: float = _DEFAULTS["weight"],
    layer: int | float = _DEFAULTS["layer"],
    formula: Literal["eq3", "infonce"] = _DEFAULTS["formula"],
    temperature: float = _DEFAULTS["temperature"],
    name: str = _DEFAULTS["name"],
) -> AttentionContrastive:
    """OBP-LLM's attention contrastive objective (Eq. 3); `temperature` is used by `formula="infonce"` only."""
    return AttentionContrastive(weight=weight, layer=layer, formula=formula, temperature=temperature, name=name)
