"""Readers for one-token-per-line files: CoNLL (`token POS chunk NER`) and token-tag files (`token<TAB>tag`).

Both share one line parser: sentences end at blank or whitespace-only lines, `-DOCSTART-` lines separate
documents (they are not sentences), the token is the first column and the tag the last.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from spacy.tokens import Doc
from spacy.vocab import Vocab

from .spans import LETTER_PREFIX, TagError, line_error, make_doc, tags_to_spans, text_lines

DOCSTART = "-DOCSTART-"
CONLL_SCHEMES = ("auto", "iob1", "iob2")
TAGGED_SCHEMES = ("auto", "bio", "io")
_PREFIXED = re.compile(r"[BIES]-")


@dataclass
class _Sentence:
    words: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def check_scheme(scheme: str, allowed: tuple[str, ...], kind: str) -> None:
    """Fail early, with the allowed values, on a scheme a reader does not know."""
    if scheme not in allowed:
        raise ValueError(f"unknown tag scheme {scheme!r} for {kind} files; use one of {', '.join(allowed)}")


def split_columns(line: str) -> list[str]:
    """Columns of one line: tab-separated if it has a tab (tokens may then hold spaces), else space-separated.

    Only ASCII tabs and spaces separate, so tokens such as a no-break space or emoji survive.
    """
    text = line.rstrip("\r\n")
    return [column for column in text.split("\t" if "\t" in text else " ") if column]


def _read_sentences(path: str | Path, columns: int | None) -> list[_Sentence]:
    """Sentences of a column file; `columns` is the exact column count of a CoNLL file, None for a token-tag
    file (exactly a token and a tag). A file without sentences is an error."""
    sentences: list[_Sentence] = []
    current = _Sentence()
    for lineno, line in enumerate(text_lines(path), 1):
        cols = split_columns(line) if line.strip() else []
        if not cols or cols[0] == DOCSTART:
            if current.words:
                sentences.append(current)
                current = _Sentence()
            continue
        if columns is not None and len(cols) != columns:
            raise line_error(
                path,
                lineno,
                f"expected {columns} space-separated columns (token ... NER tag), found {len(cols)} in "
                f"{line.rstrip()!r}; set the reader's column count if the file has another layout (`columns` "
                "of read_conll and spacy_fsner.CoNLLCorpus.v1, `--columns` of convert), or read a "
                "token<TAB>tag file with format 'tagged'",
            )
        if len(cols) < 2:
            raise line_error(
                path,
                lineno,
                f"expected a token and a tag separated by a tab or a space, found {line.rstrip()!r}",
            )
        if columns is None and len(cols) > 2:
            raise line_error(
                path,
                lineno,
                f"{len(cols)} columns, expected 2 (token and tag) in {line.rstrip()!r}; a token with spaces "
                "needs a tab before its tag, a CoNLL file is read with format 'conll'",
            )
        current.words.append(cols[0])
        current.tags.append(cols[-1])
        current.lines.append(lineno)
    if current.words:
        sentences.append(current)
    if not sentences:
        raise ValueError(f"{path} has no sentences (it is empty or holds only blank and {DOCSTART} lines)")
    return sentences


def _to_docs(path: str | Path, sentences: list[_Sentence], vocab: Vocab, scheme: str) -> list[Doc]:
    docs = []
    for sentence in sentences:
        try:
            spans = tags_to_spans(sentence.tags, scheme)
        except TagError as error:
            raise line_error(path, sentence.lines[error.position], str(error)) from None
        docs.append(make_doc(vocab, sentence.words, spans))
    return docs


def read_conll(path: str | Path, vocab: Vocab, scheme: str = "auto", columns: int = 4) -> list[Doc]:
    """One Doc per sentence of a CoNLL file such as CoNLL-2003's `eng.train` (NER tag in the last column).

    scheme: "iob1" or "auto" to read B-/I- tags leniently (B- always opens an entity, I- opens one unless it
    continues an entity of its type), which decodes IOB1 and IOB2 alike; "auto" also reads BIOES. "iob2"
    also checks that every entity opens with B- (the error names the first line that does not).
    columns: the column count of every line (5 for CoNLL-2003 German).
    """
    check_scheme(scheme, CONLL_SCHEMES, "CoNLL")
    if columns < 2:
        raise ValueError(f"columns={columns}: a CoNLL line needs at least a token and a tag column")
    return _to_docs(path, _read_sentences(path, columns), vocab, "bio" if scheme == "auto" else scheme)


def read_tagged(path: str | Path, vocab: Vocab, scheme: str = "auto", strip_tag_prefix: str = "GATE-") -> list[Doc]:
    """One Doc per sentence of a token-tag file (Few-NERD sentences, GUM, CrossNER, tweets).

    scheme: "bio" for B-/I- (or BIOES) prefixed tags, "io" for bare types where adjacent tokens of one type
    form one entity (`person-athlete` is a type, not a prefix), "auto" to tell them apart from the tags.
    strip_tag_prefix: removed from the start of every tag before decoding; the default turns GUM's
    `GATE-person` into `person`. Pass "" to keep tags as they are.
    """
    check_scheme(scheme, TAGGED_SCHEMES, "token-tag")
    sentences = _read_sentences(path, None)
    if strip_tag_prefix:
        for sentence in sentences:
            sentence.tags = [tag.removeprefix(strip_tag_prefix) for tag in sentence.tags]
    if scheme == "auto":
        scheme = _detect_scheme(path, sentences)
    return _to_docs(path, sentences, vocab, scheme)


def _detect_scheme(path: str | Path, sentences: list[_Sentence]) -> str:
    """The scheme of a token-tag file: bio if every non-O tag has a B-/I-/E-/S- prefix, io if none has."""
    first: dict[bool, tuple[int, str]] = {}
    for sentence in sentences:
        for tag, lineno in zip(sentence.tags, sentence.lines, strict=True):
            if tag != "O" and LETTER_PREFIX.match(tag) and not _PREFIXED.match(tag):
                raise line_error(
                    path,
                    lineno,
                    f"tag {tag!r} has the unknown prefix {tag[:2]}; token-tag files use B-/I-/E-/S- or bare types",
                )
            if tag != "O":
                first.setdefault(bool(_PREFIXED.match(tag)), (lineno, tag))
        if len(first) == 2:
            (io_line, io_tag), (bio_line, bio_tag) = first[False], first[True]
            raise ValueError(
                f"{path}: mixes prefixed tags (line {bio_line}: {bio_tag!r}) and bare IO tags "
                f"(line {io_line}: {io_tag!r}); pass scheme 'bio' or 'io' to say which the file uses"
            )
    return "bio" if True in first else "io"
