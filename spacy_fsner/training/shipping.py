"""Ship a trained adapter inside the package (`spacy_fsner/adapters/NAME/`), with its model card.

`ship_adapter` takes a `train` output directory (its `adapter/`, `metrics.json` and `pipeline/config.cfg`) or one of
its checkpoints (`checkpoints/checkpoint-N`: the adapter as it was at step N, with the trainer's log and the run's
recorded config, for a long run that is still going), and writes the LoRA weights in float16 (half the size; they
load into a float32 or bfloat16 model alike), the adapter's config naming the base model by its configured name (a
fetch-model name or hub id, never a path), and `README.md`: what it was trained on (data, licence, types), how
(command, steps, seed, settings), and its scores. The adapter is then found by name (`adapter = "NAME"` in the model
config; see `models/adapters.py`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confection import Config

MAX_BYTES = 10_000_000
"""The most an adapter shipped in the package may weigh (weights, config and card together)."""


@dataclass(frozen=True)
class RunFacts:
    """What the model card says about a training run, from a finished run or a checkpoint."""

    adapter: Path
    base: str
    template: str
    config: str
    train: dict[str, Any]
    """`[train]` with `lora` and `variety` as nested dicts."""
    log_history: list[dict[str, Any]]
    step: int
    epoch: float
    labels: list[str] | None = None
    n_docs: int | None = None
    examples: dict[str, int] | None = None

    @classmethod
    def read(cls, run: Path) -> RunFacts:
        """A finished run (`metrics.json`) or a checkpoint (`trainer_state.json` and the run's `run.json`)."""
        if (run / "metrics.json").is_file() and (run / "adapter" / "adapter_config.json").is_file():
            return cls._finished(run)
        if (run / "trainer_state.json").is_file() and (run.parent / "run.json").is_file():
            return cls._checkpoint(run)
        raise FileNotFoundError(
            f"{run} is neither a finished training run (adapter/ and metrics.json) nor one of its checkpoints "
            "(trainer_state.json, with run.json beside it): pass the --output directory of `python -m spacy_fsner "
            "train` or its checkpoints/checkpoint-N."
        )

    @classmethod
    def _finished(cls, run: Path) -> RunFacts:
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        settings = metrics["settings"]
        fsner = Config().from_disk(run / "pipeline" / "config.cfg", interpolate=False)["components"]["fsner"]
        last = metrics["log_history"][-1] if metrics["log_history"] else {}
        return cls(
            adapter=run / "adapter",
            base=fsner["model"]["name"],
            template=fsner["template"].get("@misc", "?"),
            config=settings["config"],
            train=settings["train_settings"],
            log_history=metrics["log_history"],
            step=last.get("step", 0),
            epoch=last.get("epoch", 0.0),
            labels=settings["labels"],
            n_docs=settings["n_docs"],
            examples=settings["examples"],
        )

    @classmethod
    def _checkpoint(cls, run: Path) -> RunFacts:
        state = json.loads((run / "trainer_state.json").read_text(encoding="utf-8"))
        flat = json.loads((run.parent / "run.json").read_text(encoding="utf-8"))["config"]
        train: dict[str, Any] = {}
        for key, value in flat.items():
            if key.startswith("train."):
                *sections, name = key.split(".")[1:]
                target = train
                for section in sections:
                    target = target.setdefault(section, {})
                target[name] = value
        return cls(
            adapter=run,
            base=flat["components.fsner.model.name"],
            template=flat.get("components.fsner.template.@misc", "?"),
            config=f"the run of {run.parent.parent}",
            train=train,
            log_history=state["log_history"],
            step=state["global_step"],
            epoch=state["epoch"],
        )


def ship_adapter(
    run: str | Path,
    target: str | Path,
    *,
    data: str,
    licence: str,
    scores: str | None = None,
    command: str | None = None,
) -> Path:
    """Write the adapter of the training run (or checkpoint) `run` to `target` (replaced) with its model card;
    `data` and `licence` describe the training data for the card, `scores` (Markdown, e.g. `compare`'s table) is
    added as it is."""
    from safetensors.torch import load_file, save_file

    from ..models.loading import travels

    facts = RunFacts.read(Path(run))
    target = Path(target)
    if not travels(facts.base):
        raise ValueError(
            f"The run's base model is the local path '{facts.base}', which does not travel with the package: train "
            "with a fetch-model name or hub id as --paths.base_model."
        )
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    adapter_config = json.loads((facts.adapter / "adapter_config.json").read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = facts.base
    adapter_config["inference_mode"] = True
    (target / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
    weights = load_file(facts.adapter / "adapter_model.safetensors")
    half = {key: value.half() if value.is_floating_point() else value for key, value in weights.items()}
    save_file(half, target / "adapter_model.safetensors")
    card = model_card(target.name, facts, data=data, licence=licence, scores=scores, command=command)
    (target / "README.md").write_text(card, encoding="utf-8")
    size = sum(f.stat().st_size for f in target.iterdir())
    if size > MAX_BYTES:
        shutil.rmtree(target)
        raise ValueError(
            f"The adapter weighs {size:,} bytes, more than the {MAX_BYTES:,} a shipped adapter may: train a smaller "
            "LoRA (lower `[train.lora] r`, fewer `target_modules`)."
        )
    return target


def model_card(name: str, facts: RunFacts, *, data: str, licence: str, scores: str | None, command: str | None) -> str:
    """The adapter's README.md: base model, template, data and licence, the run's settings and log, its scores."""
    train, lora = facts.train, facts.train.get("lora", {})
    losses = [entry for entry in facts.log_history if "loss" in entry]
    runtime = next((entry for entry in reversed(facts.log_history) if "train_runtime" in entry), None)
    lines = [
        f"# {name}",
        "",
        f"A LoRA adapter for `{facts.base}`, shipped with spacy-fsner and used by name: "
        f'`{{"@llm_models": "spacy_fsner.CausalLM.v1", "name": "{facts.base}", "adapter": "{name}"}}`, with the '
        f"template `{facts.template}` it was trained with.",
        "",
        "## Training data",
        "",
        f"- {data}",
        f"- Licence of the data: {licence}.",
    ]
    if facts.n_docs is not None and facts.examples is not None and facts.labels is not None:
        lines.append(
            f"- {facts.n_docs:,} sentences, {facts.examples.get('records', 0):,} SFT records "
            f"({facts.examples.get('empty_answers', 0):,} with the empty answer); entity types: "
            f"{', '.join(facts.labels)}."
        )
    lines += [
        "",
        "## Training",
        "",
        f"- Command: `{command or 'python -m spacy_fsner train ' + facts.config}`",
        f"- Steps: {facts.step} of batch {train.get('batch_size')} x {train.get('gradient_accumulation', 1)} "
        f"(epoch {facts.epoch:.3f}); seed {train.get('seed')}; learning rate {train.get('learning_rate')}, "
        f"warm-up ratio {train.get('warmup_ratio')}; LoRA r {lora.get('r')}, alpha {lora.get('alpha')}, "
        f"dropout {lora.get('dropout')}, modules {lora.get('target_modules')}.",
        f"- Prompt variety: absent labels up to {train.get('absent_labels')} per prompt; {train.get('variety', {})}.",
    ]
    if losses:
        first, final = losses[0], losses[-1]
        lines.append(
            f"- Loss (logged): {first['loss']:.3f} at step {first.get('step')} -> {final['loss']:.3f} at step "
            f"{final.get('step')}."
        )
    if runtime is not None:
        lines.append(
            f"- Run time of the last (resumed) session: {runtime['train_runtime']:.0f} s, "
            f"{runtime.get('train_samples_per_second', 0):.2f} records/s."
        )
    if scores:
        lines += ["", "## Scores", "", scores.strip()]
    return "\n".join(lines) + "\n"
