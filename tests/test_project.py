"""project.yml: every workflow is runnable as written, and the training smoke workflow runs end to end.

The smoke runs copy the project (project.yml, configs, assets) into a temporary directory and run a workflow there
on the tiny random Llama with the smallest budgets: `smoke-train` the commands of the default workflow `all`
(untrained in context, base adapter in context, base adapter + episode fine-tuning, comparison, wheel), with a base
adapter trained on the shipped sample in place of the shipped one; `smoke-obp` those of `obp` (in-context baseline,
SFT + attention CL, DPO, evaluation, comparison), minus fetching.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import srsly

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project() -> dict:
    return srsly.read_yaml(REPO / "project.yml")


def test_workflow_steps_are_commands(project):
    commands = {command["name"] for command in project["commands"]}
    for name, steps in project["workflows"].items():
        missing = [step for step in steps if step not in commands]
        assert not missing, f"workflow {name} names unknown commands {missing}"


def test_all_is_the_product_workflow(project):
    """The default workflow scores untrained, base adapter and base adapter + episode fine-tuning on the same episodes,
    compares them and packages the base pipeline, as the README promises; `obp` trains and scores OBP-LLM."""
    steps = project["workflows"]["all"]
    assert steps[0] == "fetch-model"
    for earlier, later in [
        ("episodes", "evaluate-untrained"),
        ("evaluate-untrained", "compare-base"),
        ("evaluate-base", "compare-base"),
        ("evaluate-base-tuned", "compare-base"),
        ("assemble-base", "package"),
    ]:
        assert steps.index(earlier) < steps.index(later)
    assert "--paths.adapter ${vars.base_adapter}" in " ".join(
        next(c for c in project["commands"] if c["name"] == "assemble-base")["script"]
    )
    assert project["vars"]["base_adapter"] == "fsner-base-smollm2"
    obp = project["workflows"]["obp"]
    assert obp.index("train-obp-sft") < obp.index("train-obp-dpo") < obp.index("evaluate-obp") < obp.index("compare")


def test_deps_come_from_earlier_steps(project):
    """In every workflow, each command's deps are shipped files or outputs of an earlier step of it."""
    commands = {command["name"]: command for command in project["commands"]}
    shipped = {asset["dest"] for asset in project["assets"]}

    def expand(path: str) -> str:
        for key, value in project["vars"].items():
            path = path.replace(f"${{vars.{key}}}", str(value))
        return path

    for name, steps in project["workflows"].items():
        produced: set[str] = set()
        for step in steps:
            for dep in map(expand, commands[step].get("deps", [])):
                from_config = dep.startswith("configs/") and (REPO / dep).is_file()
                assert dep in produced or dep in shipped or from_config, f"{name}: {step} needs {dep} first"
            produced.update(map(expand, commands[step].get("outputs", [])))


def run_workflow(tmp_path, workflow: str, variables: dict) -> None:
    """Copy the project into `tmp_path` and run `workflow` there with `--vars.KEY=VALUE` for `variables`."""
    for item in ("project.yml", "configs", "assets"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / item)
    overrides = [f"--vars.{key}={value}" for key, value in variables.items()]
    done = subprocess.run(
        [sys.executable, "-m", "spacy", "project", "run", workflow, ".", *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_smoke_train_workflow(tmp_path):
    budget = {
        "base_model": "models/tiny",
        "base_adapter": "training/base/adapter",
        "base_steps": 2,
        "train_batch": 2,
        "episode_steps": 1,
        "episodes": 2,
    }
    run_workflow(tmp_path, "smoke-train", budget)
    rows = [line for line in (tmp_path / "metrics" / "compare.md").read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[2:]] == [
        "| untrained (in context)",
        "| base adapter (in context)",
        "| base adapter + episode fine-tuning",
    ]
    assert all(row.split(" | ")[6] != "-" for row in rows[2:]), "each F1 with its interval"
    tuned = json.loads((tmp_path / "metrics" / "episodes_base_tuned.json").read_text())["settings"]
    assert tuned["adaptation"]["objectives"]["cl_attention"]["@misc"] == "spacy_fsner.AttentionContrastive.v1"
    base = spacy.load(tmp_path / "pipelines" / "base")
    assert (tmp_path / "pipelines" / "base" / "fsner" / "model" / "adapter" / "adapter_model.safetensors").is_file()
    assert base.get_pipe("fsner").task.joint
    assert list((tmp_path / "packages" / "en_fsner_base-0.1.0" / "dist").glob("*.whl"))
    performance = json.loads((tmp_path / "pipelines" / "base" / "meta.json").read_text())["performance"]
    assert {"ents_f", "ents_p", "ents_r", "ents_per_type"} <= set(performance)
    report = (tmp_path / "metrics" / "episodes_base.html").read_text()
    assert "Span-exact scores per type over all query sentences" in report and report.count('class="episode"') == 2


@pytest.mark.slow
def test_smoke_obp_workflow(tmp_path):
    budget = {
        "base_model": "models/tiny",
        "sft_steps": 2,
        "dpo_steps": 1,
        "train_batch": 2,
        "dpo_batch": 2,
        "feedback_docs": 2,
        "episodes": 1,
    }
    run_workflow(tmp_path, "smoke-obp", budget)
    rows = [line for line in (tmp_path / "metrics" / "compare.md").read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[2:]] == [
        "| in context (base model)",
        "| after source SFT + attention CL",
        "| after DPO",
    ]
    for stage in ("obp", "obp-dpo"):
        metrics = json.loads((tmp_path / "training" / stage / "metrics.json").read_text())
        assert metrics["settings"]["stage"] == ("sft" if stage == "obp" else "dpo")
        assert (tmp_path / "training" / stage / "curves.png").stat().st_size > 0
    pipeline = tmp_path / "training" / "obp-dpo" / "pipeline"
    assert (pipeline / "fsner" / "model" / "adapter" / "adapter_model.safetensors").is_file()
    assert spacy.load(pipeline).pipe_names == ["fsner"]


@pytest.mark.slow
def test_smoke_retrieval_workflow(tmp_path):
    """IF-WRANER (in context with word-level retrieval, fine-tuned with retrieved demonstrations) and the EL4NER
    ensemble, end to end on the tiny model (both members)."""
    budget = {"base_model": "models/tiny", "second_model": "models/tiny", "sft_steps": 2, "ifwraner_batch": 2}
    run_workflow(tmp_path, "smoke-retrieval", {**budget, "episodes": 1})
    rows = [r for r in (tmp_path / "metrics" / "compare_ifwraner.md").read_text().splitlines() if r.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[2:]] == [
        "| in context (all support sentences)",
        "| in context (word-level retrieval)",
        "| IF-WRANER fine-tuned",
    ]
    settings = json.loads((tmp_path / "metrics" / "episodes_el4ner.json").read_text())["settings"]
    assert settings["component"] == "el4ner" and settings["n_episodes"] == 1
    trained = spacy.load(tmp_path / "training" / "ifwraner" / "pipeline")
    assert trained.get_pipe("fsner").task.retriever.pool, "the training sentences are the trained pipeline's pool"
