"""Greedy constrained generation, batched, with the shared prompt prefix computed once.

Prompts are grouped by their prefix (instruction header + label instruction + demonstrations). Each prefix runs
through the model once; its KV cache is copied to every row of a batch, and the per-input suffixes follow as
`[prefix | pads | suffix]` with attention-mask 0 on the pads. Finished rows leave the batch at once.
`generate_naive` is the baseline a hand-rolled script would use: one `model.generate` call per prompt with the
same constraint as a `LogitsProcessor`; both give the same tokens (greedy, ties broken by the lowest token id).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import (
    DynamicCache,
    LogitsProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
)

from .constraint import ResponseFormat, StateSet, SubstringConstraint
from .parsing import ParsedResponse, parse_response
from .vocab import TokenTrie


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt: `prefix` is shared by many prompts (cached), `suffix` carries the input text.

    Entities must be copied from `source`, starting at a char offset in `starts` and ending at one in `ends`.
    """

    prefix: str
    suffix: str
    source: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    fmt: ResponseFormat = field(default_factory=ResponseFormat)


@dataclass
class Generation:
    """What the model wrote for one request."""

    text: str
    token_ids: list[int]
    token_logprobs: list[float]
    token_ends: list[int]
    """Byte offset in `text`'s UTF-8 encoding where each generated token ends."""
    finished: bool
    """False when `max_new_tokens` ran out before the end marker or end-of-sequence."""
    fmt: ResponseFormat

    def parse(self) -> ParsedResponse:
        return parse_response(self.text, self.fmt, self.token_ends, self.token_logprobs)


