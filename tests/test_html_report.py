"""`evaluate --report` and `spacy_fsner.evaluation.html_report`: the page of an evaluation, from the file and from
the page as headless Chromium renders it (after its script has run)."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_fsner.cli import app
from spacy_fsner.evaluation import evaluate, write_report

SCRIPTED = "spacy_fsner.test.ScriptedLM.v1"

GOLD = [  # text, gold entities
    ("Angela Merkel visited Paris .", [("Angela Merkel", "PER"), ("Paris", "LOC")]),
    ("Ann Smith lives in Berlin .", [("Ann Smith", "PER"), ("Berlin", "LOC")]),
    ("The weather is nice today .", []),
    ("Bob went to Rome .", [("Bob", "PER"), ("Rome", "LOC")]),
    ("Maria Lopez met Tom .", [("Maria Lopez", "PER"), ("Tom", "PER")]),
]
PREDICTED = {  # text -> the scripted model's entities, with one kind of error per document
    "Angela Merkel visited Paris .": [("Angela Merkel", "PER"), ("Paris", "PER")],  # wrong type
    "Ann Smith lives in Berlin .": [("Smith", "PER")],  # wrong boundary, Berlin missed
    "The weather is nice today .": [("weather", "LOC")],  # false positive
    "Bob went to Rome .": [("Bob", "PER"), ("Rome", "LOC")],  # right
    "Maria Lopez met Tom .": [("Maria", "LOC"), ("Tom", "PER")],  # wrong type and boundary
}
EXPECTED_KINDS = ["wrong_type", "wrong_boundary missed", "false_positive", "", "wrong_type_and_boundary"]


def _scripted_nlp() -> spacy.Language:
    answers: dict[str, list] = {}
    for text, entities in PREDICTED.items():
        for entity, label in entities:
            answers.setdefault(f"{label}|{text}", []).append([entity, -1.0])
    nlp = spacy.blank("en")
    model = {"@llm_models": SCRIPTED, "answers": answers}  # answers per label: a template with a prompt per label
    template = {"@misc": "spacy_fsner.CLLMFSTemplate.v1"}
    nlp.add_pipe("fsner", config={"labels": ["PER", "LOC"], "model": model, "template": template})
    return nlp


def _gold_docs(nlp: spacy.Language) -> list:
    docs = []
    for text, entities in GOLD:
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(text.index(e), text.index(e) + len(e), label=label) for e, label in entities]
        docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> tuple[Path, Path]:
    """A saved pipeline whose model answers from PREDICTED, and the gold corpus as a DocBin."""
    root = tmp_path_factory.mktemp("report")
    nlp = _scripted_nlp()
    nlp.to_disk(root / "pipeline")
    DocBin(docs=_gold_docs(nlp)).to_disk(root / "gold.spacy")
    return root / "pipeline", root / "gold.spacy"


@pytest.fixture(scope="module")
def report(scripted, tmp_path_factory) -> Path:
    """The report `evaluate --report` writes, into a directory that does not exist yet."""
    path = tmp_path_factory.mktemp("out") / "new" / "dir" / "report.html"
    result = CliRunner().invoke(app, ["evaluate", *map(str, scripted), "--report", str(path), "--resamples", "0"])
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.output.splitlines()
    return path


class _Page(HTMLParser):
    """The documents of a report's DOM (id -> data-errors, whether hidden, their visible text) and the page's
    visible text: the text outside hidden elements, scripts and styles."""

    VOID = {"meta", "input", "br", "hr", "img", "link"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.stack: list[bool] = []  # per open element: whether it is unseen (hidden itself or inside one)
        self.docs: dict[str, dict] = {}
        self.current: tuple[str, int] | None = None  # the document being read and its depth
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        unseen = "hidden" in attrs or tag in ("script", "style", "head") or (bool(self.stack) and self.stack[-1])
        if "doc" in (attrs.get("class") or "").split():
            self.current = (attrs["id"], len(self.stack))
            self.docs[attrs["id"]] = {"errors": attrs["data-errors"], "hidden": unseen, "text": []}
        if tag not in self.VOID:
            self.stack.append(unseen)

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack:
            self.stack.pop()
            if self.current and len(self.stack) == self.current[1]:
                self.current = None

    def handle_data(self, data):
        if self.stack and self.stack[-1]:
            return
        self.text.append(data)
        if self.current:
            self.docs[self.current[0]]["text"].append(data)

    def visible(self, doc: str | None = None) -> str:
        words = self.docs[doc]["text"] if doc else self.text
        return " ".join(" ".join(words).split())


def test_the_report_shows_every_document_its_errors_and_the_scores_per_type(report):
    page = _Page(report.read_text(encoding="utf-8"))
    assert [d["errors"] for d in page.docs.values()] == EXPECTED_KINDS
    assert not any(d["hidden"] for d in page.docs.values()), "without its script the page shows every document"
    first = page.visible("doc-1")
    assert first.startswith("document 1 · 1 error gold Angela Merkel PER visited Paris LOC . predicted")
    assert "Angela Merkel PER visited Paris PER ." in first and "wrong type “Paris”: predicted PER, gold LOC" in first
    assert "wrong boundary predicted “Smith” PER for gold “Ann Smith” PER" in page.visible("doc-2")
    assert "missed gold “Berlin” LOC, which no prediction overlaps" in page.visible("doc-2")
    assert "false positive predicted “weather” LOC, which overlaps no gold entity" in page.visible("doc-3")
    assert page.visible("doc-4").startswith("document 4 · no error")
    assert "wrong type and boundary predicted “Maria” LOC for gold “Maria Lopez” PER" in page.visible("doc-5")
    text = page.visible()
    assert "all types (micro) 50.00 50.00 50.00 4 4 4 8 LOC 33.33 33.33 33.33 1 2 2 3 PER 60.00" in text
    assert "all documents (5) with any error (4) false positive (1) missed (1) wrong boundary (1)" in text


def test_the_report_is_one_file_that_needs_no_network(report):
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=|@import|url\(|https?://""", html, re.IGNORECASE)
    assert html.count("<style>") == 1 and html.count("<script>") == 1


