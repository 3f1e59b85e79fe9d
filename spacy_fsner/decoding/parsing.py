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
    label: str | None = None
    """The label written after it (typed formats); None for per-label formats, or when no label was finished."""


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

    A typed format's entity also gets the label written after it (between `label_open` and `label_close`, before
    the next entity), and its score then also counts the tokens that wrote the label; an entity whose label was
    not finished has label None.
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
        position = match.end()
        ranges = [(byte_at[start], byte_at[end])]
        label = None
        if fmt.typed:
            label, label_range, position = _read_label(text, position, fmt)
            if label_range is not None:
                ranges.append((byte_at[label_range[0]], byte_at[label_range[1]]))
        if end > start:
            score = _span_logprob(ranges, token_ends, token_logprobs)
            parsed.entities.append(ScoredEntity(text[start:end], score, label))
    tail = re.search(f"{opener}(.*)$", text[position:], flags=re.DOTALL)
    if tail is not None:
        parsed.unterminated = _drop_partial_marker(tail.group(1), fmt.close).strip()
    return parsed


def _read_label(text: str, position: int, fmt: ResponseFormat) -> tuple[str | None, tuple[int, int] | None, int]:
    """The label written at `position` (after an entity's close marker): its text, its char range and where the
    text after it starts; (None, None, `position`) when no label terminator comes before the next entity."""
    terminator = fmt.label_close.strip()
    stop = text.find(terminator, position)
    following = text.find(fmt.open.strip(), position)
    if stop < 0 or (0 <= following < stop):
        return None, None, position
    raw = text[position:stop]
    if fmt.label_open.strip():
        raw = raw.replace(fmt.label_open.strip(), " ", 1)
    start = position + len(raw) - len(raw.lstrip())
    end = stop - (len(raw) - len(raw.rstrip()))
    return text[start:end], (start, end), stop + len(terminator)


def _drop_partial_marker(text: str, marker: str) -> str:
    """`text` without a cut-off start of `marker` at its end (generation stopped inside the marker)."""
    for size in range(len(marker) - 1, 0, -1):
        if text.endswith(marker[:size]):
            return text[:-size]
    return text


def _span_logprob(
    ranges: list[tuple[int, int]], token_ends: list[int] | None, token_logprobs: list[float] | None
) -> float:
    """Summed log-probability of the tokens that overlap any of the byte `ranges` (each token counted once)."""
    if not token_ends or not token_logprobs:
        return 0.0
    total, token_start = 0.0, 0
    for token_end, logprob in zip(token_ends, token_logprobs, strict=True):
        if any(token_start < byte_end and token_end > byte_start for byte_start, byte_end in ranges):
            total += logprob
        token_start = token_end
    return total
