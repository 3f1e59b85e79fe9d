"""Adapters shipped inside the package: found by name, written by `ship-adapter` (float16 weights, a config naming the
base model by name, a model card, at most 10 MB) and loaded like any adapter; a saved pipeline carries a copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
import torch
from confection import Config
from conftest import fsner_config
from safetensors.torch import load_file
from test_objectives import lora_model
from typer.testing import CliRunner

from spacy_fsner.cli import app
from spacy_fsner.models import adapters
from spacy_fsner.models.adapters import adapter_location, shipped_adapters
from spacy_fsner.training import shipping
from spacy_fsner.training.shipping import ship_adapter


def fake_run(directory: Path, model_dir: Path, base: str = "some-org/some-llama") -> Path:
    """A `train` output as `ship_adapter` reads it: a LoRA (random B, so that it changes the outputs), metrics.json
    and the pipeline's config naming `base`."""
    model = lora_model(model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    model.save_pretrained(directory / "adapter")
    settings = {
        "config": "configs/base.cfg",
        "n_docs": 120,
        "labels": ["person-scholar", "building-library"],
        "examples": {"records": 120, "empty_answers": 30},
        "train_settings": {
            "batch_size": 8,
            "gradient_accumulation": 1,
            "seed": 0,
            "learning_rate": 3e-4,
            "warmup_ratio": 0.03,
            "absent_labels": 4,
            "variety": {"names": 0.3},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        },
    }
    history = [{"loss": 2.5, "step": 10}, {"loss": 0.9, "step": 20}, {"train_runtime": 300.0, "step": 20, "epoch": 1.0}]
    (directory / "metrics.json").write_text(json.dumps({"settings": settings, "log_history": history}))
    config = Config(
        {
            "components": {
                "fsner": {
                    "template": {"@misc": "spacy_fsner.JointTemplate.v1"},
                    "model": {"@llm_models": "spacy_fsner.CausalLM.v1", "name": base},
                }
            }
        }
    )
    (directory / "pipeline").mkdir()
    config.to_disk(directory / "pipeline" / "config.cfg")
    return directory


def test_adapter_location_takes_a_directory_or_a_shipped_name(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(adapters, "SHIPPED", tmp_path / "shipped")
    (tmp_path / "shipped" / "fsner-demo").mkdir(parents=True)
    (tmp_path / "shipped" / "fsner-demo" / "adapter_config.json").write_text("{}")
    (tmp_path / "shipped" / "not-an-adapter").mkdir()
    assert list(shipped_adapters()) == ["fsner-demo"]
    assert adapter_location("fsner-demo") == tmp_path / "shipped" / "fsner-demo"
    assert adapter_location(tmp_path / "shipped") == tmp_path / "shipped"  # a directory wins
    with pytest.raises(
        FileNotFoundError, match=r"neither a directory nor the name of a shipped adapter \(fsner-demo\)"
    ):
        adapter_location("fsner-missing")


def test_ship_adapter_writes_half_weights_a_portable_config_and_a_card(tmp_path, tiny_model_dir) -> None:
    run = fake_run(tmp_path / "run", tiny_model_dir)
    target = ship_adapter(
        run,
        tmp_path / "shipped" / "fsner-demo",
        data="Few-NERD INTER dev",
        licence="CC BY-SA 4.0",
        scores="| run | F |\n| --- | ---: |\n| base | 41.00 |",
    )
    original, shipped = (
        load_file(run / "adapter" / "adapter_model.safetensors"),
        load_file(target / "adapter_model.safetensors"),
    )
    assert original.keys() == shipped.keys() and all(t.dtype == torch.float16 for t in shipped.values())
    for key in original:
        torch.testing.assert_close(shipped[key].float(), original[key], rtol=1e-3, atol=1e-3)
    config = json.loads((target / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "some-org/some-llama"
    card = (target / "README.md").read_text()
    for text in (
        "# fsner-demo",
        "Few-NERD INTER dev",
        "CC BY-SA 4.0",
        "Steps: 20",
        "seed 0",
        "2.500 at step 10 ->",
        "0.900 at step 20",
        "| base | 41.00 |",
        '"adapter": "fsner-demo"',
        "spacy_fsner.JointTemplate.v1",
    ):
        assert text in card, text


def test_ship_adapter_refuses_what_would_not_travel_or_is_too_big(tmp_path, tiny_model_dir, monkeypatch) -> None:
    local = fake_run(tmp_path / "local", tiny_model_dir, base=str(tiny_model_dir))
    with pytest.raises(ValueError, match="local path .* does not travel"):
        ship_adapter(local, tmp_path / "a", data="d", licence="l")
    run = fake_run(tmp_path / "run", tiny_model_dir)
    monkeypatch.setattr(shipping, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="more than the 1,000 a shipped adapter may"):
        ship_adapter(run, tmp_path / "b", data="d", licence="l")
    assert not (tmp_path / "b").exists()
    with pytest.raises(FileNotFoundError, match="neither a finished training run .* nor one of its checkpoints"):
        ship_adapter(tmp_path, tmp_path / "c", data="d", licence="l")


def test_ship_adapter_from_a_checkpoint_of_a_run_still_going(tmp_path, tiny_model_dir) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-40"
    lora_model(tiny_model_dir).save_pretrained(checkpoint)
    state = {"global_step": 40, "epoch": 0.25, "log_history": [{"loss": 3.0, "step": 20}, {"loss": 1.5, "step": 40}]}
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    flat = {
        "components.fsner.model.name": "smollm2-135m-instruct",
        "components.fsner.template.@misc": "spacy_fsner.JointTemplate.v1",
        "train.seed": 0,
        "train.batch_size": 8,
        "train.learning_rate": 0.0003,
        "train.lora.r": 4,
        "train.variety.names": 0.3,
    }
    (checkpoint.parent / "run.json").write_text(json.dumps({"config": flat, "inputs": {}}))
    target = ship_adapter(checkpoint, tmp_path / "fsner-early", data="Few-NERD", licence="CC BY-SA 4.0")
    card = (target / "README.md").read_text()
    for text in ("Steps: 40 of batch 8", "epoch 0.250", "LoRA r 4", "'names': 0.3", "1.500 at step 40"):
        assert text in card, text
    assert (
        json.loads((target / "adapter_config.json").read_text())["base_model_name_or_path"] == "smollm2-135m-instruct"
    )


def test_a_shipped_adapter_loads_by_name_and_travels_in_a_saved_pipeline(tmp_path, tiny_model_dir, monkeypatch) -> None:
    monkeypatch.setattr(adapters, "SHIPPED", tmp_path / "shipped")
    run = fake_run(tmp_path / "run", tiny_model_dir)
    table = tmp_path / "scores.md"
    table.write_text("| configuration | Few-NERD F1 |\n|---|---:|\n| base | 33.30 |\n")
    result = CliRunner().invoke(
        app,
        ["ship-adapter", str(run), "fsner-demo", "--data", "Few-NERD", "--licence", "CC BY-SA 4.0"]
        + ["--scores-table", str(table)],
    )
    assert result.exit_code == 0, result.output
    assert "shipped fsner-demo" in result.output
    assert "| base | 33.30 |" in (tmp_path / "shipped" / "fsner-demo" / "README.md").read_text()
    text = "Angela Merkel visited Paris ."

    def outputs(adapter) -> torch.Tensor:
        nlp = spacy.blank("en")
        nlp.add_pipe("fsner", config=fsner_config(tiny_model_dir, adapter=adapter))
        model = nlp.get_pipe("fsner").model
        tokens = model.generator.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            return model.generator.model(**tokens).logits, nlp

    by_name, nlp = outputs("fsner-demo")
    by_path, _ = outputs(str(run / "adapter"))
    plain, _ = outputs(None)
    torch.testing.assert_close(by_name, by_path, rtol=1e-2, atol=1e-2)  # float16 weights
    assert not torch.allclose(by_name, plain, atol=1e-3)
    nlp.to_disk(tmp_path / "pipeline")
    monkeypatch.setattr(adapters, "SHIPPED", tmp_path / "elsewhere")  # another machine without it
    loaded, _ = outputs(str(tmp_path / "pipeline" / "fsner" / "model" / "adapter"))
    torch.testing.assert_close(loaded, by_name)
    assert spacy.load(tmp_path / "pipeline").get_pipe("fsner").model.adapter.startswith(str(tmp_path / "pipeline"))


def test_ship_adapter_cli_errors_are_one_line(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["ship-adapter", str(tmp_path), "x", "--data", "d", "--licence", "l", "--scores", "base=missing.json"]
    )
    assert result.exit_code == 1 and "give NAME=FILE" in result.output


def test_the_factory_defaults_to_smollm2_with_the_base_adapter_and_the_joint_template(tiny_model_dir) -> None:
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("fsner", config={"labels": ["PER", "LOC"]})
    assert pipe.model.name == "smollm2-135m-instruct" and pipe.model.adapter == "fsner-base-smollm2"
    assert pipe.task.joint
    assert nlp.config["components"]["fsner"]["model"] == {
        "@llm_models": "spacy_fsner.BaseModel.v1",
        "dtype": "auto",
        "device": "auto",
        "batch_size": None,
        "max_new_tokens": 128,
    }
    assert "fsner-base-smollm2" in shipped_adapters(), "the package ships its default adapter"
    # a config naming CausalLM.v1 does not inherit the default model's adapter
    other = spacy.blank("en").add_pipe("fsner", config=fsner_config(tiny_model_dir))
    assert other.model.adapter is None


def test_copying_and_saving_an_adapter_on_a_named_base_does_not_look_up_the_hub(tmp_path, tiny_model_dir, monkeypatch):
    """PEFT's `save_embedding_layers="auto"` fetches the base model's config from the hub when the adapter names its
    base by a hub id or fetch-model name: offline, two warnings a user cannot act on per episode and per save."""
    import warnings

    monkeypatch.setattr(adapters, "SHIPPED", tmp_path / "shipped")
    ship_adapter(fake_run(tmp_path / "run", tiny_model_dir), tmp_path / "shipped" / "fsner-demo", data="d", licence="l")
    nlp = spacy.blank("en")
    config = fsner_config(tiny_model_dir, adapter="fsner-demo", max_new_tokens=4)
    config["adaptation"] = {"@misc": "spacy_fsner.FineTuneAdaptation.v1", "steps": 1, "batch_size": 1}
    nlp.add_pipe("fsner", config=config)
    doc = nlp.make_doc("Barack Obama flew to Berlin .")
    doc.ents = [doc.char_span(0, 12, label="PER"), doc.char_span(21, 27, label="LOC")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nlp.get_pipe("fsner").adapt([doc], labels=["PER", "LOC"])
        nlp("Angela Merkel visited Paris .")
        nlp.to_disk(tmp_path / "pipeline")
    lookups = [str(w.message) for w in caught if "remote file" in str(w.message) or "config file in" in str(w.message)]
    assert not lookups, lookups
