"""`python -m spacy_fsner annotate` and `spacy_fsner.annotation`: a corpus into shards that equal `nlp.pipe`.

The pipeline is the tiny random Llama with the per-label template and 16 new tokens, which writes an entity into
most of these texts (random ones, but fixed by the model's seed): enough to show that offsets, labels, scores and
order survive sharding, resuming and Ray.
"""

import json
import os
import re
import sys
from pathlib import Path

import pytest
import spacy
from conftest import fsner_config
from typer.testing import CliRunner

from spacy_fsner.annotation import MANIFEST, RaySettings, annotate, read_docs, shard_paths
from spacy_fsner.annotation import run as run_module
from spacy_fsner.cli import app

TEXTS = [
    "Angela Merkel visited Paris.",
    "Tom met Anna in Rome on Monday.",
    "",
    "London and Berlin are cities.",
    "Zoë 👋 lives in São Paulo.",
    "   ",
    "Apple hired Tim Cook.",
    "Marie Curie was born in Warsaw.",
]
BATCH = 2

pytestmark = pytest.mark.filterwarnings("ignore:fsner:UserWarning")  # what the random model could not finish


@pytest.fixture(scope="module")
def pipeline_dir(tiny_model_dir, tmp_path_factory) -> Path:
    nlp = spacy.blank("en")
    nlp.add_pipe("fsner", config=fsner_config(tiny_model_dir, max_new_tokens=16))
    path = tmp_path_factory.mktemp("annotate") / "pipeline"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def blank_pipeline(tmp_path_factory) -> Path:
    """A saved pipeline without components (no model): for what does not need entities."""
    path = tmp_path_factory.mktemp("annotate") / "blank"
    spacy.blank("en").to_disk(path)
    return path


@pytest.fixture(scope="module")
def reference(pipeline_dir) -> list[dict]:
    """`nlp.pipe` over TEXTS: each doc's entities (char offsets, label, text) and its candidates' scores."""
    nlp = spacy.load(pipeline_dir)
    expected = [_annotation(doc) for doc in nlp.pipe(TEXTS, batch_size=BATCH)]
    assert sum(len(doc["ents"]) for doc in expected) >= 5, expected  # the comparison below is about real entities
    return expected


def _annotation(doc) -> dict:
    """A doc's entities (char offsets, label, text), its candidates' scores, and each entity's candidate score."""
    candidates = doc.spans["fsner"]
    keys = [(s.start_char, s.end_char, s.label_) for s in candidates]
    scores = dict(zip(keys, candidates.attrs["scores"], strict=True))
    return {
        "ents": [(e.start_char, e.end_char, e.label_, e.text) for e in doc.ents],
        "scores": list(candidates.attrs["scores"]),
        "ent_scores": [scores[(e.start_char, e.end_char, e.label_)] for e in doc.ents],
    }


def _jsonl_input(path: Path, texts=TEXTS) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)))
    return path


def _text_input(path: Path, texts=TEXTS) -> Path:
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


def _docbin_output(output: Path) -> list[dict]:
    return [_annotation(doc) for doc in read_docs(output, spacy.blank("en").vocab)]


def test_jsonl_to_docbin_shards_equals_nlp_pipe(pipeline_dir, reference, tmp_path):
    """Shards of 3 batches of 2: the batches are nlp.pipe's own, so even the scores are identical to the bit."""
    run = annotate(pipeline_dir, _jsonl_input(tmp_path / "in.jsonl"), tmp_path / "out", shard_size=6, batch_size=BATCH)
    assert (run.n_docs, run.n_shards, run.written, run.skipped, run.resumed) == (8, 2, 2, 0, False)
    assert [p.name for p in shard_paths(tmp_path / "out")] == [
        "shard-00000.spacy",
        "shard-00001.spacy",
    ]
    assert _docbin_output(tmp_path / "out") == reference  # same entities and scores, doc by doc, in input order
    docs = list(read_docs(tmp_path / "out", spacy.blank("en").vocab))
    assert [doc.text for doc in docs] == TEXTS
    assert [doc.user_data["meta"] for doc in docs] == [{"id": i} for i in range(len(TEXTS))]
    assert "unplaced" in docs[0].user_data["fsner"]  # the component's report travels in the DocBin too
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert (manifest["n_docs"], manifest["shard_size"], manifest["format"]) == (8, 6, "spacy")
    assert not list((tmp_path / "out").glob(".shard-*"))  # no temporary file left


