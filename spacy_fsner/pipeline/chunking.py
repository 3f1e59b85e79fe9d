"""Cutting docs into the pieces one prompt sees: sentences, or windows that never cut a token."""

from __future__ import annotations

from spacy.tokens import Doc, Span

_BREAK_AFTER = {".", "!", "?", ";", "\n"}

MAX_CHUNK_TOKENS = 128
"""The default of every component's and task's `max_chunk_tokens`: the longest piece of text (spaCy tokens) that one
prompt holds when `doc.sents` is not set."""


def chunk_doc(doc: Doc, max_tokens: int) -> list[Span]:
    """`doc.sents` when sentence boundaries are set, else the whole doc; any piece longer than `max_tokens`
    spaCy tokens is split into windows, preferably after sentence-final punctuation. Whitespace-only pieces are
    skipped (they can hold no entity); nothing else is dropped.
    """
    if max_tokens < 1:
        raise ValueError(f"max_chunk_tokens must be >= 1, got {max_tokens}")
    units = list(doc.sents) if doc.has_annotation("SENT_START") else [doc[:]]
    chunks: list[Span] = []
    for unit in units:
        start = unit.start
        while start < unit.end:
            end = min(start + max_tokens, unit.end)
            if end < unit.end:
                end = _last_break(doc, start, end)
            window = doc[start:end]
            if not all(token.is_space for token in window):
                chunks.append(window)
            start = end
    return chunks


def _last_break(doc: Doc, start: int, end: int) -> int:
    """The end of the last sentence-like piece in doc[start:end], if one ends in its second half."""
    for i in range(end - 1, start + (end - start) // 2 - 1, -1):
        if doc[i].text.strip() in _BREAK_AFTER or "\n" in doc[i].whitespace_ + doc[i].text:
            return i + 1
    return end


def token_boundaries(chunk: Span) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Char offsets, relative to the chunk's text, where an entity may start and end (non-space tokens)."""
    base = chunk.start_char
    tokens = [token for token in chunk if not token.is_space]
    return tuple(t.idx - base for t in tokens), tuple(t.idx + len(t.text) - base for t in tokens)
