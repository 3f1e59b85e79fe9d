"""Placing generated entity strings back into the source text, in order of appearance."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field


@dataclass
class Alignment:
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    """(index of the string, start char, end char) for every string that was placed."""
    unplaced: list[int] = field(default_factory=list)
    """Strings that occur nowhere in the source on token boundaries."""
    repeated: list[int] = field(default_factory=list)
    """Strings written more often than they occur: every occurrence was already taken."""


def align_in_order(
    source: str, strings: Sequence[str], starts: Collection[int], ends: Collection[int]
) -> Alignment:
    """Map each string to an occurrence in `source` that starts and ends on a token boundary.

    Strings are taken in the order the model wrote them: each goes to its first free occurrence after the
    previous placement, so "B ... A ... B" with output "A, B" puts B on its second occurrence. When the output
    order does not allow it, the first free occurrence anywhere is used.
    """
    result = Alignment()
    taken: set[tuple[int, int]] = set()
    cursor = 0
    for index, string in enumerate(strings):
        occurrences = _occurrences(source, string, starts, ends)
        free = [start for start in occurrences if (start, start + len(string)) not in taken]
        if not occurrences:
            result.unplaced.append(index)
            continue
        if not free:
            result.repeated.append(index)
            continue
        start = next((s for s in free if s >= cursor), free[0])
        end = start + len(string)
        taken.add((start, end))
        result.spans.append((index, start, end))
        cursor = end
    return result


def _occurrences(source: str, string: str, starts: Collection[int], ends: Collection[int]) -> list[int]:
    found, position = [], source.find(string) if string else -1
    while position != -1:
        if position in starts and position + len(string) in ends:
            found.append(position)
        position = source.find(string, position + 1)
    return found
