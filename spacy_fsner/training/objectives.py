"""Contrastive auxiliary objectives for supervised fine-tuning (CLLMFS and OBP-LLM), registered in spaCy's `misc`.

Both papers add a weighted contrastive term to the next-token loss, computed on internal activations of one decoder
layer: L = L_CE + lambda * L_CL (CLLMFS Eq. 6; OBP-LLM Eq. 4). TRL's SFT forward uses a fused LM head and returns
no hidden states, so an objective captures what it needs with forward hooks on the model's modules:

- `HiddenStateContrastive` (CLLMFS, section 3.6): the output of the chosen decoder layer. A supervised contrastive
  loss over the sentence tokens of the batch, optionally with a second, noised view of the batch ("CL + Noise").
- `AttentionContrastive` (OBP-LLM, section 3.3, Eq. 3): the outputs of the chosen layer's `q_proj` and `k_proj`
  (with LoRA, the hooked module is the LoRA wrapper, so the capture includes the adapter's delta).

An objective's lifecycle within a step: `reset()` (drop old captures), the model's forward (hooks keep the *first*
capture of the step: with activation checkpointing the backward recomputes the layer's insides, so hooks on
`q_proj`/`k_proj` fire again; transformers 5.23 checkpoints `forward`, so a hook on the layer itself fires once),
`compute(batch)`, `reset()`. The batch tensors follow the dataset contract of `ContrastiveBatch`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from spacy.util import registry
from torch import Tensor, nn

LayerSpec = int | float
"""A decoder layer: an int is a Python index into the model's layers (0-based, negative from the end); a float in
(0, 1] is a depth fraction: layer number round(fraction * num_layers), counted from 1 (the paper's "26th of 32
layers" is 26/32 = 0.8125, i.e. index 25)."""

OBJECTIVE_COLUMNS = ("token_types", "label_positions", "entity_spans", "label")
"""Dataset columns the objectives read; the trainer pops them from the batch before the model's forward."""


@dataclass
class ContrastiveBatch:
    """The batch tensors an objective reads (all [B, ...], right-padded like `input_ids`).

    token_types: [B, T] long; -1 outside the input sentence (prompt, response, padding), 0 a sentence token outside
        every gold entity, k >= 1 a token inside a gold entity of (global) type k.
    label_positions: [B, P] long; positions of the record label's name in the instruction, -1 padding.
    entity_spans: [B, J, 2] long; [start, end) token positions of the gold entities of the record's label, -1 padding.
    """

    input_ids: Tensor
    attention_mask: Tensor | None
    token_types: Tensor
    label_positions: Tensor
    entity_spans: Tensor
    labels: list[str] | None = None

    @classmethod
    def pop_from(cls, inputs: dict[str, Any]) -> ContrastiveBatch | None:
        """Remove the objective columns from a model-input dict; None when the batch carries none of them."""
        extra = {key: inputs.pop(key) for key in OBJECTIVE_COLUMNS if key in inputs}
        if not extra:
            return None
        missing = [key for key in OBJECTIVE_COLUMNS[:3] if key not in extra]
        if missing:
            raise ValueError(
                f"The batch lacks the column(s) {missing} that contrastive objectives need. Build the dataset with "
                f"all of {list(OBJECTIVE_COLUMNS[:3])} and collate it with `ContrastiveCollator`."
            )
        return cls(
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            token_types=extra["token_types"],
            label_positions=extra["label_positions"],
            entity_spans=extra["entity_spans"],
            labels=extra.get("label"),
        )


# ---------------------------------------------------------------------------------------------------------------
# Locating modules


def resolve_layer(layer: LayerSpec, num_layers: int) -> int:
    """The 0-based index of `layer` (see `LayerSpec`) in a model with `num_layers` decoder layers."""
    if isinstance(layer, bool) or not isinstance(layer, (int, float)):
        raise ValueError(
            f"`layer` must be an int index (e.g. -1) or a depth fraction in (0, 1] (e.g. 0.8125), got {layer!r}."
        )
    if isinstance(layer, int):
        if not -num_layers <= layer < num_layers:
            raise ValueError(
                f"`layer` index {layer} is out of range for a model with {num_layers} decoder layers: use an index "
                f"in [{-num_layers}, {num_layers - 1}] or a depth fraction in (0, 1]."
            )
        return layer % num_layers
    if not (0.0 < layer <= 1.0) or math.isnan(layer):
        raise ValueError(
            f"`layer` given as a float is a depth fraction and must lie in (0, 1], got {layer}. For an index, give "
            f"an int in [{-num_layers}, {num_layers - 1}]."
        )
    # layer number counted from 1, rounded half up, at least the first layer
    number = max(1, math.floor(layer * num_layers + 0.5))
    return number - 1


def find_decoder(model: nn.Module) -> nn.Module:
    """The decoder stack (e.g. `LlamaModel`: `embed_tokens` + `layers`) of a causal LM, a PeftModel around one, or
    the stack itself."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PeftModel -> LoRA-injected model
    candidates = []
    if hasattr(base, "get_decoder"):
        candidates.append(base.get_decoder())
    candidates.append(base)
    candidates.extend(module for _, module in base.named_modules())
    for module in candidates:
        if isinstance(getattr(module, "layers", None), nn.ModuleList) and hasattr(module, "get_input_embeddings"):
            return module
    raise ValueError(
        f"Cannot find the decoder layers of {type(model).__name__}: contrastive objectives expect a Llama-style model "
        "whose decoder module has `layers` (a ModuleList) and `get_input_embeddings()`, plain or wrapped by peft."
    )


def _head_dim(attention: nn.Module, config: Any) -> int:
    head_dim = getattr(attention, "head_dim", None) or getattr(config, "head_dim", None)
    if not head_dim:
        head_dim = config.hidden_size // config.num_attention_heads
    return int(head_dim)


class _StopForward(Exception):
    """Raised from a hook to end a forward pass once the needed layer has run."""

    def __init__(self, output: Tensor) -> None:
        super().__init__()
        self.output = output


@contextmanager
def _without_dropout(module: nn.Module) -> Iterator[None]:
    """Run `module` in eval mode (no dropout, e.g. LoRA's), then give every submodule back its own mode."""
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training


def _first_tensor(output: Any) -> Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


# ---------------------------------------------------------------------------------------------------------------
# Base class


class ContrastiveObjective:
    """A weighted auxiliary loss computed from activations captured by forward hooks during the model's forward."""

    name: str

    def __init__(self, weight: float, layer: LayerSpec, name: str) -> None:
        if weight < 0:
            raise ValueError(f"`weight` of {name} must be >= 0, got {weight}.")
        self.weight = float(weight)
        self.layer = layer
        self.name = name
        self.enabled = True
        self.layer_index: int | None = None
        self._captures: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._capturing = True

    # hooks --------------------------------------------------------------------------------------------------
    def modules_to_hook(self, decoder: nn.Module, index: int) -> dict[str, nn.Module]:
        """Capture key -> module whose output the objective needs."""
        raise NotImplementedError

    def attach(self, model: nn.Module) -> None:
        """Resolve the layer against `model` and register the capture hooks (plain or peft-wrapped model)."""
        self.detach()
        self._model = model
        self._decoder = find_decoder(model)
        self.layer_index = resolve_layer(self.layer, len(self._decoder.layers))
        for key, module in self.modules_to_hook(self._decoder, self.layer_index).items():
            self._handles.append(module.register_forward_hook(self._make_hook(key)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._captures.clear()

    def _make_hook(self, key: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            # first capture of the step only: activation checkpointing re-runs the layer's modules during backward
            if self._capturing and key not in self._captures:
                self._captures[key] = _first_tensor(output)

        return hook

    def reset(self) -> None:
        """Drop the captures (call at the start and at the end of every step)."""
        self._captures.clear()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hooks ignore forwards run inside this block (the objective's own extra passes)."""
        self._capturing = False
        try:
            yield
        finally:
            self._capturing = True

    def captured(self, key: str) -> Tensor:
        if key not in self._captures:
            raise RuntimeError(
                f"{self.name}: nothing captured for {key!r}. Call `attach(model)` before the forward, run the forward "
                "between `reset()` and `compute()`, and make sure the hooked layer runs (no early exit)."
            )
        tensor = self._captures[key]
        if torch.is_grad_enabled() and self._model.training and not tensor.requires_grad:
            raise RuntimeError(
                f"{self.name}: the activation captured at layer {self.layer_index} carries no gradient, so the "
                "objective cannot train anything. Either no trainable parameter lies at or below that layer (move "
                "the layer up or put LoRA on it), or reentrant activation checkpointing ran the layer without "
                "autograd (set activation_checkpointing_kwargs={'use_reentrant': False} or turn checkpointing off)."
            )
        return tensor

    def compute(self, batch: ContrastiveBatch) -> Tensor:
        """The unweighted loss for the captured step (a scalar with gradient)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------------
# CLLMFS: supervised contrastive loss on hidden states (+ noise view)


def supervised_contrastive_loss(
    features: Tensor, types: Tensor, temperature: float, views: Tensor | None = None
) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, "L_out") with entity tokens as anchors.

    features: [N, d] token representations; types: [N] (0 non-entity, k >= 1 entity type k); views: optional [A, d]
    second view of each anchor (e.g. noised), in the order of the anchors in `features`, used as one extra positive
    for its own anchor only (no other token needs one, so no other gets one).

    For each anchor a (type >= 1) with positives P(a) = {tokens of the same type, a excluded} (+ view(a)) and
    candidates C(a) = all tokens except a (+ view(a)), s = cos / temperature:
        l(a) = -1/|P(a)| sum_{p in P(a)} [ s(a, p) - log sum_{c in C(a)} exp s(a, c) ]
    and the loss is the mean of l(a) over anchors with at least one positive (0, with gradient, if there are none).
    Negatives are the candidates of another type: non-entity tokens and tokens of other entity types.
    """
    anchor_rows = (types >= 1).nonzero().squeeze(-1)
    if anchor_rows.numel() == 0:
        return features.sum() * 0.0
    normed = F.normalize(features.float(), dim=-1)
    anchors = normed[anchor_rows]  # [A, d]
    logits = anchors @ normed.T / temperature  # [A, N]
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(anchor_rows.numel(), device=logits.device), anchor_rows] = True
    positive = (types[anchor_rows, None] == types[None, :]) & ~is_self
    logits = logits.masked_fill(is_self, float("-inf"))
    if views is not None:
        if views.shape[0] != anchor_rows.numel():
            raise ValueError(f"`views` needs one row per anchor ({anchor_rows.numel()}), got {views.shape[0]}.")
        own_view = (anchors * F.normalize(views.float(), dim=-1)).sum(-1, keepdim=True) / temperature
        logits = torch.cat([logits, own_view], dim=1)
        positive = torch.cat([positive, torch.ones_like(own_view, dtype=torch.bool)], dim=1)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    num_positive = positive.sum(1)
    has_positive = num_positive > 0
    if not has_positive.any():
        return features.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~positive, 0.0)).sum(1)[has_positive] / num_positive[has_positive]
    return per_anchor.mean()


class HiddenStateContrastive(ContrastiveObjective):
    """CLLMFS's contrastive term on the hidden states of one decoder layer (paper section 3.6, Eq. 6: lambda = 0.001,
    layer 26 of 32). The paper's section 3.4 lost its formulas; this implements its stated intent (see
    `supervised_contrastive_loss`) over the sentence tokens of the whole batch.

    Noise view ("CL + Noise", Table 2): a second forward pass of the batch with uniform noise added to the input
    embeddings; each entity token's noised representation is an extra positive for it. The view differs from its
    anchor by that noise: the pass runs without dropout (LoRA's dropout would add a second, unspecified noise, and
    it took 40% of the pass's time on a CPU). It runs without gradient by default (the noised view is a fixed
    target, like a stop-gradient branch), only over the sequences with an entity token, each cut after its own last
    one and packed into one row (no padding), and stops right after the chosen layer (a hook raises), so it costs
    less than (layer_index + 1) / num_layers of one forward pass and no backward and no LM head; with
    `noise_grad=True` both views are trained (SimCSE-style) and the backward of that partial pass is paid too.
    """

    def __init__(
        self,
        weight: float = 0.001,
        layer: LayerSpec = 0.8125,
        temperature: float = 0.1,
        noise: bool = False,
        noise_alpha: float = 5.0,
        noise_scale: Literal["neftune", "absolute"] = "neftune",
        noise_grad: bool = False,
        max_negatives: int = 256,
        seed: int = 0,
        name: str = "cl_hidden",
    ) -> None:
        super().__init__(weight, layer, name)
        if temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        if noise_scale not in ("neftune", "absolute"):
            raise ValueError(f"`noise_scale` must be 'neftune' or 'absolute', got {noise_scale!r}.")
        if noise and noise_alpha <= 0:
            raise ValueError(f"`noise_alpha` must be > 0 when noise is on, got {noise_alpha}.")
        if max_negatives < 1:
            raise ValueError(f"`max_negatives` must be >= 1, got {max_negatives}.")
        self.temperature = temperature
        self.noise = noise
        self.noise_alpha = noise_alpha
        self.noise_scale = noise_scale
        self.noise_grad = noise_grad
        self.max_negatives = max_negatives
        self.generator = torch.Generator().manual_seed(seed)

    def modules_to_hook(self, decoder: nn.Module, index: int) -> dict[str, nn.Module]:
        return {"hidden": decoder.layers[index]}

    def sample_tokens(self, token_types: Tensor) -> Tensor:
        """Flat indices of the sentence tokens to contrast: every entity token and at most `max_negatives`
        non-entity tokens, drawn with the objective's seeded generator (bounds the cost of the similarity matrix)."""
        flat = token_types.reshape(-1)
        entities = (flat >= 1).nonzero().squeeze(-1)
        others = (flat == 0).nonzero().squeeze(-1)
        if others.numel() > self.max_negatives:
            pick = torch.randperm(others.numel(), generator=self.generator)[: self.max_negatives]
            others = others[pick.to(others.device).sort().values]
        return torch.cat([entities, others])

    def noise_view(self, batch: ContrastiveBatch, rows: Tensor | None = None) -> Tensor:
        """Output of the chosen layer at the flat token indices `rows` ([len(rows), d]; every unpadded token, in
        flat order, when None) for the batch with noise on the input embeddings.

        noise ~ U(-1, 1) * alpha / sqrt(L * d) per sequence (NEFTune's scaling, L = that sequence's unpadded length,
        d = hidden size) with `noise_scale="neftune"`, or U(-alpha, alpha) with `noise_scale="absolute"`.

        The pass runs only what those tokens depend on (the model is causal): each sequence that holds one, cut
        after its own last one (the rest of the sentence, the response and the padding are not run). The cut
        sequences are packed into one row, each with its own positions from 0, so attention stays within a
        sequence (transformers' packed-sequence mask) and no padding is computed. The noise is drawn for the whole
        batch first, so the values are those of the full pass.
        """
        decoder = self._decoder
        batch_size, length = batch.input_ids.shape
        if rows is None:
            real = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(batch.input_ids)
            rows = real.reshape(-1).nonzero().squeeze(-1)
        embeds = decoder.get_input_embeddings()(batch.input_ids)
        rows = rows.to(embeds.device)
        sequences, positions = rows // length, rows % length
        uniform = torch.rand(embeds.shape, generator=self.generator).to(embeds.device, embeds.dtype) * 2 - 1
        if self.noise_scale == "neftune":
            if batch.attention_mask is not None:
                lengths = batch.attention_mask.sum(1).clamp(min=1)
            else:
                lengths = torch.full((batch_size,), length, device=embeds.device)
            scale = self.noise_alpha / torch.sqrt(lengths.to(embeds.dtype) * embeds.shape[-1])
            uniform = uniform * scale[:, None, None]
        else:
            uniform = uniform * self.noise_alpha
        if rows.numel() == 0:  # no token needs a view (a batch without entities); the noise was drawn all the same
            return embeds.new_zeros((0, embeds.shape[-1]))
        keep = torch.unique(sequences)
        ends = torch.zeros(batch_size, dtype=torch.long, device=rows.device).scatter_reduce(
            0, sequences, positions + 1, reduce="amax"
        )[keep]
        cuts = list(zip(keep.tolist(), ends.tolist(), strict=True))  # (sequence, tokens it needs)
        needed = torch.arange(length, device=rows.device)[None, :] < ends[:, None]  # [kept, T]
        if batch.attention_mask is not None and bool((needed & (batch.attention_mask[keep] == 0)).any()):
            raise ValueError(
                f"{self.name}: the noise view needs right-padded batches (padding only after a sequence's tokens), "
                "as `ContrastiveCollator` builds them; this batch has padding before a token that needs a view."
            )
        noised = embeds + uniform
        packed = torch.cat([noised[seq, :end] for seq, end in cuts])[None]
        position_ids = torch.cat([torch.arange(end, device=rows.device) for _, end in cuts])[None]
        offsets = torch.cumsum(ends, 0) - ends  # where each kept sequence starts in the packed row

        def stop(module: nn.Module, args: Any, output: Any) -> None:
            raise _StopForward(_first_tensor(output))

        handle = decoder.layers[self.layer_index].register_forward_hook(stop)
        try:
            with self.paused(), _without_dropout(decoder):
                with torch.set_grad_enabled(self.noise_grad and torch.is_grad_enabled()):
                    decoder(inputs_embeds=packed, position_ids=position_ids, attention_mask=None, use_cache=False)
        except _StopForward as stopped:
            return stopped.output[0, offsets[torch.searchsorted(keep, sequences)] + positions]
        finally:
            handle.remove()
        raise RuntimeError(f"{self.name}: the noise pass never reached layer {self.layer_index}.")

    def compute(self, batch: ContrastiveBatch) -> Tensor:
        hidden = self.captured("hidden")  # [B, T, d]
        rows = self.sample_tokens(batch.token_types)
        flat_types = batch.token_types.reshape(-1)[rows]
        features = hidden.reshape(-1, hidden.shape[-1])[rows]
        # only the anchors (entity tokens) get a noised view: the pass runs what they need and no more
        views = self.noise_view(batch, rows[flat_types >= 1]) if self.noise else None
        return supervised_contrastive_loss(features, flat_types, self.temperature, views)


# ---------------------------------------------------------------------------------------------------------------
# OBP-LLM: attention-based contrastive loss (Eq. 3)


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
        layer: LayerSpec = 0.8125,
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


# ---------------------------------------------------------------------------------------------------------------
# Registered constructors


@registry.misc("spacy_fsner.HiddenStateContrastive.v1")
def hidden_state_contrastive_v1(
    weight: float = 0.001,
    layer: int | float = 0.8125,
    contrastive: bool = True,
    noise: bool = False,
    temperature: float = 0.1,
    noise_alpha: float = 5.0,
    noise_scale: Literal["neftune", "absolute"] = "neftune",
    noise_grad: bool = False,
    max_negatives: int = 256,
    seed: int = 0,
    name: str = "cl_hidden",
) -> HiddenStateContrastive:
    """CLLMFS's contrastive objective. `contrastive=False` turns it off (ablation row without CL: the trainer
    skips it); `noise=True` adds the noised view ("CL + Noise") and needs `contrastive=True`."""
    if noise and not contrastive:
        raise ValueError("`noise=True` adds positives to the contrastive loss: it needs `contrastive=True`.")
    objective = HiddenStateContrastive(
        weight=weight,
        layer=layer,
        temperature=temperature,
        noise=noise,
        noise_alpha=noise_alpha,
        noise_scale=noise_scale,
        noise_grad=noise_grad,
        max_negatives=max_negatives,
        seed=seed,
        name=name,
    )
    objective.enabled = contrastive
    return objective


@registry.misc("spacy_fsner.AttentionContrastive.v1")
def attention_contrastive_v1(
    weight: float = 0.01,
    layer: int | float = 0.8125,
    formula: Literal["eq3", "infonce"] = "eq3",
    temperature: float = 0.1,
    name: str = "cl_attention",
) -> AttentionContrastive:
    """OBP-LLM's attention contrastive objective (Eq. 3); `temperature` is used by `formula="infonce"` only."""
    return AttentionContrastive(weight=weight, layer=layer, formula=formula, temperature=temperature, name=name)
