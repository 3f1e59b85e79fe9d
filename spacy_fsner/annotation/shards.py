"""The output directory of an annotation run: numbered shard files, the manifest, atomic writes and resume.

OUTPUT holds `shard-00000.spacy`, `shard-00001.spacy`, ... (or `.jsonl`), shard i being documents
`i * shard_size` to `(i + 1) * shard_size - 1` of the input, and `manifest.json`, written before the first shard:
the input's sha256 and document count, the pipeline's fingerprint, the output format and shard size. Each shard is
written to a hidden temporary file in OUTPUT and renamed into place, so a killed run leaves complete shards only,
and a shard file that exists is a finished shard. Started again, a run checks the manifest (same input, pipeline,
format and shard size, or an error naming what changed) and annotates only the shards that are missing. A lock
held while the run lives keeps two runs from writing into one directory at once.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

from .formats import OUTPUT_FORMATS

MANIFEST = "manifest.json"
LOCK = ".annotate.lock"
TEMPORARY_SUFFIX = ".partial"
SHARD_NAME = re.compile(r"shard-(\d+)\.(spacy|jsonl)")
CHECKED = ("input_sha256", "n_docs", "pipeline", "format", "shard_size")
"""Manifest entries that decide the output: a run resumes only when all are the same. Batch size, workers and the
Ray address change speed, not the annotation, and may differ between runs."""


def shard_name(index: int, output_format: str) -> str:
    return f"shard-{index:05d}{OUTPUT_FORMATS[output_format]}"


def n_shards(n_docs: int, shard_size: int) -> int:
    return -(-n_docs // shard_size)


@dataclass(frozen=True)
class ShardDirectory:
    """OUTPUT as a set of shards of one format: which exist, and how to write one safely."""

    path: Path
    output_format: str

    def shard_path(self, index: int) -> Path:
        return self.path / shard_name(index, self.output_format)

    def completed(self, total: int) -> set[int]:
        """The indices of the shards below `total` whose file exists (each was renamed into place when complete)."""
        return {index for index in range(total) if self.shard_path(index).is_file()}

    def write(self, index: int, data: bytes) -> Path:
        """Write shard `index` atomically: a temporary file in OUTPUT, flushed to disk, then renamed into place."""
        final = self.shard_path(index)
        temporary = final.with_name(f".{final.name}{TEMPORARY_SUFFIX}")
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, final)
        return final

    def remove_temporary_files(self) -> None:
        """Remove what a killed run left half-written (never a finished shard)."""
        for leftover in self.path.glob(f".shard-*{TEMPORARY_SUFFIX}"):
            leftover.unlink()


def shard_paths(output: str | Path) -> list[Path]:
    """The shard files of an annotation run's OUTPUT, in document order (by number, not by name)."""
    found = [(int(m.group(1)), path) for path in Path(output).iterdir() if (m := SHARD_NAME.fullmatch(path.name))]
    return [path for _, path in sorted(found)]


def read_docs(output: str | Path, vocab: Vocab) -> Iterator[Doc]:
    """The annotated docs of a run's DocBin shards, in input order (one shard in memory at a time)."""
    for path in shard_paths(output):
        if path.suffix != ".spacy":
            raise ValueError(f"{path} is a JSONL shard: read it as JSON lines (read_docs reads DocBin shards)")
        yield from DocBin(store_user_data=True).from_disk(path).get_docs(vocab)


@contextmanager
def open_run(output: Path, manifest: dict[str, Any]) -> Iterator[bool]:
    """OUTPUT for this run, locked while the run lives: created with `manifest`, or, when it holds a run's shards
    already, checked against that run's manifest (resume). Yields whether the run resumes. A run that wrote no
    shard (stopped by a pipeline that does not load, say) leaves nothing to protect: it is started afresh.

    A ValueError names the fix when OUTPUT holds other files, was started with other settings, or is in use by
    another run (the lock is released when the process ends, even if it is killed).
    """
    record = output / MANIFEST
    if output.exists() and not record.is_file() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(
            f"{output} exists and is not an annotation run's output (no {MANIFEST}): pass a new or empty directory"
        )
    output.mkdir(parents=True, exist_ok=True)
    with _locked(output):
        if record.is_file() and shard_paths(output):
            _check_manifest(output, manifest)
            yield True
            return
        temporary = output / f".{MANIFEST}{TEMPORARY_SUFFIX}"
        temporary.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, record)
        yield False


def _check_manifest(output: Path, manifest: dict[str, Any]) -> None:
    record = output / MANIFEST
    try:
        previous = json.loads(record.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{record} is not a readable manifest: delete {output} to start over") from None
    changes = [
        f"{key}: {previous.get(key)!r} then, {manifest[key]!r} now"
        for key in CHECKED
        if previous.get(key) != manifest[key]
    ]
    if changes:
        raise ValueError(
            f"{output} holds shards of a run with other settings ({'; '.join(changes)}): rerun with the first run's "
            f"input, pipeline and settings to resume it, or write to a new output directory (or delete {output} to "
            "start over)"
        )


@contextmanager
def _locked(output: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one run per directory is then the user's care
        yield
        return
    with open(output / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"another annotate run is writing to {output}: wait for it to finish, or stop it and start again "
                "(it resumes)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
