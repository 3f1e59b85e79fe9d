"""Greedy constrained generation over a prefix tree of prompts, batched by token budget.

A prompt is `prefix + suffix + tail` (see `prompts.templates`). The prompts of one call form a tree: each distinct
prefix is computed once, each distinct `prefix + suffix` once on top of it, and each tail on top of that; no part
is computed twice. Rows of the KV cache are copied from their parent instead.

Prefill runs in sub-batches of nearly equal length (at most `pad_tolerance` of a sub-batch's tokens are pads, at
most `batch_tokens` tokens per forward pass), so pads cost little; the sub-batches are then merged, padding only
the cache (masked, never computed), and up to `batch_size` rows decode together. A decode step masks every row's
disallowed tokens with one tensor and reads the chosen tokens back with one transfer; the next step's allowed
tokens (cached per constraint state) are computed while the model runs, which on a GPU overlaps the two.

`generate_naive` is the baseline a hand-rolled script would use: one `model.generate` call per prompt with the
same constraint as a `LogitsProcessor`; both give the same tokens (greedy, ties broken by the lowest token id).
"""

from __future__ import annotations

import codecs
import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import (
    DynamicCache,
    LogitsProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
)

from ..ty import Generation, GenerationRequest, ResponseFormat
from .constraint import StateSet, SubstringConstraint
from .shared_prefix import SharedPrefix, use_shared_prefix_attention
from .vocab import TokenTrie


@dataclass
class _Rows:
    """A batch of KV-cache rows: per layer keys/values [rows, kv_heads, width, head_dim], the attention mask
    [rows, width] (0 on pads, which sit left of each row's tokens) and each row's last position. With `shared`,
    every row continues that prefix, which is attended to but not held in the rows (see `shared_prefix`)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    last_position: torch.Tensor
    shared: SharedPrefix | None = None

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def select(self, index: torch.Tensor) -> _Rows:
        """Rows `index` (repeats allowed): a child row starts as a copy of its parent's."""
        return _Rows(
            [k.index_select(0, index) for k in self.keys],
            [v.index_select(0, index) for v in self.values],
            self.mask.index_select(0, index),
            self.last_position.index_select(0, index),
            self.shared,
        )

    def cache(self) -> DynamicCache:
        return DynamicCache(ddp_cache_data=list(zip(self.keys, self.values, strict=True)))

    @staticmethod
    def concat(parts: Sequence[_Rows]) -> _Rows:
        """The rows of `parts` in one batch, each right-aligned in the widest width (left-padding the cache)."""
        if len(parts) == 1:
            return parts[0]
        width = max(part.width for part in parts)
        return _Rows(
            [_right_aligned([p.keys[i] for p in parts], width, dim=-2) for i in range(len(parts[0].keys))],
            [_right_aligned([p.values[i] for p in parts], width, dim=-2) for i in range(len(parts[0].values))],
            _right_aligned([p.mask for p in parts], width, dim=-1),
            torch.cat([p.last_position for p in parts]),
            parts[0].shared,
        )


def _right_aligned(tensors: list[torch.Tensor], width: int, dim: int) -> torch.Tensor:
    """`tensors` stacked along dim 0, each zero-padded on the left of `dim` to `width`."""
    first = tensors[0]
    shape = list(first.shape)
    shape[0], shape[dim] = sum(t.shape[0] for t in tensors), width
    out = first.new_zeros(shape)
    row = 0
    for t in tensors:
        out[row : row + t.shape[0]].narrow(dim, width - t.shape[dim], t.shape[dim]).copy_(t)
        row += t.shape[0]
    return out


@dataclass
class _Leaf:
    """A distinct request of one generate call and the input positions that asked for it."""

    request: GenerationRequest
    middle: tuple[int, ...]
    """Ids after the shared root: the suffix (all of the prompt without a prefix cache)."""
    tail: tuple[int, ...]
    indices: list[int]


def _tail_ids(leaf: _Leaf) -> tuple[int, ...]:
    return leaf.tail


