"""Training on several processes, on CPUs: `accelerate launch` with configs/accelerate/ddp_cpu.yaml (DDP, 2 processes
on gloo) trains the adapter that one process trains on the same global batch (SFT with the attention and the
hidden-state objective with its noise view; DPO), resumes a killed run, and writes its outputs once. The objectives
under sharding: FSDP2 (`fully_shard`) on 2 CPU processes equals one process (tests/fsdp_worker.py), also when one
process's micro-batch has no entity (the noise pass runs on every process, or the other one would wait forever)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import torch
from safetensors.torch import load_file
from spacy.tokens import DocBin

from spacy_fsner.data.readers import read_docs
from spacy_fsner.training.run import run_training

REPO = Path(__file__).resolve().parents[1]
DDP_CPU = REPO / "configs" / "accelerate" / "ddp_cpu.yaml"
ATTENTION = '\n[train.objectives.attention]\n@misc = "spacy_fsner.AttentionContrastive.v1"\nweight = 0.5\nlayer = -1\n'

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment() -> dict[str, str]:
    """This checkout's code in the launched processes."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def launch(config: Path, output: Path, overrides: dict) -> str:
    """`accelerate launch --config_file configs/accelerate/ddp_cpu.yaml -m spacy_fsner train ...`; its output."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CPU)]
    command += ["--main_process_port", str(free_port()), "-m", "spacy_fsner", "train", str(config)]
    command += ["--output", str(output), *(a for k, v in overrides.items() for a in (f"--{k}", json.dumps(v)))]
    result = subprocess.run(command, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def adapter(output: Path) -> dict[str, torch.Tensor]:
    return load_file(output / "adapter" / "adapter_model.safetensors")


def assert_same_adapter(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)


def history(output: Path, key: str) -> list[float]:
    metrics = json.loads((output / "metrics.json").read_text())
    return [entry[key] for entry in metrics["log_history"] if key in entry]


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> Path:
    docs = [d for d in read_docs(shared_data / "conll2003" / "eng.train", spacy.blank("en").vocab) if d.ents][:16]
    path = tmp_path_factory.mktemp("corpus") / "train.spacy"
    DocBin(docs=docs).to_disk(path)
    return path


@pytest.fixture(scope="module")
def contrastive_config(tmp_path_factory) -> Path:
    """configs/cllmfs.cfg (hidden-state CL + noise) with OBP-LLM's attention objective too."""
    path = tmp_path_factory.mktemp("config") / "both.cfg"
    path.write_text((REPO / "configs" / "cllmfs.cfg").read_text() + ATTENTION)
    return path


@pytest.fixture(scope="module")
def overrides(corpus, tiny_model_dir) -> dict:
    """Global batch 4 = 2 records x 2 accumulated (1 process) = 2 records x 2 processes; no LoRA dropout (its
    masks are random); a learning rate at which 4 steps move the adapter well away from its start."""
    return {
        "paths.train": str(corpus),
        "paths.base_model": str(tiny_model_dir),
        "train.max_steps": 4,
        "train.batch_size": 2,
        "train.gradient_accumulation": 2,
        "train.save_steps": 2,
        "train.threads": 1,
        "train.learning_rate": 0.01,
        "train.lora.dropout": 0.0,
        "train.objectives.cl.weight": 0.5,
        "train.objectives.cl.max_negatives": 8,  # negatives drawn at random: the draws must match too
    }


@pytest.fixture(scope="module")
def runs(contrastive_config, overrides, tmp_path_factory) -> dict:
    """The same SFT stage on one process (here) and on two (`accelerate launch`)."""
    root = tmp_path_factory.mktemp("runs")
    run_training(contrastive_config, root / "one", overrides)
    log = launch(contrastive_config, root / "two", overrides)
    return {"one": root / "one", "two": root / "two", "log": log}


