"""Public entry to the data readers, and their spaCy registrations for `[corpora]` blocks of a config.

Formats: CoNLL (`read_conll`), token-tag files (`read_tagged`) and Few-NERD episode JSONL (`read_episodes`,
`write_episodes`, `Episode`). All give one Doc per sentence, its text the tokens joined by single spaces.
"""

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.vocab import Vocab

from .columns import (
    CONLL_SCHEMES,
    DOCSTART,
    TAGGED_SCHEMES,
    check_scheme,
    read_conll,
    read_tagged,
    split_columns,
)
from .episodes import Episode, read_episodes, write_episodes
from .spans import text_lines

__all__ = [
    "FORMATS",
    "Episode",
    "conll_corpus_v1",
    "detect_format",
    "episode_corpus_v1",
    "read_conll",
    "read_docs",
    "read_episodes",
    "read_tagged",
    "tagged_corpus_v1",
    "write_episodes",
]

FORMATS = ("auto", "conll", "tagged", "episodes")


def detect_format(path: str | Path) -> str:
    """Guess a file's format from its first data line: "episodes" for a JSON object, "conll" for 4
    space-separated columns, else "tagged"."""
    for line in text_lines(path):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            return "episodes"
        cols = split_columns(line)
        if cols[0] == DOCSTART:
            continue
        return "conll" if "\t" not in line and len(cols) == 4 else "tagged"
    raise ValueError(f"{path} holds no sentences; cannot tell its format (pass the format explicitly)")


def read_docs(
    path: str | Path,
    vocab: Vocab,
    format: str = "auto",
    scheme: str = "auto",
    strip_tag_prefix: str = "GATE-",
    include_support: bool = False,
    columns: int = 4,
) -> list[Doc]:
    """The sentences of a file in any supported format as Docs (for episodes: every query sentence, and the
    support sentences too with `include_support`). `scheme` is the tag scheme of the chosen format, `columns`
    the column count of a CoNLL file."""
    if format not in FORMATS:
        raise ValueError(f"unknown data format {format!r}; use one of {', '.join(FORMATS)}")
    if format == "auto":
        format = detect_format(path)
    if format == "conll":
        return read_conll(path, vocab, scheme=scheme, columns=columns)
    if format == "tagged":
        return read_tagged(path, vocab, scheme=scheme, strip_tag_prefix=strip_tag_prefix)
    if scheme not in ("auto", "io"):
        raise ValueError(
            f"episode files are IO-tagged; scheme {scheme!r} does not apply to {path} (use 'auto' or 'io')"
        )
    docs = list(_episode_docs(read_episodes(path, vocab), include_support))
    if not docs:
        raise ValueError(f"{path} has no sentences (no episode, or episodes without query sentences)")
    return docs


def read_corpus(
    data: str | Path,
    nlp: Language,
    *,
    data_format: str = "auto",
    scheme: str = "auto",
    limit: int = 0,
    include_support: bool = False,
) -> list[Doc]:
    """The gold docs of a DocBin (`.spacy`) or of any file `read_docs` reads (an episode file gives its query
    sentences, and its support sentences too with `include_support`); only the first `limit` with limit > 0."""
    if Path(data).suffix == ".spacy":
        docs: Iterable[Doc] = DocBin().from_disk(data).get_docs(nlp.vocab)
    else:
        docs = read_docs(data, nlp.vocab, format=data_format, scheme=scheme, include_support=include_support)
    result = list(islice(docs, limit or None))
    if not result:
        raise ValueError(f"The corpus {data} has no docs: check the file (an empty DocBin?) and its path.")
    return result


def _episode_docs(episodes: Iterable[Episode], include_support: bool) -> Iterator[Doc]:
    for episode in episodes:
        if include_support:
            yield from episode.support
        yield from episode.query


def _corpus(
    path: Path, read: Callable[[Vocab], Iterable[Doc]], gold_preproc: bool, limit: int
) -> Callable[[Language], Iterator[Example]]:
    """A corpus callable like `spacy.Corpus.v1`'s: it reads `path` anew on each call, with nlp's vocab."""
    if not Path(path).is_file():
        raise ValueError(f"corpus file {path} does not exist; check its path in the config's [corpora] block")
    if limit < 0:
        raise ValueError(f"limit={limit}: use 0 for no limit or a positive number of examples")

    def examples(nlp: Language) -> Iterator[Example]:
        for count, reference in enumerate(read(nlp.vocab), 1):
            if gold_preproc:
                spaces = [bool(token.whitespace_) for token in reference]
                predicted = Doc(nlp.vocab, words=[token.text for token in reference], spaces=spaces)
            else:
                predicted = nlp.make_doc(reference.text)
            yield Example(predicted, reference)
            if count == limit:
                return

    return examples


@spacy.registry.readers("spacy_fsner.CoNLLCorpus.v1")
def conll_corpus_v1(
    path: Path, scheme: str = "auto", columns: int = 4, gold_preproc: bool = True, limit: int = 0
) -> Callable[[Language], Iterator[Example]]:
    """Examples from a CoNLL file (see `read_conll` for scheme and columns).

    gold_preproc: predicted docs keep the file's tokens, as the benchmarks score them; False re-tokenizes the
    text with the pipeline's tokenizer. limit: stop after this many examples (0: all).
    """
    check_scheme(scheme, CONLL_SCHEMES, "CoNLL")
    return _corpus(path, lambda vocab: read_conll(path, vocab, scheme=scheme, columns=columns), gold_preproc, limit)


@spacy.registry.readers("spacy_fsner.TaggedCorpus.v1")
def tagged_corpus_v1(
    path: Path,
    scheme: str = "auto",
    strip_tag_prefix: str = "GATE-",
    gold_preproc: bool = True,
    limit: int = 0,
) -> Callable[[Language], Iterator[Example]]:
    """Examples from a token-tag file (see `read_tagged` for scheme and strip_tag_prefix; `conll_corpus_v1`
    for gold_preproc and limit)."""
    check_scheme(scheme, TAGGED_SCHEMES, "token-tag")
    return _corpus(
        path,
        lambda vocab: read_tagged(path, vocab, scheme=scheme, strip_tag_prefix=strip_tag_prefix),
        gold_preproc,
        limit,
    )


@spacy.registry.readers("spacy_fsner.EpisodeCorpus.v1")
def episode_corpus_v1(
    path: Path, include_support: bool = False, gold_preproc: bool = True, limit: int = 0
) -> Callable[[Language], Iterator[Example]]:
    """Examples from the query sentences of every episode of a Few-NERD JSONL file, each episode's support
    sentences first with include_support (see `conll_corpus_v1` for gold_preproc and limit)."""
    return _corpus(path, lambda vocab: _episode_docs(read_episodes(path, vocab), include_support), gold_preproc, limit)
