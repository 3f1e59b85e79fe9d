"""Planning the prefix tree of one generate call: which prompt parts are computed once and shared (see `generator`).

A prompt is `prefix + suffix + tail` (see `prompts.templates`); each distinct request is a `Leaf` under the root
its prefix (or a shared header, `merge_lone_roots`) gives it. `prompt_tree_tokens` is the lower bound of prompt
tokens such a tree computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..ty import GenerationRequest

if TYPE_CHECKING:
    from .generator import ConstrainedGenerator


@dataclass
class Leaf:
    """A distinct request of one generate call and the input positions that asked for it."""

    request: GenerationRequest
    middle: tuple[int, ...]
    """Ids after the shared root: the suffix (all of the prompt without a prefix cache)."""
    tail: tuple[int, ...]
    indices: list[int]


def merge_lone_roots(
    groups: dict[tuple[int, ...], dict[GenerationRequest, Leaf]],
) -> dict[tuple[int, ...], dict[GenerationRequest, Leaf]]:
    """A root prefix that serves a single input (demonstrations retrieved for that sentence) saves nothing by being
    cached on its own, and run alone it decodes only that input's few rows at a time. All such roots are cut after
    the ids they all begin with (the instruction header, computed once as the new root) and their leaves join that
    group with the rest of their root moved into their middle (the same ids at the same positions), so that all
    such inputs are prefilled in token-budget batches and decoded together."""
    lone = {root for root, leaves in groups.items() if root and len({leaf.middle for leaf in leaves.values()}) == 1}
    shared = _common_prefix(lone) if len(lone) > 1 else ()
    out: dict[tuple[int, ...], dict[GenerationRequest, Leaf]] = {}
    for root, leaves in groups.items():
        if root in lone:
            merged = out.setdefault(shared, {})
            for request, leaf in leaves.items():
                merged[request] = Leaf(request, root[len(shared) :] + leaf.middle, leaf.tail, leaf.indices)
        else:
            out.setdefault(root, {}).update(leaves)
    return out


def _common_prefix(sequences: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    """The longest sequence that every one of `sequences` starts with."""
    first, *rest = sequences
    length = len(first)
    for sequence in rest:
        length = min(length, len(sequence))
        for i in range(length):
            if sequence[i] != first[i]:
                length = i
                break
    return first[:length]


def prompt_tree_tokens(generator: ConstrainedGenerator, requests: Sequence[GenerationRequest]) -> int:
    """Prompt tokens a prefix tree must compute for `requests`: each distinct prefix, prefix + suffix and whole
    prompt once (the lower bound the generator's `prompt_tokens` is held to)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for request in requests:
        prefix, suffix, tail = generator.encode(request)
        for key, ids in (
            ((request.prefix,), prefix),
            ((request.prefix, request.suffix), suffix),
            ((request.prefix, request.suffix, request.tail), tail),
        ):
            if key not in seen:
                seen.add(key)
                total += len(ids)
    return total
