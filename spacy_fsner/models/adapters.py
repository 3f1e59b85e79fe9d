"""LoRA adapters shipped inside the package (`spacy_fsner/adapters/NAME/`), found by name.

A model's `adapter` setting is a directory or the name of a shipped adapter: `adapter_location` turns either into
the directory to load. A pipeline saved with a shipped adapter carries a copy of its files (like any adapter), so it
travels; a config that names one works wherever spacy-fsner is installed.
"""

from __future__ import annotations

from pathlib import Path

BASE_MODEL = "smollm2-135m-instruct"
"""The base model of the shipped base adapter (a fetch-model name: fetched on first use)."""

BASE_ADAPTER = "fsner-base-smollm2"
"""The shipped base adapter: a LoRA on SmolLM2-135M-Instruct trained for the joint template on Few-NERD (its card:
`spacy_fsner/adapters/fsner-base-smollm2/README.md`); the `fsner` factory's default model uses it."""

SHIPPED = Path(__file__).resolve().parents[1] / "adapters"
"""Where the shipped adapters lie: one folder per adapter (`adapter_config.json`, weights, `README.md` card)."""


def shipped_adapters() -> dict[str, Path]:
    """The shipped adapters by name."""
    if not SHIPPED.is_dir():
        return {}
    return {d.name: d for d in sorted(SHIPPED.iterdir()) if (d / "adapter_config.json").is_file()}


def adapter_location(adapter: str | Path) -> Path:
    """The directory of `adapter`: an existing directory as it is, else the shipped adapter of that name; a
    FileNotFoundError naming both possibilities when it is neither."""
    path = Path(adapter).expanduser()
    if path.exists():
        return path
    shipped = shipped_adapters()
    if str(adapter) in shipped:
        return shipped[str(adapter)]
    names = ", ".join(shipped) or "none in this installation"
    raise FileNotFoundError(
        f"No LoRA adapter at '{adapter}': it is neither a directory nor the name of a shipped adapter ({names}). "
        "Pass the directory a PEFT model was saved to with `save_pretrained`, a shipped adapter's name, or leave "
        "`adapter` unset."
    )