def _merge_lone_roots(
    groups: dict[tuple[int, ...], dict[GenerationRequest, _Leaf]],
) -> dict[tuple[int, ...], dict[GenerationRequest, _Leaf]]:
    """A root prefix that serves a single input (demonstrations retrieved for that sentence) saves nothing by being
    cached on its own, and run alone it decodes only that input's few rows at a time. All such roots are cut after
    the ids they all begin with (the instruction header, computed once as the new root) and their leaves join that
    group with the rest of their root moved into their middle (the same ids at the same positions), so that all
    such inputs are prefilled in token-budget batches and decoded together."""
    lone = {root for root, leaves in groups.items() if root and len({leaf.middle for leaf in leaves.values()}) == 1}
    shared = _common_prefix(lone) if len(lone) > 1 else ()
    out: dict[tuple[int, ...], dict[GenerationRequest, _Leaf]] = {}
    for root, leaves in groups.items():
        if root in lone:
            merged = out.setdefault(shared, {})
            for request, leaf in leaves.items():
                merged[request] = _Leaf(request, root[len(shared) :] + leaf.middle, leaf.tail, leaf.indices)
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


class ConstrainedGenerator:
    """Runs `GenerationRequest`s through a causal LM; counts the tokens it feeds the model in `self.counts`:
    `prompt_tokens` (prompt tokens computed), `pad_tokens` (pads computed beside them), `decode_tokens` (generated
    tokens fed back), `forward_passes`."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 32,
        max_new_tokens: int = 128,
        constrained: bool = True,
        prefix_cache: bool = True,
        batch_tokens: int = 2048,
        pad_tolerance: float = 0.1,
    ) -> None:
        if batch_size < 1 or max_new_tokens < 1 or batch_tokens < 1:
            raise ValueError(
                f"batch_size, max_new_tokens and batch_tokens must be >= 1, got {batch_size}, {max_new_tokens}, "
                f"{batch_tokens}"
            )
        if not 0.0 <= pad_tolerance < 1.0:
            raise ValueError(f"pad_tolerance is a share of a batch's tokens in [0, 1), got {pad_tolerance}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.constrained = constrained
        self.prefix_cache = prefix_cache
        self.batch_tokens = batch_tokens
        self.pad_tolerance = pad_tolerance
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
    def generate(self, requests: Sequence[GenerationRequest], progress: bool = False) -> list[Generation]:
        """Generate for every request; output order follows input order. Equal requests are generated once."""
        results: list[Generation | None] = [None] * len(requests)
        groups: dict[tuple[int, ...], dict[GenerationRequest, _Leaf]] = {}
        for index, request in enumerate(requests):
            prefix, suffix, tail = self.encode(request)
            self._check_length(len(prefix) + len(suffix) + len(tail))
            root, middle = (prefix, suffix) if self.prefix_cache else ([], prefix + suffix + tail)
            leaves = groups.setdefault(tuple(root), {})
            if request not in leaves:
                leaves[request] = _Leaf(request, tuple(middle), tuple(tail) if self.prefix_cache else (), [])
            leaves[request].indices.append(index)
        groups = _merge_lone_roots(groups)
        bar = tqdm(total=len(requests), desc="fsner generate", unit="prompt", disable=not progress)
        shared = use_shared_prefix_attention(self.model)
        for root, leaves in groups.items():
            root_rows = self._run_root(list(root), shared)
            for chunk in self._chunks(list(leaves.values())):
                for leaf, generation in zip(chunk, self._generate_chunk(root_rows, chunk), strict=True):
                    for i in leaf.indices:
                        results[i] = dataclasses.replace(generation)
                bar.update(sum(len(leaf.indices) for leaf in chunk))
        bar.close()
        return [r for r in results if r is not None]

    def _chunks(self, leaves: list[_Leaf]) -> list[list[_Leaf]]:
        """Leaves in decode batches of at most `batch_size` rows (more only when one input has more labels),
        whole inputs at a time, inputs sorted by length so that a batch's prefill needs few pads."""
        by_middle: dict[tuple[int, ...], list[_Leaf]] = {}
        for leaf in leaves:
            by_middle.setdefault(leaf.middle, []).append(leaf)
        chunks: list[list[_Leaf]] = [[]]
        for middle in sorted(by_middle, key=len):
            siblings = by_middle[middle]
            if chunks[-1] and len(chunks[-1]) + len(siblings) > self.batch_size:
                chunks.append([])
            chunks[-1].extend(siblings)
        return [c for c in chunks if c]

    def _generate_chunk(self, root: _Rows | SharedPrefix | None, chunk: list[_Leaf]) -> list[Generation]:
        """Prefill the chunk's inputs on the root, then each tail on its input's row (a leaf without a tail takes
        its input's row as it is), then decode all leaves together. Returns the generations in `chunk`'s order."""
        if not any(leaf.tail for leaf in chunk):  # the inputs are the leaves
            rows, logits, leaves = self._prefill(root, chunk, lambda leaf: 0, lambda leaf: leaf.middle)
        else:
            middles = list(dict.fromkeys(leaf.middle for leaf in chunk))
            middle_rows, middle_logits, middles = self._prefill(root, middles, lambda m: 0, lambda m: m)
            row_of = {m: i for i, m in enumerate(middles)}
            tailed = [leaf for leaf in chunk if leaf.tail]
            rows, logits, leaves = self._prefill(middle_rows, tailed, lambda leaf: row_of[leaf.middle], _tail_ids)
            bare = [leaf for leaf in chunk if not leaf.tail]
            if bare:
                index = torch.tensor([row_of[leaf.middle] for leaf in bare], device=middle_logits.device)
                rows = _Rows.concat([rows, middle_rows.select(index)])
                logits = torch.cat([logits, middle_logits.index_select(0, index)])
                leaves = leaves + bare
        by_leaf = {id(leaf): g for leaf, g in zip(leaves, self._decode(rows, logits, leaves), strict=True)}
        return [by_leaf[id(leaf)] for leaf in chunk]

    def _prefill(
        self, parent: _Rows | SharedPrefix | None, items: list, parent_row, ids
    ) -> tuple[_Rows, torch.Tensor, list]:
        """One row per item: `ids(item)` on top of parent row `parent_row(item)`, computed in `_sub_batches` and
        merged. Returns the rows, their last logits and the items in row order."""
        parts, logits, order = [], [], []
        for batch in self._sub_batches(items, lambda item: len(ids(item))):
            rows, last = self._extend(parent, [parent_row(item) for item in batch], [list(ids(item)) for item in batch])
            parts.append(rows)
            logits.append(last)
            order.extend(batch)
        return _Rows.concat(parts), torch.cat(logits), order

    def _sub_batches(self, items: list, length) -> list[list]:
        """`items` sorted by `length`, cut into prefill batches: at most `batch_tokens` tokens (pads included) and
        at most `pad_tolerance` of them pads (a longer item starts a new batch rather than pad the others)."""
        batches: list[list] = []
        current: list = []
        real = 0
        for item in sorted(items, key=length):
            n = length(item)
            total = (len(current) + 1) * n
            if current and (total > self.batch_tokens or total - real - n > self.pad_tolerance * total):
                batches.append(current)
                current, real = [], 0
            current.append(item)
            real += n
        if current:
            batches.append(current)
        return batches

    def _run_root(self, root_ids: list[int], shared: bool) -> _Rows | SharedPrefix | None:
        """The root prefix's KV cache: a `SharedPrefix` that rows attend to (`shared`), else one row to copy."""
        if not root_ids:
            return None
        rows, _ = self._extend(None, [0], [root_ids])
        return SharedPrefix([k[0] for k in rows.keys], [v[0] for v in rows.values]) if shared else rows

    def _extend(
        self, parent: _Rows | SharedPrefix | None, parents: list[int], ids: list[list[int]]
    ) -> tuple[_Rows, torch.Tensor]:
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
        if isinstance(parent, _Rows):
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
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **({"shared_prefix": shared} if shared is not None else {}),
        ).logits[:, -1]
        layers = cache.layers
        rows = _Rows(
            [layer.keys for layer in layers],
            [layer.values for layer in layers],
            mask,
            last_position + new_mask.sum(-1),
            shared,
        )
        return rows, logits

    @torch.inference_mode()
    def generate_naive(self, request: GenerationRequest) -> Generation:
        """One `model.generate` call for one prompt: no batching, no prefix cache (the benchmark's baseline)."""
        prompt_ids = [i for part in self.encode(request) for i in part]
        self._check_length(len(prompt_ids))
        input_ids = torch.tensor([prompt_ids], device=self.model.device)
        constraint = self.constraint(request) if self.constrained else None
        processors = [_ConstraintProcessor(self, constraint, input_ids.shape[1])] if constraint else []
        stopping = [_DoneCriteria(processors[0])] if processors else []
        output = self.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            logits_processor=processors,
            stopping_criteria=stopping,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        self.counts["prompt_tokens"] += input_ids.shape[1]
        new_ids = output.sequences[0, input_ids.shape[1] :].tolist()
        steps = zip(output.logits, new_ids, strict=True)
        logprobs = [torch.log_softmax(step[0].float(), -1)[tok].item() for step, tok in steps]
        self.counts["decode_tokens"] += max(len(new_ids) - 1, 0)
        self.counts["forward_passes"] += len(new_ids)
        state = constraint.initial() if constraint else None
        for tok in new_ids:
            state = constraint.advance(state, tok) if constraint else None
        finished = new_ids[-1] in self.eos_ids or (constraint is not None and constraint.is_done(state))
        return self._generation(new_ids, logprobs, finished, request.fmt)

    def _check_length(self, prompt_length: int) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and prompt_length + self.max_new_tokens > limit:
            raise ValueError(
                f"A prompt needs {prompt_length + self.max_new_tokens} positions (prompt {prompt_length} + "
                f"max_new_tokens {self.max_new_tokens}) but the model has {limit}. Lower the component's "
                "`max_chunk_tokens` (shorter pieces of text per prompt) or `max_new_tokens`."
            )

    def _decode(self, rows: _Rows, logits: torch.Tensor, leaves: list[_Leaf]) -> list[Generation]:
        """Greedy constrained decoding of `rows` (one per leaf, `logits` after their last prompt token)."""
        device, n = self.model.device, len(leaves)
        requests = [leaf.request for leaf in leaves]
        cache, mask, last_position = rows.cache(), rows.mask, rows.last_position
        constraints = [self.constraint(r) if self.constrained else None for r in requests]
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
                if not done and len(tokens[row]) < self.max_new_tokens:
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
                past_key_values=cache,
                use_cache=True,
                **({"shared_prefix": rows.shared} if rows.shared is not None else {}),
            ).logits[:, -1]
            masks = self._allowed_masks(constraints, states, live, allowed)
        return [self._generation(tokens[r], logprobs[r], finished[r], requests[r].fmt) for r in range(n)]

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
        if not self.constrained:
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

    def _generation(
        self, token_ids: list[int], logprobs: list[float], finished: bool, fmt: ResponseFormat
    ) -> Generation:
        pieces = [self.trie.token_bytes[t] or b"" for t in token_ids]
        ends, total = [], 0
        for piece in pieces:
            total += len(piece)
            ends.append(total)
        return Generation(decode_generated(b"".join(pieces)), token_ids, logprobs, ends, finished, fmt)


