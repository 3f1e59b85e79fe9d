"""The trainer configs (`ContrastiveSFTConfig`, `PreferenceDPOConfig`): shared defaults declared once, safe on a
machine without a GPU, every field of ours documented, bad values refused with a message that says what to change;
`[train]` settings and the episode fine-tuning take their defaults from one place; the package imports cheaply."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from trl import DPOConfig, SFTConfig

import spacy_fsner.training as training
from spacy_fsner.training.adaptation import FineTuneAdaptation, fine_tune_adaptation_v1
from spacy_fsner.training.base_config import TrainerDefaults
from spacy_fsner.training.dpo_config import PreferenceDPOConfig
from spacy_fsner.training.settings import DPOSettings, LoraSettings, TrainSettings
from spacy_fsner.training.sft_config import ContrastiveSFTConfig

CONFIGS = (ContrastiveSFTConfig, PreferenceDPOConfig)
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the defaults of a machine without a GPU")


def fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def own_fields(cls) -> list[str]:
    return list(inspect.get_annotations(cls))


@pytest.mark.parametrize("config_class", CONFIGS)
def test_shared_defaults_are_declared_once(config_class):
    """Every shared default comes from `TrainerDefaults` itself (the same field object), not a copy of its value;
    only the DPO config replaces `warmup_ratio` (the paper's warm-up, taken from `[train]`'s default)."""
    shared = fields(TrainerDefaults)
    replaced = {"warmup_ratio"} if config_class is PreferenceDPOConfig else set()
    for name, field in shared.items():
        if name not in replaced:
            assert fields(config_class)[name] is field, f"{config_class.__name__} redeclares {name}"
    assert not set(own_fields(config_class)) & (set(shared) - replaced)


def test_defaults_that_mean_the_same_come_from_one_place():
    assert PreferenceDPOConfig.__dataclass_fields__["warmup_ratio"].default == TrainSettings.warmup_ratio
    assert PreferenceDPOConfig.__dataclass_fields__["sft_weight"].default == DPOSettings.sft_weight
    assert TrainSettings.logging_steps == TrainerDefaults.logging_steps
    # the registered constructor's defaults build exactly the dataclass's defaults
    assert fine_tune_adaptation_v1() == FineTuneAdaptation()
    assert FineTuneAdaptation().lora == LoraSettings()
    adaptation, train = FineTuneAdaptation(), TrainSettings()
    assert (adaptation.learning_rate, adaptation.absent_labels, adaptation.seed) == (
        train.learning_rate,
        train.absent_labels,
        train.seed,
    )


@pytest.mark.parametrize("config_class", [TrainerDefaults, *CONFIGS])
def test_every_field_of_ours_has_help(config_class):
    names = own_fields(config_class)
    assert names
    for name in names:
        help_text = fields(config_class)[name].metadata.get("help", "")
        assert len(help_text) > 20, f"{config_class.__name__}.{name} has no help"


@NO_GPU
@pytest.mark.parametrize(
    ("config_class", "trl_class"), [(ContrastiveSFTConfig, SFTConfig), (PreferenceDPOConfig, DPOConfig)]
)
def test_builds_on_a_machine_without_gpu_where_trl_defaults_fail(tmp_path, config_class, trl_class):
    with pytest.raises(ValueError, match="use_cpu"):
        trl_class(output_dir=str(tmp_path))  # TRL's bf16 default
    config = config_class(output_dir=str(tmp_path))
    assert (config.use_cpu, config.bf16) == (True, False)
    assert (config.activation_checkpointing, config.gradient_checkpointing) == (False, False)  # TRL: True
    assert trl_class(output_dir=str(tmp_path), use_cpu=True).activation_checkpointing is True
    assert config.report_to == []
    assert (config.logging_steps, config.save_strategy) == (1, "no")


@pytest.mark.parametrize(
    ("gpu", "bf16_gpu", "given", "expected"),
    [
        (False, False, {}, (True, False)),
        (True, True, {}, (False, True)),
        (True, False, {}, (False, False)),
        (True, True, {"use_cpu": True}, (True, False)),  # on the CPU by choice
        (True, True, {"fp16": True}, (False, False)),  # fp16 asked for: not both
        (True, True, {"bf16": False}, (False, False)),  # given: kept
    ],
)
def test_bf16_only_where_the_run_is_on_a_gpu_that_has_it(monkeypatch, gpu, bf16_gpu, given, expected):
    """The resolution alone (building a whole config on a pretend GPU would set that GPU up)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_gpu)
    config = SimpleNamespace(**{"use_cpu": None, "bf16": None, "fp16": False, **given})
    TrainerDefaults.resolve_device(config)
    assert (config.use_cpu, config.bf16) == expected


