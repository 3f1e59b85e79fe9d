"""Writing scores down: JSON together with the settings that produced them, and Markdown tables for people.

Both take a mapping name -> result, as `scores.score_all` returns it; a result is a `Scores`, `EpisodeMean`,
`BoundaryErrors` or `Interval` (an F1 with its bootstrap interval, named `<score>_interval`), or the plain dict
its `as_dict()` gives (so results read back from JSON render too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .counts import Scores
from .intervals import Interval
from .scores import BoundaryErrors, EpisodeMean

Results = Mapping[str, Scores | EpisodeMean | BoundaryErrors | Interval | Mapping[str, Any]]

_PRF_COLUMNS = ("p", "r", "f")
_COUNT_COLUMNS = ("tp", "fp", "fn")
_INTERVAL_KEYS = ("estimate", "low", "high", "level", "n_units", "unit")


def as_plain(results: Results) -> dict[str, dict[str, Any]]:
    """Each result as its plain dict (see the `as_dict` methods for the keys)."""
    plain = {}
    for name, result in results.items():
        if isinstance(result, Scores | EpisodeMean | BoundaryErrors | Interval):
            plain[name] = result.as_dict()
        elif isinstance(result, Mapping):
            plain[name] = dict(result)
        else:
            raise TypeError(
                f"result {name!r} is a {type(result).__name__}: pass the objects that "
                "spacy_fsner.evaluation.scores returns, or their as_dict()"
            )
    return plain


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(
        f"cannot write a {type(value).__name__} to JSON: give settings as strings, numbers, booleans, lists or dicts"
    )


def to_json(results: Results, settings: Mapping[str, Any], path: str | Path) -> Path:
    """Write `{"settings": settings, "results": as_plain(results)}` to `path` (parents created); returns it.

    Keeping the settings (model, labels, shots, seed, protocol...) beside the numbers makes a results file
    self-describing. Paths in settings are written as strings.
    """
    path = Path(path)
    payload = {"settings": dict(settings), "results": as_plain(results)}
    text = json.dumps(payload, indent=2, ensure_ascii=False, default=_json_default)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def percent(value: float) -> str:
    """A share in [0, 1] as a percentage with two decimals (the tables' number format)."""
    return f"{100 * value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return [f"| {' | '.join(cells)} |" for cells in (header, align, *rows)]


def _prf_row(name: str, values: Mapping[str, Any]) -> list[str]:
    counts = [str(values[k]) if k in values else "-" for k in _COUNT_COLUMNS]
    return [_cell(name), *(percent(values[k]) for k in _PRF_COLUMNS), *counts]


def _interval_text(values: Mapping[str, Any]) -> str:
    return f"{percent(values['low'])}-{percent(values['high'])}"


def _interval_row(name: str, values: Mapping[str, Any]) -> list[str]:
    level = f"{100 * values['level']:.0f}%"
    resampled = f"{values['n_units']} {values['unit']}, {values.get('resamples', '?')} draws"
    return [
        _cell(name.removesuffix("_interval")),
        percent(values["estimate"]),
        f"{level}: {_interval_text(values)}",
        resampled,
    ]


def to_markdown(results: Results) -> str:
    """Markdown: one table of overall P/R/F (percent, 2 decimals) with tp/fp/fn where the score has counts,
    one of boundary-error rates, and one per-type table for each score that has per-type counts.
    """
    plain = as_plain(results)
    overall, boundary, intervals, notes, per_type = [], [], [], [], []
    for name, values in plain.items():
        if all(k in values for k in _INTERVAL_KEYS):
            intervals.append(_interval_row(name, values))
        elif all(k in values for k in _PRF_COLUMNS):
            overall.append(_prf_row(name, values))
        elif all(k in values for k in ("rate", "count", "n_pred")):
            boundary.append([_cell(name), percent(values["rate"]), str(values["count"]), str(values["n_pred"])])
        else:
            raise ValueError(
                f"cannot render result {name!r}: expected keys p, r, f (optionally tp, fp, fn, per_type) "
                f"or rate, count, n_pred, or estimate, low, high (an interval); got {sorted(values)}"
            )
        if "n_episodes" in values:
            notes.append(
                f"- {name}: mean over {values['n_episodes']} episodes, {values.get('n_empty', 0)} of them "
                "without gold or predicted entities (scored 0)."
            )
        if values.get("per_type"):
            rows = [[*_prf_row(k, prf), str(prf["tp"] + prf["fn"])] for k, prf in values["per_type"].items()]
            per_type += ["", f"### Per type: {_cell(name)}", ""]
            per_type += _table(["type", "P (%)", "R (%)", "F (%)", "TP", "FP", "FN", "gold"], rows)
    lines = []
    if overall:
        lines += _table(["score", "P (%)", "R (%)", "F (%)", "TP", "FP", "FN"], overall)
    if intervals:
        lines += ["", *_table(["F1 with its bootstrap interval", "F (%)", "interval (%)", "resampled"], intervals)]
    if notes:
        lines += ["", *notes]
    if boundary:
        lines += ["", *_table(["score", "rate (%)", "errors", "predicted spans"], boundary)]
    return "\n".join([*lines, *per_type]).strip() + "\n"


def compare_markdown(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """One Markdown row per results file (name -> the JSON `to_json` wrote): its headline score (P/R/F), the
    boundary-error rate, and F1 as a multiple of the first run's (the baseline: in context, before training)."""
    rows, baseline = [], None
    for name, payload in runs.items():
        settings, results = payload.get("settings", {}), payload.get("results", {})
        headline = settings.get("headline") or next(iter(results), None)
        if headline not in results or "f" not in results[headline]:
            raise ValueError(f"{name}: no headline score in the results file; write it with `evaluate --output`.")
        score = results[headline]
        baseline = score["f"] if baseline is None else baseline
        ratio = f"{score['f'] / baseline:.2f}" if baseline else "-"
        boundary = results.get("boundary_errors", {}).get("rate")
        interval = results.get(f"{headline}_interval")
        rows.append(
            [
                _cell(name),
                _cell(headline),
                *(percent(score[k]) for k in _PRF_COLUMNS),
                "-" if interval is None else _interval_text(interval),
                "-" if boundary is None else percent(boundary),
                ratio,
            ]
        )
    header = ["run", "score", "P", "R", "F", "F 95% interval", "boundary errors %", "F / first"]
    return "\n".join(_table(header, rows))
