"""Scoring: the protocols (a corpus, Few-NERD's and Hou et al.'s episodes), the scores each paper reports, bootstrap
intervals and paired differences, the JSON and Markdown reports, and the HTML page of every document's errors."""

from .counts import PRF, Scores
from .errors import EntityError, classify, count_errors
from .html_report import render_report, write_report
from .intervals import Interval, bootstrap_f1, paired_difference, unit_counts
from .protocols import PROTOCOLS, Evaluation, evaluate, evaluate_corpus, evaluate_episodes, predict
from .report import compare_markdown, to_json, to_markdown
from .scores import (
    BoundaryErrors,
    EpisodeMean,
    boundary_errors,
    fewnerd_episodes,
    hou_episodes,
    score_all,
    span_exact,
    string_level,
)

__all__ = [
    "BoundaryErrors",
    "EpisodeMean",
    "EntityError",
    "Evaluation",
    "Interval",
    "PRF",
    "PROTOCOLS",
    "Scores",
    "bootstrap_f1",
    "boundary_errors",
    "classify",
    "count_errors",
    "compare_markdown",
    "evaluate",
    "evaluate_corpus",
    "evaluate_episodes",
    "fewnerd_episodes",
    "hou_episodes",
    "paired_difference",
    "predict",
    "render_report",
    "score_all",
    "span_exact",
    "string_level",
    "to_json",
    "to_markdown",
    "unit_counts",
    "write_report",
]