def test_two_processes_train_the_adapter_of_one_with_the_same_global_batch(runs):
    one, two = adapter(runs["one"]), adapter(runs["two"])
    assert max(float(v.abs().max()) for k, v in one.items() if "lora_B" in k) > 1e-3  # trained (B starts at 0)
    assert_same_adapter(two, one)
    for key in ("loss", "nll", "cl_hidden", "cl_attention"):  # logged terms: means over the processes
        assert history(runs["two"], key) == pytest.approx(history(runs["one"], key), rel=1e-5), key
    settings = [json.loads((runs[r] / "metrics.json").read_text())["settings"] for r in ("one", "two")]
    assert [s["processes"] for s in settings] == [1, 2]


def test_one_process_writes_the_outputs_and_every_process_its_checkpoint_part(runs):
    log = runs["log"]
    assert log.count("trained pipeline:") == 1
    assert log.count("names its base model by the local path") == 1  # the pipeline was saved once
    checkpoint = runs["two"] / "checkpoints" / "checkpoint-4"
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    assert (runs["two"] / "checkpoints" / "run.json").is_file() and (runs["two"] / "curves.png").is_file()
    spacy.load(runs["two"] / "pipeline")("EU rejects German call to boycott British lamb .")


def test_a_killed_two_process_run_resumes_to_the_same_adapter(runs, contrastive_config, overrides, tmp_path):
    killed = tmp_path / "killed"
    shutil.copytree(runs["two"], killed)
    for gone in ("checkpoints/checkpoint-4", "adapter", "pipeline", "metrics.json"):  # as if killed after step 3
        path = killed / gone
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    launch(contrastive_config, killed, overrides)
    resumed = json.loads((killed / "metrics.json").read_text())["settings"]["resumed_from"]
    assert resumed == str(killed / "checkpoints" / "checkpoint-2")
    assert_same_adapter(adapter(killed), adapter(runs["one"]))


def test_a_process_other_than_the_main_one_writes_nothing_of_its_own(
    contrastive_config, overrides, monkeypatch, tmp_path
):
    """What rank 1 of a launched run does, here on one process told it is not the main one: it trains, but neither
    decides the resume point (run.json) nor writes adapter, pipeline, metrics or curves."""
    from accelerate import Accelerator

    import spacy_fsner.training.run as run

    monkeypatch.setattr(run, "is_main_process", lambda: False)
    monkeypatch.setattr(Accelerator, "is_main_process", property(lambda self: False))
    output = tmp_path / "out"
    settings = {**overrides, "train.max_steps": 1, "train.save_steps": 50}
    assert run.run_training(contrastive_config, output, settings) == output / "pipeline"
    written = {p.relative_to(output).parts[0] for p in output.rglob("*")} if output.exists() else set()
    assert written <= {"checkpoints"}  # the trainer's own checkpoint (the trainer knows this process is rank 0)
    assert not (output / "checkpoints" / "run.json").exists()


def test_dpo_on_two_processes_trains_the_adapter_of_one(runs, overrides, tmp_path):
    dpo = {
        **overrides,
        "paths.adapter": str(runs["one"] / "adapter"),
        "train.max_steps": 3,
        "train.learning_rate": 0.001,
        "train.dpo.feedback_docs": 4,  # error pairs too: the pipeline predicts on every process
    }
    for key in ("train.objectives.cl.weight", "train.objectives.cl.max_negatives"):
        del dpo[key]
    config = REPO / "configs" / "obp_dpo.cfg"
    run_training(config, tmp_path / "one", dpo)
    launch(config, tmp_path / "two", dpo)
    assert_same_adapter(adapter(tmp_path / "two"), adapter(tmp_path / "one"))
    assert history(tmp_path / "two", "rewards/margins") and history(tmp_path / "two", "loss")


def test_objectives_under_fsdp_on_two_processes_equal_one_process(tiny_model_dir, tmp_path):
    worker = [str(REPO / "tests" / "fsdp_worker.py"), str(tiny_model_dir)]
    subprocess.run([sys.executable, *worker, str(tmp_path / "one.pt")], env=environment(), check=True, timeout=300)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    try:
        subprocess.run(
            [*launcher, "--master_port", str(free_port()), *worker, str(tmp_path / "two.pt")],
            env=environment(),
            capture_output=True,
            check=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the sharded run hung: the processes ran different collectives (a skipped forward?)")
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-5, atol=0)
    assert_same_adapter(two["weights"], one["weights"])
