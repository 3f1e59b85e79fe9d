"""The bytes each vocabulary token writes, and a byte trie over them.

Constrained decoding works on UTF-8 bytes, not on token strings: a byte-level BPE token such as "ĠParis" writes
b" Paris", so the space that separates an entity from the `<<<` marker may live inside the entity's first token.
Reasoning on bytes makes that, and tokens that split a multi-byte character, come out right by construction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from transformers import PreTrainedTokenizerBase

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """Inverse of GPT-2's `bytes_to_unicode` table (the printable stand-ins byte-level BPE uses)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes, strict=True)}


def _decoder_kind(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"{type(tokenizer).__name__} has no fast (Rust) backend; constrained decoding needs one. "
            "Load the tokenizer with `use_fast=True` (the default for Llama tokenizers)."
        )
    decoder = json.dumps(json.loads(backend.to_str()).get("decoder"))
    if '"ByteLevel"' in decoder:
        return "byte_level"
    if '"ByteFallback"' in decoder or '"Metaspace"' in decoder or "\u2581" in decoder:
        return "sentencepiece"
    raise ValueError(
        f"Unsupported tokenizer decoder for constrained decoding: {decoder[:200]}. Supported: byte-level BPE "
        "(Llama 3, GPT-2 style) and SentencePiece with byte fallback (Llama 2, Mistral)."
    )


def token_bytes(tokenizer: PreTrainedTokenizerBase) -> list[bytes | None]:
    """For each token id, the bytes it writes into the text; None for special tokens (they write no text)."""
    kind = _decoder_kind(tokenizer)
    special = set(tokenizer.all_special_ids)
    for token in tokenizer.added_tokens_decoder.values():
        if token.special:
            special.add(tokenizer.convert_tokens_to_ids(token.content))
    table: list[bytes | None] = [None] * len(tokenizer)
    byte_decoder = _byte_level_decoder()
    for piece, token_id in tokenizer.get_vocab().items():
        if token_id in special or token_id >= len(table):
            continue
        if kind == "byte_level":
            if all(ch in byte_decoder for ch in piece):
                table[token_id] = bytes(byte_decoder[ch] for ch in piece)
            else:  # an added, non-special token is stored as plain text
                table[token_id] = piece.encode("utf-8")
        else:
            fallback = _BYTE_FALLBACK.match(piece)
            table[token_id] = (
                bytes([int(fallback.group(1), 16)]) if fallback else piece.replace("\u2581", " ").encode("utf-8")
            )
    return table


@dataclass
class TrieNode:
    children: dict[int, TrieNode] = field(default_factory=dict)
    token_ids: list[int] = field(default_factory=list)


@dataclass
class TokenTrie:
    """A trie over the byte strings of a vocabulary, walked together with a byte automaton."""

    root: TrieNode
    token_bytes: list[bytes | None]

    @classmethod
    def from_token_bytes(cls, table: Iterable[bytes | None]) -> TokenTrie:
        table = list(table)
        root = TrieNode()
        for token_id, data in enumerate(table):
            if not data:
                continue
            node = root
            for b in data:
                node = node.children.setdefault(b, TrieNode())
            node.token_ids.append(token_id)
        return cls(root=root, token_bytes=table)

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> TokenTrie:
        return cls.from_token_bytes(token_bytes(tokenizer))
