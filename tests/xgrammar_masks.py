"""Runs in the vLLM environment (`.venv-vllm`, which has xgrammar), not the project's: the token masks xgrammar gives
for a grammar along a path of tokens, set up as vLLM sets it up (`TokenizerInfo.from_huggingface` with the model's
vocabulary size, stop tokens from the tokenizer and the generation config).

Reads JSON from stdin: {"model": DIR, "cases": [{"grammar": EBNF, "path": [token ids]}]}. Writes JSON to stdout:
per case, per step (before each token of the path and after the last), the sorted ids xgrammar allows, and whether
each token of the path was accepted. tests/test_vllm_backend.py compares them with the project's constraint.
"""

import json
import sys

import torch
import xgrammar as xgr
from transformers import AutoConfig, AutoTokenizer, GenerationConfig


def allowed_ids(bits: torch.Tensor, vocab_size: int) -> list[int]:
    """The ids whose bit is set in one row of an xgrammar bitmask (32 ids per int32, lowest bit first)."""
    unpacked = (bits[:, None] >> torch.arange(32, dtype=torch.int32)) & 1
    return torch.nonzero(unpacked.flatten()[:vocab_size]).flatten().tolist()


def main() -> None:
    request = json.load(sys.stdin)
    tokenizer = AutoTokenizer.from_pretrained(request["model"])
    vocab_size = AutoConfig.from_pretrained(request["model"]).vocab_size
    stop = {tokenizer.eos_token_id}
    try:
        eos = GenerationConfig.from_pretrained(request["model"]).eos_token_id
        stop.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    except OSError:
        pass
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop))
    compiler = xgr.GrammarCompiler(info)
    out = []
    for case in request["cases"]:
        matcher = xgr.GrammarMatcher(compiler.compile_grammar(case["grammar"]))
        bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        masks, accepted = [], []
        for token in [*case["path"], None]:
            if matcher.is_terminated():  # it accepted a stop token: nothing more
                break
            matcher.fill_next_token_bitmask(bitmask)
            masks.append(allowed_ids(bitmask[0], vocab_size))
            if token is None:
                break
            accepted.append(bool(matcher.accept_token(token)))
            if not accepted[-1]:
                break
        out.append({"masks": masks, "accepted": accepted, "terminated": matcher.is_terminated()})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
