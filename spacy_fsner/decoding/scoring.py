"""Scoring fixed answers instead of generating: the log-probability of each option after a question.

EL4NER's type classification and self-validation ask a model to choose among known strings (the entity types;
"Yes"/"No"). Every question about one sentence shares a prefix (instruction, demonstrations, the sentence), which
is computed once; all (question, option) rows then run in one forward pass on top of its KV cache, with the LM head
applied only where an option token is predicted (a 262k-entry vocabulary makes full logits costly). Ids come from
`encode_prompt` (prefix, then the question as a part of its own) and the option encoded on its own, as the
generator would write it.
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
    cache = DynamicCache()
    model(input_ids=torch.tensor([prefix_ids], device=model.device), past_key_values=cache, logits_to_keep=1)
    rows: list[tuple[list[int], list[int]]] = []  # (question ids, option ids)
    shape: list[int] = []
    for question, options in questions:
        (question_ids,) = encode_prompt(tokenizer, "", question)[1:]
        for option in options:
            option_ids = tokenizer(option, add_special_tokens=False)["input_ids"]
            if not option_ids:
                raise ValueError(f"score_options: the option {option!r} encodes to no token.")
            rows.append((question_ids, option_ids))
        shape.append(len(options))
    scores: list[float] = []
    for start in range(0, len(rows), max_rows):
        scores += _score_rows(model, cache, len(prefix_ids), rows[start : start + max_rows], tokenizer)
    out, i = [], 0
    for n in shape:
        out.append(scores[i : i + n])
        i += n
    return out


def _score_rows(model, cache: DynamicCache, prefix_length: int, rows, tokenizer) -> list[float]:
    """One forward pass on top of the prefix: each row is its question left-padded to the longest question, then its
    option right-padded, so every option starts in the same column and only those columns' logits are computed."""
    n = len(rows)
    question_width = max(len(q) for q, _ in rows)
    option_width = max(len(o) for _, o in rows)
    width = question_width + option_width
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, prefix_length + width), dtype=torch.long)
    mask[:, :prefix_length] = 1
    for r, (question, option) in enumerate(rows):
        input_ids[r, question_width - len(question) : question_width] = torch.tensor(question)
        input_ids[r, question_width : question_width + len(option)] = torch.tensor(option)
        mask[r, prefix_length + question_width - len(question) : prefix_length + question_width + len(option)] = 1
    positions = (prefix_length - 1 + mask[:, prefix_length:].cumsum(-1)).clamp(min=prefix_length)
    layers = [(layer.keys.expand(n, -1, -1, -1), layer.values.expand(n, -1, -1, -1)) for layer in cache.layers]
    device = model.device
    keep = torch.arange(question_width - 1, width - 1, device=device)  # the columns that predict option tokens
    logits = model(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        past_key_values=DynamicCache(ddp_cache_data=layers),
        logits_to_keep=keep,
    ).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [
        float(logprobs[r, torch.arange(len(option)), torch.tensor(option, device=logprobs.device)].sum())
        for r, (_, option) in enumerate(rows)
    ]