def test_episodes_are_grouped_and_the_report_is_reachable_from_python(tmp_path):
    nlp = _scripted_nlp()
    docs = _gold_docs(nlp)

    def part(sentences):
        return {
            "word": [[t.text for t in doc] for doc in sentences],
            "label": [[t.ent_type_ or "O" for t in doc] for doc in sentences],
        }

    episodes = [
        {"support": part(docs[3:4]), "query": part(docs[:2]), "types": ["PER", "LOC"]},
        {"support": part(docs[3:4]), "query": part(docs[2:]), "types": ["PER", "LOC"]},
    ]
    data = tmp_path / "episodes.jsonl"
    data.write_text("\n".join(json.dumps(e) for e in episodes), encoding="utf-8")
    run = evaluate(nlp, data, progress=False, resamples=0)
    assert [len(episode) for episode in run.examples] == [2, 3]
    path = write_report(run.examples, tmp_path / "report.html", settings=run.settings)
    html = path.read_text(encoding="utf-8")
    assert html.count('<section class="episode">') == 2
    assert re.findall(r"<h2>(Episode \d)</h2>", html) == ["Episode 1", "Episode 2"]
    page = _Page(html)
    assert [d["errors"] for d in page.docs.values()] == EXPECTED_KINDS
    assert page.visible("doc-3").startswith("query 1 · 1 error")  # the first query of episode 2
    assert "Few-NERD's micro scores" in page.visible() and "fewnerd_episodes" in page.visible()


def test_bad_report_arguments_say_what_to_do(scripted, tmp_path):
    nlp = _scripted_nlp()
    with pytest.raises(ValueError, match="no examples to report"):
        write_report([], tmp_path / "r.html")
    with pytest.raises(TypeError, match="list of lists of them"):
        write_report(_gold_docs(nlp), tmp_path / "r.html")
    with pytest.raises(IsADirectoryError, match="give the report a file name"):
        write_report(evaluate(nlp, scripted[1], progress=False, resamples=0).examples, tmp_path)
    result = CliRunner().invoke(app, ["evaluate", *map(str, scripted), "--report", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory" in " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _rendered(path: Path, fragment: str, profile: Path) -> _Page:
    """The DOM headless Chromium has after loading `path#fragment` (its script has run)."""
    chromium = next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)
    if chromium is None:
        pytest.skip(f"no Chromium binary ({', '.join(CHROMIUM_NAMES)}) on PATH: apt-get install -y chromium")
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    command += [f"--user-data-dir={profile}", "--dump-dom", f"{path.resolve().as_uri()}{fragment}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return _Page(done.stdout)


def test_chromium_renders_the_entities_and_the_filter_shows_one_kind_of_error(report, tmp_path):
    page = _rendered(report, "", tmp_path / "profile")
    assert "showing 5 of 5 documents" in page.visible()
    assert not any(d["hidden"] for d in page.docs.values())
    assert "Angela Merkel PER visited Paris PER" in page.visible("doc-1")

    page = _rendered(report, "#show=wrong_type", tmp_path / "profile")
    assert "showing 1 of 5 documents" in page.visible()
    shown = [name for name, d in page.docs.items() if not d["hidden"]]
    assert shown == ["doc-1"]
    assert "wrong type “Paris”: predicted PER, gold LOC" in page.visible("doc-1")
    assert "Ann Smith" not in page.visible() and "Maria Lopez" not in page.visible()

    page = _rendered(report, "#show=any", tmp_path / "profile")
    assert [name for name, d in page.docs.items() if d["hidden"]] == ["doc-4"]
    visible = page.visible()
    for label in ("wrong type", "wrong boundary", "missed", "false positive", "wrong type and boundary"):
        assert f"{label} predicted" in visible or f"{label} gold" in visible or f"{label} “" in visible, label
    assert "Bob" not in visible  # the one document without an error
