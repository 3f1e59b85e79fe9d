"""The baseline a hand-rolled script would use: one `model.generate` call per prompt, with the generator's
constraint as a `LogitsProcessor`. It gives the same tokens as `ConstrainedGenerator.generate` (greedy, ties broken
by the lowest token id); the benchmark and the tests hold the batched generator to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import LogitsProcessor, StoppingCriteria

from ..ty import Generation, GenerationRequest
from .constraint import SubstringConstraint

if TYPE_CHECKING:
    from .generator import ConstrainedGenerator


@torch.inference_mode()
def generate_naive(generator: ConstrainedGenerator, request: GenerationRequest) -> Generation:
    """One `model.generate` call for one prompt: no batching, no prefix cache (the benchmark's baseline). Counts
    its tokens in `generator.counts` as the generator would."""
    model, config = generator.model, generator.config
    prompt_ids = [i for part in generator.encode(request) for i in part]
    generator.check_length(len(prompt_ids))
    input_ids = torch.tensor([prompt_ids], device=model.device)
    constraint = generator.constraint(request) if config.constrained else None
    processors = [_ConstraintProcessor(generator, constraint, input_ids.shape[1])] if constraint else []
    stopping = [_DoneCriteria(processors[0])] if processors else []
    output = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        logits_processor=processors,
        stopping_criteria=stopping,
        max_new_tokens=config.max_new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=sorted(generator.eos_ids),
        pad_token_id=generator.pad_id,
        output_logits=True,
        return_dict_in_generate=True,
    )
    generator.counts["prompt_tokens"] += input_ids.shape[1]
    new_ids = output.sequences[0, input_ids.shape[1] :].tolist()
    steps = zip(output.logits, new_ids, strict=True)
    logprobs = [torch.log_softmax(step[0].float(), -1)[tok].item() for step, tok in steps]
    generator.counts["decode_tokens"] += max(len(new_ids) - 1, 0)
    generator.counts["forward_passes"] += len(new_ids)
    state = constraint.initial() if constraint else None
    for tok in new_ids:
        state = constraint.advance(state, tok) if constraint else None
    finished = new_ids[-1] in generator.eos_ids or (constraint is not None and constraint.is_done(state))
    return generator.generation(new_ids, logprobs, finished, request.fmt)


class _ConstraintProcessor(LogitsProcessor):
    """The same grammar for `model.generate`: masks every token the grammar does not allow (batch of one)."""

    def __init__(self, generator: ConstrainedGenerator, constraint: SubstringConstraint, prompt_length: int):
        self.generator = generator
        self.constraint = constraint
        self.prompt_length = prompt_length
        self.state = constraint.initial()
        self.consumed = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.catch_up(input_ids)
        masked = torch.full_like(scores, float("-inf"))
        allowed = torch.tensor(self.generator.allowed_ids(self.constraint, self.state), device=scores.device)
        masked[:, allowed] = scores[:, allowed]
        return masked

    def catch_up(self, input_ids: torch.LongTensor) -> None:
        for token in input_ids[0, self.prompt_length + self.consumed :].tolist():
            self.state = self.constraint.advance(self.state, token)
            self.consumed += 1


class _DoneCriteria(StoppingCriteria):
    """Stops once the response has written its end marker."""

    def __init__(self, processor: _ConstraintProcessor):
        self.processor = processor

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.processor.catch_up(input_ids)
        done = self.processor.constraint.is_done(self.processor.state)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