class ConstrainedGenerator:
    """Runs `GenerationRequest`s through a causal LM; counts the tokens it feeds the model in `self.counts`."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 32,
        max_new_tokens: int = 128,
        constrained: bool = True,
        prefix_cache: bool = True,
    ) -> None:
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.constrained = constrained
        self.prefix_cache = prefix_cache
        self.trie = TokenTrie.from_tokenizer(tokenizer)
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.counts: Counter[str] = Counter()
        self._prefix_ids: dict[str, list[int]] = {}

    def encode(self, request: GenerationRequest) -> tuple[list[int], list[int]]:
        """Token ids of prefix (with the tokenizer's special tokens) and suffix, encoded separately.

        Encoding the two parts separately, everywhere (training too), keeps the cached prefix valid.
        """
        prefix = self._prefix_ids.get(request.prefix)
        if prefix is None:
            prefix = self.tokenizer(request.prefix, add_special_tokens=True)["input_ids"]
            self._prefix_ids[request.prefix] = prefix
        return prefix, self.tokenizer(request.suffix, add_special_tokens=False)["input_ids"]

    def constraint(self, request: GenerationRequest) -> SubstringConstraint:
        return SubstringConstraint(request.fmt, request.source, request.starts, request.ends, self.trie)

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest], progress: bool = False) -> list[Generation]:
        """Generate for every request; output order follows input order."""
        results: list[Generation | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.prefix if self.prefix_cache else "", []).append(index)
        bar = tqdm(total=len(requests), desc="fsner generate", unit="prompt", disable=not progress)
        for indices in groups.values():
            encoded = {i: self.encode(requests[i]) for i in indices}
            for prefix, suffix in encoded.values():
                self._check_length(len(prefix) + len(suffix))
            prefix_ids = encoded[indices[0]][0] if self.prefix_cache else []
            cache = self._run_prefix(prefix_ids)
            by_length = sorted(indices, key=lambda i: len(encoded[i][1]) + len(encoded[i][0]))
            for start in range(0, len(by_length), self.batch_size):
                batch = by_length[start : start + self.batch_size]
                suffixes = [encoded[i][1] if self.prefix_cache else sum(encoded[i], []) for i in batch]
                outputs = self._generate_batch(prefix_ids, cache, suffixes, [requests[i] for i in batch])
                for i, generation in zip(batch, outputs, strict=True):
                    results[i] = generation
                bar.update(len(batch))
        bar.close()
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def generate_naive(self, request: GenerationRequest) -> Generation:
        """One `model.generate` call for one prompt: no batching, no prefix cache (the benchmark's baseline)."""
        prefix_ids, suffix_ids = self.encode(request)
        self._check_length(len(prefix_ids) + len(suffix_ids))
        input_ids = torch.tensor([prefix_ids + suffix_ids], device=self.model.device)
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

    def _run_prefix(self, prefix_ids: list[int]) -> DynamicCache | None:
        if not prefix_ids:
            return None
        output = self.model(
            input_ids=torch.tensor([prefix_ids], device=self.model.device), use_cache=True, logits_to_keep=1
        )
        self.counts["prompt_tokens"] += len(prefix_ids)
        return output.past_key_values

    def _generate_batch(
        self,
        prefix_ids: list[int],
        prefix_cache: DynamicCache | None,
        suffixes: list[list[int]],
        requests: list[GenerationRequest],
    ) -> list[Generation]:
        device, rows = self.model.device, len(suffixes)
        width = max(len(s) for s in suffixes)
        input_ids = torch.full((rows, width), self.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((rows, len(prefix_ids) + width), dtype=torch.long, device=device)
        mask[:, : len(prefix_ids)] = 1
        for row, ids in enumerate(suffixes):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, device=device)
            mask[row, mask.shape[1] - len(ids) :] = 1
        cache = DynamicCache()
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(rows)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self.counts["prompt_tokens"] += sum(len(s) for s in suffixes)
        self.counts["pad_tokens"] += rows * width - sum(len(s) for s in suffixes)
        logits = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions[:, -width:],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        constraints = [self.constraint(r) if self.constrained else None for r in requests]
        states = [c.initial() if c else None for c in constraints]
        tokens: list[list[int]] = [[] for _ in range(rows)]
        logprobs: list[list[float]] = [[] for _ in range(rows)]
        finished = [False] * rows
        live = list(range(rows))
        last_position = positions[:, -1]
        while live:
            next_ids, still_live = [], []
            step_logprobs = torch.log_softmax(logits.float(), -1)
            for j, row in enumerate(live):
                token = self._choose(logits[j], constraints[row], states[row])
                tokens[row].append(token)
                logprobs[row].append(step_logprobs[j, token].item())
                if constraints[row] is not None:
                    states[row] = constraints[row].advance(states[row], token)
                done = token in self.eos_ids or (constraints[row] is not None and constraints[row].is_done(states[row]))
                finished[row] = done
                if not done and len(tokens[row]) < self.max_new_tokens:
                    still_live.append(j)
                    next_ids.append(token)
            if not still_live:
                break
            keep = torch.tensor(still_live, device=device)
            if len(still_live) < len(live):
                cache.batch_select_indices(keep)
                mask, last_position = mask[keep], last_position[keep]
            live = [live[j] for j in still_live]
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=device)], dim=1)
            last_position = last_position + 1
            self.counts["decode_tokens"] += len(live)
            logits = self.model(
                input_ids=torch.tensor(next_ids, device=device)[:, None],
                attention_mask=mask,
                position_ids=last_position[:, None],
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1]
        return [
            self._generation(tokens[r], logprobs[r], finished[r], requests[r].fmt) for r in range(rows)
        ]

    def allowed_ids(self, constraint: SubstringConstraint, state: StateSet) -> list[int]:
        """Tokens the grammar allows next, plus end-of-sequence where the response may stop."""
        allowed = constraint.allowed_tokens(state)
        if constraint.can_stop(state):
            allowed = sorted(set(allowed) | self.eos_ids)
        if not allowed:  # cannot happen with a tokenizer that covers all 256 bytes; stop rather than loop
            allowed = sorted(self.eos_ids)
        return allowed

    def _choose(self, logits: torch.Tensor, constraint: SubstringConstraint | None, state: StateSet | None) -> int:
        if constraint is None:
            return int(logits.argmax())
        allowed = self.allowed_ids(constraint, state)
        index = torch.tensor(allowed, device=logits.device)
        return allowed[int(logits[index].argmax())]

    def _generation(
        self, token_ids: list[int], logprobs: list[float], finished: bool, fmt: ResponseFormat
    ) -> Generation:
        pieces = [self.trie.token_bytes[t] or b"" for t in token_ids]
        ends, total = [], 0
        for piece in pieces:
            total += len(piece)
            ends.append(total)
        text = b"".join(pieces).decode("utf-8", errors="replace")
        return Generation(text, token_ids, logprobs, ends, finished, fmt)


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

