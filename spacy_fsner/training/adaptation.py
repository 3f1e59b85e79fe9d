"""Adapting the `fsner` component to a few-shot episode by fine-tuning (`pipeline.adaptation` holds the protocol
and the in-context default).

- `spacy_fsner.FineTuneAdaptation.v1` (the papers' episode evaluation): a LoRA adapter trained on the support docs
  for a few steps, then the query docs are predicted with it. It starts from the pipeline's own adapter when it
  has one (a pipeline trained on the source domain is fine-tuned further per episode), else from a new LoRA on the
  base model. The prompts are the ones the task builds at inference (episode labels, definitions, template,
  chunking; no demonstrations unless `demonstrations = true` or the component has a retriever, whose pool
  becomes the support set), via `sft_records`.

No leakage between episodes: the base model is loaded once, the episode's adapter is added to it under the name
`EPISODE_ADAPTER` (the pipeline's own adapter, `default`, is copied into it, never trained), and the next `adapt`
removes it again (`CausalLM.restore_model`) before it trains its own; the base weights are frozen throughout.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from spacy.tokens import Doc
from spacy.util import registry

from .settings import LoraSettings, TrainSettings

if TYPE_CHECKING:
    from ..pipeline.fsner import FewShotNER

EPISODE_ADAPTER = "fsner_episode"
"""PEFT name of the adapter an episode trains (the pipeline's own adapter keeps PEFT's name, `default`)."""


@dataclass
class FineTuneAdaptation:
    """A LoRA adapter trained on each episode's support docs (see the module docstring).

    `lora` applies to a new adapter; a pipeline's own adapter is continued with its own settings. `log_history`
    holds the trainer's log of the last episode (`loss`, `nll`, each objective, per step).
    """

    steps: int = 20
    learning_rate: float = TrainSettings.learning_rate
    batch_size: int = 4
    absent_labels: int = TrainSettings.absent_labels
    lora: LoraSettings = field(default_factory=LoraSettings)
    objectives: list[Any] = field(default_factory=list)
    seed: int = TrainSettings.seed
    demonstrations: bool = False
    log_history: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(
                f"FineTuneAdaptation needs steps >= 1, batch_size >= 1 and learning_rate > 0, got steps={self.steps}, "
                f"batch_size={self.batch_size}, learning_rate={self.learning_rate}."
            )

    def __call__(self, component: FewShotNER, support: Sequence[Doc]) -> None:
        from .sft_records import sft_records

        lm = component.model
        if not callable(getattr(lm, "use_model", None)):
            raise TypeError(
                f"FineTuneAdaptation trains the component's model, which must be a spacy_fsner.CausalLM.v1; this "
                f"component's model is a {type(lm).__name__}. Use spacy_fsner.InContextAdaptation.v1 with it."
            )
        lm.restore_model()  # the previous episode's adapter goes: every episode starts from the original weights
        support = list(support)
        # a pipeline that retrieves its demonstrations (IF-WRANER) retrieves them from the support set
        retrieves = component.task.retriever is not None
        component.task.set_demonstrations(support if self.demonstrations or retrieves else [])
        tokenizer = copy.deepcopy(lm.generator.tokenizer)  # TRL sets a pad token on the tokenizer it trains with
        records = sft_records(support, component.task, tokenizer, absent_labels=self.absent_labels, seed=self.seed)
        if not records:
            raise ValueError(
                f"The episode's support set ({len(support)} docs) gave no training records: it has no non-empty "
                "sentence. Give every episode support sentences."
            )
        model, restore = episode_model(lm.generator.model, self.lora, self.seed)
        try:
            self.log_history = self._train(model, tokenizer, records, lm.device)
        except BaseException:
            restore()
            raise
        model.eval().requires_grad_(False)  # for inference now; `restore` puts the original flags back
        lm.use_model(model, restore)

    def _train(self, model, tokenizer, records: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
        from transformers import PrinterCallback

        from .sft_config import ContrastiveSFTConfig
        from .sft_records import sft_dataset
        from .sft_trainer import ContrastiveSFTTrainer

        with tempfile.TemporaryDirectory(prefix="fsner-episode-") as output_dir, _quiet_datasets():
            args = ContrastiveSFTConfig(
                output_dir=output_dir,
                max_steps=self.steps,
                per_device_train_batch_size=self.batch_size,
                learning_rate=self.learning_rate,
                seed=self.seed,
                use_cpu=device.type == "cpu",
                disable_tqdm=True,
            )
            trainer = ContrastiveSFTTrainer(
                model=model,
                args=args,
                train_dataset=sft_dataset(records),
                processing_class=tokenizer,
                objectives=copy.deepcopy(self.objectives),  # fresh each episode: no random state carried over
            )
            trainer.remove_callback(PrinterCallback)  # the log stays in memory (`log_history`), not on stdout
            try:
                trainer.train()
            finally:
                trainer.remove_hooks()
        return trainer.state.log_history


def episode_model(loaded, lora: LoraSettings, seed: int = 0) -> tuple[Any, Callable[[], None]]:
    """A PeftModel over `loaded` (the CausalLM's model: base, or base + its adapter) whose only trainable weights
    are a new adapter `EPISODE_ADAPTER`, and the function that removes it again.

    A PeftModel's own adapter is copied into the new one (continued, never changed itself); a plain model gets a
    new LoRA (`lora`, initialised with `seed`). The base weights are shared, not copied, and stay frozen; the
    removal also puts back what training changes besides them (requires_grad flags, the pad token TRL writes into
    the model's config, train mode).
    """
    from peft import PeftModel, get_peft_model
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    requires_grad = {name: p.requires_grad for name, p in loaded.named_parameters()}
    configs = [loaded.config, loaded.generation_config]  # TRL and the Trainer write pad_token_id, use_cache
    saved_configs = [copy.deepcopy(vars(config)) for config in configs]
    had_peft_config = "peft_config" in vars(loaded)

    def put_back(module) -> None:
        for config, saved in zip(configs, saved_configs, strict=True):
            vars(config).clear()
            vars(config).update(saved)
        for name, parameter in module.named_parameters():
            if name in requires_grad:
                parameter.requires_grad_(requires_grad[name])
        module.eval()

    if isinstance(loaded, PeftModel):
        original = loaded.active_adapter
        config = copy.deepcopy(loaded.peft_config[original])
        config.inference_mode = False
        loaded.add_adapter(EPISODE_ADAPTER, config)
        # no embedding layers to save (LoRA on projections); "auto" would look the base model up on the hub
        state = get_peft_model_state_dict(loaded, adapter_name=original, save_embedding_layers=False)
        set_peft_model_state_dict(loaded, state, adapter_name=EPISODE_ADAPTER)
        loaded.set_adapter(EPISODE_ADAPTER)  # active and trainable; every other adapter frozen

        def restore() -> None:
            loaded.set_adapter(original, inference_mode=True)
            loaded.delete_adapter(EPISODE_ADAPTER)
            put_back(loaded)

        return loaded, restore

    config = lora.peft_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(loaded, config, adapter_name=EPISODE_ADAPTER)

    def restore() -> None:
        model.unload()  # the LoRA layers replaced by the base layers they wrap, in place
        if not had_peft_config and "peft_config" in vars(loaded):
            del loaded.peft_config
        put_back(loaded)

    return model, restore


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars while TRL prepares an episode's few records."""
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    enabled = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            enable_progress_bar()


@registry.misc("spacy_fsner.FineTuneAdaptation.v1")
def fine_tune_adaptation_v1(
    steps: int = FineTuneAdaptation.steps,
    learning_rate: float = FineTuneAdaptation.learning_rate,
    batch_size: int = FineTuneAdaptation.batch_size,
    absent_labels: int = FineTuneAdaptation.absent_labels,
    r: int = LoraSettings.r,
    alpha: int = LoraSettings.alpha,
    dropout: float = LoraSettings.dropout,
    target_modules: str | list[str] = LoraSettings.target_modules,
    objectives: dict[str, Any] | list[Any] | None = None,
    seed: int = FineTuneAdaptation.seed,
    demonstrations: bool = FineTuneAdaptation.demonstrations,
) -> FineTuneAdaptation:
    """Each episode: a LoRA adapter trained for `steps` steps on its support docs (the pipeline's own adapter
    continued, else a new one with r/alpha/dropout/target_modules), then its query docs predicted with it.
    `objectives`: registered contrastive objectives (`spacy_fsner.HiddenStateContrastive.v1`, ...) added to the
    loss; `demonstrations`: whether the support docs are also put into the prompts."""
    if isinstance(objectives, dict):
        objectives = list(objectives.values())
    return FineTuneAdaptation(
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        absent_labels=absent_labels,
        lora=LoraSettings(r=r, alpha=alpha, dropout=dropout, target_modules=target_modules),
        objectives=list(objectives or []),
        seed=seed,
        demonstrations=demonstrations,
    )
