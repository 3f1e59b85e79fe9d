"""Constrained generation, free of spaCy types: the response grammar as a byte automaton over the input
(`constraint`, `vocab`), the prefill/decode engine over a prefix tree of prompts (`generator`, `prefix_tree`,
`kv_rows`, `shared_prefix`), the `model.generate` baseline (`hf_generate`), prompt encoding shared with training
(`encoding`), reading entities out of a response (`parsing`), aligning them to token spans (`alignment`) and scoring
fixed options (`scoring`, for EL4NER's questions)."""

from .alignment import Alignment, align_in_order, align_jointly
from .constraint import SubstringConstraint
from .encoding import decode_generated, encode_completion, encode_prompt
from .generator import ConstrainedGenerator, GeneratorConfig
from .hf_generate import generate_naive
from .parsing import ParsedResponse, ScoredEntity, parse_generation, parse_response
from .prefix_tree import prompt_tree_tokens
from .scoring import score_options
from .vocab import TokenTrie

__all__ = [
    "Alignment",
    "ConstrainedGenerator",
    "GeneratorConfig",
    "ParsedResponse",
    "ScoredEntity",
    "SubstringConstraint",
    "TokenTrie",
    "align_in_order",
    "align_jointly",
    "decode_generated",
    "encode_completion",
    "encode_prompt",
    "generate_naive",
    "parse_generation",
    "parse_response",
    "prompt_tree_tokens",
    "score_options",
]
