"""Scoring fixed answers instead of generating: the log-probability of each option after a question.

EL4NER's type classification and self-validation ask a model to choose among known strings (the entity types;
"Yes"/"No"). Every question about one sentence shares a prefix (instruction, demonstrations, the sentence), which
is computed once; all (question, option) rows then run in one forward pass on top of its KV cache, right-padded
(a causal model never attends to the pads that follow a row's tokens). Ids come from `encode_prompt` (prefix, then
the question as a part of its own) and the option as a completion without EOS, as the generator would write it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from .generator import encode_prompt


@torch.inference_mode()
def score_options(
    model, tokenizer, prefix: str, questions: Sequence[tuple[str, Sequence[str]]], max_rows: int = 64
) -> list[list[float]]:
    """For each (question, options): the summed log-probability of each option's tokens after prefix + question.

    `question` must be non-empty (its last token predicts the option's first). Rows run `max_rows` at a time.
    """
    if any(not question for question, _ in questions):
        raise ValueError("score_options: every question must be non-empty text (it predicts the option).")
    prefix_ids, *_ = encode_prompt(tokenizer, prefix)
    device = model.device
    cache = DynamicCache()
    model(input_ids=torch.tensor([prefix_ids], device=device), past_key_values=cache, use_cache=True)
    rows: list[tuple[list[int], int]] = []  # (question + option ids, where the option starts)
    shape: list[int] = []
    for question, options in questions:
        (question_ids,) = encode_prompt(tokenizer, "", question)[1:]
        for option in options:
            option_ids = tokenizer(option, add_special_tokens=False)["input_ids"]
            if not option_ids:
                raise ValueError(f"score_options: the option {option!r} encodes to no token.")
            rows.append((question_ids + option_ids, len(question_ids)))
        shape.append(len(options))
    scores: list[float] = []
    for start in range(0, len(rows), max_rows):
        scores += _score_rows(model, cache, len(prefix_ids), rows[start : start + max_rows], tokenizer, device)
    out, i = [], 0
    for n in shape:
        out.append(scores[i : i + n])
        i += n
    return out


def _score_rows(model, cache: DynamicCache, prefix_length: int, rows, tokenizer, device) -> list[float]:
    n, width = len(rows), max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, prefix_length + width), dtype=torch.long)
    mask[:, :prefix_length] = 1
    for r, (ids, _) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        mask[r, prefix_length : prefix_length + len(ids)] = 1
    layers = [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in _layers(cache)]
    rows_cache = DynamicCache(ddp_cache_data=layers)
    positions = torch.arange(prefix_length, prefix_length + width).expand(n, -1)
    logits = model(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        past_key_values=rows_cache,
        use_cache=True,
    ).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    scores = []
    for r, (ids, option_start) in enumerate(rows):
        targets = torch.tensor(ids[option_start:], device=logprobs.device)
        predicted_at = torch.arange(option_start - 1, len(ids) - 1, device=logprobs.device)
        scores.append(float(logprobs[r, predicted_at, targets].sum()))
    return scores


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]
