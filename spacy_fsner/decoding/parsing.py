"""Reading entity strings, with their scores, out of a generated response."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..ty import Generation, ResponseFormat
from .constraint import char_to_byte_offsets


@dataclass(frozen=True)
class ScoredEntity:
    """An entity string as the model wrote it, with the log-probability of the tokens that wrote it."""

    text: str
    score: float


@dataclass
class ParsedResponse:
    entities: list[ScoredEntity] = field(default_factory=list)
    unterminated: str | None = None
    """Text after an opening marker that was never closed (generation hit `max_new_tokens`)."""


def parse_generation(generation: Generation) -> ParsedResponse:
    """The entities of what the model wrote for one request, each scored by the tokens that wrote it."""
    return parse_response(generation.text, generation.fmt, generation.token_ends, generation.token_logprobs)


def parse_response(
    text: str, fmt: ResponseFormat, token_ends: list[int] | None = None, token_logprobs: list[float] | None = None
) -> ParsedResponse:
    """Entities between `fmt`'s markers, in order.

    The markers are matched without their surrounding spaces so responses of unconstrained models parse too.
    With `token_ends` (byte offset where each generated token ends) and `token_logprobs`, an entity's score is
    the summed log-probability of every token that wrote part of it; otherwise the score is 0. Offsets may run
    past the end of `text` (a character cut off at the end of the generation is not part of it).
    """
    parsed = ParsedResponse()
    if fmt.open.strip() not in text:  # no entity (the common answer): skip the regular expressions
        return parsed
    opener, closer = re.escape(fmt.open.strip()), re.escape(fmt.close.strip())
    byte_at = char_to_byte_offsets(text)
    position = 0
    for match in re.finditer(f"{opener}(.*?){closer}", text, flags=re.DOTALL):
        raw = match.group(1)
        start = match.start(1) + len(raw) - len(raw.lstrip())
        end = match.end(1) - (len(raw) - len(raw.rstrip()))
        if end > start:
            score = _span_logprob(byte_at[start], byte_at[end], token_ends, token_logprobs)
            parsed.entities.append(ScoredEntity(text[start:end], score))
        position = match.end()
    tail = re.search(f"{opener}(.*)$", text[position:], flags=re.DOTALL)
    if tail is not None:
        parsed.unterminated = _drop_partial_marker(tail.group(1), fmt.close).strip()
    return parsed


def _drop_partial_marker(text: str, marker: str) -> str:
    """`text` without a cut-off start of `marker` at its end (generation stopped inside the marker)."""
    for size in range(len(marker) - 1, 0, -1):
        if text.endswith(marker[:size]):
            return text[:-size]
    return text


def _span_logprob(
    byte_start: int, byte_end: int, token_ends: list[int] | None, token_logprobs: list[float] | None
) -> float:
    if not token_ends or not token_logprobs:
        return 0.0
    total, token_start = 0.0, 0
    for token_end, logprob in zip(token_ends, token_logprobs, strict=True):
        if token_start < byte_end and token_end > byte_start:
            total += logprob
        token_start = token_end
    return total
