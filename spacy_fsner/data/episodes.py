"""Few-NERD episode files: one JSON object per line, `{"support": {"word": [[...]], "label": [[...]]},
"query": {...}, "types": [...]}`, with IO labels ("O" outside; tokens of types outside `types` are "O").
"""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spacy.tokens import Doc
from spacy.vocab import Vocab

from .spans import line_error, make_doc, tags_to_spans, text_lines


@dataclass
class Episode:
    """One N-way K-shot episode: labelled support sentences, the query sentences to tag, and the N types."""

    support: list[Doc]
    query: list[Doc]
    types: list[str]


def read_episodes(path: str | Path, vocab: Vocab) -> Iterator[Episode]:
    """Episodes of a Few-NERD JSONL file, in file order, checked line by line.

    A line that is not an episode (bad JSON, missing keys, words and labels of different lengths, a label that
    is not one of the episode's types, a type without a mention in the support set) raises a ValueError naming
    the file and line.
    """
    for lineno, line in enumerate(text_lines(path), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise line_error(
                path,
                lineno,
                f"not valid JSON ({error.msg}, column {error.colno}); expected one episode object "
                '{"support": ..., "query": ..., "types": [...]} per line',
            ) from None
        yield _episode(path, lineno, data, vocab)


def _episode(path: str | Path, lineno: int, data: Any, vocab: Vocab) -> Episode:
    if not isinstance(data, dict) or not {"support", "query", "types"} <= data.keys():
        raise line_error(path, lineno, 'expected an object with the keys "support", "query" and "types"')
    types = data["types"]
    if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
        raise line_error(path, lineno, f'"types" must be a non-empty list of type names, found {types!r}')
    duplicates = sorted({t for t in types if types.count(t) > 1})
    if duplicates:
        raise line_error(path, lineno, f'"types" lists {", ".join(map(repr, duplicates))} more than once')
    support = _sentences(path, lineno, "support", data["support"], types, vocab)
    query = _sentences(path, lineno, "query", data["query"], types, vocab)
    mentioned = {ent.label_ for doc in support for ent in doc.ents}
    missing = [t for t in types if t not in mentioned]
    if missing:
        raise line_error(
            path,
            lineno,
            f"type(s) {', '.join(map(repr, missing))} have no example in the support set; every type in "
            '"types" needs at least one labelled mention (add a support sentence or drop the type)',
        )
    return Episode(support=support, query=query, types=list(types))


def _sentences(path: str | Path, lineno: int, part: str, data: Any, types: list[str], vocab: Vocab) -> list[Doc]:
    """The Docs of one half ("support" or "query") of an episode."""
    if not (isinstance(data, dict) and isinstance(data.get("word"), list) and isinstance(data.get("label"), list)):
        raise line_error(path, lineno, f'"{part}" must be an object with the lists "word" and "label"')
    words_per_sentence, labels_per_sentence = data["word"], data["label"]
    if len(words_per_sentence) != len(labels_per_sentence):
        raise line_error(
            path,
            lineno,
            f'"{part}" has {len(words_per_sentence)} word lists but {len(labels_per_sentence)} label lists',
        )
    known = set(types)
    docs = []
    for number, (words, labels) in enumerate(zip(words_per_sentence, labels_per_sentence, strict=True), 1):
        where = f"{part} sentence {number}"
        if not isinstance(words, list) or not isinstance(labels, list) or len(words) != len(labels):
            raise line_error(path, lineno, f"{where}: expected lists of words and labels of the same length")
        if not words or not all(isinstance(w, str) and w for w in words):
            raise line_error(path, lineno, f"{where}: expected a non-empty list of non-empty word strings")
        unknown = next((label for label in labels if label != "O" and label not in known), None)
        if unknown is not None:
            raise line_error(
                path, lineno, f"{where}: label {unknown!r} is neither O nor one of the episode's types {types}"
            )
        docs.append(make_doc(vocab, words, tags_to_spans(labels, "io")))
    return docs


def episode_to_json(episode: Episode) -> dict[str, Any]:
    """Few-NERD's JSON object for one episode (IO labels: touching entities of one type become one)."""
    known = set(episode.types)

    def part(docs: list[Doc]) -> dict[str, list[list[str]]]:
        labels = [[token.ent_type_ or "O" for token in doc] for doc in docs]
        stray = {label for sentence in labels for label in sentence if label != "O" and label not in known}
        if stray:
            raise ValueError(
                f"episode with types {episode.types} has entities of other types {sorted(stray)}; "
                "Few-NERD's format only labels the episode's types"
            )
        return {"word": [[token.text for token in doc] for doc in docs], "label": labels}

    return {"support": part(episode.support), "query": part(episode.query), "types": list(episode.types)}


def write_episodes(path: str | Path, episodes: Iterable[Episode]) -> int:
    """Write episodes in Few-NERD's JSONL format (`json.dumps` defaults, no trailing newline, as the official
    files); returns how many were written."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        for count, episode in enumerate(episodes, 1):
            f.write(("\n" if count > 1 else "") + json.dumps(episode_to_json(episode)))
    return count
