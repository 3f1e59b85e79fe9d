"""The response grammar as a byte automaton, and the tokens it allows next.

A response is `(OPEN entity CLOSE)* END`, e.g. ` <<< Angela Merkel >>> <im_end>`. Inside an entity the automaton
tracks every position of the source text the bytes written so far could be copied from, restricted to positions
where a (spaCy) token starts; CLOSE may only follow when one of those copies also ends where a token ends. So
every entity is a contiguous, token-aligned substring of the input, whichever way the tokenizer splits it.

Entities are expected in the order of the text, without overlap (the order of the training answers and of
alignment): the states carry the byte offset where the next entity should start. An entity that can only be copied
from before that offset (a repeat, or one out of order) is kept, but the response ends after it. So a model that
starts writing the same entity over and over stops at once instead of running until `max_new_tokens`; the repeat
is reported as `repeated` by alignment, as it was before.

A typed format (the joint template) writes each entity's label after CLOSE: `(OPEN entity CLOSE LOPEN label
LCLOSE)* END`, where `label` walks a byte trie of the format's `labels`, so only one of the task's label names,
whole, can follow an entity. The order rule is the same; a repeated entity ends the response after its label.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..ty import ResponseFormat
from .vocab import TokenTrie

State = tuple
StateSet = frozenset

DONE: State = ("done",)


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
        self.typed = fmt.typed
        self.label_open, self.label_close = fmt.label_open.encode("utf-8"), fmt.label_close.encode("utf-8")
        if self.typed and not fmt.labels:
            raise ValueError("A typed response format needs the labels a response may use (`ResponseFormat.labels`).")
        self.label_names = frozenset(label.encode("utf-8") for label in fmt.labels)
        self.label_next: dict[bytes, set[int]] = {}  # the byte trie of the label names: prefix -> next bytes
        for name in self.label_names:
            for i in range(len(name)):
                self.label_next.setdefault(name[:i], set()).add(name[i])
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
                out.add(self.open[0])
                if self.end:
                    out.add(self.end[0])
            elif kind == "open":
                out.add(self.open[state[1]])
            elif kind == "end":
                out.add(self.end[state[1]])
            elif kind == "close":
                out.add(self.close[state[1]])
            elif kind == "lopen":
                out.add(self.label_open[state[1]])
            elif kind == "lclose":
                out.add(self.label_close[state[1]])
            elif kind == "label":
                out.update(self.label_next.get(state[1], ()))
                if state[1] in self.label_names:
                    out.add(self.label_close[0])
            elif kind == "entity":
                _, length, positions, _ = state
                out.update(self.source[p + length] for p in positions if p + length < len(self.source))
                if self._closable(length, positions):
                    out.add(self.close[0])
        return out

    def _closable(self, length: int, positions: frozenset[int]) -> bool:
        return length > 0 and any(p + length in self.ends for p in positions)

    def _next_start(self, length: int, positions: frozenset[int], min_start: int) -> int | None:
        """Where the entity after this one should start: after this one's earliest occurrence at or after
        `min_start`; None when it has none there (the response then ends after it)."""
        ahead = [p for p in positions if p >= min_start and p + length in self.ends]
        return min(ahead) + length if ahead else None

    def _step(self, states: StateSet, b: int) -> StateSet:
        out: set[State] = set()
        for state in states:
            kind = state[0]
            if kind == "between":
                if b == self.open[0]:
                    out.add(self._after_open(1, state[1]))
                if self.end and b == self.end[0]:
                    out.add(self._after_end(1))
            elif kind == "open" and b == self.open[state[1]]:
                out.add(self._after_open(state[1] + 1, state[2]))
            elif kind == "end" and b == self.end[state[1]]:
                out.add(self._after_end(state[1] + 1))
            elif kind == "close" and b == self.close[state[1]]:
                out.add(self._after_close(state[1] + 1, state[2]))
            elif kind == "lopen" and b == self.label_open[state[1]]:
                out.add(self._after_label_open(state[1] + 1, state[2]))
            elif kind == "lclose" and b == self.label_close[state[1]]:
                out.add(self._after_label_close(state[1] + 1, state[2]))
            elif kind == "label":
                _, written, min_start = state
                if b in self.label_next.get(written, ()):
                    out.add(("label", written + bytes((b,)), min_start))
                if written in self.label_names and b == self.label_close[0]:
                    out.add(self._after_label_close(1, min_start))
            elif kind == "entity":
                _, length, positions, min_start = state
                kept = frozenset(p for p in positions if p + length < len(self.source) and self.source[p + length] == b)
                if kept:
                    out.add(("entity", length + 1, kept, min_start))
                if b == self.close[0] and self._closable(length, positions):
                    out.add(self._after_close(1, self._next_start(length, positions, min_start)))
        return frozenset(out)

    def _after_open(self, matched: int, min_start: int) -> State:
        return ("entity", 0, self.starts, min_start) if matched == len(self.open) else ("open", matched, min_start)

    def _after_end(self, matched: int) -> State:
        return DONE if matched == len(self.end) else ("end", matched)

    def _after_close(self, matched: int, min_start: int | None) -> State:
        if matched < len(self.close):
            return ("close", matched, min_start)
        if self.typed:
            return self._after_label_open(0, min_start)
        return DONE if min_start is None else ("between", min_start)

    def _after_label_open(self, matched: int, min_start: int | None) -> State:
        return ("lopen", matched, min_start) if matched < len(self.label_open) else ("label", b"", min_start)

    def _after_label_close(self, matched: int, min_start: int | None) -> State:
        if matched < len(self.label_close):
            return ("lclose", matched, min_start)
        return DONE if min_start is None else ("between", min_start)


def char_to_byte_offsets(text: str) -> list[int]:
    """Byte offset of every character offset 0..len(text) in the UTF-8 encoding of `text`."""
    if text.isascii():
        return list(range(len(text) + 1))
    offsets = [0]
    for ch in text:
        offsets.append(offsets[-1] + len(ch.encode("utf-8")))
    return offsets
