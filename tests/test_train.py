"""`python -m spacy_fsner train`: a stage from a config on the tiny model; outputs, resume, continued adapters."""

import json
from pathlib import Path

import pytest
import spacy
import torch
from safetensors.torch import load_file
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_fsner.cli import app
from spacy_fsner.data.readers import read_docs
from spacy_fsner.training.run import run_training
from spacy_fsner.training.settings import TrainSettings

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "obp.cfg"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> Path:
    docs = [d for d in read_docs(shared_data / "conll2003" / "eng.train", spacy.blank("en").vocab) if d.ents][:12]
    path = tmp_path_factory.mktemp("corpus") / "train.spacy"
    DocBin(docs=docs).to_disk(path)
    return path


def _overrides(corpus: Path, model: Path, **train) -> dict:
    settings = {"max_steps": 4, "batch_size": 4, "save_steps": 2, "threads": 1, **train}
    return {
        "paths.train": str(corpus),
        "paths.base_model": str(model),
        **{f"train.{k}": v for k, v in settings.items()},
    }


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "adapter" / "adapter_model.safetensors")


def test_sft_stage_writes_adapter_pipeline_metrics_and_curves(corpus, tiny_model_dir, tmp_path):
    overrides = [arg for k, v in _overrides(corpus, tiny_model_dir).items() for arg in (f"--{k}", str(v))]
    result = CliRunner().invoke(app, ["train", str(CONFIG), "--output", str(tmp_path / "out"), *overrides])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "curves.png").stat().st_size > 1000
    metrics = (out / "metrics.json").read_text()
    assert '"cl_attention"' in metrics and '"nll"' in metrics and '"stage": "sft"' in metrics
    examples = json.loads(metrics)["settings"]["examples"]
    assert examples["records"] > examples["empty_answers"] > 0  # one absent label per sentence: empty answers too
    nlp = spacy.load(out / "pipeline")
    assert nlp.get_pipe("fsner").labels == ("LOC", "MISC", "ORG", "PER")  # from the corpus: the config lists none
    assert nlp.config["paths"]["adapter"] is None, "the saved pipeline carries its adapter, not a path to it"
    assert (out / "pipeline" / "fsner" / "model" / "adapter" / "adapter_model.safetensors").is_file()
    nlp("EU rejects German call to boycott British lamb .")


def test_a_killed_run_resumes_from_its_last_checkpoint_to_the_same_adapter(corpus, tiny_model_dir, tmp_path):
    overrides = _overrides(corpus, tiny_model_dir)
    run_training(CONFIG, tmp_path / "whole", overrides)
    run_training(CONFIG, tmp_path / "killed", overrides)
    for gone in ("checkpoints/checkpoint-4", "adapter", "pipeline"):  # as if killed after step 3
        import shutil

        shutil.rmtree(tmp_path / "killed" / gone)
    run_training(CONFIG, tmp_path / "killed", overrides)
    assert '"resumed_from"' in (tmp_path / "killed" / "metrics.json").read_text()
    assert "checkpoint-2" in (tmp_path / "killed" / "metrics.json").read_text()
    whole, resumed = _adapter(tmp_path / "whole"), _adapter(tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=1e-5, atol=1e-6)


def test_a_run_with_other_settings_does_not_resume_another_runs_checkpoints(corpus, tiny_model_dir, tmp_path):
    run_training(CONFIG, tmp_path / "used", _overrides(corpus, tiny_model_dir, max_steps=2))
    changed = _overrides(corpus, tiny_model_dir, learning_rate=0.001)
    run_training(CONFIG, tmp_path / "used", changed)  # holds checkpoint-2 of a run at another learning rate
    run_training(CONFIG, tmp_path / "fresh", changed)
    assert json.loads((tmp_path / "used" / "metrics.json").read_text())["settings"]["resumed_from"] is None
    fresh, used = _adapter(tmp_path / "fresh"), _adapter(tmp_path / "used")
    for key in fresh:
        torch.testing.assert_close(used[key], fresh[key], rtol=1e-5, atol=1e-6)


def test_a_configured_adapter_is_continued(corpus, tiny_model_dir, tmp_path):
    run_training(CONFIG, tmp_path / "source", _overrides(corpus, tiny_model_dir, max_steps=2))
    source = _adapter(tmp_path / "source")
    overrides = _overrides(corpus, tiny_model_dir, max_steps=1, learning_rate=0.0)
    overrides["paths.adapter"] = str(tmp_path / "source" / "adapter")
    run_training(CONFIG, tmp_path / "target", overrides)
    target = _adapter(tmp_path / "target")
    assert target.keys() == source.keys()
    for key in source:  # learning rate 0: the continued adapter is exactly the source one
        torch.testing.assert_close(target[key], source[key])


