"""Greedy constrained generation over a prefix tree of prompts, batched by token budget.

A prompt is `prefix + suffix + tail` (see `prompts.templates`). The prompts of one call form a tree: each distinct
prefix is computed once, each distinct `prefix + suffix` once on top of it, and each tail on top of that; no part
is computed twice. Rows of the KV cache are copied from their parent instead.

Prefill runs in sub-batches of nearly equal length (at most `pad_tolerance` of a sub-batch's tokens are pads, at
most `batch_tokens` tokens per forward pass), so pads cost little; the sub-batches are then merged, padding only
the cache (masked, never computed), and up to `batch_size` rows decode together. A decode step masks every row's
disallowed tokens with one tensor and reads the chosen tokens back with one transfer; the next step's allowed
tokens (cached per constraint state) are computed while the model runs, which on a GPU overlaps the two.

The parts live beside this engine: the settings (`GeneratorConfig`, below), the tree's planning (`prefix_tree`),
the KV-cache rows (`kv_rows`), how prompts become ids (`encoding`) and the one-`generate`-call-per-prompt baseline
(`hf_generate`, also `ConstrainedGenerator.generate_naive`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from ..ty import Generation, GenerationRequest, ResponseFormat
from .constraint import StateSet, SubstringConstraint
from .encoding import decode_generated, encode_prompt
from .hf_generate import generate_naive
from .kv_rows import Rows
from .prefix_tree import Leaf, merge_lone_roots
from .shared_prefix import SharedPrefix, use_shared_prefix_attention
from .vocab import TokenTrie


@dataclass(frozen=True)
class GeneratorConfig:
    """How `ConstrainedGenerator` batches and decodes. Every field is explicit: the defaults users get are those of
    the registered builder (`spacy_fsner.CausalLM.v1`), which also picks the batch sizes by device."""

    batch_size: int
    """Rows decoded together (more only when one input has more labels)."""
    batch_tokens: int
    """Tokens (pads included) per prefill forward pass."""
    pad_tolerance: float
    """The share of a prefill batch's tokens that may be pads, in [0, 1)."""
    max_new_tokens: int
    constrained: bool
    """Decode under the response format's grammar (`SubstringConstraint`); off, the model writes freely."""
    prefix_cache: bool
    """Compute each distinct prefix (and prefix + suffix) once; off, every prompt is computed whole."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.batch_tokens < 1:
            raise ValueError(
                f"batch_size, max_new_tokens and batch_tokens must be >= 1, got {self.batch_size}, "
                f"{self.max_new_tokens}, {self.batch_tokens}"
            )
        if not 0.0 <= self.pad_tolerance < 1.0:
            raise ValueError(f"pad_tolerance is a share of a batch's tokens in [0, 1), got {self.pad_tolerance}")


class ConstrainedGenerator:
    """Runs `GenerationRequest`s through a causal LM; counts the tokens it feeds the model in `self.counts`:
    `prompt_tokens` (prompt tokens computed), `pad_tokens` (pads computed beside them), `decode_tokens` (generated
    tokens fed back), `forward_passes`."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: GeneratorConfig) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.trie = TokenTrie.from_tokenizer(tokenizer)
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.counts: Counter[str] = Counter()
        self._prefix_ids: dict[str, list[int]] = {}

    def encode(self, request: GenerationRequest) -> tuple[list[int], list[int], list[int]]:
        """Token ids of prefix (with the tokenizer's special tokens), suffix and tail, each encoded separately
        (`encode_prompt`), which keeps every cached part valid. Prefixes are encoded once."""
        prefix = self._prefix_ids.get(request.prefix)
        if prefix is None:
            if len(self._prefix_ids) >= 4096:  # retrieved demonstrations make a prefix per sentence: stay bounded
                self._prefix_ids.clear()
            prefix = self._prefix_ids[request.prefix] = encode_prompt(self.tokenizer, request.prefix)[0]
        _, suffix, tail = encode_prompt(self.tokenizer, "", request.suffix, request.tail)
        return prefix, suffix, tail

    def constraint(self, request: GenerationRequest) -> SubstringConstraint:
        return SubstringConstraint(request.fmt, request.source, request.starts, request.ends, self.trie)

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate for every request; output order follows input order. Equal requests are generated once."""
        results: list[Generation | None] = [None] * len(requests)
        groups: dict[tuple[int, ...], dict[GenerationRequest, Leaf]] = {}
        for index, request in enumerate(requests):
            prefix, suffix, tail = self.encode(request)
            if self.positions_needed(len(prefix) + len(suffix) + len(tail)) is not None:
                # too long for the model: an empty answer flagged `too_long` (the task reports it), not an error
                # that would cost every other prompt of the batch its answer
                results[index] = Generation("", [], [], [], False, request.fmt, too_long=True)
                continue
            root, middle = (prefix, suffix) if self.config.prefix_cache else ([], prefix + suffix + tail)
            leaves = groups.setdefault(tuple(root), {})
            if request not in leaves:
                leaves[request] = Leaf(request, tuple(middle), tuple(tail) if self.config.prefix_cache else (), [])
            leaves[request].indices.append(index)
        groups = merge_lone_roots(groups)
        shared = use_shared_prefix_attention(self.model)
        for root, leaves in groups.items():
            root_rows = self._run_root(list(root), shared)
            for chunk in self._chunks(list(leaves.values())):
                for leaf, generation in zip(chunk, self._generate_chunk(root_rows, chunk), strict=True):
                    for i in leaf.indices:
                        results[i] = dataclasses.replace(generation)
        return [r for r in results if r is not None]

    def generate_naive(self, request: GenerationRequest) -> Generation:
        """One `model.generate` call for `request` (the baseline, see `hf_generate`)."""
        return generate_naive(self, request)

    def _chunks(self, leaves: list[Leaf]) -> list[list[Leaf]]:
        """Leaves in decode batches of at most `batch_size` rows (more only when one input has more labels),
        whole inputs at a time, inputs sorted by length so that a batch's prefill needs few pads."""
        by_middle: dict[tuple[int, ...], list[Leaf]] = {}
        for leaf in leaves:
            by_middle.setdefault(leaf.middle, []).append(leaf)
        chunks: list[list[Leaf]] = [[]]
        for middle in sorted(by_middle, key=len):
            siblings = by_middle[middle]
            if chunks[-1] and len(chunks[-1]) + len(siblings) > self.config.batch_size:
                chunks.append([])
            chunks[-1].extend(siblings)
        return [c for c in chunks if c]

    def _generate_chunk(self, root: Rows | SharedPrefix | None, chunk: list[Leaf]) -> list[Generation]:
        """Prefill the chunk's inputs on the root, then each tail on its input's row (a leaf without a tail takes
        its input's row as it is), then decode all leaves together. Returns the generations in `chunk`'s order."""
        if not any(leaf.tail for leaf in chunk):  # the inputs are the leaves
            rows, logits, leaves = self._prefill(root, chunk, lambda leaf: 0, lambda leaf: leaf.middle)
        else:
            middles = list(dict.fromkeys(leaf.middle for leaf in chunk))
            middle_rows, middle_logits, middles = self._prefill(root, middles, lambda m: 0, lambda m: m)
            row_of = {m: i for i, m in enumerate(middles)}
            tailed = [leaf for leaf in chunk if leaf.tail]
            rows, logits, leaves = self._prefill(
                middle_rows, tailed, lambda leaf: row_of[leaf.middle], lambda leaf: leaf.tail
            )
            bare = [leaf for leaf in chunk if not leaf.tail]
            if bare:
                index = torch.tensor([row_of[leaf.middle] for leaf in bare], device=middle_logits.device)
                rows = Rows.concat([rows, middle_rows.select(index)])
                logits = torch.cat([logits, middle_logits.index_select(0, index)])
                leaves = leaves + bare
        by_leaf = {id(leaf): g for leaf, g in zip(leaves, self._decode(rows, logits, leaves), strict=True)}
        return [by_leaf[id(leaf)] for leaf in chunk]

    def _prefill(
        self, parent: Rows | SharedPrefix | None, items: list, parent_row, ids
    ) -> tuple[Rows, torch.Tensor, list]:
        """One row per item: `ids(item)` on top of parent row `parent_row(item)`, computed in `_sub_batches` and
        merged. Returns the rows, their last logits and the items in row order."""
        parts, logits, order = [], [], []
        for batch in self._sub_batches(items, lambda item: len(ids(item))):
            rows, last = self._extend(parent, [parent_row(item) for item in batch], [list(ids(item)) for item in batch])
            parts.append(rows)
            logits.append(last)
            order.extend(batch)
        return Rows.concat(parts), torch.cat(logits), order

    def _sub_batches(self, items: list, length) -> list[list]:
        """`items` sorted by `length`, cut into prefill batches: at most `batch_tokens` tokens (pads included) and
        at most `pad_tolerance` of them pads (a longer item starts a new batch rather than pad the others)."""
        batches: list[list] = []
        current: list = []
        real = 0
        for item in sorted(items, key=length):
            n = length(item)
            total = (len(current) + 1) * n
            if current and (total > self.config.batch_tokens or total - real - n > self.config.pad_tolerance * total):
                batches.append(current)
                current, real = [], 0
            current.append(item)
            real += n
        if current:
            batches.append(current)
        return batches

    def _run_root(self, root_ids: list[int], shared: bool) -> Rows | SharedPrefix | None:
        """The root prefix's KV cache: a `SharedPrefix` that rows attend to (`shared`), else one row to copy."""
        if not root_ids:
            return None
        rows, _ = self._extend(None, [0], [root_ids])
        return SharedPrefix([k[0] for k in rows.keys], [v[0] for v in rows.values]) if shared else rows

    def _extend(
        self, parent: Rows | SharedPrefix | None, parents: list[int], ids: list[list[int]]
    ) -> tuple[Rows, torch.Tensor]:
        """New rows: row i continues parent row `parents[i]` (or the shared prefix) with the tokens `ids[i]`,
        left-padded to one width. Returns them and each row's logits after its last token."""
        device, n = self.model.device, len(ids)
        width = max(len(t) for t in ids)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        new_mask = torch.zeros((n, width), dtype=torch.long)
        for row, tokens in enumerate(ids):
            input_ids[row, width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
            new_mask[row, width - len(tokens) :] = 1
        input_ids, new_mask = input_ids.to(device), new_mask.to(device)
        shared = parent if isinstance(parent, SharedPrefix) else None
        if isinstance(parent, Rows):
            context = parent.select(torch.tensor(parents, device=device))
            cache, last_position, shared = context.cache(), context.last_position, parent.shared
            mask = torch.cat([context.mask, new_mask], dim=1)
        else:
            start = shared.length - 1 if shared is not None else -1
            cache, mask = DynamicCache(), new_mask
            last_position = torch.full((n,), start, dtype=torch.long, device=device)
        positions = (last_position[:, None] + new_mask.cumsum(-1)).clamp(min=0)
        real = sum(len(t) for t in ids)
        self.counts["prompt_tokens"] += real
        self.counts["pad_tokens"] += n * width - real
        self.counts["forward_passes"] += 1
        logits = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **({"shared_prefix": shared} if shared is not None else {}),
        ).logits[:, -1]
        layers = cache.layers
        rows = Rows(
            [layer.keys for layer in layers],
            [layer.values for layer in layers],
            mask,
            last_position + new_mask.sum(-1),
            shared,
        )
        return rows, logits

    def positions_needed(self, prompt_length: int) -> int | None:
        """The positions a prompt of `prompt_length` tokens needs (with `max_new_tokens`) when the model has fewer;
        None when it fits."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        needed = prompt_length + self.config.max_new_tokens
        return needed if limit is not None and needed > limit else None

    def check_length(self, prompt_length: int) -> None:
        """An error for a prompt too long for the model (the one-prompt baseline, `generate_naive`)."""
        needed = self.positions_needed(prompt_length)
        if needed is not None:
            raise ValueError(
                f"A prompt needs {needed} positions (prompt {prompt_length} + max_new_tokens "
                f"{self.config.max_new_tokens}) but the model has {self.model.config.max_position_embeddings}. Lower "
                "the component's `max_chunk_tokens` (shorter pieces of text per prompt; it cannot split one token) or "
                "`max_new_tokens`."
            )

    def _decode(self, rows: Rows, logits: torch.Tensor, leaves: list[Leaf]) -> list[Generation]:
        """Greedy constrained decoding of `rows` (one per leaf, `logits` after their last prompt token)."""
        device, n = self.model.device, len(leaves)
        requests = [leaf.request for leaf in leaves]
        cache, mask, last_position = rows.cache(), rows.mask, rows.last_position
        constraints = [self.constraint(r) if self.config.constrained else None for r in requests]
        states = [c.initial() if c else None for c in constraints]
        allowed: dict[tuple[int, StateSet], torch.Tensor] = {}
        tokens: list[list[int]] = [[] for _ in range(n)]
        logprobs: list[list[float]] = [[] for _ in range(n)]
        finished = [False] * n
        live = list(range(n))
        masks = self._allowed_masks(constraints, states, live, allowed)
        while live:
            chosen, chosen_logprobs = self._pick(logits, masks)
            next_ids, still_live = [], []
            for j, row in enumerate(live):
                token = chosen[j]
                tokens[row].append(token)
                logprobs[row].append(chosen_logprobs[j])
                constraint = constraints[row]
                if constraint is not None:
                    states[row] = constraint.advance(states[row], token)
                done = token in self.eos_ids or (constraint is not None and constraint.is_done(states[row]))
                finished[row] = done
                if not done and len(tokens[row]) < self.config.max_new_tokens:
                    still_live.append(j)
                    next_ids.append(token)
            if not still_live:
                break
            if len(still_live) < len(live):
                keep = torch.tensor(still_live, device=device)
                cache.batch_select_indices(keep)
                mask, last_position = mask[keep], last_position[keep]
            live = [live[j] for j in still_live]
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=device)], dim=1)
            last_position = last_position + 1
            self.counts["decode_tokens"] += len(live)
            self.counts["forward_passes"] += 1
            logits = self.model(  # on a GPU this returns at once; the next masks are built while it runs
                input_ids=torch.tensor(next_ids, device=device)[:, None],
                attention_mask=mask,
                position_ids=last_position[:, None],
                cache=cache,
                use_cache=True,
                **({"shared_prefix": rows.shared} if rows.shared is not None else {}),
            ).logits[:, -1]
            masks = self._allowed_masks(constraints, states, live, allowed)
        return [self.generation(tokens[r], logprobs[r], finished[r], requests[r].fmt) for r in range(n)]

    def _allowed_masks(
        self,
        constraints: list[SubstringConstraint | None],
        states: list[StateSet | None],
        live: list[int],
        cache: dict[tuple[int, StateSet], torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(row, token) index pairs of every live row's allowed tokens, on the model's device; None unconstrained.

        The allowed ids of a (constraint, state) are computed once (`allowed_ids`, cached per state), kept as a
        CPU tensor, and all rows' go to the device in one copy."""
        if not self.config.constrained:
            return None
        columns = []
        for row in live:
            key = (row, states[row])
            ids = cache.get(key)
            if ids is None:
                ids = cache[key] = torch.tensor(self.allowed_ids(constraints[row], states[row]), dtype=torch.long)
            columns.append(ids)
        lengths = torch.tensor([len(c) for c in columns])
        rows = torch.repeat_interleave(torch.arange(len(live)), lengths)
        pairs = torch.stack([rows, torch.cat(columns)])
        device = self.model.device
        pairs = pairs.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else pairs
        return pairs[0], pairs[1]

    def _pick(
        self, logits: torch.Tensor, masks: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[list[int], list[float]]:
        """Each row's greedy token among its allowed ones (ties: the lowest id) and its log-probability: one mask
        for all rows, one transfer to the host."""
        logits = logits.float()
        if masks is None:
            chosen = logits.argmax(-1)
        else:
            bias = torch.full_like(logits, float("-inf"))
            bias[masks[0], masks[1]] = 0.0
            chosen = (logits + bias).argmax(-1)
        logprobs = torch.log_softmax(logits, -1).gather(1, chosen[:, None])[:, 0]
        both = torch.stack([chosen.double(), logprobs.double()]).cpu()
        return [int(t) for t in both[0].tolist()], both[1].tolist()

    def allowed_ids(self, constraint: SubstringConstraint, state: StateSet) -> list[int]:
        """Tokens the grammar allows next, plus end-of-sequence where the response may stop."""
        allowed = constraint.allowed_tokens(state)
        if constraint.can_stop(state):
            allowed = sorted(set(allowed) | self.eos_ids)
        if not allowed:  # cannot happen with a tokenizer that covers all 256 bytes; stop rather than loop
            allowed = sorted(self.eos_ids)
        return allowed

    def generation(
        self, token_ids: list[int], logprobs: list[float], finished: bool, fmt: ResponseFormat
    ) -> Generation:
        return generation_from_tokens(self.trie, token_ids, logprobs, finished, fmt)


def generation_from_tokens(
    trie: TokenTrie, token_ids: list[int], logprobs: list[float], finished: bool, fmt: ResponseFormat
) -> Generation:
    """The `Generation` of generated `token_ids`: its text is their bytes decoded (`decode_generated`), with the byte
    offset where each token ends (special tokens write nothing). The one definition for every engine that generates
    (this generator, `hf_generate`, a vLLM server), so the same tokens give the same text and span scores."""
    pieces = [trie.token_bytes[t] or b"" for t in token_ids]
    ends, total = [], 0
    for piece in pieces:
        total += len(piece)
        ends.append(total)
    return Generation(decode_generated(b"".join(pieces)), token_ids, logprobs, ends, finished, fmt)


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(value)
    if not ids:
        raise ValueError(
            "The tokenizer defines no end-of-sequence token; set `eos_token` on it (generation needs one to stop)."
        )
    return ids