def test_text_to_jsonl_shards_from_the_command_line_equals_nlp_pipe(pipeline_dir, reference, tmp_path):
    """Shards of 5 with batches of 2: batches start afresh at each shard, so the second shard's batches are not
    nlp.pipe's ([4], [5, 6], [7] for [4, 5], [6, 7]): the same entities, scores equal to float rounding (padding
    changes the arithmetic)."""
    source, output = _text_input(tmp_path / "in.txt"), tmp_path / "out"
    args = ["annotate", str(pipeline_dir), str(source), str(output), "--format", "jsonl", "--shard-size", "5"]
    result = CliRunner().invoke(app, [*args, "--batch-size", str(BATCH), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"8 docs in 2 shards in {output}: 2 written now" in result.output
    lines = [json.loads(line) for path in shard_paths(output) for line in path.read_text().splitlines()]
    assert [line["text"] for line in lines] == TEXTS  # a blank line is an empty document: line i is doc i
    assert [[(e["start"], e["end"], e["label"], e["text"]) for e in line["ents"]] for line in lines] == [
        doc["ents"] for doc in reference
    ]
    for line, doc in zip(lines, reference, strict=True):
        assert [e["score"] for e in line["ents"]] == pytest.approx(doc["ent_scores"], rel=1e-5)
        assert sorted(line) == ["ents", "text"]  # a text file has no other fields


def test_jsonl_output_keeps_the_input_fields(blank_pipeline, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "Tom met Anna.", "meta": {"page": 3}}\n\n{"text": "Rome."}\n')
    annotate(blank_pipeline, source, tmp_path / "out", output_format="jsonl")
    lines = [json.loads(line) for line in (tmp_path / "out" / "shard-00000.jsonl").read_text().splitlines()]
    assert [list(line) for line in lines] == [["text", "id", "meta", "ents"], ["text", "ents"]]  # blank line skipped
    assert lines[0]["meta"] == {"page": 3} and lines[0]["id"] == "a"


@pytest.mark.slow  # four runs of the pipeline
def test_an_interrupted_run_resumes_without_redoing_finished_shards(pipeline_dir, reference, tmp_path, monkeypatch):
    """The last shard's rename fails (as if the run were killed while writing it); the rerun annotates only that
    shard, leaves the finished ones untouched and gives the same output as nlp.pipe."""
    source, output = _jsonl_input(tmp_path / "in.jsonl"), tmp_path / "out"
    real_replace, renamed = os.replace, []

    def replace_then_die(src, dst):
        if Path(dst).name == "shard-00003.spacy":
            raise KeyboardInterrupt
        renamed.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr("spacy_fsner.annotation.shards.os.replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        annotate(pipeline_dir, source, output, shard_size=2, batch_size=BATCH)
    monkeypatch.setattr("spacy_fsner.annotation.shards.os.replace", real_replace)
    assert renamed == [MANIFEST, "shard-00000.spacy", "shard-00001.spacy", "shard-00002.spacy"]
    assert [p.name for p in shard_paths(output)] == ["shard-00000.spacy", "shard-00001.spacy", "shard-00002.spacy"]
    assert (output / ".shard-00003.spacy.partial").exists()  # the half-written shard is not a shard
    finished = {p.name: p.stat().st_mtime_ns for p in shard_paths(output)}

    annotated: list[list[str]] = []
    real_annotate_shard = run_module.annotate_shard

    def counting(nlp, records, **settings):
        annotated.append([r.text for r in records])
        return real_annotate_shard(nlp, records, **settings)

    monkeypatch.setattr(run_module, "annotate_shard", counting)
    run = annotate(pipeline_dir, source, output, shard_size=2, batch_size=BATCH)
    assert annotated == [TEXTS[6:]]  # only the missing shard went through the pipeline
    assert (run.written, run.skipped, run.resumed) == (1, 3, True)
    assert {name: (output / name).stat().st_mtime_ns for name in finished} == finished
    assert not (output / ".shard-00003.spacy.partial").exists()
    assert _docbin_output(output) == reference

    (output / "shard-00001.spacy").unlink()  # a lost shard is annotated again, and only it
    annotated.clear()
    annotate(pipeline_dir, source, output, shard_size=2, batch_size=BATCH)
    assert annotated == [TEXTS[2:4]] and _docbin_output(output) == reference
    annotated.clear()
    run = annotate(pipeline_dir, source, output, shard_size=2, batch_size=BATCH)  # all done: nothing to do
    assert annotated == [] and (run.written, run.skipped) == (0, 4)


@pytest.fixture(scope="module")
def finished_run(blank_pipeline, tmp_path_factory) -> tuple[Path, Path]:
    """A finished run of two documents in shards of one: (input, output)."""
    root = tmp_path_factory.mktemp("finished")
    source = _jsonl_input(root / "in.jsonl", TEXTS[:2])
    annotate(blank_pipeline, source, root / "out", shard_size=1)
    return source, root / "out"


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["annotate", *map(str, args), "--no-progress"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output.strip()


def test_a_rerun_with_other_settings_or_input_is_refused(blank_pipeline, finished_run, tmp_path):
    source, output = finished_run
    code, message = _cli(blank_pipeline, source, output, "--shard-size", "2")
    assert code == 1 and message.startswith(
        f"error: {output} holds shards of a run with other settings (shard_size: 1 then, 2 now)"
    )
    assert "or write to a new output directory" in message and len(message.splitlines()) == 1
    code, message = _cli(blank_pipeline, source, output, "--shard-size", "1", "--format", "jsonl")
    assert code == 1 and "format: 'spacy' then, 'jsonl' now" in message
    changed = _jsonl_input(tmp_path / "in.jsonl", ["Another text.", TEXTS[1]])
    code, message = _cli(blank_pipeline, changed, output, "--shard-size", "1")
    assert code == 1 and "input_sha256: " in message and "n_docs" not in message
    other_pipeline = tmp_path / "pipeline"
    spacy.blank("de").to_disk(other_pipeline)
    code, message = _cli(other_pipeline, source, output, "--shard-size", "1")
    assert code == 1 and "pipeline: 'sha256:" in message
    code, message = _cli(blank_pipeline, source, output, "--shard-size", "1", "--batch-size", "7")  # speed only
    assert code == 0 and message == f"2 docs in 2 shards in {output}: 0 written now, 2 written before"


def test_a_run_that_wrote_no_shard_starts_afresh(blank_pipeline, tmp_path):
    """A first run stopped before its first shard (here: a pipeline that does not load) holds nothing to resume:
    the next run, with a working pipeline, starts over instead of refusing the changed pipeline."""
    source, output = _write(tmp_path / "in.txt", "a\nb\n"), tmp_path / "out"
    broken = tmp_path / "broken"
    broken.mkdir()
    _write(broken / "config.cfg", '[nlp]\nlang = "xx-no-such-language"\n')
    code, message = _cli(broken, source, output)
    assert code == 1 and message.startswith("error: ") and (output / MANIFEST).is_file() and not shard_paths(output)
    code, message = _cli(blank_pipeline, source, output)
    assert code == 0 and message == f"2 docs in 1 shards in {output}: 1 written now"
    assert json.loads((output / MANIFEST).read_text())["pipeline_path"] == str(blank_pipeline)


def _write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("in.jsonl", '{"text": "a"}\n{"text": "b",\n', [], r"in\.jsonl, line 2: not valid JSON \(.*\); fix the line$"),
        ("in.jsonl", '{"text": "a"}\n\n{"body": "b"}\n', [], r'line 3: no "text" field \(fields: \'body\'\)'),
        ("in.jsonl", '["a", "b"]\n', [], r"line 1: a JSON list, not an object"),
        ("in.jsonl", '{"text": 3}\n', [], r'line 1: "text" is a int, not a string$'),
        ("in.jsonl", '{"text": "a", "ents": []}\n', ["--format", "jsonl"], "line 1: has a field 'ents', which JSONL"),
        ("in.csv", "text\na\n", [], r"in\.csv: cannot read a \.csv file; annotate reads \.jsonl .* or \.txt"),
        ("in.txt", "caf\xe9\n", [], r"is not UTF-8 text"),
        ("in.txt", "a\n", ["--format", "xml"], r"unknown output format 'xml': use one of spacy, jsonl$"),
        ("in.txt", "a\n", ["--shard-size", "0"], r"shard size 0, batch size 32: both must be at least 1$"),
        ("in.txt", "a\n", ["--workers", "2"], r"--workers need --ray-address \(local starts Ray on this machine\)"),
    ],
)
def test_bad_input_is_one_error_line_before_anything_is_written(
    blank_pipeline, tmp_path, name, content, extra, message
):
    source = tmp_path / name
    if name == "in.txt" and "\xe9" in content:
        source.write_bytes(content.encode("latin-1"))
    else:
        _write(source, content)
    code, output = _cli(blank_pipeline, source, tmp_path / "out", *extra)
    assert code == 1 and len(output.splitlines()) == 1, output
    assert output.startswith("error: ") and re.search(message, output), output
    assert not (tmp_path / "out").exists()  # checked before the output directory is made


def test_bad_pipeline_or_output_directory_is_one_error_line(blank_pipeline, tmp_path):
    source = _write(tmp_path / "in.txt", "a\n")
    code, output = _cli(tmp_path / "no-such-pipeline", source, tmp_path / "out")
    assert code == 1 and "is neither a directory nor an installed pipeline package" in output
    (tmp_path / "notes").mkdir()
    _write(tmp_path / "notes" / "todo.txt", "keep me")
    code, output = _cli(blank_pipeline, source, tmp_path / "notes")
    assert code == 1 and output == (
        f"error: {tmp_path / 'notes'} exists and is not an annotation run's output (no manifest.json): pass a new or "
        "empty directory"
    )
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]  # nothing added


def test_the_docs_example_reads_the_shards_back(blank_pipeline, tmp_path, monkeypatch, capsys):
    """docs/scaling.md's Python block under "Annotating a corpus", run as written beside a run's `annotated/`."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "scaling.md").read_text(encoding="utf-8")
    section = page.split("\n## Annotating a corpus\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    annotate(blank_pipeline, _jsonl_input(tmp_path / "corpus.jsonl", TEXTS[:3]), tmp_path / "annotated", shard_size=2)
    monkeypatch.chdir(tmp_path)
    exec(block, {})
    assert capsys.readouterr().out.splitlines() == ["{'id': 0} []", "{'id': 1} []", "{'id': 2} []"]


def test_ray_not_installed_names_the_extra(blank_pipeline, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    source = _write(tmp_path / "in.txt", "a\n")
    code, output = _cli(blank_pipeline, source, tmp_path / "out", "--ray-address", "local", "--workers", "2")
    assert code == 1 and output.startswith("error: --ray-address needs Ray with Ray Data, which is not installed")
    assert output.endswith('pip install "spacy-fsner[ray]"') and not (tmp_path / "out").exists()


def test_ray_settings_are_checked():
    with pytest.raises(ValueError, match="use at least 1 Ray worker"):
        RaySettings("local", workers=0)
    with pytest.raises(ValueError, match="CPUs must be positive and GPUs 0 or more"):
        RaySettings("local", gpus_per_worker=-1)


def test_a_worker_error_is_reported_as_the_workers_own_error():
    import ray  # the test extra installs it

    from spacy_fsner.annotation.ray_runner import worker_error

    try:
        raise ray.exceptions.RayError("wrapped") from ValueError("bad shard")
    except ray.exceptions.RayError as error:
        assert worker_error(error) == "ValueError: bad shard"
    died = ray.exceptions.RayError(
        "The actor died\nTraceback (most recent call last):\n  File 'x.py'\n"
        "FileNotFoundError: Model path '/m' does not exist.\n"
    )
    assert worker_error(died) == "FileNotFoundError: Model path '/m' does not exist."


RAY_TEST_SETTINGS = {"object_store_memory": 100 * 1024**2, "include_dashboard": False, "log_to_driver": False}
"""A small object store (the default takes 30% of the memory), no dashboard, no worker logs: robust on 2 cores."""

RAY_TEST_ENVIRONMENT = {"RAY_memory_monitor_refresh_ms": "0"}
"""Ray's memory monitor off: on a shared machine it kills (and Ray restarts, again and again) the actors whenever
other processes fill the memory above 95%, which turns a 30-second test into a failure after minutes."""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own settings
def test_the_command_starts_and_stops_its_own_local_ray(blank_pipeline, tmp_path, monkeypatch):
    """`--ray-address local` starts Ray (CPUs for the workers) and shuts it down, here after refusing GPUs the
    machine does not have (workers that ask for them would wait forever)."""
    import ray  # the test extra installs it

    assert not ray.is_initialized()
    for name, value in RAY_TEST_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    started = []
    real_init = ray.init

    def small_init(**settings):
        started.append(settings)
        return real_init(**settings, object_store_memory=RAY_TEST_SETTINGS["object_store_memory"])

    monkeypatch.setattr(ray, "init", small_init)
    source = _write(tmp_path / "in.txt", "a\n")
    code, output = _cli(blank_pipeline, source, tmp_path / "out", "--ray-address", "local", "--gpus-per-worker", 1000)
    assert (
        code == 1 and output.startswith("error: --gpus-per-worker 1000: Ray finds ") and "(0 without a GPU)" in output
    )
    assert len(output.splitlines()) == 1 and not ray.is_initialized()  # shut down again
    assert started == [{"num_cpus": 1, "include_dashboard": False, "log_to_driver": False}]


@pytest.fixture
def local_ray(monkeypatch):
    """A Ray instance of 2 CPUs in this process, shut down after the test. Its workers inherit this process's
    environment, so they import the same spacy_fsner (from PYTHONPATH or the installed package)."""
    import ray  # the test extra installs it

    for name, value in RAY_TEST_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    ray.init(num_cpus=2, **RAY_TEST_SETTINGS)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own settings
def test_ray_with_two_workers_equals_nlp_pipe(pipeline_dir, reference, local_ray, tmp_path):
    """Two actors, each loading the pipeline once, annotate 4 shards; the driver writes them: the entities are
    nlp.pipe's, doc by doc in input order. (Scores agree to float rounding: an actor has 1 CPU thread.)"""
    source, output = _jsonl_input(tmp_path / "in.jsonl"), tmp_path / "out"
    args = ["--shard-size", 2, "--batch-size", BATCH, "--ray-address", "local", "--workers", 2]
    code, message = _cli(pipeline_dir, source, output, *args)
    assert code == 0, message
    assert f"8 docs in 4 shards in {output}: 4 written now on Ray (local, 2 workers)" in message.splitlines()
    assert local_ray.is_initialized()  # the instance this process started is used, and left running
    annotated = _docbin_output(output)
    assert [doc["ents"] for doc in annotated] == [doc["ents"] for doc in reference]
    for doc, expected in zip(annotated, reference, strict=True):
        assert doc["scores"] == pytest.approx(expected["scores"], rel=1e-5)
    docs = list(read_docs(output, spacy.blank("en").vocab))
    assert [doc.user_data["meta"]["id"] for doc in docs] == list(range(len(TEXTS)))