@pytest.mark.parametrize(
    "section, message",
    [
        ({"stage": "rlhf"}, r"stage = 'rlhf': use one of \['sft', 'dpo'\]"),
        ({"epoch": 3}, r"unknown settings \['epoch'\]"),
        ({"dpo": {"pairs": ["swap"]}}, r"pairs = \['swap'\]"),
        ({"stage": "dpo", "objectives": {"cl": {}}}, r"remove them from a DPO stage"),
    ],
)
def test_bad_train_settings_say_what_to_change(section, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings.from_config(section)


def test_missing_corpus_is_a_clear_error(tmp_path, tiny_model_dir):
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(CONFIG),
            "--output",
            str(tmp_path / "o"),
            "--paths.base_model",
            str(tiny_model_dir),
            "--paths.train",
            "nope.spacy",
        ],
    )
    assert result.exit_code == 1 and "Training corpus nope.spacy not found" in result.output


def test_dpo_stage_continues_the_sft_adapter_with_both_kinds_of_pairs(corpus, tiny_model_dir, tmp_path):
    run_training(CONFIG, tmp_path / "sft", _overrides(corpus, tiny_model_dir, max_steps=2))
    overrides = _overrides(corpus, tiny_model_dir, max_steps=3, batch_size=2, learning_rate=0.001)
    overrides["paths.adapter"] = str(tmp_path / "sft" / "adapter")
    overrides["train.dpo.feedback_docs"] = 5
    run_training(REPO / "configs" / "obp_dpo.cfg", tmp_path / "dpo", overrides)
    metrics = (tmp_path / "dpo" / "metrics.json").read_text()
    assert '"stage": "dpo"' in metrics and '"rewards/margins"' in metrics and '"rewards/accuracies"' in metrics
    examples = json.loads(metrics)["settings"]["examples"]
    assert examples["feedback_docs"] == 5 and examples["boundary_pairs"] > 0 and examples["error_pairs"] > 0
    assert not (tmp_path / "dpo" / "adapter" / "ref").exists(), "only the trained adapter is saved, not DPO's ref"
    sft, dpo = _adapter(tmp_path / "sft"), _adapter(tmp_path / "dpo")
    assert sft.keys() == dpo.keys()
    assert any(not torch.equal(sft[key], dpo[key]) for key in sft), "DPO moved the continued adapter"
    spacy.load(tmp_path / "dpo" / "pipeline")("EU rejects German call to boycott British lamb .")


@pytest.mark.parametrize("name", ["obp_source.cfg", "obp.cfg", "obp_dpo.cfg", "cllmfs.cfg", "ifwraner.cfg"])
def test_shipped_training_configs_resolve(name):
    from confection import Config
    from spacy.util import registry

    from spacy_fsner.training.run import load_config

    config = Config(load_config(REPO / "configs" / name)).interpolate()
    settings = TrainSettings.from_config(config["train"])
    objectives = [registry.resolve({"o": spec})["o"] for spec in settings.objectives.values()]
    expected = {"obp.cfg": ["cl_attention"], "cllmfs.cfg": ["cl_hidden"]}.get(name, [])
    assert [o.name for o in objectives] == expected
    assert settings.stage == ("dpo" if name == "obp_dpo.cfg" else "sft")
    assert settings.lora.r == 8 and settings.lora.alpha == 16


