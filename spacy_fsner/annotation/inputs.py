"""The documents to annotate, read as a stream of records from a JSONL or a plain-text file.

- `.jsonl`: one JSON object per line with a string field `text`; the object's other fields are the document's
  `meta` (kept with the annotation: `doc.user_data["meta"]`, or beside `ents` in JSONL output). Blank lines are
  skipped (they hold no object).
- `.txt`: one document per line, the line ending removed. A blank line is an empty document, so document i of the
  output is always line i of the input.

`scan_input` reads the whole file once before any annotation starts: a bad line (not JSON, not an object, no
string `text`) fails at once, with file and line number, instead of after hours of annotation; it also counts the
documents (the progress bar's total) and fingerprints the bytes (the resume check).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.spans import line_error, text_lines
from ..models.fetch import file_sha256

INPUT_FORMATS = {".jsonl": "jsonl", ".txt": "text"}
"""File suffix -> how its lines are read."""

TEXT_FIELD = "text"


@dataclass(frozen=True)
class Record:
    """One document to annotate: its text and the input's other fields (`meta`, empty for a text file)."""

    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputScan:
    """What the first pass over an input learned: its format, how many documents it holds, its bytes' sha256."""

    path: Path
    format: str
    n_docs: int
    sha256: str


def input_format(path: str | Path) -> str:
    """`jsonl` or `text`, from the file's suffix; a ValueError naming the accepted suffixes otherwise."""
    path = Path(path)
    found = INPUT_FORMATS.get(path.suffix.lower())
    if found is None:
        raise ValueError(
            f"{path}: cannot read a {path.suffix or 'suffix-less'} file; annotate reads .jsonl (one JSON object per "
            'line with a "text" field) or .txt (one document per line): rename or convert it'
        )
    return found


def read_records(path: str | Path, *, reserved: tuple[str, ...] = ()) -> Iterator[Record]:
    """The documents of `path` in file order, one line at a time (the file is never held in memory).

    A bad JSONL line raises a ValueError naming the file, the line number and the fix; `reserved` are field names
    the output writes itself (JSONL output's `ents`), which an input object must not carry.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is not a file: pass a .jsonl or .txt file of documents")
    if input_format(path) == "text":
        for line in text_lines(path):
            yield Record(line.rstrip("\r\n"))
        return
    for number, line in enumerate(text_lines(path), 1):
        if line.strip():
            yield _json_record(path, number, line, reserved)


def scan_input(path: str | Path, *, reserved: tuple[str, ...] = ()) -> InputScan:
    """Read every line of `path` once: check it (the errors of `read_records`), count the documents, hash the file."""
    path = Path(path)
    n_docs = sum(1 for _ in read_records(path, reserved=reserved))
    return InputScan(path, input_format(path), n_docs, file_sha256(path))


def _json_record(path: Path, number: int, line: str, reserved: tuple[str, ...]) -> Record:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise line_error(path, number, f"not valid JSON ({error.msg}, column {error.colno}); fix the line") from None
    if not isinstance(value, dict):
        raise line_error(
            path, number, f'a JSON {type(value).__name__}, not an object: write {{"text": "...", ...}} per line'
        )
    if TEXT_FIELD not in value:
        fields = ", ".join(repr(key) for key in list(value)[:5]) or "none"
        raise line_error(path, number, f'no "text" field (fields: {fields}); every object needs the document text')
    text = value.pop(TEXT_FIELD)
    if not isinstance(text, str):
        raise line_error(path, number, f'"text" is a {type(text).__name__}, not a string')
    clashes = [key for key in reserved if key in value]
    if clashes:
        raise line_error(
            path,
            number,
            f"has a field {clashes[0]!r}, which JSONL output writes itself: rename that field in the input "
            "(or write DocBin shards, where the input's fields go to doc.user_data['meta'])",
        )
    return Record(text, value)
