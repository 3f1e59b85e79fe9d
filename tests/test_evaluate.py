"""`python -m spacy_fsner evaluate` and `spacy_fsner.evaluation.protocols`: corpus and episode evaluation."""

import json
from itertools import islice
from pathlib import Path

import pytest
import spacy
from conftest import fsner_config
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_fsner.cli import app
from spacy_fsner.data.readers import read_conll, read_episodes
from spacy_fsner.evaluation.protocols import evaluate, find_adaptable, predict

N_DOCS = 10


@pytest.fixture(scope="module")
def pipeline_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A saved blank English pipeline with one `fsner` component (labels PER, LOC) on the tiny Llama."""
    nlp = spacy.blank("en")
    nlp.add_pipe("fsner", config=fsner_config(tiny_model_dir, max_new_tokens=8))
    path = tmp_path_factory.mktemp("pipeline") / "fsner"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def conll_docbin(shared_data, tmp_path_factory) -> Path:
    """The first sentences of CoNLL-2003 test (IOB2 variant) as a DocBin."""
    docs = read_conll(shared_data / "conll2003" / "iob2_variant" / "test.txt", spacy.blank("en").vocab)[:N_DOCS]
    path = tmp_path_factory.mktemp("corpus") / "conll-test-head.spacy"
    DocBin(docs=docs).to_disk(path)
    return path


@pytest.fixture(scope="module")
def episode_file(shared_data) -> Path:
    return shared_data / "fewnerd" / "episodes_sample" / "inter" / "dev_5_1.recased.jsonl"


def _n_gold(docs) -> int:
    return sum(len(doc.ents) for doc in docs)


def _check_prf(values: dict) -> None:
    for key in ("p", "r", "f"):
        assert isinstance(values[key], float) and 0.0 <= values[key] <= 1.0, (key, values)


def test_predict_tags_entity_free_copies_of_the_gold_docs(conll_docbin):
    nlp = spacy.blank("en")  # no components: nothing may come back tagged
    gold = list(DocBin().from_disk(conll_docbin).get_docs(nlp.vocab))
    examples = predict(nlp, gold, batch_size=3)
    assert [e.reference for e in examples] == gold
    assert [[t.text for t in e.predicted] for e in examples] == [[t.text for t in d] for d in gold]
    assert [e.predicted.text for e in examples] == [d.text for d in gold]
    assert all(not e.predicted.ents for e in examples) and _n_gold(gold) > 0


def test_evaluate_command_on_a_docbin(pipeline_dir, conll_docbin, tiny_model_dir, tmp_path):
    output = tmp_path / "out" / "metrics.json"
    args = ["evaluate", str(pipeline_dir), str(conll_docbin), "--output", str(output), "--batch-size", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(output.read_text())
    settings, results = payload["settings"], payload["results"]
    assert settings["pipeline"] == str(pipeline_dir) and settings["data"] == str(conll_docbin)
    assert settings["protocol"] == "corpus" and settings["headline"] == "span_exact"
    assert (settings["n_docs"], settings["batch_size"], settings["limit"]) == (N_DOCS, 4, 0)
    assert settings["component"] == "fsner" and settings["labels"] == ["PER", "LOC"]
    assert settings["model"] == str(tiny_model_dir)
    assert settings["component_stats"]["docs"] == N_DOCS  # every doc went through the component once
    assert list(results) == ["span_exact", "string_level", "boundary_errors", "span_exact_interval"]
    interval = results["span_exact_interval"]
    assert interval["estimate"] == results["span_exact"]["f"] and interval["low"] <= interval["estimate"]
    assert (interval["unit"], interval["n_units"], interval["resamples"]) == ("documents", N_DOCS, 1000)
    assert "F1 with its bootstrap interval" in result.output
    _check_prf(results["span_exact"])
    _check_prf(results["string_level"])
    assert 0.0 <= results["boundary_errors"]["rate"] <= 1.0
    gold = list(DocBin().from_disk(conll_docbin).get_docs(spacy.blank("en").vocab))
    span = results["span_exact"]
    assert span["tp"] + span["fn"] == _n_gold(gold)  # scored against the gold docs, all types
    assert span["tp"] + span["fp"] == results["boundary_errors"]["n_pred"]
    assert "| score | P (%) | R (%) | F (%) | TP | FP | FN |" in result.output
    assert "| span_exact |" in result.output and f"wrote {output}" in result.output


def test_evaluate_on_episodes_adapts_to_each_episode(pipeline_dir, episode_file, monkeypatch):
    nlp = spacy.load(pipeline_dir)
    pipe = nlp.get_pipe("fsner")
    calls = []
    adapt = pipe.adapt

    def spy(support, labels=None, label_definitions=None):
        calls.append(([doc.text for doc in support], list(labels)))
        adapt(support, labels=labels, label_definitions=label_definitions)

    monkeypatch.setattr(pipe, "adapt", spy)
    run = evaluate(nlp, episode_file, protocol="hou", limit=3, batch_size=8, progress=False)
    episodes = list(islice(read_episodes(episode_file, nlp.vocab), 3))
    assert calls == [([doc.text for doc in e.support], e.types) for e in episodes]
    assert pipe.labels == tuple(episodes[-1].types) and run.settings["labels"] == episodes[-1].types
    assert run.settings["n_episodes"] == 3 and run.settings["n_docs"] == sum(len(e.query) for e in episodes)
    assert run.settings["types"] == sorted({t for e in episodes for t in e.types})
    assert run.settings["protocol"] == "hou" and list(run.results)[:2] == ["hou_episodes", "fewnerd_episodes"]
    hou, fewnerd = run.results["hou_episodes"].as_dict(), run.results["fewnerd_episodes"].as_dict()
    assert hou["n_episodes"] == 3
    _check_prf(hou)
    _check_prf(fewnerd)
    assert fewnerd["tp"] + fewnerd["fn"] == sum(_n_gold(e.query) for e in episodes)


def test_evaluate_command_on_an_episode_file(pipeline_dir, episode_file, tmp_path):
    output = tmp_path / "metrics.json"
    args = ["evaluate", str(pipeline_dir), str(episode_file), "--limit", "3", "--output", str(output)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(output.read_text())
    settings, results = payload["settings"], payload["results"]
    assert settings["protocol"] == "fewnerd" and settings["n_episodes"] == 3 and settings["limit"] == 3
    assert list(results)[0] == "fewnerd_episodes" and results["hou_episodes"]["n_episodes"] == 3
    assert {"span_exact", "string_level", "boundary_errors"} <= set(results)
    assert "3 episodes" in result.output and "| fewnerd_episodes |" in result.output


def test_episodes_need_a_component_that_adapts(episode_file, tmp_path):
    blank = tmp_path / "blank"
    spacy.blank("en").to_disk(blank)
    output = tmp_path / "metrics.json"
    result = CliRunner().invoke(app, ["evaluate", str(blank), str(episode_file), "--output", str(output)])
    assert result.exit_code == 1
    assert "no component" in result.output and "has an adapt method" in result.output
    assert "nlp.add_pipe('fsner'" in result.output
    assert not output.exists()


def test_bad_choices_name_the_fix(pipeline_dir, conll_docbin, episode_file):
    nlp = spacy.load(pipeline_dir)
    with pytest.raises(ValueError, match="no component 'ner'"):
        find_adaptable(nlp, "ner")
    nlp.add_pipe("sentencizer")
    with pytest.raises(ValueError, match="component 'sentencizer' has no adapt method.*--component"):
        find_adaptable(nlp, "sentencizer")
    assert find_adaptable(nlp)[0] == "fsner"
    with pytest.raises(ValueError, match="holds sentences, not Few-NERD episodes: use --protocol corpus"):
        evaluate(nlp, conll_docbin, protocol="fewnerd")
    with pytest.raises(ValueError, match="unknown protocol 'seqeval'"):
        evaluate(nlp, episode_file, protocol="seqeval")
    with pytest.raises(ValueError, match="limit=-1"):
        evaluate(nlp, episode_file, limit=-1)


def test_settings_name_the_model_through_config_variables(tiny_model_dir, conll_docbin):
    """A pipeline assembled from a config with `name = ${paths.base_model}` records the resolved name."""
    from spacy.util import load_model_from_config

    config = spacy.util.load_config(Path(__file__).resolve().parents[1] / "configs" / "fsner.cfg")
    config["paths"]["base_model"] = str(tiny_model_dir)
    config["components"]["fsner"]["labels"] = ["PER", "LOC"]
    config["components"]["fsner"]["label_definitions"] = {}
    config["components"]["fsner"]["model"]["max_new_tokens"] = 4
    nlp = load_model_from_config(config, auto_fill=True)
    run = evaluate(nlp, conll_docbin, limit=2, progress=False)
    assert run.settings["model"] == str(tiny_model_dir)
