"""Scoring fixed answers instead of generating: the log-probability of each option after a question.

EL4NER's type classification and self-validation ask a model to choose among known strings (the entity types;
"Yes"/"No"). Every question about one sentence shares a prefix (instruction, demonstrations, the sentence), which
is computed once; then all questions in one forward pass on top of its KV cache (the LM head on their last token
only: a 262k-entry vocabulary makes full logits costly), then the options' further tokens on the questions' caches.
Ids come from `encode_prompt` (prefix, then the question as a part of its own) and the option encoded on its own,
as the generator would write it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from .encoding import encode_prompt


@torch.inference_mode()
def score_options(
    model, tokenizer, prefix: str, questions: Sequence[tuple[str, Sequence[str]]], max_rows: int = 64
) -> list[list[float]]:
    """For each (question, options): the summed log-probability of each option's tokens after prefix + question.

    `question` must be non-empty (its last token predicts the option's first). Questions run together while their
    options number at most `max_rows` (a question with more runs alone).
    """
    if any(not question for question, _ in questions):
        raise ValueError("score_options: every question must be non-empty text (it predicts the option).")
    prefix_ids, *_ = encode_prompt(tokenizer, prefix)
    cache = DynamicCache()
    model(input_ids=torch.tensor([prefix_ids], device=model.device), cache=cache, logits_to_keep=1)
    encoded: list[tuple[list[int], list[list[int]]]] = []
    for question, options in questions:
        (question_ids,) = encode_prompt(tokenizer, "", question)[1:]
        option_ids = [tokenizer(option, add_special_tokens=False)["input_ids"] for option in options]
        for option, ids in zip(options, option_ids, strict=True):
            if not ids:
                raise ValueError(f"score_options: the option {option!r} encodes to no token.")
        encoded.append((question_ids, option_ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[list[float]] = []
    batch: list[tuple[list[int], list[list[int]]]] = []
    rows = 0  # options in `batch`
    for item in encoded:
        if batch and rows + len(item[1]) > max_rows:
            out += _score_questions(model, cache, len(prefix_ids), batch, pad)
            batch, rows = [], 0
        batch.append(item)
        rows += len(item[1])
    if batch:
        out += _score_questions(model, cache, len(prefix_ids), batch, pad)
    return out


def _score_questions(model, cache: DynamicCache, prefix_length: int, batch, pad: int) -> list[list[float]]:
    """Two forward passes on top of the prefix. First every question, left-padded so that all end in the last
    column, whose logits score each option's first token; then, on each question's KV cache, every option of more
    than one token (its tokens but the last, right-padded), whose logits score the option's other tokens. A question
    is thus computed once for all its options."""
    device = model.device
    questions = [q for q, _ in batch]
    width = max(len(q) for q in questions)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), prefix_length + width), dtype=torch.long)
    mask[:, :prefix_length] = 1
    for r, q in enumerate(questions):
        ids[r, width - len(q) :] = torch.tensor(q)
        mask[r, prefix_length + width - len(q) :] = 1
    positions = (prefix_length - 1 + mask[:, prefix_length:].cumsum(-1)).clamp(min=prefix_length)
    layers = [
        (layer.keys.expand(len(batch), -1, -1, -1), layer.values.expand(len(batch), -1, -1, -1))
        for layer in cache.layers
    ]
    question_cache = DynamicCache(ddp_cache_data=layers)
    first = (
        model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            cache=question_cache,
            logits_to_keep=1,
        )
        .logits[:, -1]
        .float()
    )
    first = torch.log_softmax(first, dim=-1)
    scores = [[float(first[r, option[0]]) for option in options] for r, (_, options) in enumerate(batch)]
    rows = [
        (r, j, option) for r, (_, options) in enumerate(batch) for j, option in enumerate(options) if len(option) > 1
    ]
    if not rows:
        return scores
    option_width = max(len(option) for *_, option in rows) - 1
    source = torch.tensor([r for r, *_ in rows])  # each row's question
    ids = torch.full((len(rows), option_width), pad, dtype=torch.long)
    own = torch.zeros((len(rows), option_width), dtype=torch.long)
    for i, (*_, option) in enumerate(rows):
        ids[i, : len(option) - 1] = torch.tensor(option[:-1])
        own[i, : len(option) - 1] = 1
    mask = torch.cat([mask.index_select(0, source), own], dim=1)
    starts = torch.tensor([prefix_length + len(questions[r]) for r, *_ in rows])
    positions = starts[:, None] + torch.arange(option_width)[None]
    source = source.to(device)
    layers = [
        (layer.keys.index_select(0, source), layer.values.index_select(0, source)) for layer in question_cache.layers
    ]
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        cache=DynamicCache(ddp_cache_data=layers),
    ).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    for i, (r, j, option) in enumerate(rows):
        targets = torch.tensor(option[1:], device=device)
        scores[r][j] += float(logprobs[i, torch.arange(len(option) - 1, device=device), targets].sum())
    return scores
