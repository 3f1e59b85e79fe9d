"""Which checkpoints a training run resumes from: only those of the same run (settings and data)."""

import json
from pathlib import Path

from confection import Config

from spacy_fsner.training.checkpoints import RUN_FILE, describe_changes, resume_point, run_identity

CONFIG = Config().from_str(
    """
[paths]
train = "corpus.spacy"

[train]
learning_rate = 0.0003
threads = 1
"""
)


def identity(tmp_path: Path, corpus: bytes = b"docs", **train) -> dict:
    (tmp_path / "corpus.spacy").write_bytes(corpus)
    config = Config(CONFIG).merge({"train": train})
    return run_identity(config, {"training corpus": tmp_path / "corpus.spacy", "continued adapter": None})


def fake_checkpoints(directory: Path, *steps: int) -> None:
    for step in steps:
        (directory / f"checkpoint-{step}").mkdir(parents=True)


def test_a_new_run_records_its_identity(tmp_path):
    run = identity(tmp_path)
    assert resume_point(tmp_path / "checkpoints", run) is None
    assert json.loads((tmp_path / "checkpoints" / RUN_FILE).read_text()) == run


def test_the_same_run_resumes_from_its_last_checkpoint(tmp_path):
    run = identity(tmp_path)
    resume_point(tmp_path / "checkpoints", run)
    fake_checkpoints(tmp_path / "checkpoints", 2, 10, 4)
    assert resume_point(tmp_path / "checkpoints", identity(tmp_path)) == str(tmp_path / "checkpoints" / "checkpoint-10")


def test_threads_do_not_make_another_run(tmp_path):
    resume_point(tmp_path / "checkpoints", identity(tmp_path))
    fake_checkpoints(tmp_path / "checkpoints", 2)
    assert resume_point(tmp_path / "checkpoints", identity(tmp_path, threads=2)) is not None


def test_other_settings_start_afresh_and_say_what_changed(tmp_path, fsner_log):
    resume_point(tmp_path / "checkpoints", identity(tmp_path))
    fake_checkpoints(tmp_path / "checkpoints", 2)
    changed = identity(tmp_path, learning_rate=0.001)
    assert resume_point(tmp_path / "checkpoints", changed) is None
    assert "train.learning_rate: 0.0003 -> 0.001" in fsner_log.text
    assert not (tmp_path / "checkpoints" / "checkpoint-2").exists()  # the other run's checkpoints are gone
    assert json.loads((tmp_path / "checkpoints" / RUN_FILE).read_text()) == changed


def test_other_data_start_afresh(tmp_path, fsner_log):
    resume_point(tmp_path / "checkpoints", identity(tmp_path))
    fake_checkpoints(tmp_path / "checkpoints", 2)
    assert resume_point(tmp_path / "checkpoints", identity(tmp_path, corpus=b"other docs")) is None
    assert "the training corpus changed" in fsner_log.text


def test_checkpoints_without_a_record_are_not_resumed(tmp_path, fsner_log):
    fake_checkpoints(tmp_path / "checkpoints", 2)  # e.g. written by an older version
    assert resume_point(tmp_path / "checkpoints", identity(tmp_path)) is None
    assert "no record of their settings" in fsner_log.text


def test_a_directory_input_is_digested_by_names_and_bytes(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "weights.bin").write_bytes(b"1")
    first = run_identity(CONFIG, {"continued adapter": adapter})
    (adapter / "weights.bin").write_bytes(b"2")
    second = run_identity(CONFIG, {"continued adapter": adapter})
    assert first["inputs"] != second["inputs"]
    assert describe_changes(first, second) == "the continued adapter changed"


def test_only_the_trainers_checkpoint_folders_are_removed(tmp_path):
    fake_checkpoints(tmp_path / "checkpoints", 2)
    (tmp_path / "checkpoints" / "notes.txt").write_text("mine")
    (tmp_path / "checkpoints" / "checkpoint-best").mkdir()  # not a trainer's numbered folder
    assert resume_point(tmp_path / "checkpoints", identity(tmp_path)) is None
    assert not (tmp_path / "checkpoints" / "checkpoint-2").exists()
    assert (tmp_path / "checkpoints" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "checkpoints" / "checkpoint-best").is_dir()


def test_the_spelling_of_an_input_path_does_not_make_another_run(tmp_path, monkeypatch):
    (tmp_path / "corpus.spacy").write_bytes(b"docs")
    monkeypatch.chdir(tmp_path)
    spelled = [
        run_identity(Config(CONFIG).merge({"paths": {"train": name}}), {"training corpus": name})
        for name in ("corpus.spacy", "./corpus.spacy", str(tmp_path / "corpus.spacy"))
    ]
    assert spelled[0] == spelled[1] == spelled[2]
    assert "paths.train" not in spelled[0]["config"]
