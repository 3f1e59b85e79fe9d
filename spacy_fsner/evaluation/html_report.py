"""A self-contained HTML page of an evaluation for people: every document with its gold and predicted entities side
by side (displaCy), each error classified (`errors.py`), span-exact P/R/F per type, and a filter by kind of error.

One file, no network: the CSS and the few lines of JavaScript are inline, displaCy's markup has inline styles. The
filter is a row of radio buttons (all documents, those with any error, those with an error of one kind); the URL
fragment `#show=KIND` (a kind of `errors.KINDS`, `any` or `all`) opens the page filtered and follows the buttons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from html import escape
from itertools import chain
from pathlib import Path
from typing import Any

from spacy import displacy
from spacy.tokens import Doc
from spacy.training import Example

from .counts import PRF
from .errors import KIND_NAMES, KINDS, EntityError, classify
from .report import percent
from .scores import span_exact

PALETTE = (
    "#7aecec", "#bfeeb7", "#feca74", "#ff9561", "#aa9cfc", "#c887fb", "#9cc9cc", "#ffeb80", "#ff8197", "#f0d0ff",
    "#bfe1d9", "#e4e7d2", "#c5e8ff", "#ffd6a5", "#d4f5c4", "#f7c6d9", "#d9d2e9", "#fce5cd",
)  # fmt: skip
"""Entity colours, given to the types in sorted order (displaCy's own for the first ones)."""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, .settings td { text-align: left; }
#filter label { margin-right: 1em; white-space: nowrap; }
.doc { border-top: 1px solid #ddd; padding: 0.5em 0; }
.doc h3 { font-size: 0.95em; margin: 0.3em 0; color: #555; }
.pair { display: flex; gap: 1.5em; }
.side { flex: 1; min-width: 0; }
.side h4 { margin: 0; font-size: 0.8em; text-transform: uppercase; color: #888; }
.errors { margin: 0.3em 0; padding-left: 1.2em; }
.kind { font-weight: bold; padding: 0 0.4em; border-radius: 0.3em; }
.false_positive .kind { background: #fdd; } .missed .kind { background: #ffe3b3; }
.wrong_boundary .kind { background: #dde8ff; } .wrong_type .kind { background: #e8d8ff; }
.wrong_type_and_boundary .kind { background: #eee; }
[hidden] { display: none !important; }
"""

SCRIPT = """
(function () {
  var docs = Array.prototype.slice.call(document.querySelectorAll(".doc"));
  function show(kind) {
    var shown = 0;
    docs.forEach(function (doc) {
      var kinds = doc.getAttribute("data-errors").split(" ").filter(Boolean);
      var on = kind === "all" || (kind === "any" ? kinds.length > 0 : kinds.indexOf(kind) >= 0);
      doc.hidden = !on;
      if (on) { shown += 1; }
    });
    document.querySelectorAll(".episode").forEach(function (episode) {
      episode.hidden = !episode.querySelector(".doc:not([hidden])");
    });
    document.getElementById("shown").textContent = "showing " + shown + " of " + docs.length + " documents";
  }
  var buttons = document.querySelectorAll("input[name=show]");
  buttons.forEach(function (button) {
    button.addEventListener("change", function () {
      history.replaceState(null, "", "#show=" + button.value);
      show(button.value);
    });
  });
  var asked = /show=([a-z_]+)/.exec(location.hash);
  var button = asked && document.querySelector("input[name=show][value=" + asked[1] + "]");
  if (button) { button.checked = true; show(asked[1]); } else { show("all"); }
})();
"""


def report_groups(examples: Sequence[Example] | Sequence[Sequence[Example]]) -> list[tuple[str | None, list[Example]]]:
    """(heading, examples) of each group the page shows: one group without a heading for a flat list of Examples,
    one "Episode N" group per episode for a list of lists. Raises a TypeError for anything else."""
    items = list(examples)
    if all(isinstance(item, Example) for item in items):
        return [(None, items)]
    if all(isinstance(item, Sequence) and all(isinstance(e, Example) for e in item) for item in items):
        return [(f"Episode {i}", list(item)) for i, item in enumerate(items, 1)]
    raise TypeError(
        "pass a list of spacy.training.Example (a corpus) or a list of lists of them (episodes), as "
        "`Evaluation.examples` holds them"
    )


def _colors(examples: Sequence[Example]) -> dict[str, str]:
    docs = chain.from_iterable((e.reference, e.predicted) for e in examples)
    labels = sorted({ent.label_ for doc in docs for ent in doc.ents})
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def _displacy(doc: Doc, colors: Mapping[str, str]) -> str:
    """displaCy's entity markup of `doc.ents` (labels escaped: displaCy writes them as they are)."""
    ents = [{"start": e.start_char, "end": e.end_char, "label": escape(e.label_)} for e in doc.ents]
    data = {"text": doc.text, "ents": ents, "title": None}
    options = {"colors": {escape(label): color for label, color in colors.items()}}
    return displacy.render(data, style="ent", manual=True, page=False, jupyter=False, options=options)


def _quoted(text: str, label: str) -> str:
    return f"“{escape(text)}” {escape(label)}"


def _error_text(error: EntityError) -> str:
    pred, gold = error.pred, error.gold
    if error.kind == "false_positive":
        what = f"predicted {_quoted(pred.text, pred.label)}, which overlaps no gold entity"
    elif error.kind == "missed":
        what = f"gold {_quoted(gold.text, gold.label)}, which no prediction overlaps"
    elif error.kind == "wrong_type":
        what = f"“{escape(pred.text)}”: predicted {escape(pred.label)}, gold {escape(gold.label)}"
    else:
        what = f"predicted {_quoted(pred.text, pred.label)} for gold {_quoted(gold.text, gold.label)}"
    return f'<li class="error {error.kind}"><span class="kind">{KIND_NAMES[error.kind]}</span> {what}</li>'


def _document(number: int, heading: str, example: Example, errors: list[EntityError], colors: Mapping[str, str]) -> str:
    kinds = " ".join(dict.fromkeys(e.kind for e in errors))
    summary = f"{len(errors)} error{'s' if len(errors) != 1 else ''}" if errors else "no error"
    items = f'<ul class="errors">{"".join(_error_text(e) for e in errors)}</ul>' if errors else ""
    return (
        f'<section class="doc" id="doc-{number}" data-errors="{kinds}">'
        f"<h3>{escape(heading)} · {summary}</h3>"
        '<div class="pair">'
        f'<div class="side gold"><h4>gold</h4>{_displacy(example.reference, colors)}</div>'
        f'<div class="side predicted"><h4>predicted</h4>{_displacy(example.predicted, colors)}</div>'
        f"</div>{items}</section>"
    )


def _scores_table(examples: Sequence[Example]) -> str:
    scores = span_exact(examples)
    rows = [("all types (micro)", scores.micro), *scores.per_type.items()]

    def row(name: str, prf: PRF) -> str:
        cells = [escape(name), percent(prf.p), percent(prf.r), percent(prf.f), prf.tp, prf.fp, prf.fn, prf.tp + prf.fn]
        return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"

    header = "".join(f"<th>{h}</th>" for h in ("type", "P (%)", "R (%)", "F (%)", "TP", "FP", "FN", "gold"))
    return f'<table class="scores"><tr>{header}</tr>{"".join(row(n, prf) for n, prf in rows)}</table>'


def _filter(errors: Sequence[list[EntityError]]) -> str:
    """The radio buttons (each with its count of documents or errors) and the line that says how many are shown."""
    counts = Counter(error.kind for doc_errors in errors for error in doc_errors)
    with_errors = sum(1 for doc_errors in errors if doc_errors)
    choices = [("all", f"all documents ({len(errors)})"), ("any", f"with any error ({with_errors})")]
    choices += [(kind, f"{KIND_NAMES[kind]} ({counts[kind]})") for kind in KINDS]
    buttons = "".join(
        f'<label><input type="radio" name="show" value="{value}"{" checked" if value == "all" else ""}> {text}</label>'
        for value, text in choices
    )
    return (
        f'<div id="filter"><strong>Show:</strong> {buttons}</div>'
        f'<p id="shown">showing {len(errors)} of {len(errors)} documents</p>'
    )


def _settings(settings: Mapping[str, Any]) -> str:
    keys = ("pipeline", "data", "protocol", "headline", "model", "n_docs", "n_episodes", "limit")
    rows = "".join(f"<tr><td>{k}</td><td>{escape(str(settings[k]))}</td></tr>" for k in keys if k in settings)
    return f'<table class="settings">{rows}</table>' if rows else ""


def render_report(
    examples: Sequence[Example] | Sequence[Sequence[Example]],
    *,
    settings: Mapping[str, Any] | None = None,
    title: str = "Evaluation report",
) -> str:
    """The page (see the module's docstring) for a corpus's Examples or episodes' lists of Examples;
    `settings` (as `Evaluation.settings`) name the pipeline, data and protocol at the top."""
    groups = report_groups(examples)
    flat = [example for _, group in groups for example in group]
    if not flat:
        raise ValueError("no examples to report: evaluate at least one document")
    colors = _colors(flat)
    errors = [classify(example) for example in flat]
    body, number = [], 0
    for heading, group in groups:
        docs = []
        for i, example in enumerate(group, 1):
            name = f"query {i}" if heading else f"document {i}"
            docs.append(_document(number + 1, name, example, errors[number], colors))
            number += 1
        if heading is None:
            body += docs
        else:
            body.append(f'<section class="episode"><h2>{escape(heading)}</h2>{"".join(docs)}</section>')
    scope = " over all query sentences (Few-NERD's micro scores)" if groups[0][0] is not None else ""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            _settings(settings or {}),
            f"<h2>Span-exact scores per type{scope}</h2>",
            _scores_table(flat),
            "<h2>Documents</h2>",
            _filter(errors),
            *body,
            f"<script>{SCRIPT}</script>",
            "</body></html>",
        ]
    )


def write_report(
    examples: Sequence[Example] | Sequence[Sequence[Example]],
    path: str | Path,
    *,
    settings: Mapping[str, Any] | None = None,
    title: str = "Evaluation report",
) -> Path:
    """Write `render_report(...)` to `path` (its directory created when missing); returns the path.
    `write_report(evaluate(...).examples, "report.html", settings=evaluation.settings)` shows an evaluation."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory: give the report a file name, e.g. {path / 'report.html'}")
    page = render_report(examples, settings=settings, title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
