"""One training stage from a config: the pipeline to train, its corpus, LoRA and optimiser settings, objectives.

The config has the sections of a pipeline config (`[nlp]`, `[components]`: the `fsner` component whose prompts the
model learns to answer, exactly as it will see them) plus `[train]`. `[paths]` names the corpus (`train`), the base
model (`base_model`) and, to continue training an adapter (target-domain training after the source domain, or DPO
after SFT), that adapter (`adapter`). `run_training` writes to the output directory:

- `adapter/`: the LoRA adapter (PEFT `save_pretrained`);
- `pipeline/`: a complete spaCy pipeline with the adapter inside (`spacy.load` works on it anywhere the base model
  can be found: a hub id or a `fetch-model` name, never a path into this machine's training directory);
- `metrics.json`: the settings and the log history (NLL, each objective, DPO rewards), and `curves.png`;
- `checkpoints/`: the trainer's checkpoints; a killed run started again resumes from the last one, a run with other
  settings or data starts afresh (see `checkpoints.py`).

Under `accelerate launch` (several processes: DDP, FSDP, DeepSpeed) every process trains its share of the config's
global batch (`TrainSettings.batch_layout`), and the main process alone decides the resume point and writes the
outputs (`distributed.py`; docs/scaling.md).
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from confection import Config
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import load_model_from_config, registry

from ..log import logger
from ..models.loading import attach_adapter, load_base_model, load_tokenizer, model_location
from ..retrieval.retrievers import Retriever
from .checkpoints import resume_point, run_identity
from .distributed import is_main_process, launched_processes, main_decides, quiet_other_processes
from .settings import LoraSettings, TrainSettings


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Training config {path} not found: pass a config file such as configs/obp.cfg.")
    config = Config().from_disk(path, overrides=overrides or {}, interpolate=False)
    missing = [s for s in ("nlp", "components", "train") if s not in config]
    if missing:
        raise ValueError(f"{path} has no {missing} section(s): a training config is a pipeline config plus [train].")
    return config


def read_training_docs(path: str | Path, nlp: Language) -> list[Doc]:
    """Gold docs of any corpus format `evaluate` reads (.spacy, CoNLL, token-tag, episode JSONL: all its sentences)."""
    from ..data.readers import read_corpus

    if not Path(path).exists():
        raise FileNotFoundError(
            f"Training corpus {path} not found: set --paths.train to a .spacy, CoNLL, token-tag or episode file."
        )
    return read_corpus(path, nlp, include_support=True)


def restrict_labels(docs: list[Doc], labels: tuple[str, ...]) -> list[Doc]:
    """The docs with only the entities of `labels` (the component's, when its config names them: training on a subset
    of the corpus's types); says how many entities it removed."""
    keep = set(labels)
    removed = Counter(e.label_ for doc in docs for e in doc.ents if e.label_ not in keep)
    if not removed:
        return docs
    restricted = []
    for doc in docs:
        copy = doc.copy()
        copy.ents = [Span(copy, e.start, e.end, e.label) for e in doc.ents if e.label_ in keep]
        restricted.append(copy)
    logger.info(
        f"Training on the component's labels {sorted(keep)} only: removed {sum(removed.values())} entities of other "
        f"types from the corpus ({dict(removed.most_common())}). Set `labels = []` to train on every type."
    )
    return restricted


def check_label_coverage(asked: tuple[str, ...], corpus_labels: list[str], train_path: str | Path) -> None:
    """An error when none of the component's labels has an entity in the corpus (the model would learn to answer
    nothing), a warning for each label without one."""
    missing = [label for label in asked if label not in corpus_labels]
    if len(missing) == len(asked):
        raise ValueError(
            f"None of the labels {list(asked)} has an entity in the training corpus {train_path}, whose entity types "
            f"are {corpus_labels}: set `components.fsner.labels` to some of the corpus's types (or to '' for all of "
            "them), or train on a corpus with these types."
        )
    if missing:
        logger.warning(
            f"The labels {missing} have no entity in the training corpus {train_path} (its types: {corpus_labels}): "
            "the model learns to answer nothing for them."
        )


def build_pipeline(config: Config, docs_labels: list[str]) -> Language:
    """The pipeline of the config (labels from the corpus when the component lists none)."""
    config = Config(config).interpolate()
    pipeline_config = Config({key: value for key, value in config.items() if key != "train"})
    fsner = pipeline_config["components"].get("fsner")
    if fsner is None:
        raise ValueError("The config's [components] has no `fsner` component to train.")
    if not fsner.get("labels"):
        fsner["labels"] = docs_labels
        definitions = fsner.get("label_definitions") or {}
        unused = sorted(set(definitions) - set(docs_labels))
        if unused:  # a config written for a larger corpus (base.cfg's 13 types on a sample of 12)
            logger.info(
                f"The corpus has no entity of the defined types {unused}: their definitions are left out (the "
                "component's labels are the corpus's types)."
            )
            fsner["label_definitions"] = {k: v for k, v in definitions.items() if k in docs_labels}
    return load_model_from_config(pipeline_config, auto_fill=True, validate=True)


@dataclass
class Stage:
    """Everything a training stage's trainer is built from (`prepare_stage`), before any step."""

    config: Config
    settings: TrainSettings
    train_path: str
    docs: list[Doc]
    labels: list[str]
    nlp: Language
    model: Any  # the peft-wrapped trainable model, attached to the component
    tokenizer: Any

    def trainer(self, checkpoints: Path) -> tuple[Any, dict[str, int]]:
        """The stage's trainer (SFT or DPO) and what its dataset holds (records or pairs of each kind)."""
        build = _sft_trainer if self.settings.stage == "sft" else _dpo_trainer
        return build(self.settings, self.docs, self.nlp, self.model, self.tokenizer, checkpoints)


def prepare_stage(config_path: str | Path, overrides: dict[str, Any] | None = None) -> Stage:
    """Read the config and the corpus, seed, build the pipeline and the trainable model (LoRA on the base model)."""
    from spacy.lang.en import English

    config = load_config(config_path, overrides)
    resolved = Config(config).interpolate()
    settings = TrainSettings.from_config(resolved["train"])
    if settings.threads:
        torch.set_num_threads(settings.threads)
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    train_path = resolved["paths"].get("train")
    if not train_path:
        raise ValueError("No training corpus: set [paths] train in the config or pass --paths.train FILE.")
    docs = read_training_docs(train_path, English())
    labels = sorted({e.label_ for doc in docs for e in doc.ents})
    if not labels:
        raise ValueError(
            f"The training corpus {train_path} has {len(docs)} docs but no entities: the model would learn to "
            "answer nothing. Train on a corpus with gold entities (check its tag scheme and format)."
        )
    nlp = build_pipeline(config, labels)
    component = nlp.get_pipe("fsner")
    check_label_coverage(component.labels, labels, train_path)
    docs = restrict_labels(docs, component.labels)
    model = _trainable_model(component.model, settings.lora)
    # the component generates (error feedback) and embeds (retrieval) with the model being trained: no second copy
    component.model.attach_model(model)
    if component.task.retriever is not None:  # IF-WRANER: each prompt shows retrieved training sentences, never its own
        component.task.set_demonstrations(docs)
    tokenizer = load_tokenizer(model_location(component.model.name), component.model.trust_remote_code)
    return Stage(config, settings, str(train_path), docs, labels, nlp, model, tokenizer)


def run_training(config_path: str | Path, output: str | Path, overrides: dict[str, Any] | None = None) -> Path:
    """Run the stage of `config_path` and write adapter, pipeline, metrics and curves to `output` (on several
    processes: every process trains, the main one writes; all return when the outputs are written)."""
    quiet_other_processes()
    stage = prepare_stage(config_path, overrides)
    output = Path(output)
    if is_main_process():
        output.mkdir(parents=True, exist_ok=True)
    trainer, examples = stage.trainer(output / "checkpoints")
    accelerator = trainer.accelerator
    if accelerator.num_processes != launched_processes():  # the global batch was shared for the launcher's count
        raise ValueError(
            f"The trainer runs on {accelerator.num_processes} processes, the launcher started "
            f"{launched_processes()}: launch with `accelerate launch` or torchrun (see docs/scaling.md)."
        )
    # after building the trainer (which can still fail, e.g. no preference pairs): an old run's checkpoints stay
    inputs = {"training corpus": stage.train_path, "continued adapter": stage.nlp.get_pipe("fsner").model.adapter}
    identity = run_identity(stage.config, inputs)
    checkpoint = main_decides(accelerator, lambda: resume_point(output / "checkpoints", identity))
    trainer.train(resume_from_checkpoint=checkpoint)
    if hasattr(trainer, "remove_hooks"):
        trainer.remove_hooks()
    # every process: a sharded model's weights are gathered (a plain or DDP model's are just read)
    weights = accelerator.get_state_dict(trainer.model_wrapped)
    pipeline = output / "pipeline"
    if accelerator.is_main_process:
        _write_outputs(stage, trainer, weights, output, config_path, examples, checkpoint)
    accelerator.wait_for_everyone()
    return pipeline


def _write_outputs(
    stage: Stage, trainer, weights: dict[str, Any], output: Path, config_path, examples, checkpoint
) -> None:
    """The run's adapter (from the trained `weights`), pipeline, metrics and curves in `output`."""
    adapter = output / "adapter"
    shutil.rmtree(adapter, ignore_errors=True)
    # not DPO's frozen `ref` copy; no embedding layers (LoRA on projections: "auto" looks the base up on the hub)
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    model.save_pretrained(adapter, selected_adapters=["default"], save_embedding_layers=False, state_dict=weights)
    history = trainer.state.log_history
    component = stage.nlp.get_pipe("fsner")
    _save_pipeline(stage.config, stage.labels, adapter, output / "pipeline", component.task.retriever)
    metrics = {
        "settings": {
            "config": str(config_path),
            "stage": stage.settings.stage,
            "train": stage.train_path,
            "n_docs": len(stage.docs),
            "labels": list(component.labels),
            "examples": examples,
            "resumed_from": checkpoint,
            "processes": trainer.accelerator.num_processes,
            "train_settings": asdict(stage.settings) | {"objectives": sorted(stage.settings.objectives)},
        },
        "log_history": history,
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n", encoding="utf-8")
    from .curves import plot_curves

    plot_curves(history, output / "curves.png")


def _trainable_model(causal_lm, lora: LoraSettings):
    """The base model in float32 with a trainable LoRA adapter: the configured adapter continued, else a new one."""
    from peft import get_peft_model

    base = load_base_model(
        model_location(causal_lm.name),
        causal_lm.dtype,
        causal_lm.device,
        causal_lm.trust_remote_code,
        causal_lm.revision,
        causal_lm.name,
    ).train()
    if causal_lm.adapter is not None:
        return attach_adapter(base, causal_lm.adapter, causal_lm.name, trainable=True)
    return get_peft_model(base, lora.peft_config())


def _sft_trainer(settings: TrainSettings, docs, nlp: Language, model, tokenizer, checkpoints: Path):
    """The SFT trainer and the number of records (with an entity and with the empty answer)."""
    from .sft_config import ContrastiveSFTConfig
    from .sft_records import sft_dataset, sft_records
    from .sft_trainer import ContrastiveSFTTrainer

    task = nlp.get_pipe("fsner").task
    records = sft_records(
        docs,
        task,
        tokenizer,
        absent_labels=settings.absent_labels,
        seed=settings.seed,
        max_length=settings.max_length,
        variety=settings.variety,
    )
    if not records:
        raise ValueError("The training corpus gave no SFT records (no non-empty sentences): check --paths.train.")
    objectives = [registry.resolve({"objective": spec})["objective"] for spec in settings.objectives.values()]
    args = ContrastiveSFTConfig(
        output_dir=str(checkpoints),
        **settings.trainer_arguments(launched_processes()),
        neftune_noise_alpha=settings.neftune_alpha or None,  # 0: off
    )
    trainer = ContrastiveSFTTrainer(
        model=model, args=args, train_dataset=sft_dataset(records), processing_class=tokenizer, objectives=objectives
    )
    empty = sum(1 for record in records if not record["entity_spans"])
    return trainer, {"records": len(records), "empty_answers": empty}


def _dpo_trainer(settings: TrainSettings, docs, nlp: Language, model, tokenizer, checkpoints: Path):
    """Pairs from boundary shifts and from the current pipeline's errors on the training docs (the trainer and the
    number of pairs of each kind); the adapter being continued (the SFT one) is the frozen reference."""
    from ..evaluation.protocols import predict
    from .dpo_config import PreferenceDPOConfig
    from .dpo_trainer import build_dpo_trainer
    from .preference_pairs import boundary_shift_pairs, dpo_dataset, error_feedback_pairs, wrong_type_pairs

    task = nlp.get_pipe("fsner").task
    pairs = boundary_shift_pairs(docs, task) if "boundary" in settings.dpo.pairs else []
    counts = {"boundary_pairs": len(pairs), "error_pairs": 0}
    if "type" in settings.dpo.pairs and task.joint:
        typed = wrong_type_pairs(docs, task, seed=settings.seed)
        pairs += typed
        counts["type_pairs"] = len(typed)
    if "error" in settings.dpo.pairs:
        gold = docs[: settings.dpo.feedback_docs or None]
        model.eval()  # no LoRA dropout while predicting; the trainer switches back to train mode
        predicted = [example.predicted for example in predict(nlp, gold, batch_size=nlp.batch_size)]
        errors = error_feedback_pairs(gold, predicted, task)
        pairs += errors
        counts |= {"error_pairs": len(errors), "feedback_docs": len(gold)}
    if not pairs:
        raise ValueError("No preference pairs: the corpus has no entities to shift and the model made no error.")
    random.Random(settings.seed).shuffle(pairs)
    args = PreferenceDPOConfig(
        output_dir=str(checkpoints),
        **settings.trainer_arguments(launched_processes()),
        beta=settings.dpo.beta,
        sft_weight=settings.dpo.sft_weight,
        max_length=settings.max_length,
    )
    dataset = dpo_dataset(pairs, tokenizer, max_length=settings.max_length)
    return build_dpo_trainer(model, tokenizer, dataset, args), counts


def _save_pipeline(config: Config, labels: list[str], adapter: Path, output: Path, retriever: Retriever | None) -> Path:
    """The trained pipeline: the adapter inside it (the files of `adapter`, just saved from the trained model: no
    model is loaded again, and a sharded model's gathered weights are the ones saved), the base model referred to by
    its name (as configured); with a retriever, the training run's index (the training docs) as its pool, copied
    rather than computed again (an episode's `adapt` or `nlp.initialize` replaces it)."""
    config = Config(config)
    config["paths"]["adapter"] = str(adapter)
    nlp = build_pipeline(config, labels)
    component = nlp.get_pipe("fsner")
    if retriever is not None:
        component.task.retriever.from_bytes(retriever.to_bytes())
    shutil.rmtree(output, ignore_errors=True)
    nlp.config["paths"]["adapter"] = None
    nlp.to_disk(output)
    return output
