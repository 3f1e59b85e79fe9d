"""Vectors for retrieval: words, sentences and phrases as unit-length rows (cosine similarity is a dot product).

- `InputEmbeddings` (IF-WRANER's default): the base model's own input embedding matrix. A word's vector is the mean
  of the rows of its tokens (the word as it appears after a space); a sentence's is the mean of its words'.
  Nothing runs through the model, so it is fast and needs no second model.
- `EncoderEmbeddings`: a sentence encoder (all-MiniLM-L6-v2 by default, `fetch-model all-minilm-l6-v2`). A word's
  vector is the mean of its tokens' contextual outputs; a sentence's the encoder's mean pooling, as
  sentence-transformers computes it.

`embeddings_from_spec("model", lm)` picks the first, any other name (a fetch name, a directory, a hub id) the
second; the retrievers take that name as their `embeddings` setting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

MODEL = "model"
"""The `embeddings` setting that means the base model's input embeddings."""


class Embeddings(Protocol):
    def words(self, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Per sentence, one unit row per word: [n_words, dim] float32."""
        ...

    def sentences(self, sentences: Sequence[Sequence[str]]) -> np.ndarray:
        """One unit row per sentence: [n, dim] float32."""
        ...

    def phrases(self, phrases: Sequence[str]) -> np.ndarray:
        """One unit row per phrase (an entity string): [n, dim] float32."""
        ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class InputEmbeddings:
    """Rows of a causal LM's input embedding matrix, averaged over a word's tokens (cached per word)."""

    def __init__(self, matrix: torch.Tensor, tokenizer) -> None:
        self.matrix = matrix.detach().float().cpu()
        self.tokenizer = tokenizer
        self._cache: dict[str, np.ndarray] = {}

    @classmethod
    def of(cls, lm) -> InputEmbeddings:
        """The input embeddings of a `CausalLM` (loads it if needed)."""
        return cls(lm.loaded_model.get_input_embeddings().weight, lm.generator.tokenizer)

    def _word(self, word: str) -> np.ndarray:
        vector = self._cache.get(word)
        if vector is None:
            ids = self.tokenizer(" " + word, add_special_tokens=False)["input_ids"] or [
                self.tokenizer.unk_token_id or 0
            ]
            vector = self.matrix[ids].mean(0).numpy()
            self._cache[word] = vector
        return vector

    def words(self, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        dim = self.matrix.shape[1]
        return [
            normalise(np.stack([self._word(w) for w in words])) if words else np.zeros((0, dim), np.float32)
            for words in sentences
        ]

    def sentences(self, sentences: Sequence[Sequence[str]]) -> np.ndarray:
        dim = self.matrix.shape[1]
        rows = [w.mean(0) if len(w) else np.zeros(dim, np.float32) for w in self.words(sentences)]
        return normalise(np.stack(rows)) if rows else np.zeros((0, dim), np.float32)

    def phrases(self, phrases: Sequence[str]) -> np.ndarray:
        return self.sentences([phrase.split() for phrase in phrases])


class EncoderEmbeddings:
    """A Hugging Face encoder (BERT-like) with mean pooling, as sentence-transformers uses all-MiniLM-L6-v2."""

    def __init__(self, name: str, batch_size: int = 64, max_length: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        from ..models.loading import check_model_source, model_location

        source = model_location(check_model_source(name))
        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source, use_safetensors=True).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.inference_mode()
    def _encode(self, sentences: Sequence[Sequence[str]]) -> list[tuple[torch.Tensor, list[int | None]]]:
        """Per sentence, the token outputs [tokens, dim] and each token's word index (None for special tokens)."""
        out = []
        for start in range(0, len(sentences), self.batch_size):
            batch = [list(words) for words in sentences[start : start + self.batch_size]]
            encoded = self.tokenizer(
                batch,
                is_split_into_words=True,
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
            hidden = self.model(**encoded).last_hidden_state
            for row in range(len(batch)):
                n = int(encoded["attention_mask"][row].sum())
                out.append((hidden[row, :n], encoded.word_ids(row)[:n]))
        return out

    def words(self, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        result = []
        for (hidden, word_ids), words in zip(self._encode(sentences), sentences, strict=True):
            vectors = np.zeros((len(words), hidden.shape[1]), np.float32)
            counts = np.zeros(len(words), np.float32)
            for position, word in enumerate(word_ids):
                if word is not None:
                    vectors[word] += hidden[position].numpy()
                    counts[word] += 1
            # a word cut off by max_length keeps the sentence's mean, so that it still matches something sensible
            mean = hidden.mean(0).numpy()
            vectors[counts == 0] = mean
            result.append(normalise(vectors / np.maximum(counts, 1)[:, None]))
        return result

    def sentences(self, sentences: Sequence[Sequence[str]]) -> np.ndarray:
        rows = [hidden.mean(0).numpy() for hidden, _ in self._encode(sentences)]
        return normalise(np.stack(rows)) if rows else np.zeros((0, self.model.config.hidden_size), np.float32)

    def phrases(self, phrases: Sequence[str]) -> np.ndarray:
        return self.sentences([phrase.split() for phrase in phrases])


def embeddings_from_spec(spec: str, lm=None) -> Embeddings:
    """`"model"`: the input embeddings of `lm` (a `CausalLM`); anything else: a sentence encoder by that name."""
    if spec == MODEL:
        if lm is None or not hasattr(lm, "loaded_model"):
            raise ValueError(
                "embeddings = 'model' uses the base model's input embeddings, but this component's model is not a "
                "spacy_fsner.CausalLM.v1. Name a sentence encoder instead, e.g. embeddings = 'all-minilm-l6-v2'."
            )
        return InputEmbeddings.of(lm)
    return EncoderEmbeddings(spec)


EmbeddingsFactory = Callable[[str], Embeddings]
"""What a retriever calls with its `embeddings` setting to get vectors (bound to the component's model)."""
