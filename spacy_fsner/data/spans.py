"""Tag sequences to entity spans, and spans to spaCy Docs: the one decoder every reader shares.

Why one decoder: CoNLL (IOB1/IOB2), BIO/BIOES token-tag files, IO files (Few-NERD, GUM) and episode JSONL must
agree on what a span is, or the same sentence read from two formats would score differently.
"""

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from spacy.tokens import Doc, Span
from spacy.vocab import Vocab

SCHEMES = ("iob1", "iob2", "bio", "io")
"""Decoding schemes. `iob1` reads B-/I- tags: B- always opens an entity, I- opens one unless it continues
an entity of its type. That also decodes IOB2 correctly, and a stray B- after O (eng.train has two). `iob2`
decodes the same way but rejects an I- tag that opens an entity, to check a file really is IOB2. `bio` is
`iob1` plus BIOES's E- (ends an entity) and S- (a one-token entity). `io` reads every non-O tag as a bare
type and merges adjacent tokens of the same type."""

_PREFIXES = {"iob1": ("B", "I"), "iob2": ("B", "I"), "bio": ("B", "I", "E", "S")}

LETTER_PREFIX = re.compile(r"[A-Z]-.")
"""A tag that starts like a prefixed one (`B-DRUG`, `X-DRUG`): never a bare type, so never a label."""

SpanTuple = tuple[int, int, str]
"""(start token, end token exclusive, label)"""


class TagError(ValueError):
    """A tag that does not fit its scheme; `position` is its token index, so a reader can name the line."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(message)
        self.position = position


def line_error(path: str | Path, lineno: int, message: str) -> ValueError:
    """The error every reader raises for a bad line: it names the file and the 1-based line number."""
    return ValueError(f"{path}, line {lineno}: {message}")


def text_lines(path: str | Path) -> Iterator[str]:
    """The lines of a UTF-8 text file, line endings kept, a leading byte order mark dropped.

    A file that is not UTF-8 (UTF-16, Latin-1, binary) raises a ValueError naming the file and how to convert it.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for line in f:
                if "\x00" in line:
                    raise not_utf8(path)
                yield line
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def not_utf8(path: str | Path) -> ValueError:
    """The error for a file that is not UTF-8 text, with the iconv command that converts it."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head:
        guess, source = "UTF-16?", "UTF-16"
    else:
        guess, source = "Latin-1 or binary?", "LATIN1"
    return ValueError(
        f"{path} is not UTF-8 text ({guess}): convert it with `iconv -f {source} -t UTF-8 {path} > {path}.utf8` "
        "and read the converted file"
    )


def _split_tag(position: int, tag: str, scheme: str) -> tuple[str, str]:
    """`B-person-athlete` -> ("B", "person-athlete"): split on the first `-` only (types may contain `-`)."""
    prefixes = _PREFIXES[scheme]
    prefix, sep, label = tag.partition("-")
    wanted = "/".join(f"{p}-" for p in prefixes)
    if prefix not in prefixes and LETTER_PREFIX.match(tag):
        raise TagError(
            position, f"tag {tag!r} has the unknown prefix {prefix}-; scheme {scheme!r} reads {wanted} and O"
        )
    if not sep or prefix not in prefixes:
        raise TagError(
            position,
            f"tag {tag!r} is neither O nor a {wanted}<type> tag; if the file uses IO tags (bare types), "
            "read it with scheme 'io'",
        )
    if not label:
        raise TagError(position, f"tag {tag!r} has an empty type after its {prefix}- prefix")
    return prefix, label


def tags_to_spans(tags: Sequence[str], scheme: str) -> list[SpanTuple]:
    """Decode one sentence's tags into `(start, end, label)` spans; see `SCHEMES` for the schemes.

    Raises `TagError` for a tag the scheme cannot read (`io` reads any tag).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    spans: list[SpanTuple] = []
    start, label = -1, ""  # the open span, start -1 when none is open
    for i, tag in enumerate(tags):
        if tag == "O":
            prefix, tag_label = "O", ""
        elif scheme == "io":
            if LETTER_PREFIX.match(tag):
                raise TagError(
                    i,
                    f"tag {tag!r} has a {tag[:2]} prefix, but scheme 'io' reads bare types (it would make "
                    f"{tag!r} a label); read B-/I-/E-/S- tags with scheme 'bio' and fix any other prefix",
                )
            prefix, tag_label = "I", tag
        else:
            prefix, tag_label = _split_tag(i, tag, scheme)
        continues = start >= 0 and tag_label == label and prefix in ("I", "E")
        if scheme == "iob2" and prefix == "I" and not continues:
            raise TagError(
                i,
                f"tag {tag!r} opens an entity, but IOB2 opens every entity with B-; "
                "the file looks like IOB1 (read it with scheme 'iob1' or 'auto')",
            )
        if not continues:
            if start >= 0:
                spans.append((start, i, label))
            start, label = (-1, "") if prefix == "O" else (i, tag_label)
        if prefix in ("E", "S"):
            spans.append((start, i + 1, label))
            start, label = -1, ""
    if start >= 0:
        spans.append((start, len(tags), label))
    return spans


def make_doc(vocab: Vocab, words: Sequence[str], spans: Sequence[SpanTuple]) -> Doc:
    """A Doc of `words` joined by single spaces, with `spans` as its entities and every other token O."""
    doc = Doc(vocab, words=list(words), spaces=[True] * (len(words) - 1) + [False])
    doc.set_ents([Span(doc, start, end, label=label) for start, end, label in spans], default="outside")
    return doc
