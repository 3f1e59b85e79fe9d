"""What every contrastive objective shares: the batch it reads (`ContrastiveBatch`, the dataset contract), where
its layer is (`resolve_layer`, `find_decoder`) and the hook lifecycle (`ContrastiveObjective`).

An objective's lifecycle within a step: `reset()` (drop old captures), the model's forward (hooks keep the *first*
capture of the step: with activation checkpointing the backward recomputes the layer's insides, so hooks on
`q_proj`/`k_proj` fire again; transformers 5.23 checkpoints `forward`, so a hook on the layer itself fires once),
`compute(batch)`, `reset()`.

A capture hook only keeps the output of the module it is registered on, during that module's forward; it reads no
weight. So the objectives hold under sharding (FSDP, DeepSpeed ZeRO-3), where a weight is whole only inside its
module's forward. The one extra pass, the noise view of `HiddenStateContrastive`, goes through the model's own
forward too (noise added by a hook on the embedding's output), and every process runs it on every step: see
`sharded_model` and its docstring.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

LayerSpec = int | float
"""A decoder layer: an int is a Python index into the model's layers (0-based, negative from the end); a float in
(0, 1] is a depth fraction: layer number round(fraction * num_layers), counted from 1 (the paper's "26th of 32
layers" is 26/32 = 0.8125, i.e. index 25)."""

PAPER_LAYER: LayerSpec = 0.8125
"""Both papers' layer: the 26th of 32 (CLLMFS section 3.6, OBP-LLM Eq. 4), as a depth fraction."""

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


def init_defaults(cls: type) -> dict[str, Any]:
    """The defaults of `cls(...)`'s parameters. A registered constructor takes its defaults from here, so that each
    default is written once, in the class."""
    return {name: p.default for name, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}


def first_tensor(output: Any) -> Tensor:
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
        self.batch_index: int | None = None
        """The micro-batch's number in the run, counted as on one process (set by `ContrastiveSFTTrainer`): an
        objective that draws random numbers seeds them from it, so that a run draws the same on any number of
        processes. None: the objective's own running generator."""
        self.sharded_model: nn.Module | None = None
        """Set by the trainer when the model is sharded (FSDP, DeepSpeed ZeRO-3): the wrapped model, whose call
        gathers the weights. An extra pass then runs through it, whole (every process runs every layer's
        collectives), instead of the unwrapped model's layers up to the one needed."""
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
                self._captures[key] = first_tensor(output)

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
