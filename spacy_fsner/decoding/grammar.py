"""The response grammar of one request as a context-free grammar, for servers that constrain decoding themselves.

`SubstringConstraint` walks the response grammar byte by byte inside this process. A vLLM server (and any engine
with xgrammar or llama.cpp's GBNF) takes the constraint per request as a grammar instead; `response_grammar` writes
the same language in that EBNF, so that the server allows exactly the responses the constraint allows: the same
markers, entities that are contiguous substrings of the source on token boundaries, one of the format's labels
after each entity (typed formats), the end marker, and the order rule (an entity that can only be copied from
before the end of the previous one ends the response after it).

The grammar is O(n) in the number of boundaries (spaCy token starts and ends) of the source:

- `c{b}`: an entity written up to boundary `b`; it may close there when `b` ends a token, or go on with the exact
  text up to the next boundary. It does not depend on where the entity started, so one rule per boundary serves all
  entities that reach it (and `t{b}`, its twin, for entities after which the response ends).
- `g{p}`: any entity that starts at or after start `p` (`e{p}`, the entity from `p`, or `g` of the next start);
  `h{p}` the same for the entities that start at or before `p`.
- `r{k}`: the rest of a response whose next entity must start at or after `k`: nothing (end-of-sequence), the end
  marker, an entity from `g` (then `r` of where it ends), or an entity that starts before `k` only (then nothing
  more).

An entity string may occur at several starts; the grammar lets each occurrence continue with the `r` of where it
ends, and the union of those is the `r` of the earliest end (a later `k` allows fewer continuations), which is the
one the constraint keeps (`SubstringConstraint._next_start`). An occurrence before `k` ends the response, which adds
nothing for a string that also occurs at or after `k` (the continuation may stop at once).
"""

from __future__ import annotations

from bisect import bisect_left

from ..ty import GenerationRequest, ResponseFormat


def response_grammar(request: GenerationRequest) -> str:
    """The EBNF (xgrammar / GBNF) of every response `request` allows: the language of `SubstringConstraint` over
    its source, starts, ends and format. The first rule is `root`."""
    return _Builder(request.source, request.starts, request.ends, request.fmt).grammar()


def literal(text: str) -> str:
    """`text` as an EBNF string literal: quotes and backslashes escaped, control characters (and other
    non-printable ones) as `\\uXXXX`/`\\UXXXXXXXX`, everything else as it is (UTF-8 in the grammar)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable() and ch != "\x7f":
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


class _Builder:
    def __init__(self, source: str, starts, ends, fmt: ResponseFormat) -> None:
        if fmt.typed and not fmt.labels:
            raise ValueError("A typed response format needs the labels a response may use (`ResponseFormat.labels`).")
        self.source = source
        self.ends = set(ends)
        last = max(self.ends, default=0)
        self.starts = sorted(p for p in set(starts) if p < last)  # an entity from a later start could never close
        self.boundaries = sorted({*self.starts, *self.ends})
        self.fmt = fmt
        self.rules: list[str] = []

    def grammar(self) -> str:
        self.rules = ["root ::= r0"]
        self.rules.append(f"close ::= {self._close()}")
        if self.starts:
            self._entity_rules()
        for k in sorted({0, *self.ends}):
            self._rest_rule(k)
        return "\n".join(self.rules) + "\n"

    def _close(self) -> str:
        """The close marker, and for a typed format the label after it."""
        if not self.fmt.typed:
            return literal(self.fmt.close)
        labels = " | ".join(literal(label) for label in self.fmt.labels)
        return f"{literal(self.fmt.close + self.fmt.label_open)} ({labels}) {literal(self.fmt.label_close)}"

    def _segment(self, b: int) -> tuple[str, int]:
        """The source text from boundary `b` to the next one, and that boundary."""
        following = self.boundaries[bisect_left(self.boundaries, b) + 1]  # a search, not a scan: O(n log n) in all
        return literal(self.source[b:following]), following

    def _entity_rules(self) -> None:
        for b in self.boundaries:
            if b <= self.starts[0]:  # no entity has been written up to here
                continue
            going_on, stopping = [], []
            if b in self.ends:
                going_on.append(f"close r{b}")
                stopping.append("close")
            if b < self.boundaries[-1]:
                text, following = self._segment(b)
                going_on.append(f"{text} c{following}")
                stopping.append(f"{text} t{following}")
            self.rules.append(f"c{b} ::= {' | '.join(going_on)}")
            self.rules.append(f"t{b} ::= {' | '.join(stopping)}")
        for i, p in enumerate(self.starts):
            text, following = self._segment(p)
            self.rules.append(f"e{p} ::= {text} c{following}")
            self.rules.append(f"s{p} ::= {text} t{following}")
            later = f" | g{self.starts[i + 1]}" if i + 1 < len(self.starts) else ""
            self.rules.append(f"g{p} ::= e{p}{later}")
            earlier = f" | h{self.starts[i - 1]}" if i > 0 else ""
            self.rules.append(f"h{p} ::= s{p}{earlier}")

    def _rest_rule(self, k: int) -> None:
        alternatives = ['""']
        if self.fmt.end:
            alternatives.append(literal(self.fmt.end))
        opener = literal(self.fmt.open)
        at = bisect_left(self.starts, k)
        if at < len(self.starts):
            alternatives.append(f"{opener} g{self.starts[at]}")
        if at > 0:
            alternatives.append(f"{opener} h{self.starts[at - 1]}")
        self.rules.append(f"r{k} ::= {' | '.join(alternatives)}")
