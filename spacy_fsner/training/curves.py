"""Training curves as a PNG: the NLL, each contrastive term, the DPO reward margin and accuracy, per step.

matplotlib is an optional dependency (`pip install spacy-fsner[plots]`): without it the PNG is not written and a
warning says so (the numbers are in metrics.json either way).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CURVES = ("loss", "nll", "cl_hidden", "cl_attention", "rewards/margins", "rewards/accuracies")
"""Log keys drawn when present (one panel each); other keys stay in metrics.json."""


def curve_points(history: Sequence[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """(steps, values) of each key of `CURVES` that the trainer logged."""
    points: dict[str, tuple[list[int], list[float]]] = {}
    for entry in history:
        step = entry.get("step")
        for key in CURVES:
            if key in entry and step is not None and "train_runtime" not in entry:
                steps, values = points.setdefault(key, ([], []))
                steps.append(int(step))
                values.append(float(entry[key]))
    return points


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Write one panel per logged curve to `path`; None (with a warning) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(
            f"matplotlib is not installed, so {path} was not written (the curves are in metrics.json): "
            "pip install 'spacy-fsner[plots]'",
            stacklevel=2,
        )
        return None
    points = curve_points(history)
    if not points:
        warnings.warn(f"The trainer logged none of {list(CURVES)}: {path} was not written.", stacklevel=2)
        return None
    figure, axes = plt.subplots(len(points), 1, figsize=(7, 2.2 * len(points)), sharex=True, squeeze=False)
    for axis, (key, (steps, values)) in zip(axes[:, 0], points.items(), strict=True):
        axis.plot(steps, values, marker=".", linewidth=1)
        axis.set_ylabel(key)
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