class _ConstraintProcessor(LogitsProcessor):
    """The same grammar for `model.generate`: masks every token the grammar does not allow (batch of one)."""

    def __init__(self, generator: ConstrainedGenerator, constraint: SubstringConstraint, prompt_length: int):
        self.generator = generator
        self.constraint = constraint
        self.prompt_length = prompt_length
        self.state = constraint.initial()
        self.consumed = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._catch_up(input_ids)
        masked = torch.full_like(scores, float("-inf"))
        allowed = torch.tensor(self.generator.allowed_ids(self.constraint, self.state), device=scores.device)
        masked[:, allowed] = scores[:, allowed]
        return masked

    def _catch_up(self, input_ids: torch.LongTensor) -> None:
        for token in input_ids[0, self.prompt_length + self.consumed :].tolist():
            self.state = self.constraint.advance(self.state, token)
            self.consumed += 1


class _DoneCriteria(StoppingCriteria):
    """Stops once the response has written its end marker."""

    def __init__(self, processor: _ConstraintProcessor):
        self.processor = processor

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.processor._catch_up(input_ids)
        done = self.processor.constraint.is_done(self.processor.state)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


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


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prefix: str, *parts: str) -> list[list[int]]:
    """Token ids of a prompt's prefix (with the tokenizer's special tokens, e.g. BOS) and of each following part
    (suffix, tail: without), every part encoded separately.

    The one definition of how a prompt becomes ids, for generation and for training alike: the generator computes
    each prefix once and reuses its KV cache for every suffix (and a suffix's for every tail), so a model trained
    on the prompt encoded as one string (where tokens may merge across a border) would see other ids at inference.
    """
    ids = [tokenizer(prefix, add_special_tokens=True)["input_ids"]]
    return ids + [tokenizer(part, add_special_tokens=False)["input_ids"] for part in parts]


def encode_completion(tokenizer: PreTrainedTokenizerBase, completion: str) -> list[int]:
    """Token ids of a training target: the completion encoded on its own, without special tokens, then EOS.

    This is how TRL appends EOS to a completion, and how the generator writes one: token by token after the
    suffix, stopping at EOS or the format's end marker.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError(
            "The tokenizer defines no end-of-sequence token; set `eos_token` on it (a training target ends with one)."
        )
    return [*tokenizer(completion, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def decode_generated(data: bytes) -> str:
    """Generated bytes as text, cut back to whole characters.

    Generation can stop (`max_new_tokens`) after a token that holds only the first bytes of a multi-byte
    character; that unterminated character is dropped rather than replaced, so the text written so far stays a
    copy of the input. Invalid bytes elsewhere (only an unconstrained model writes them) become U+FFFD.
    """
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data, final=False)


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
