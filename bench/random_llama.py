"""A random-weight Llama of a real model's shape, saved as an ordinary Hugging Face directory, for throughput runs
where the real weights cannot be had (`python -m spacy_fsner benchmark --model DIR --device cuda`).

The shape defaults to Llama-3.1-8B's (32 layers, hidden 4096, MLP 14336, 32 query and 8 key/value heads); the
tokenizer, and so the vocabulary size, comes from `--tokenizer` (a fetched model directory, e.g. SmolLM2's, vocab
49,152 against Llama 3's 128,256: the LM head is smaller, everything else is the 8B model). The weights are drawn on
`--device` in `--dtype` and never exist in float32, so an 8B model builds in seconds on a GPU.

    python -m bench.random_llama ~/.cache/spacy_fsner/models/smollm2-135m-instruct /tmp/llama-8b-random --device cuda
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.common import base_parser

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def main() -> None:
    parser = base_parser(__doc__, threads=None)
    parser.add_argument("tokenizer", type=Path, help="model directory whose tokenizer files are copied")
    parser.add_argument("output", type=Path)
    parser.add_argument("--same-shape", action="store_true", help="the shape of the tokenizer's model (SmolLM2's)")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=14336)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch  # here, not above: --help stays fast
    from transformers import LlamaConfig, LlamaForCausalLM

    from spacy_fsner.models.tiny import TinyModelSpec, llama_config

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    source = LlamaConfig.from_pretrained(args.tokenizer)
    if args.same_shape:
        config = source
    else:
        shape = TinyModelSpec(
            args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate, max_positions=8192
        )
        config = llama_config(shape, source.vocab_size, source.bos_token_id, source.eos_token_id, source.pad_token_id)
    args.layers, args.hidden = config.num_hidden_layers, config.hidden_size
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(args.device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.config.dtype = dtype
    args.output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output)
    for name in TOKENIZER_FILES:
        if (args.tokenizer / name).exists():
            shutil.copy(args.tokenizer / name, args.output / name)
    billions = sum(p.numel() for p in model.parameters()) / 1e9
    shape = f"{args.layers} layers, hidden {args.hidden}, {billions:.2f}B parameters"
    print(f"{args.output}: random Llama, {shape}, {dtype}")


if __name__ == "__main__":
    main()
