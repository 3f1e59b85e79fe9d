"""`spacy_fsner.CausalLM.v1`: a Hugging Face causal LM (+ LoRA adapter) as a spacy-llm model.

Loading is lazy: the weights are read on the first call, so `spacy.load` on a saved pipeline first points the
model at the pipeline's own adapter and tokenizer (see `from_disk`) and loads once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Iterable  # noqa: UP035  spacy-llm's type check reads typing.Iterable's `_name`

from spacy_llm.registry import registry as llm_registry

from ..decoding.generator import ConstrainedGenerator
from ..ty import DocGenerations, DocPrompts
from .loading import (
    attach_adapter,
    check_model_source,
    load_base_model,
    load_tokenizer,
    model_location,
    resolve_device,
    resolve_dtype,
)

BATCH_DEFAULTS = {"cpu": {"batch_size": 256, "batch_tokens": 8192}, "cuda": {"batch_size": 512, "batch_tokens": 16384}}
"""`batch_size` and `batch_tokens` when the config leaves them out (or null), by device. On a CPU a token costs
about the same batched or not, but every decode step has its overhead (Python, cache bookkeeping over 30 layers):
256 rows instead of 64 made SmolLM2 with the shared-input template about 20% faster at 4 and at 18 labels on 2
threads, for 1.5-2 GiB more peak memory. On a GPU a decode step of a few rows costs about what one of hundreds
costs (the weights are read once per step): on an H200, 512 rows instead of 64 made the shared-input template 5x
faster at 18 labels (README, "Benchmarks")."""


class CausalLM:
    """Generates constrained answers for every prompt of a batch of docs at once."""

    def __init__(
        self,
        name: str,
        adapter: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int | None = None,
        max_new_tokens: int = 128,
        constrained: bool = True,
        prefix_cache: bool = True,
        trust_remote_code: bool = False,
        revision: str | None = None,
        progress: bool = False,
        batch_tokens: int | None = None,
        pad_tolerance: float = 0.1,
    ) -> None:
        self.name = check_model_source(name)
        self.adapter = adapter
        self.tokenizer_source: str | None = None
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        defaults = BATCH_DEFAULTS["cuda" if self.device.type == "cuda" else "cpu"]
        self.settings = {
            "batch_size": defaults["batch_size"] if batch_size is None else batch_size,
            "max_new_tokens": max_new_tokens,
            "constrained": constrained,
            "prefix_cache": prefix_cache,
            "batch_tokens": defaults["batch_tokens"] if batch_tokens is None else batch_tokens,
            "pad_tolerance": pad_tolerance,
        }
        self.trust_remote_code = trust_remote_code
        self.revision = revision
        self.progress = progress
        self._generator: ConstrainedGenerator | None = None
        self._loaded_model = None
        self._restore: Callable[[], None] | None = None

    @property
    def generator(self) -> ConstrainedGenerator:
        if self._generator is None:
            source = model_location(self.name)
            model = load_base_model(source, self.dtype, self.device, self.trust_remote_code, self.revision, self.name)
            if self.adapter is not None:
                model = attach_adapter(model, self.adapter, self.name)
            self._start_generator(model)
        return self._generator

    def attach_model(self, model) -> None:
        """Generate with `model`, already in memory (training's base + adapter being trained), as if it had been
        loaded from `name` and `adapter`: no second copy of the weights. The tokenizer is loaded as usual."""
        if self._generator is not None:
            raise RuntimeError("attach_model: this CausalLM has loaded its model already; attach before first use.")
        self._start_generator(model)

    def _start_generator(self, model) -> None:
        """The generator around `model` (base + configured adapter) and the tokenizer."""
        source = self.tokenizer_source or model_location(self.name)
        tokenizer = load_tokenizer(source, self.trust_remote_code)
        self._generator = ConstrainedGenerator(model, tokenizer, **self.settings)
        self._loaded_model = model

    @property
    def loaded_model(self):
        """The model as loaded (base + configured adapter), whichever model `generator` uses now."""
        self.generator  # noqa: B018  loads it on first use
        return self._loaded_model

    def use_model(self, model, restore: Callable[[], None]) -> None:
        """Generate with `model` (the loaded model with an episode's adapter, see `training.adaptation`) until
        `restore_model`, which calls `restore` to undo what building `model` did to the loaded model."""
        self.restore_model()
        self.generator.model = model
        self._restore = restore

    def restore_model(self) -> None:
        """Generate with the model as loaded (base + configured adapter) again; nothing happens when it already is."""
        if self._restore is None:
            return
        restore, self._restore = self._restore, None
        self.generator.model = self._loaded_model
        restore()

    def __call__(self, prompts: Iterable[Iterable[DocPrompts]]) -> Iterable[Iterable[DocGenerations]]:
        """All prompts of all docs go through the generator together (batched, prefix cached)."""
        per_doc = [list(doc_prompts) for doc_prompts in prompts]
        requests = [r for doc in per_doc for shard in doc for r in shard.requests]
        generations = iter(self.generator.generate(requests, progress=self.progress))
        return [
            [DocGenerations(shard, [next(generations) for _ in shard.requests]) for shard in doc] for doc in per_doc
        ]

    def to_disk(self, path: Path) -> None:
        """Tokenizer and adapter weights (safetensors); the base model is referred to by name or path.

        The configured adapter is saved, never an episode's (`use_model`): a saved pipeline is the one configured.
        """
        path.mkdir(parents=True, exist_ok=True)
        for sub in ("tokenizer", "adapter"):
            shutil.rmtree(path / sub, ignore_errors=True)
        generator = self.generator
        generator.tokenizer.save_pretrained(path / "tokenizer")
        if self.adapter is not None:
            self.loaded_model.save_pretrained(path / "adapter", selected_adapters=["default"])
        meta = {"base_model": self.name, "has_adapter": self.adapter is not None}
        (path / "model.json").write_text(json.dumps(meta, indent=2))

    def from_disk(self, path: Path) -> CausalLM:
        meta = json.loads((path / "model.json").read_text())
        self.tokenizer_source = str(path / "tokenizer")
        self.adapter = str(path / "adapter") if meta["has_adapter"] else None
        self._generator, self._loaded_model, self._restore = None, None, None
        return self


@llm_registry.llm_models("spacy_fsner.CausalLM.v1")
def causal_lm_v1(
    name: str,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    batch_size: int | None = None,
    max_new_tokens: int = 128,
    constrained: bool = True,
    prefix_cache: bool = True,
    trust_remote_code: bool = False,
    revision: str | None = None,
    batch_tokens: int | None = None,
    pad_tolerance: float = 0.1,
) -> CausalLM:
    """A local directory or hub id (`name`) plus an optional LoRA adapter directory (`adapter`).

    `batch_size`: rows decoded together; `batch_tokens`: tokens per prefill forward pass (both by device when left
    out: `BATCH_DEFAULTS`); `pad_tolerance`: the share of a prefill batch's tokens that may be pads (prompts of other
    lengths go to another batch)."""
    return CausalLM(
        name,
        adapter,
        dtype,
        device,
        batch_size,
        max_new_tokens,
        constrained,
        prefix_cache,
        trust_remote_code,
        revision,
        batch_tokens=batch_tokens,
        pad_tolerance=pad_tolerance,
    )