def test_warmup_ratio_is_written_into_warmup_steps_once(tmp_path):
    arguments = TrainSettings(warmup_ratio=0.25).trainer_arguments()
    assert arguments["warmup_ratio"] == 0.25 and "warmup_steps" not in arguments
    config = ContrastiveSFTConfig(output_dir=str(tmp_path), **arguments)
    assert config.warmup_steps == 0.25 and config.get_warmup_steps(100) == 25
    assert ContrastiveSFTConfig(output_dir=str(tmp_path)).warmup_steps == 0  # no ratio: transformers' default
    assert PreferenceDPOConfig(output_dir=str(tmp_path)).get_warmup_steps(50) == 5  # the paper's 0.1
    steps = PreferenceDPOConfig(output_dir=str(tmp_path), warmup_ratio=None, warmup_steps=7)
    assert steps.get_warmup_steps(50) == 7
    # a config rebuilt from its own values (both names then hold the ratio) is accepted
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    assert ContrastiveSFTConfig(**values).warmup_steps == 0.25


def test_train_settings_become_arguments_every_config_takes(tmp_path):
    arguments = TrainSettings().trainer_arguments()
    for config_class in CONFIGS:
        assert set(arguments) <= set(fields(config_class))
        config = config_class(output_dir=str(tmp_path), **arguments)
        assert (config.save_strategy, config.learning_rate, config.seed) == ("steps", 3e-4, 0)


@pytest.mark.parametrize(
    ("batch_size", "accumulation", "processes", "layout"),
    [
        (8, 1, 1, (8, 1)),
        (4, 2, 2, (4, 1)),  # the accumulation goes to the processes: the same forwards, dealt out
        (8, 4, 2, (8, 2)),
        (8, 1, 2, (4, 1)),  # nothing to accumulate: each forward takes half the records
        (8, 2, 4, (4, 1)),
        (8, 3, 2, (4, 3)),
    ],
)
def test_the_global_batch_is_the_configs_on_any_number_of_processes(batch_size, accumulation, processes, layout):
    settings = TrainSettings(batch_size=batch_size, gradient_accumulation=accumulation)
    per_device, steps = settings.batch_layout(processes)
    assert (per_device, steps) == layout and per_device * steps * processes == batch_size * accumulation
    arguments = settings.trainer_arguments(processes)
    assert (arguments["per_device_train_batch_size"], arguments["gradient_accumulation_steps"]) == layout


def test_a_global_batch_the_processes_cannot_share_says_what_to_change():
    with pytest.raises(ValueError, match="make gradient_accumulation a multiple of 2, or batch_size a multiple of 2"):
        TrainSettings(batch_size=3, gradient_accumulation=1).batch_layout(2)


def test_sft_weight_sets_the_dpo_loss_terms(tmp_path):
    config = PreferenceDPOConfig(output_dir=str(tmp_path), sft_weight=0.5)
    assert (config.loss_type, config.loss_weights) == (["sigmoid", "sft"], [1.0, 0.5])
    pure = PreferenceDPOConfig(output_dir=str(tmp_path), sft_weight=0)
    assert (pure.loss_type, pure.loss_weights) == (["sigmoid"], [1.0])
    given = PreferenceDPOConfig(output_dir=str(tmp_path), loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.1])
    assert given.loss_weights == [1.0, 0.1]  # given explicitly, TRL's fields win
    assert (PreferenceDPOConfig(output_dir=str(tmp_path)).learning_rate, config.beta) == (5e-6, 0.1)


@pytest.mark.parametrize(
    ("config_class", "values", "message"),
    [
        (ContrastiveSFTConfig, {"completion_only_loss": None}, r"needs completion_only_loss=True"),
        (ContrastiveSFTConfig, {"max_length": 0}, r"max_length must be >= 1, or None"),
        (ContrastiveSFTConfig, {"warmup_ratio": 1.5}, r"warmup_ratio must be in \[0, 1\), got 1.5"),
        (ContrastiveSFTConfig, {"warmup_ratio": 0.1, "warmup_steps": 5}, r"Both warmup_ratio .* and warmup_steps"),
        (PreferenceDPOConfig, {"warmup_steps": 5}, r"warmup_ratio=None to count the warm-up in steps"),
        (PreferenceDPOConfig, {"sft_weight": -1}, r"sft_weight must be >= 0"),
        (PreferenceDPOConfig, {"loss_weights": [1.0, 0.2]}, r"loss_weights \[1.0, 0.2\] without loss_type"),
    ],
)
def test_bad_values_say_what_to_change(tmp_path, config_class, values, message):
    with pytest.raises(ValueError, match=message):
        config_class(output_dir=str(tmp_path), use_cpu=True, **values)


def test_package_is_cheap_to_import_and_declares_its_names():
    code = (
        "import sys, spacy_fsner.training as t\n"
        "heavy = sorted(m for m in ('trl', 'peft', 'datasets') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in training.__all__:
        assert getattr(training, name) is not None
    assert training.ContrastiveSFTConfig is ContrastiveSFTConfig
    with pytest.raises(AttributeError, match="no attribute 'contrastive_sft_config'"):
        training.contrastive_sft_config  # noqa: B018
