"""`python -m spacy_fsner benchmark` (`spacy_fsner.evaluation.throughput`): its label and demonstration choices,
its tables and entity records, and a whole run on a tiny model."""

import json
from collections import Counter
from pathlib import Path

import spacy
from spacy.tokens import Doc, DocBin
from typer.testing import CliRunner

from spacy_fsner.cli import app
from spacy_fsner.evaluation.throughput import (
    Row,
    Run,
    Throughput,
    entity_records,
    format_tables,
    pick_demonstrations,
    pick_labels,
    short_label,
    with_short_labels,
)


def test_short_label_keeps_the_fine_type():
    assert short_label("person-athlete") == "athlete"
    assert short_label("organization-government/governmentagency") == "government"
    assert short_label("location-other") == "location"  # every coarse type has an "-other": keep them apart
    assert short_label("art-other") == "art"
    assert short_label("PER") == "PER"  # not a Few-NERD type: unchanged


def _doc(nlp, words: list[str], ents: list[tuple[int, int, str]]) -> Doc:
    doc = Doc(nlp.vocab, words=words)
    doc.ents = [doc.char_span(doc[s].idx, doc[e - 1].idx + len(doc[e - 1]), label=label) for s, e, label in ents]
    return doc


def test_with_short_labels_renames_entities_in_place():
    nlp = spacy.blank("en")
    doc = _doc(nlp, ["Serena", "Williams", "won", "Wimbledon"], [(0, 2, "person-athlete"), (3, 4, "event-other")])
    (same,) = with_short_labels([doc])
    assert same is doc
    assert [(e.start, e.end, e.label_) for e in doc.ents] == [(0, 2, "athlete"), (3, 4, "event")]


def test_pick_labels_and_demonstrations():
    nlp = spacy.blank("en")
    docs = [
        _doc(nlp, ["Paris", "is", "big", "and", "old", "."], [(0, 1, "LOC")]),
        _doc(nlp, ["Ann", "met", "Bob", "."], [(0, 1, "PER"), (2, 3, "PER")]),
        _doc(nlp, ["Ann", "in", "Rome", "."], [(0, 1, "PER"), (2, 3, "LOC")]),
        _doc(nlp, ["IBM", "."], [(0, 1, "ORG")]),
    ]
    assert pick_labels(docs, 2) == ["PER", "LOC"]  # most frequent first: PER 3, LOC 2; ORG (1) left out
    assert pick_labels(docs[:1] + docs[3:], 2) == ["LOC", "ORG"]  # a tie goes by name
    # greedy: the doc showing both labels first, then the shortest doc showing an uncovered one (none left: shortest)
    chosen = pick_demonstrations(docs, ["LOC", "PER"], 2)
    assert chosen[0] is docs[2] and chosen[1] is docs[3]


def _run(seconds: float, sentences: int, ents: list) -> Run:
    counts = Counter(prompt_tokens=90 * sentences, pad_tokens=0, decode_tokens=10 * sentences, forward_passes=4)
    return Run(seconds, sentences, counts, 1.0, ents)


def test_tables_and_entity_records_follow_the_rows():
    """Rows in run order; the naive loop ran the first sentence only; the 3-label row disagrees."""
    one, two = [[(0, 1, "PER")]], [[(0, 1, "PER")], [(2, 3, "LOC")]]
    rows = [
        Row("shared", 2, {"naive": _run(2.0, 1, one), "pipe": _run(1.0, 2, two)}, 100.0, True),
        Row("shared", 3, {"naive": _run(4.0, 1, [[]]), "pipe": _run(1.0, 2, two)}, 50.0, False),
    ]
    result = Throughput(rows, Path("data.txt"), 2, "a model", "cpu", 1, 4, 256, 8192, [2, 3], ["shared"])
    assert not result.same
    text = format_tables(result)
    assert text.startswith("\n2 sentences of data.txt (naive loop: the first 1), 2 demonstrations, a model, cpu")
    assert "| shared | 2 | pipe | 2.00 | 0.500 | 100.0 | 1.00 | 0.0% | 1 | 2 |" in text
    assert "| shared | 3 | naive | 0.25 | 4.000 | 100.0 | 2.00 | 0.0% | 1 | 0 |" in text
    assert "| shared | 2 | 100.0 | 4.00x | True |" in text and "| shared | 3 | 50.0 | 8.00x | False |" in text
    assert text.endswith("3 labels / 2 labels:\n- shared: 1.00x")
    assert "roofline" not in text
    records = entity_records(result)
    assert [(r["template"], r["labels"], r["path"]) for r in records] == [
        ("shared", 2, "naive"),
        ("shared", 2, "pipe"),
        ("shared", 3, "naive"),
        ("shared", 3, "pipe"),
    ]
    assert records[1]["ents"] == [[[0, 1, "PER"]], [[2, 3, "LOC"]]]
    assert json.loads(json.dumps(records)) == records  # plain JSON: lists, not tuples


