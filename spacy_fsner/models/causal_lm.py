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

import torch
from spacy_llm.registry import registry as llm_registry
from transformers import PreTrainedTokenizerBase

from ..decoding.generator import ConstrainedGenerator, GeneratorConfig
from ..log import logger
from ..ty import DocGenerations, DocPrompts
from .adapters import BASE_ADAPTER, BASE_MODEL, adapter_location
from .loading import (
    attach_adapter,
    check_model_source,
    load_base_model,
    load_tokenizer,
    model_location,
    resolve_device,
    resolve_dtype,
    travels,
)

BATCH_DEFAULTS = {"cpu": {"batch_size": 256, "batch_tokens": 8192}, "cuda": {"batch_size": 512, "batch_tokens": 16384}}
"""`batch_size` and `batch_tokens` when the config leaves them out (or null), by device. On a CPU a token costs
about the same batched or not, but every decode step has its overhead (Python, cache bookkeeping over 30 layers):
256 rows instead of 64 made SmolLM2 with the shared-input template about 20% faster at 4 and at 18 labels on 2
threads, for 1.5-2 GiB more peak memory. On a GPU a decode step of a few rows costs about what one of hundreds
costs (the weights are read once per step): on an H200, 512 rows instead of 64 made the shared-input template 5x
faster at 18 labels (docs/results.md)."""


class CausalLM:
    """Generates constrained answers for every prompt of a batch of docs at once. Build it with `causal_lm_v1`
    (`spacy_fsner.CausalLM.v1`), which holds the defaults and resolves `dtype`, `device` and the batch sizes."""

    def __init__(
        self,
        name: str,
        adapter: str | None,
        dtype: torch.dtype,
        device: torch.device,
        config: GeneratorConfig,
        trust_remote_code: bool,
        revision: str | None,
    ) -> None:
        self.name = check_model_source(name)
        self.adapter = adapter
        self.tokenizer_source: str | None = None
        self.device = device
        self.dtype = dtype
        self.config = config
        self.trust_remote_code = trust_remote_code
        self.revision = revision
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
        self._generator = ConstrainedGenerator(model, self._load_tokenizer(), self.config)
        self._loaded_model = model

    def _load_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer from the saved pipeline (`from_disk`), else from the model's own source."""
        source = self.tokenizer_source or model_location(self.name)
        return load_tokenizer(source, self.trust_remote_code)

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
        generations = iter(self.generator.generate(requests))
        return [
            [DocGenerations(shard, [next(generations) for _ in shard.requests]) for shard in doc] for doc in per_doc
        ]

    def to_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> None:
        """Tokenizer and adapter weights (safetensors); the base model is referred to by name or path. `exclude`:
        "tokenizer" and/or "adapter" are not written.

        The configured adapter is saved, never an episode's (`use_model`): a saved pipeline is the one configured.
        A model not loaded yet is not loaded to save it (spaCy's convention): the tokenizer alone is loaded from its
        source and the configured adapter's files are copied.
        """
        path.mkdir(parents=True, exist_ok=True)
        if "tokenizer" not in exclude:  # read before anything is removed: `path` may be where it was loaded from
            tokenizer = self._generator.tokenizer if self._generator is not None else self._load_tokenizer()
            shutil.rmtree(path / "tokenizer", ignore_errors=True)
            tokenizer.save_pretrained(path / "tokenizer")
        if "adapter" not in exclude:
            self._save_adapter(path / "adapter")
        meta = {"base_model": self.name, "has_adapter": self.adapter is not None}
        (path / "model.json").write_text(json.dumps(meta, indent=2))
        if not travels(self.name):
            logger.warning(
                f"The pipeline saved to {path.parent} names its base model by the local path '{self.name}', which "
                "does not travel with it (nor with `spacy package`): on another machine, or once the model moves, "
                "load it with spacy.load(PIPELINE, config={'components.fsner.model.name': 'NEW_PATH'}), or name the "
                "base model by a fetch-model name or hub id before saving."
            )

    def _save_adapter(self, target: Path) -> None:
        """The configured adapter at `target`: from the loaded model, else a copy of its directory's files."""
        if self.adapter is not None and self._loaded_model is None:
            source = adapter_location(self.adapter)
            if source.resolve() != target.resolve():  # else it is already there
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                for file in (f for f in source.iterdir() if f.is_file()):
                    shutil.copy2(file, target / file.name)
            return
        shutil.rmtree(target, ignore_errors=True)
        if self.adapter is not None:
            # save_embedding_layers: the adapters here train projections only; "auto" looks the base up on the hub
            self._loaded_model.save_pretrained(target, selected_adapters=["default"], save_embedding_layers=False)

    def from_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> CausalLM:
        """Point the model at the pipeline's own tokenizer and adapter (loaded on first use); `exclude`: "tokenizer"
        and/or "adapter" stay as configured."""
        meta = json.loads((path / "model.json").read_text())
        if "tokenizer" not in exclude:
            self.tokenizer_source = str(path / "tokenizer")
        if "adapter" not in exclude:
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
    resolved = resolve_device(device)
    by_device = BATCH_DEFAULTS["cuda" if resolved.type == "cuda" else "cpu"]
    config = GeneratorConfig(
        batch_size=by_device["batch_size"] if batch_size is None else batch_size,
        batch_tokens=by_device["batch_tokens"] if batch_tokens is None else batch_tokens,
        pad_tolerance=pad_tolerance,
        max_new_tokens=max_new_tokens,
        constrained=constrained,
        prefix_cache=prefix_cache,
    )
    return CausalLM(name, adapter, resolve_dtype(dtype, resolved), resolved, config, trust_remote_code, revision)


@llm_registry.llm_models("spacy_fsner.BaseModel.v1")
def base_model_v1(
    dtype: str = "auto", device: str = "auto", batch_size: int | None = None, max_new_tokens: int = 128
) -> CausalLM:
    """The `fsner` factory's default model: SmolLM2-135M-Instruct (a fetch-model name, fetched on first use) with
    the shipped base adapter (`fsner-base-smollm2`, trained for `spacy_fsner.JointTemplate.v1`). Its own registered
    name, so that a config naming `spacy_fsner.CausalLM.v1` never inherits this adapter."""
    return causal_lm_v1(
        BASE_MODEL, BASE_ADAPTER, dtype=dtype, device=device, batch_size=batch_size, max_new_tokens=max_new_tokens
    )
