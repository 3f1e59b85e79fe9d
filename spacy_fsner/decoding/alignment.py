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


def align_in_order(source: str, strings: Sequence[str], starts: Collection[int], ends: Collection[int]) -> Alignment:
    """Map each string to an occurrence in `source` that starts and ends on a token boundary.

    Strings are taken in the order the model wrote them: each goes to its first free occurrence after the
    previous placement, so "B ... A ... B" with output "A, B" puts B on its second occurrence. When the output
    order does not allow it, the first free occurrence anywhere is used.
    """
    return _place(strings, _all_occurrences(source, strings, starts, ends), ())


def align_jointly(
    source: str, answers: Sequence[Sequence[str]], starts: Collection[int], ends: Collection[int]
) -> list[Alignment]:
    """`align_in_order` for the answers of several labels about one source, placed so that they collide less.

    `answers[k]` are the strings written for label k; the result holds one `Alignment` per label, in that order.
    Every label is first placed on its own, exactly as `align_in_order` places it. Then a label with a string
    that overlaps a placed string of another label is placed again, in order, with every string preferring an
    occurrence that is free for its label and overlaps no other label's placed string (the first after the
    previous placement, else the first anywhere). So a string in conflict yields to such an occurrence when
    there is one, and the label's later strings follow it; without one it stays, and the conflict is left to the
    caller (conflict resolution by score). The new placement is kept only when it overlaps other labels' strings
    in fewer pairs, so every kept placement lowers the number of overlapping pairs and the revisiting ends (when
    nothing moves). Labels are revisited from the last to the first: where two labels could both move, the later
    one does and the earlier keeps its place. Unplaced and repeated strings are the same as `align_in_order`'s.

    Example: in "After the Scottish Parliament election, the Scottish Parliament met", an organisation
    "Scottish Parliament" goes to its second occurrence, clear of the event "Scottish Parliament election".
    """
    occurrences = [_all_occurrences(source, strings, starts, ends) for strings in answers]
    alignments = [_place(strings, found, ()) for strings, found in zip(answers, occurrences, strict=True)]
    moved = True
    while moved:
        moved = False
        for k in reversed(range(len(answers))):
            if not alignments[k].spans:
                continue
            others = [(start, end) for j, other in enumerate(alignments) if j != k for _, start, end in other.spans]
            collisions = _collisions(alignments[k], others)
            if collisions:
                placed = _place(answers[k], occurrences[k], others)
                if _collisions(placed, others) < collisions:
                    alignments[k], moved = placed, True
    return alignments


def _place(strings: Sequence[str], occurrences: list[list[int]], avoid: Collection[tuple[int, int]]) -> Alignment:
    """Place `strings` in order (see `align_in_order`), preferring occurrences that overlap no span in `avoid`."""
    result = Alignment()
    if not strings:
        return result
    taken: set[tuple[int, int]] = set()
    cursor = 0
    for index, (string, found) in enumerate(zip(strings, occurrences, strict=True)):
        size = len(string)
        free = [start for start in found if (start, start + size) not in taken]
        if not found:
            result.unplaced.append(index)
            continue
        if not free:
            result.repeated.append(index)
            continue
        clear = [s for s in free if not _overlaps(s, s + size, avoid)] if avoid else free
        preferred = clear or free
        start = next((s for s in preferred if s >= cursor), preferred[0])
        end = start + size
        taken.add((start, end))
        result.spans.append((index, start, end))
        cursor = end
    return result


def _collisions(alignment: Alignment, spans: Collection[tuple[int, int]]) -> int:
    """How many pairs of a placed string and one of `spans` overlap."""
    return sum(
        start < other_end and other_start < end for _, start, end in alignment.spans for other_start, other_end in spans
    )


def _overlaps(start: int, end: int, spans: Collection[tuple[int, int]]) -> bool:
    return any(start < other_end and other_start < end for other_start, other_end in spans)


def _all_occurrences(
    source: str, strings: Sequence[str], starts: Collection[int], ends: Collection[int]
) -> list[list[int]]:
    return [_occurrences(source, string, starts, ends) for string in strings]


def _occurrences(source: str, string: str, starts: Collection[int], ends: Collection[int]) -> list[int]:
    found, position = [], source.find(string) if string else -1
    while position != -1:
        if position in starts and position + len(string) in ends:
            found.append(position)
        position = source.find(string, position + 1)
    return found
