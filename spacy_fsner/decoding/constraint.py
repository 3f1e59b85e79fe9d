"""The response grammar as a byte automaton, and the tokens it allows next.

A response is `(OPEN entity CLOSE)* END`, e.g. ` <<< Angela Merkel >>> <im_end>`. Inside an entity the automaton
tracks every position of the source text the bytes written so far could be copied from, restricted to positions
where a (spaCy) token starts; CLOSE may only follow when one of those copies also ends where a token ends. So
every entity is a contiguous, token-aligned substring of the input, whichever way the tokenizer splits it.

Entities are written in the order of the text, without overlap: each must start at or after the end of the
earliest place the previous one can be copied from (`between` and the marker states carry that byte offset). That
is the order training answers use (gold entities in text order) and the order alignment places them in, and it
stops a model from writing the same entity again and again until `max_new_tokens` runs out (a string written
more often than it occurs could not be placed anyway).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .vocab import TokenTrie

State = tuple
StateSet = frozenset

DONE: State = ("done",)


@dataclass(frozen=True)
class ResponseFormat:
    """How a response writes its entities: `open` + entity + `close`, repeated, then `end`.

    `end` may be empty: the response then ends with the tokenizer's end-of-sequence token only.
    """

    open: str = " <<< "
    close: str = " >>>"
    end: str = " <im_end>"

    def __post_init__(self) -> None:
        if not self.open.strip() or not self.close.strip():
            raise ValueError(
                f"ResponseFormat needs visible entity markers, got open={self.open!r} close={self.close!r}; "
                "use e.g. open=' <<< ', close=' >>>'."
            )

    def render(self, entities: Iterable[str]) -> str:
        """The response text that lists `entities` (what the model is trained to write)."""
        return "".join(f"{self.open}{text}{self.close}" for text in entities) + self.end


class SubstringConstraint:
    """Which bytes, and so which tokens, may come next in a response about one source text.

    `starts`/`ends` are the character offsets where an entity may start/end (token boundaries).
    """

    def __init__(
        self, fmt: ResponseFormat, source: str, starts: Iterable[int], ends: Iterable[int], trie: TokenTrie
    ) -> None:
        self.open, self.close, self.end = (m.encode("utf-8") for m in (fmt.open, fmt.close, fmt.end))
        self.source = source.encode("utf-8")
        char_to_byte = char_to_byte_offsets(source)
        self.starts = frozenset(char_to_byte[i] for i in starts)
        self.ends = frozenset(char_to_byte[i] for i in ends)
        self.trie = trie
        self._allowed: dict[StateSet, list[int]] = {}

    def initial(self) -> StateSet:
        return frozenset({("between", 0)})

    def can_stop(self, states: StateSet) -> bool:
        """End-of-sequence is allowed between entities and after the end marker."""
        return DONE in states or any(state[0] == "between" for state in states)

    @staticmethod
    def is_done(states: StateSet) -> bool:
        return DONE in states

    def advance(self, states: StateSet, token_id: int) -> StateSet:
        for b in self.trie.token_bytes[token_id] or b"":
            states = self._step(states, b)
        return states

    def allowed_tokens(self, states: StateSet) -> list[int]:
        """Sorted ids of the tokens whose bytes keep the response inside the grammar."""
        cached = self._allowed.get(states)
        if cached is not None:
            return cached
        allowed: list[int] = []
        stack = [(self.trie.root, states)]
        while stack:
            node, current = stack.pop()
            for b in self._next_bytes(current):
                child = node.children.get(b)
                if child is None:
                    continue
                following = self._step(current, b)
                if following:
                    allowed.extend(child.token_ids)
                    stack.append((child, following))
        allowed.sort()
        self._allowed[states] = allowed
        return allowed

    def _next_bytes(self, states: StateSet) -> set[int]:
        out: set[int] = set()
        for state in states:
            kind = state[0]
            if kind == "between":
                if self._can_start(state[1]):
                    out.add(self.open[0])
                if self.end:
                    out.add(self.end[0])
            elif kind == "open":
                out.add(self.open[state[1]])
            elif kind == "end":
                out.add(self.end[state[1]])
            elif kind == "close":
                out.add(self.close[state[1]])
            elif kind == "entity":
                _, length, positions = state
                out.update(self.source[p + length] for p in positions if p + length < len(self.source))
                if self._closable(length, positions):
                    out.add(self.close[0])
        return out

    def _closable(self, length: int, positions: frozenset[int]) -> bool:
        return length > 0 and any(p + length in self.ends for p in positions)

    def _can_start(self, min_start: int) -> bool:
        return any(p >= min_start for p in self.starts)

    def _next_start(self, length: int, positions: frozenset[int]) -> int:
        """Where the next entity may start: after the earliest occurrence this entity can close at."""
        return min(p for p in positions if p + length in self.ends) + length

    def _step(self, states: StateSet, b: int) -> StateSet:
        out: set[State] = set()
        for state in states:
            kind = state[0]
            if kind == "between":
                if b == self.open[0] and self._can_start(state[1]):
                    out.add(self._after_open(1, state[1]))
                if self.end and b == self.end[0]:
                    out.add(self._after_end(1))
            elif kind == "open" and b == self.open[state[1]]:
                out.add(self._after_open(state[1] + 1, state[2]))
            elif kind == "end" and b == self.end[state[1]]:
                out.add(self._after_end(state[1] + 1))
            elif kind == "close" and b == self.close[state[1]]:
                out.add(self._after_close(state[1] + 1, state[2]))
            elif kind == "entity":
                _, length, positions = state
                kept = frozenset(p for p in positions if p + length < len(self.source) and self.source[p + length] == b)
                if kept:
                    out.add(("entity", length + 1, kept))
                if b == self.close[0] and self._closable(length, positions):
                    out.add(self._after_close(1, self._next_start(length, positions)))
        return frozenset(out)

    def _after_open(self, matched: int, min_start: int) -> State:
        if matched < len(self.open):
            return ("open", matched, min_start)
        return ("entity", 0, frozenset(p for p in self.starts if p >= min_start))

    def _after_end(self, matched: int) -> State:
        return DONE if matched == len(self.end) else ("end", matched)

    def _after_close(self, matched: int, min_start: int) -> State:
        return ("between", min_start) if matched == len(self.close) else ("close", matched, min_start)


def char_to_byte_offsets(text: str) -> list[int]:
    """Byte offset of every character offset 0..len(text) in the UTF-8 encoding of `text`."""
    if text.isascii():
        return list(range(len(text) + 1))
    offsets = [0]
    for ch in text:
        offsets.append(offsets[-1] + len(ch.encode("utf-8")))
    return offsets