def test_spacy_package_builds_a_wheel_that_runs_in_a_fresh_virtual_environment(corpus, tiny_model_dir, tmp_path):
    """The adapter travels inside the wheel; the base model is found by its configured name (here an absolute path:
    the tiny model exists only on this machine; a hub id or fetch-model name works anywhere)."""
    import json
    import subprocess
    import sys

    run_training(CONFIG, tmp_path / "out", _overrides(corpus, tiny_model_dir, max_steps=2))
    text = "EU rejects German call to boycott British lamb ."
    expected = [(e.start_char, e.end_char, e.label_) for e in spacy.load(tmp_path / "out" / "pipeline")(text).ents]
    packages = tmp_path / "packages"
    packages.mkdir()
    command = [
        sys.executable,
        "-m",
        "spacy",
        "package",
        str(tmp_path / "out" / "pipeline"),
        str(packages),
        "--build",
        "wheel",
        "--name",
        "fsner_test",
        "--version",
        "0.0.1",
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = packages.glob("*/dist/*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True, capture_output=True
    )
    script = (
        f"import json, spacy; doc = spacy.load('en_fsner_test')({text!r}); "
        "print(json.dumps([[e.start_char, e.end_char, e.label_] for e in doc.ents]))"
    )
    result = subprocess.run([python, "-c", script], check=True, capture_output=True, text=True, cwd=venv)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [list(e) for e in expected]
    listing = subprocess.run([python, "-m", "pip", "show", "-f", "en_fsner_test"], capture_output=True, text=True)
    assert "fsner/model/adapter/adapter_model.safetensors" in listing.stdout


def test_labels_from_the_command_line_restrict_the_training_types(corpus, tiny_model_dir, tmp_path, fsner_log):
    overrides = _overrides(corpus, tiny_model_dir, max_steps=1)
    overrides["components.fsner.labels"] = "PER, LOC"  # as `--components.fsner.labels "PER, LOC"` passes it
    run_training(CONFIG, tmp_path / "out", overrides)
    assert "removed" in fsner_log.text  # the other types' entities are dropped, and it says so
    assert spacy.load(tmp_path / "out" / "pipeline").get_pipe("fsner").labels == ("PER", "LOC")
    overrides["components.fsner.labels"] = ""  # the project's default: every type of the corpus
    run_training(CONFIG, tmp_path / "all", overrides)
    assert spacy.load(tmp_path / "all" / "pipeline").get_pipe("fsner").labels == ("LOC", "MISC", "ORG", "PER")


def test_the_shared_input_template_trains_like_the_papers_templates(corpus, tiny_model_dir, tmp_path):
    """SFT with the attention objective (the label's tokens are in the tail, after the input), then DPO with error
    feedback predicted through the prefix tree; the pipeline keeps the template."""
    shared = {"components.fsner.template.@misc": "spacy_fsner.SharedInputTemplate.v1"}
    run_training(CONFIG, tmp_path / "sft", {**_overrides(corpus, tiny_model_dir, max_steps=2), **shared})
    overrides = {**_overrides(corpus, tiny_model_dir, max_steps=2, batch_size=2), **shared}
    overrides["paths.adapter"] = str(tmp_path / "sft" / "adapter")
    overrides["train.dpo.feedback_docs"] = 4
    run_training(REPO / "configs" / "obp_dpo.cfg", tmp_path / "dpo", overrides)
    sft_metrics = json.loads((tmp_path / "sft" / "metrics.json").read_text())
    assert any("cl_attention" in row for row in sft_metrics["log_history"]), "the attention term ran"
    nlp = spacy.load(tmp_path / "dpo" / "pipeline")
    assert nlp.config["components"]["fsner"]["template"]["@misc"] == "spacy_fsner.SharedInputTemplate.v1"
    nlp("EU rejects German call to boycott British lamb .")


def test_ifwraner_trains_with_retrieved_demonstrations_never_the_sentence_itself(corpus, tiny_model_dir, tmp_path):
    """Every record's prompt shows the k most similar other training sentences; embedding noise is on; the saved
    pipeline keeps the training sentences as its pool and retrieves for new input."""
    from spacy_fsner.training.run import build_pipeline, load_config
    from spacy_fsner.training.sft_records import gold_chunks

    config = REPO / "configs" / "ifwraner.cfg"
    run_training(config, tmp_path / "out", _overrides(corpus, tiny_model_dir, max_steps=2))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["settings"]["train_settings"]["neftune_alpha"] == 5.0
    docs = list(DocBin().from_disk(corpus).get_docs(spacy.blank("en").vocab))
    nlp = build_pipeline(load_config(config, {"paths.base_model": str(tiny_model_dir)}), ["LOC", "MISC", "ORG", "PER"])
    task = nlp.get_pipe("fsner").task
    task.set_demonstrations(docs)
    for chunk in gold_chunks(docs, task):
        others = [d.text for d in docs if d.text != chunk.text and d.text in chunk.requests[0].prefix]
        assert chunk.text not in chunk.requests[0].prefix, "never the example itself"
        assert 1 <= len(others) <= 2
    loaded = spacy.load(tmp_path / "out" / "pipeline")
    retriever = loaded.get_pipe("fsner").task.retriever
    assert [e.text for e in retriever.pool] == [d.text for d in docs]
    loaded("EU rejects German call to boycott British lamb .")
