"""Ship a trained adapter inside the package (`spacy_fsner/adapters/NAME/`), with its model card.

`ship_adapter` takes a `train` output directory (its `adapter/`, `metrics.json` and `pipeline/config.cfg`), writes
the LoRA weights in float16 (half the size; they load into a float32 or bfloat16 model alike), the adapter's config
naming the base model by its configured name (a fetch-model name or hub id, never a path), and `README.md`: what it
was trained on (data, licence, types, records), how (command, steps, seed, settings), and its scores. The adapter
is then found by name (`adapter = "NAME"` in the model config; see `models/adapters.py`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from confection import Config

MAX_BYTES = 10_000_000
"""The most an adapter shipped in the package may weigh (weights, config and card together)."""


def ship_adapter(
    run: str | Path,
    target: str | Path,
    *,
    data: str,
    licence: str,
    scores: str | None = None,
    command: str | None = None,
) -> Path:
    """Write the adapter of the training run `run` to `target` (replaced) with its model card; `data` and `licence`
    describe the training data for the card, `scores` (Markdown, e.g. `compare`'s table) is added as it is."""
    from safetensors.torch import load_file, save_file

    run, target = Path(run), Path(target)
    adapter = run / "adapter"
    if not (adapter / "adapter_config.json").is_file() or not (run / "metrics.json").is_file():
        raise FileNotFoundError(
            f"{run} is not a finished training run (no adapter/adapter_config.json or metrics.json): pass the "
            "--output directory of `python -m spacy_fsner train`."
        )
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    config = Config().from_disk(run / "pipeline" / "config.cfg", interpolate=False)
    model = config["components"]["fsner"]["model"]
    base = model["name"]
    if Path(base).expanduser().is_absolute() or Path(base).expanduser().exists():
        raise ValueError(
            f"The run's base model is the local path '{base}', which does not travel with the package: train with "
            "a fetch-model name or hub id as --paths.base_model."
        )
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    adapter_config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = base
    (target / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
    weights = load_file(adapter / "adapter_model.safetensors")
    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, target / "adapter_model.safetensors"
    )
    card = model_card(target.name, base, config, metrics, data=data, licence=licence, scores=scores, command=command)
    (target / "README.md").write_text(card, encoding="utf-8")
    size = sum(f.stat().st_size for f in target.iterdir())
    if size > MAX_BYTES:
        shutil.rmtree(target)
        raise ValueError(
            f"The adapter weighs {size:,} bytes, more than the {MAX_BYTES:,} a shipped adapter may: train a smaller "
            "LoRA (lower `[train.lora] r`, fewer `target_modules`)."
        )
    return target


def model_card(
    name: str,
    base: str,
    config: Config,
    metrics: dict[str, Any],
    *,
    data: str,
    licence: str,
    scores: str | None,
    command: str | None,
) -> str:
    """The adapter's README.md: base model, template, data and licence, the run's settings and log, its scores."""
    settings = metrics["settings"]
    train = settings["train_settings"]
    history = [entry for entry in metrics["log_history"] if "loss" in entry]
    last = metrics["log_history"][-1] if metrics["log_history"] else {}
    template = config["components"]["fsner"]["template"].get("@misc", "?")
    lines = [
        f"# {name}",
        "",
        f"A LoRA adapter for `{base}`, shipped with spacy-fsner and used by name: "
        f'`{{"@llm_models": "spacy_fsner.CausalLM.v1", "name": "{base}", "adapter": "{name}"}}`, with the template '
        f"`{template}` it was trained with.",
        "",
        "## Training data",
        "",
        f"- {data}",
        f"- Licence of the data: {licence}.",
        f"- {settings['n_docs']:,} sentences, {settings['examples'].get('records', 0):,} SFT records "
        f"({settings['examples'].get('empty_answers', 0):,} with the empty answer); entity types: "
        f"{', '.join(settings['labels'])}.",
        "",
        "## Training",
        "",
        f"- Command: `{command or 'python -m spacy_fsner train ' + settings['config']}`",
        f"- Steps: {last.get('step', '?')} of batch {train['batch_size']} x {train['gradient_accumulation']} "
        f"(epoch {last.get('epoch', 0):.3f}); seed {train['seed']}; learning rate {train['learning_rate']}, "
        f"warm-up ratio {train['warmup_ratio']}; LoRA r {train['lora']['r']}, alpha {train['lora']['alpha']}, "
        f"dropout {train['lora']['dropout']}, modules {train['lora']['target_modules']}.",
        f"- Prompt variety: absent labels up to {train['absent_labels']} per prompt; {train.get('variety', {})}.",
    ]
    if history:
        first, final = history[0], history[-1]
        lines.append(
            f"- Loss: {first['loss']:.3f} at step {first.get('step')} -> "
            f"{final['loss']:.3f} at step {final.get('step')}."
        )
    if last.get("train_runtime"):
        lines.append(
            f"- Run time of the last (resumed) session: {last['train_runtime']:.0f} s, "
            f"{last.get('train_samples_per_second', 0):.2f} records/s."
        )
    if scores:
        lines += ["", "## Scores", "", scores.strip()]
    return "\n".join(lines) + "\n"