def test_benchmark_runs_end_to_end_on_a_tiny_model(tmp_path):
    """A DocBin with Few-NERD types, renamed short; both paths, two label counts, the ratio line; the fast path
    processes at most 1.3x the lower bound of tokens (the random model writes nothing in 4 tokens, so the entity
    comparison is trivial here: the real-model runs are in the README)."""
    nlp = spacy.blank("en")
    types = ["person-athlete", "location-other", "event-sportsevent"]
    docs = [
        _doc(nlp, [f"W{i}", "met", f"V{i}", "at", f"X{i}", "."], [(0, 1, types[i % 3]), (4, 5, types[(i + 1) % 3])])
        for i in range(12)
    ]
    data = tmp_path / "data.spacy"
    DocBin(docs=docs).to_disk(data)
    args = ["benchmark", "--data", str(data), "--model", "tiny", "--pool", "8", "--sentences", "4"]
    args += ["--naive-sentences", "2", "--labels", "2,3", "--templates", "shared", "--max-new-tokens", "4"]
    args += ["--short-labels", "--extra-labels", "person-politician", "--threads", "1"]
    args += ["--entities", str(tmp_path / "entities.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| shared | 3 | pipe |" in result.output and "| shared | 2 | naive |" in result.output
    assert "3 labels / 2 labels" in result.output
    assert "| True |" in result.output and "False" not in result.output
    pipe_rows = [line.split("|") for line in result.output.splitlines() if "| pipe |" in line]
    assert len(pipe_rows) == 2 and all(float(row[7]) <= 1.3 for row in pipe_rows)  # x bound
    records = json.loads((tmp_path / "entities.json").read_text())
    assert [(r["template"], r["labels"], r["path"], len(r["ents"])) for r in records] == [
        ("shared", 2, "naive", 2),
        ("shared", 2, "pipe", 4),
        ("shared", 3, "naive", 2),
        ("shared", 3, "pipe", 4),
    ]
    for record in records:  # the table's entity count of each run is its record's
        line = f"| shared | {record['labels']} | {record['path']} |"
        (row,) = [r for r in result.output.splitlines() if r.startswith(line)]
        assert int(row.split("|")[10]) == sum(map(len, record["ents"]))


def test_tables_set_the_joint_template_against_the_per_label_naive_loop():
    """With the joint template beside a per-label one: per label count, the per-label naive loop's seconds per
    sentence against the joint template's nlp.pipe, and their ratio; none without the joint template."""
    rows = [
        Row("cllmfs", n, {"naive": _run(seconds, 1, [[]]), "pipe": _run(1.0, 2, [[], []])}, 100.0, True)
        for n, seconds in ((4, 2.0), (18, 9.0))
    ] + [
        Row("joint", n, {"naive": _run(1.0, 1, [[]]), "pipe": _run(seconds, 2, [[], []])}, 100.0, True)
        for n, seconds in ((4, 0.5), (18, 0.6))
    ]
    result = Throughput(rows, Path("data.txt"), 2, "a model", "cpu", 1, 4, 256, 8192, [4, 18], ["cllmfs", "joint"])
    text = format_tables(result)
    assert "| 4 | cllmfs | 2.000 | 0.250 | 8.00x |" in text
    assert "| 18 | cllmfs | 9.000 | 0.300 | 30.00x |" in text
    assert "- joint: 1.20x" in text  # its own 18 / 4 labels line
    alone = Throughput(rows[:2], Path("data.txt"), 2, "a model", "cpu", 1, 4, 256, 8192, [4, 18], ["cllmfs"])
    assert "per-label naive loop" not in format_tables(alone)
