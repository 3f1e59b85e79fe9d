"""CLLMFS's contrastive objective (section 3.6): a supervised contrastive loss on the hidden states of one decoder
layer over the sentence tokens of the batch, optionally with a second, noised view of the batch ("CL + Noise").
Registered as `spacy_fsner.HiddenStateContrastive.v1`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from spacy.util import registry
from torch import Tensor, nn

from .base import PAPER_LAYER, ContrastiveBatch, ContrastiveObjective, LayerSpec, first_tensor, init_defaults


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
    `noise_grad=True` both views are trained (SimCSE-style) and the backward of that partial pass is paid too. On a
    sharded model (FSDP, DeepSpeed ZeRO-3) it runs the whole model instead, through its wrapper (see `noise_view`).

    Random draws (noise, sampled negatives) come from `random()`: seeded per micro-batch in training, so that a run
    draws the same on any number of processes.
    """

    def __init__(
        self,
        weight: float = 0.001,
        layer: LayerSpec = PAPER_LAYER,
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
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def modules_to_hook(self, decoder: nn.Module, index: int) -> dict[str, nn.Module]:
        return {"hidden": decoder.layers[index]}

    def random(self) -> torch.Generator:
        """The generator of this micro-batch's draws (negatives, noise): seeded from `seed` and the trainer's
        `batch_index` when it numbered the micro-batch, so that a micro-batch draws the same whichever process trains
        on it; else the objective's running generator (seeded once from `seed`)."""
        if self.batch_index is None:
            return self.generator
        state = np.random.SeedSequence([self.seed, self.batch_index]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(state))

    def sample_tokens(self, token_types: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Flat indices of the sentence tokens to contrast: every entity token and at most `max_negatives`
        non-entity tokens, drawn with `generator` (default: `random()`; bounds the cost of the similarity matrix)."""
        flat = token_types.reshape(-1)
        entities = (flat >= 1).nonzero().squeeze(-1)
        others = (flat == 0).nonzero().squeeze(-1)
        if others.numel() > self.max_negatives:
            pick = torch.randperm(others.numel(), generator=generator or self.random())[: self.max_negatives]
            others = others[pick.to(others.device).sort().values]
        return torch.cat([entities, others])

    def noise_view(
        self, batch: ContrastiveBatch, rows: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Output of the chosen layer at the flat token indices `rows` ([len(rows), d]; every unpadded token, in
        flat order, when None) for the batch with noise on the input embeddings (drawn with `generator`, default
        `random()`).

        noise ~ U(-1, 1) * alpha / sqrt(L * d) per sequence (NEFTune's scaling, L = that sequence's unpadded length,
        d = hidden size) with `noise_scale="neftune"`, or U(-alpha, alpha) with `noise_scale="absolute"`.

        The pass runs only what those tokens depend on (the model is causal): each sequence that holds one, cut
        after its own last one (the rest of the sentence, the response and the padding are not run). The cut
        sequences are packed into one row, each with its own positions from 0, so attention stays within a
        sequence (transformers' packed-sequence mask) and no padding is computed. The noise is drawn for the whole
        batch first, so the values are those of the full pass.

        The pass is the model's own forward on the token ids; a hook on the embedding adds the noise to its output
        and one on the chosen layer keeps that layer's output (no weight is read outside its module's forward). It
        stops right after the chosen layer (a hook raises), except on a sharded model (`sharded_model`), where it
        runs through the wrapper, whole, with the LM head at one position. It runs on every step, also when no
        token needs a view (then over the batch's first token, and the view is empty): on a sharded model every
        process must run the same layers, whether or not its micro-batch holds an entity.
        """
        decoder = self._decoder
        batch_size, length = batch.input_ids.shape
        device = batch.input_ids.device
        generator = generator or self.random()
        if rows is None:
            real = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(batch.input_ids)
            rows = real.reshape(-1).nonzero().squeeze(-1)
        rows = rows.to(device)
        run = rows if rows.numel() else rows.new_zeros(1)  # no token needs a view: the pass runs all the same
        sequences, positions = run // length, run % length
        keep = torch.unique(sequences)
        ends = torch.zeros(batch_size, dtype=torch.long, device=device).scatter_reduce(
            0, sequences, positions + 1, reduce="amax"
        )[keep]
        cuts = list(zip(keep.tolist(), ends.tolist(), strict=True))  # (sequence, tokens it needs)
        needed = torch.arange(length, device=device)[None, :] < ends[:, None]  # [kept, T]
        if batch.attention_mask is not None and bool((needed & (batch.attention_mask[keep] == 0)).any()):
            raise ValueError(
                f"{self.name}: the noise view needs right-padded batches (padding only after a sequence's tokens), "
                "as `ContrastiveCollator` builds them; this batch has padding before a token that needs a view."
            )
        packed = torch.cat([batch.input_ids[seq, :end] for seq, end in cuts])[None]
        position_ids = torch.cat([torch.arange(end, device=device) for _, end in cuts])[None]
        offsets = torch.cumsum(ends, 0) - ends  # where each kept sequence starts in the packed row

        def add_noise(module: nn.Module, args: Any, output: Tensor) -> Tensor:
            # drawn for the whole batch (the values of the full pass), then cut and packed like the token ids
            uniform = torch.rand((batch_size, length, output.shape[-1]), generator=generator) * 2 - 1
            uniform = uniform.to(output.device, output.dtype)
            if self.noise_scale == "neftune":
                if batch.attention_mask is not None:
                    lengths = batch.attention_mask.sum(1).clamp(min=1)
                else:
                    lengths = torch.full((batch_size,), length, device=output.device)
                scale = self.noise_alpha / torch.sqrt(lengths.to(output.device, output.dtype) * output.shape[-1])
                uniform = uniform * scale[:, None, None]
            else:
                uniform = uniform * self.noise_alpha
            return output + torch.cat([uniform[seq, :end] for seq, end in cuts])[None]

        captured: list[Tensor] = []
        sharded = self.sharded_model

        def keep_output(module: nn.Module, args: Any, output: Any) -> None:
            if not captured:  # the first: activation checkpointing runs the layer again in the backward
                captured.append(first_tensor(output))
            if sharded is None:
                raise _StopForward(captured[0])

        handles = [
            decoder.get_input_embeddings().register_forward_hook(add_noise),
            decoder.layers[self.layer_index].register_forward_hook(keep_output),
        ]
        inputs = {"input_ids": packed, "position_ids": position_ids, "attention_mask": None, "use_cache": False}
        try:
            with self.paused(), _without_dropout(self._model):
                with torch.set_grad_enabled(self.noise_grad and torch.is_grad_enabled()):
                    if sharded is None:
                        decoder(**inputs)
                    else:
                        sharded(**inputs, logits_to_keep=1)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if not captured:
            raise RuntimeError(f"{self.name}: the noise pass never reached layer {self.layer_index}.")
        view = captured[0][0, offsets[torch.searchsorted(keep, sequences)] + positions]
        return view if rows.numel() else view[:0]

    def compute(self, batch: ContrastiveBatch) -> Tensor:
        hidden = self.captured("hidden")  # [B, T, d]
        generator = self.random()
        rows = self.sample_tokens(batch.token_types, generator)
        flat_types = batch.token_types.reshape(-1)[rows]
        features = hidden.reshape(-1, hidden.shape[-1])[rows]
        # only the anchors (entity tokens) get a noised view: the pass runs what they need and no more
        views = self.noise_view(batch, rows[flat_types >= 1], generator) if self.noise else None
        return supervised_contrastive_loss(features, flat_types, self.temperature, views)


_DEFAULTS = init_defaults(HiddenStateContrastive)


@registry.misc("spacy_fsner.HiddenStateContrastive.v1")
def hidden_state_contrastive_v1(
    weight: float = _DEFAULTS["weight"],
    layer: int | float = _DEFAULTS["layer"],
    contrastive: bool = True,
    noise: bool = _DEFAULTS["noise"],
    temperature: float = _DEFAULTS["temperature"],
    noise_alpha: float = _DEFAULTS["noise_alpha"],
    noise_scale: Literal["neftune", "absolute"] = _DEFAULTS["noise_scale"],
    noise_grad: bool = _DEFAULTS["noise_grad"],
    max_negatives: int = _DEFAULTS["max_negatives"],
    seed: int = _DEFAULTS["seed"],
    name: str = _DEFAULTS["name"],
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
