"""configs/accelerate/: each file loads with accelerate's own config loader, names only options `accelerate launch`
has, and gives the launcher and plugin settings it says (no GPU needed: nothing is launched)."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


def launch_arguments(path: Path):
    """The arguments `accelerate launch --config_file PATH script.py` runs with, and the loaded config."""
    parser = launch_command_parser()
    arguments, defaults, _ = _validate_launch_command(parser.parse_args(["--config_file", str(path), "train.py"]))
    return arguments, defaults


def plugin_environment(monkeypatch, environment: dict[str, str]) -> None:
    for key, value in environment.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)


def test_the_shipped_configs_are_the_documented_ones():
    assert sorted(path.name for path in CONFIGS.glob("*.yaml")) == [
        "ddp.yaml",
        "ddp_cpu.yaml",
        "deepspeed_zero3.yaml",
        "fsdp.yaml",
    ]


@pytest.mark.parametrize("name", ["ddp_cpu", "ddp", "fsdp", "deepspeed_zero3"])
def test_every_option_is_one_accelerate_launch_has(name):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))  # unknown top-level keys raise here
    options = {action.dest for action in launch_command_parser()._actions}
    # accelerate copies the nested keys onto the launch arguments without checking them (fsdp_ prefixed)
    nested = {key if key.startswith("fsdp_") else f"fsdp_{key}" for key in config.fsdp_config}
    unknown = sorted((nested | set(config.deepspeed_config)) - options)
    assert unknown == [], f"{name}.yaml names options accelerate launch does not have: {unknown}"


def test_ddp_configs_launch_torchrun_processes():
    cpu, defaults = launch_arguments(CONFIGS / "ddp_cpu.yaml")
    assert cpu.multi_gpu and (cpu.num_processes, cpu.mixed_precision) == (2, "no")  # what the tests run
    gpu, _ = launch_arguments(CONFIGS / "ddp.yaml")
    assert gpu.multi_gpu and gpu.mixed_precision == "bf16" and not (gpu.use_fsdp or gpu.use_deepspeed)


def test_fsdp_config_shards_every_llama_decoder_layer(monkeypatch):
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    arguments, defaults = launch_arguments(CONFIGS / "fsdp.yaml")
    assert defaults.distributed_type == DistributedType.FSDP and arguments.use_fsdp
    plugin_environment(monkeypatch, prepare_multi_gpu_env(arguments))
    plugin = FullyShardedDataParallelPlugin()  # reads the launcher's environment, as each process does
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # full shard
    assert plugin.transformer_cls_names_to_wrap == [LlamaDecoderLayer.__name__]
    assert "SHARDED_STATE_DICT" in str(plugin.state_dict_type) and not plugin.activation_checkpointing
    assert arguments.mixed_precision == "bf16"


def test_deepspeed_config_is_zero3_saving_whole_weights(monkeypatch):
    arguments, defaults = launch_arguments(CONFIGS / "deepspeed_zero3.yaml")
    assert defaults.distributed_type == DistributedType.DEEPSPEED and arguments.use_deepspeed
    arguments.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as `launch` sets it
    _, environment = prepare_deepspeed_cmd_env(arguments)
    plugin_environment(monkeypatch, environment)
    plugin = DeepSpeedPlugin()
    zero = plugin.deepspeed_config["zero_optimization"]
    assert plugin.zero_stage == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    # batch sizes and accumulation come from the training config through the trainer
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == "auto"
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
