"""Loading a base causal LM (local directory or hub id), its tokenizer, and an optional LoRA adapter.

Safe loading only: safetensors weights, `trust_remote_code` off unless the caller turns it on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..log import logger
from .adapters import adapter_location
from .fetch import SOURCES, GGUFSource, model_cache, resolve_fetch_name

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA device is available: use device='cpu' or 'auto'.")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device {device!r} is not a device: use 'cuda', 'cuda:N' (the N-th GPU), 'cpu' or 'auto'."
        ) from None


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 on a GPU that supports it and float32 elsewhere."""
    if dtype == "auto":
        gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}: use one of {['auto', *_DTYPES]}.")
    return _DTYPES[dtype]


def _installable() -> str:
    """The fetch-model names: the causal LMs, then the sentence encoders."""
    lms = sorted(n for n, source in SOURCES.items() if isinstance(source, GGUFSource))
    encoders = sorted(n for n, source in SOURCES.items() if not isinstance(source, GGUFSource))
    return ", ".join(lms) + (f"; sentence encoders: {', '.join(encoders)}" if encoders else "")


def check_model_source(name: str) -> str:
    """Return `name` if it is an existing model directory, a `fetch-model` name or a hub id; else explain the fix.

    A `fetch-model` name is resolved (and fetched into the model cache on first use) by `model_location`.
    """
    if name in SOURCES:
        return name
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"'{name}' exists but holds no config.json, so it is not a Hugging Face model directory. Point "
                "`name` at a directory saved with `save_pretrained` (or: python -m spacy_fsner tiny-model DIR)."
            )
        return str(path)
    if _is_hub_id(name):
        return name
    raise FileNotFoundError(
        f"Model path '{name}' does not exist. If the model moved, point the pipeline at its new place: "
        "spacy.load(PIPELINE, config={'components.fsner.model.name': 'NEW_PATH'}) (the `name` setting of the "
        "component's model; `--components.fsner.model.name NEW_PATH` on a command line). Otherwise pass an existing "
        f"local directory, a model that installs from the package index ({_installable()}) or a hub id such as "
        "'meta-llama/Llama-3.1-8B'; those travel with a saved pipeline, a local path does not."
    )


def travels(name: str) -> bool:
    """Whether a saved pipeline that names its base model `name` finds it on another machine: a fetch-model name or
    a hub id does, a local directory does not."""
    if name in SOURCES:
        return True
    return not Path(name).expanduser().exists() and _is_hub_id(name)


def _is_hub_id(name: str) -> bool:
    """Whether `name` reads as a hub id (`owner/model`), not as a relative or absolute path."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "/"))


def model_location(name: str) -> str:
    """Where to load `name` from: the cached directory of a `fetch-model` name (fetched if missing), else `name`."""
    fetched = resolve_fetch_name(name)
    return str(fetched) if fetched is not None else name


def load_tokenizer(source: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise OSError(_hub_hint(source, error)) from error


def load_base_model(
    source: str,
    dtype: torch.dtype,
    device: torch.device,
    trust_remote_code: bool = False,
    revision: str | None = None,
    name: str | None = None,
) -> PreTrainedModel:
    """The model at `source` (a directory or hub id), in eval mode on `device`. `name`: what the configuration calls
    it (a fetch-model name resolves to a cache directory); it becomes the model's `name_or_path`, which PEFT writes
    into a saved adapter's config and model card, so a shipped adapter names its base portably, not by a local path.
    """
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True, revision=revision
        )
    except OSError as error:
        raise OSError(_hub_hint(source, error)) from error
    if name is not None:
        model.name_or_path = model.config._name_or_path = name
    return model.to(device).eval()


def attach_adapter(
    model: PreTrainedModel, adapter: str | Path, base_name: str, trainable: bool = False
) -> PreTrainedModel:
    """Wrap `model` with the LoRA adapter saved at `adapter` (in eval mode unless `trainable`: training continues
    it); a clear error when it does not fit."""
    from peft import PeftModel

    path = adapter_location(adapter)
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"No LoRA adapter at '{adapter}' (adapter_config.json missing). Pass the directory a PEFT model was "
            "saved to with `save_pretrained`, or leave `adapter` unset."
        )
    trained_on = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if trained_on and _model_identity(trained_on) != _model_identity(base_name):
        logger.warning(
            "The LoRA adapter at '%s' was trained on '%s', but the base model is '%s': if these are different "
            "models, its predictions are meaningless (set the model's `name` to the adapter's base model).",
            adapter,
            trained_on,
            base_name,
        )
    try:
        wrapped = PeftModel.from_pretrained(model, str(path), is_trainable=trainable)
        return wrapped if trainable else wrapped.eval()
    except (RuntimeError, ValueError, KeyError) as error:
        raise ValueError(
            f"The LoRA adapter at '{adapter}' does not fit the base model '{base_name}' (it was trained on "
            f"'{trained_on}'): {str(error).splitlines()[0]}. Set `name` to the base model the adapter was trained "
            "on, or train an adapter for this base model."
        ) from error


def _model_identity(name: str) -> str:
    """What `name` loads, for comparing two names: a fetch-model name and its cache directory are one model, and so
    are two spellings of one local directory."""
    if name in SOURCES:
        return str((model_cache() / name).resolve())
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _hub_hint(source: str, error: OSError) -> str:
    return (
        f"Could not load '{source}': {str(error).splitlines()[0]}. Without network access a hub model must already "
        "be in the local Hugging Face cache; otherwise download it where you have access and pass its directory."
    )
