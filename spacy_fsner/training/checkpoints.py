"""Whether a training run may resume from the checkpoints in its output directory.

A run keeps its trainer checkpoints in `OUTPUT/checkpoints`, next to `run.json`: what decides the run, namely the
interpolated config (without `train.threads`, which sets the speed, not the result) and digests of the training
corpus and of the adapter it continues. Started again into the same output directory, a run resumes from the last
checkpoint only when that record matches (a killed run started again). The trainer's checkpoint folders of a run
with other settings or other data (or without that record) are removed, with a message naming what changed: resuming
them would restore the old run's step, optimiser state and learning-rate schedule, and the new settings would be
silently ignored.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from confection import Config
from spacy.util import dict_to_dot

from ..log import logger
from ..models.fetch import tree_sha256

RUN_FILE = "run.json"
IGNORED_SETTINGS = ("train.threads", "train.logging_steps", "train.save_steps")
"""Settings that change how fast a run goes or what it logs, not what it trains: a killed run may resume with other
values."""


def run_identity(config: Config, inputs: dict[str, str | Path | None]) -> dict[str, Any]:
    """What decides a run: the interpolated config, flattened to dotted keys, and a digest of each input path (a file
    or a directory; None for an input the run does not have). The settings that hold an input's path are left out:
    its digest stands for it, so `corpus/x.spacy` and `./corpus/x.spacy` are the same run."""
    flat = dict_to_dot(json.loads(json.dumps(Config(config).interpolate(), default=str)))
    paths = {str(path) for path in inputs.values() if path is not None}
    flat = {
        key: value
        for key, value in flat.items()
        if key not in IGNORED_SETTINGS and not (isinstance(value, str) and value in paths)
    }
    digests = {name: None if path is None else _digest(Path(path)) for name, path in inputs.items()}
    return {"config": flat, "inputs": digests}


def resume_point(directory: Path, identity: dict[str, Any]) -> str | None:
    """The checkpoint to resume from (None: start afresh), after clearing `directory` of another run's checkpoints;
    records `identity` in `directory/run.json` for the next start."""
    from transformers.trainer_utils import get_last_checkpoint, sort_checkpoints

    directory = Path(directory)
    last = get_last_checkpoint(str(directory)) if directory.is_dir() else None
    record = directory / RUN_FILE
    previous = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
    if last is not None and previous == identity:
        return last
    if last is not None:
        logger.info(
            f"{directory} holds checkpoints of another run ({describe_changes(previous, identity)}): starting "
            "afresh and removing them. (A killed run with unchanged settings and data resumes instead.)"
        )
        for checkpoint in sort_checkpoints(str(directory)):  # the trainer's own folders only: other files stay
            shutil.rmtree(checkpoint)
    directory.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return None


def describe_changes(previous: dict[str, Any] | None, current: dict[str, Any]) -> str:
    """What differs between two run identities, for a message (at most 5 settings named)."""
    if previous is None:
        return "no record of their settings"
    old, new = previous.get("config", {}), current["config"]
    keys = sorted(old.keys() | new.keys())
    changes = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]
    if len(changes) > 5:
        changes = [*changes[:5], f"{len(changes) - 5} more settings"]
    for name, digest in current["inputs"].items():
        if previous.get("inputs", {}).get(name) != digest:
            changes.append(f"the {name} changed")
    return "; ".join(changes) or "same settings, other record format"


def _digest(path: Path) -> str | None:
    """sha256 of a file's bytes, or of a directory's relative file names and their sha256s; None when missing."""
    return tree_sha256(path) if path.exists() else None
