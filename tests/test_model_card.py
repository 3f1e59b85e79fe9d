"""`evaluate --meta` and `spacy_fsner.evaluation.model_card`: the scores and the model card in meta.json, and in the
wheel `spacy package` builds from it."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import spacy
from conftest import fsner_config
from spacy.tokens import DocBin
from test_html_report import GOLD, _gold_docs, _scripted_nlp
from typer.testing import CliRunner

from spacy_fsner.cli import app
from spacy_fsner.evaluation import evaluate
from spacy_fsner.evaluation.model_card import write_meta

FEWNERD = {"name": "Few-NERD INTER dev sample", "license": "CC BY-SA 4.0"}


def _episode_file(path: Path, docs) -> Path:
    def part(sentences):
        return {
            "word": [[t.text for t in doc] for doc in sentences],
            "label": [[t.ent_type_ or "O" for t in doc] for doc in sentences],
        }

    episodes = [{"support": part(docs[3:4]), "query": part(q), "types": ["PER", "LOC"]} for q in (docs[:2], docs[2:])]
    path.write_text("\n".join(json.dumps(e) for e in episodes), encoding="utf-8")
    return path


def test_episode_scores_go_into_meta_as_fewnerd_micro_scores_with_the_card(tmp_path):
    nlp = _scripted_nlp()
    nlp.to_disk(tmp_path / "pipeline")
    run = evaluate(nlp, _episode_file(tmp_path / "episodes.jsonl", _gold_docs(nlp)), progress=False, resamples=100)
    path = write_meta(tmp_path / "pipeline", run, sources=[FEWNERD], licence="Apache-2.0")
    meta = json.loads(path.read_text(encoding="utf-8"))
    micro = run.results["fewnerd_episodes"]
    performance = meta["performance"]
    assert (performance["ents_p"], performance["ents_r"], performance["ents_f"]) == (micro.p, micro.r, micro.f)
    assert performance["ents_f"] == pytest.approx(0.5)  # 4 right, 4 wrong, 4 missed (as in test_html_report)
    assert performance["ents_per_type"] == {
        "LOC": {"p": pytest.approx(1 / 3), "r": pytest.approx(1 / 3), "f": pytest.approx(1 / 3)},
        "PER": {"p": pytest.approx(0.6), "r": pytest.approx(0.6), "f": pytest.approx(0.6)},
    }
    described = performance["fsner_evaluation"]
    assert (described["score"], described["protocol"], described["n_episodes"], described["n_docs"]) == (
        "fewnerd_episodes",
        "fewnerd",
        2,
        len(GOLD),
    )
    assert (
        described["ents_f_interval"]["unit"] == "episodes" and "summed over the query sentences" in described["meaning"]
    )
    assert meta["sources"] == [FEWNERD] and meta["license"] == "Apache-2.0"
    assert "\n" not in meta["description"] and "in context (no adapter) tags PER, LOC" in meta["description"]
    assert (
        "Few-NERD's episode protocol" in meta["notes"]
        and "(2 episodes, 5 documents in their query sets)" in meta["notes"]
    )
    assert "- Few-NERD INTER dev sample (licence: CC BY-SA 4.0)" in meta["notes"]
    # written again without sources: those meta.json has are kept, and other performance keys too
    meta["performance"]["speed"] = 12.0
    path.write_text(json.dumps(meta), encoding="utf-8")
    again = json.loads(write_meta(tmp_path / "pipeline", run).read_text(encoding="utf-8"))
    assert again["sources"] == [FEWNERD] and again["performance"]["speed"] == 12.0
    assert "(licence: CC BY-SA 4.0)" in again["notes"]


def test_write_meta_refuses_what_is_not_a_saved_pipeline(tmp_path):
    nlp = _scripted_nlp()
    run = evaluate(nlp, _episode_file(tmp_path / "episodes.jsonl", _gold_docs(nlp)), progress=False, resamples=0)
    with pytest.raises(ValueError, match="is a file: pass the directory of a saved pipeline"):
        write_meta(tmp_path / "episodes.jsonl", run)
    with pytest.raises(ValueError, match="is not a pipeline directory"):
        write_meta(tmp_path, run)
    nlp.to_disk(tmp_path / "pipeline")
    with pytest.raises(ValueError, match="give each source as a dict with a 'name'"):
        write_meta(tmp_path / "pipeline", run, sources=[{"license": "MIT"}])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--licence", "MIT"], "error: --licence describe(s) the package for its meta.json: add --meta"),
        (["--meta", "--source-licence", "MIT"], "error: --source-licence is the licence of the training data"),
        (["--meta", "--retriever", "word"], "error: --meta records the scores of PIPELINE as saved"),
    ],
)
def test_meta_options_are_checked_before_the_run(tmp_path, extra, message):
    nlp = _scripted_nlp()
    nlp.to_disk(tmp_path / "pipeline")
    DocBin(docs=_gold_docs(nlp)).to_disk(tmp_path / "gold.spacy")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "pipeline"), str(tmp_path / "gold.spacy"), *extra])
    assert result.exit_code == 1 and result.output.startswith(message), result.output
    assert len(result.output.strip().splitlines()) == 1 and "docs:" not in result.output  # nothing ran


def test_meta_on_a_directory_without_meta_json_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    data = tmp_path / "gold.spacy"
    DocBin(docs=_gold_docs(spacy.blank("en"))).to_disk(data)
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "empty"), str(data), "--meta"])
    assert result.exit_code == 1 and result.output.strip() == (
        f"error: {tmp_path / 'empty'} has no meta.json: pass a saved pipeline directory (what nlp.to_disk or "
        "`train` wrote)"
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:fsner.*max_new_tokens ran out:UserWarning")  # the random tiny model never stops
def test_spacy_package_ships_the_scores_and_the_card_in_the_wheel(tiny_model_dir, tmp_path):
    """One `spacy package --build wheel` of a tiny-model pipeline after `evaluate --meta`: meta.json in the wheel has
    the scores, and the card (description, usage, base model, data, licence) is its README.md and METADATA."""
    nlp = spacy.blank("en")
    nlp.add_pipe("fsner", config=fsner_config(tiny_model_dir, max_new_tokens=8))
    nlp.to_disk(tmp_path / "pipeline")
    DocBin(docs=_gold_docs(nlp)).to_disk(tmp_path / "gold.spacy")
    args = ["evaluate", str(tmp_path / "pipeline"), str(tmp_path / "gold.spacy"), "--output", str(tmp_path / "m.json")]
    args += ["--meta", "--source", FEWNERD["name"], "--source-licence", FEWNERD["license"], "--licence", "MIT"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'pipeline' / 'meta.json'}" in result.output.splitlines()
    scores = json.loads((tmp_path / "m.json").read_text())["results"]["span_exact"]

    packages = tmp_path / "packages"
    packages.mkdir()
    command = [sys.executable, "-m", "spacy", "package", str(tmp_path / "pipeline"), str(packages)]
    command += ["--build", "wheel", "--name", "fsner_card", "--version", "0.0.1"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = packages.glob("*/dist/*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = json.loads(archive.read("en_fsner_card/en_fsner_card-0.0.1/meta.json"))
        readme = archive.read("en_fsner_card/en_fsner_card-0.0.1/README.md").decode()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_name).decode()
    assert "en_fsner_card/meta.json" in names
    performance = meta["performance"]
    assert (performance["ents_p"], performance["ents_r"], performance["ents_f"]) == (
        scores["p"],
        scores["r"],
        scores["f"],
    )
    assert performance["ents_per_type"] == {
        label: {k: prf[k] for k in ("p", "r", "f")} for label, prf in scores["per_type"].items()
    }
    assert performance["fsner_evaluation"]["score"] == "span_exact"
    for card in (readme, metadata):
        assert f"the causal language model {tiny_model_dir} in context (no adapter) tags PER, LOC" in card
        assert f"Base model: `{tiny_model_dir}`, a local directory" in card
        assert 'nlp = spacy.load("NAME")' in card and 'doc = nlp("Angela Merkel visited Paris.")' in card
        assert "| **Sources** | Few-NERD INTER dev sample |" in card
        assert "- Few-NERD INTER dev sample (licence: CC BY-SA 4.0)" in card
        assert "| **License** | `MIT` |" in card
        assert f"| `ENTS_F` | {100 * scores['f']:.2f} |" in card
        assert "span-exact micro scores over the documents" in card
    assert "License: MIT" in metadata and "Summary: Few-shot named-entity recognition with spacy-fsner" in metadata


def test_the_card_names_an_adapter_inside_the_pipeline_and_where_the_base_model_comes_from(tmp_path, fsner_log):
    from spacy_fsner.evaluation.model_card import _base_model

    nlp = _scripted_nlp()
    nlp.to_disk(tmp_path / "pipeline")
    (tmp_path / "pipeline" / "fsner" / "model" / "adapter").mkdir(parents=True)
    run = evaluate(nlp, _episode_file(tmp_path / "episodes.jsonl", _gold_docs(nlp)), progress=False, resamples=0)
    meta = json.loads(write_meta(tmp_path / "pipeline", run).read_text(encoding="utf-8"))
    assert "with a LoRA adapter, inside the package tags PER, LOC" in meta["description"]
    assert "- Adapter: a LoRA adapter, inside the package." in meta["notes"]
    assert "ents_f_interval" not in meta["performance"]["fsner_evaluation"]  # no resamples, no interval
    assert "sources" not in meta and "### Training data" not in meta["notes"]
    assert "no training data recorded for the model card" in fsner_log.text
    assert "the package has no licence; give one (evaluate --licence, or licence=)" in fsner_log.text
    # a model config without a name (a registered default model): the base model CausalLM.to_disk recorded
    (tmp_path / "pipeline" / "fsner" / "model" / "model.json").write_text(
        json.dumps({"base_model": "smollm2-135m-instruct", "has_adapter": True}), encoding="utf-8"
    )
    meta = json.loads(write_meta(tmp_path / "pipeline", run).read_text(encoding="utf-8"))
    assert "the causal language model smollm2-135m-instruct with a LoRA adapter" in meta["description"]
    assert (
        "- Base model: `smollm2-135m-instruct`: HuggingFaceTB/SmolLM2-135M-Instruct, licence Apache-2.0"
        in (meta["notes"])
    )
    smollm2 = _base_model("smollm2-135m-instruct")
    assert "HuggingFaceTB/SmolLM2-135M-Instruct, licence Apache-2.0" in smollm2 and "package index" in smollm2
    assert "a Hugging Face hub id" in _base_model("meta-llama/Llama-3.1-8B")
