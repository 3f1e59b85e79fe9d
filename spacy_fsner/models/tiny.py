"""Tiny Llama-architecture models with a byte-level BPE tokenizer, built locally from text.

Tests, the demo and benchmarks use them: no weights can be downloaded, and a randomly initialised model of the
real architecture exercises the same code paths (prompting, KV cache, LoRA, constrained decoding) as an 8B one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ..prompts.templates import alpaca_template_v1, cllmfs_template_v1

DEFAULT_CORPUS = Path(__file__).with_name("tiny_corpus.txt")
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


@dataclass(frozen=True)
class TinyModelSpec:
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int = 1024
    max_positions: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads}), and "
                f"num_heads by num_kv_heads ({self.num_kv_heads})."
            )
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size must be at least 300 (256 bytes + specials + merges), got {self.vocab_size}")


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer: every byte is in the vocabulary, so any Unicode text is encodable."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    bos = tokenizer.token_to_id(SPECIAL_TOKENS["bos_token"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length, **SPECIAL_TOKENS)


def llama_config(spec: TinyModelSpec, vocab_size: int, bos: int, eos: int, pad: int | None) -> LlamaConfig:
    """A Llama config of `spec`'s shape (untied embeddings) for a tokenizer of `vocab_size` ids."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=False,
    )


def build_tiny_model(output: Path, texts: Iterable[str], spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Train a tokenizer on `texts` (plus the prompt templates' fixed text), build a random Llama, save both."""
    corpus = [line for line in texts if line.strip()]
    corpus += [cllmfs_template_v1().boilerplate(), alpaca_template_v1().boilerplate()]
    tokenizer = train_tokenizer(corpus, spec.vocab_size, spec.max_positions)
    torch.manual_seed(spec.seed)
    config = llama_config(spec, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


def tokenizer_texts(path: Path | None) -> list[str]:
    """Lines of `path`, or of the small built-in corpus."""
    path = path or DEFAULT_CORPUS
    if not path.is_file():
        raise FileNotFoundError(f"Text file for the tokenizer not found: {path}. Pass an existing --text FILE.")
    return path.read_text(encoding="utf-8").splitlines()
