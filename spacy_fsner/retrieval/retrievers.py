"""Demonstration retrieval: for each input sentence, the k most similar annotated sentences of a pool.

Registered in spaCy's `misc` registry and set as the `fsner` component's `retriever`:

- `spacy_fsner.WordRetriever.v1` (IF-WRANER): each query word is matched to its most similar word of a candidate
  (cosine of word vectors) and the matches are averaged, weighted by the word's inverse document frequency in the
  pool (`weighting = "idf"`) or not (`"uniform"`). Punctuation is left out.
- `spacy_fsner.SentenceRetriever.v1`: cosine of sentence vectors (the baseline IF-WRANER beats).
- `spacy_fsner.SpanRetriever.v1` (EL4NER): a sentence is the set of its entity spans (gold spans for the pool; for a
  query, the candidate spans an earlier step wrote to `doc.spans[spans_key]`); the score is the mean, over the
  query's spans, of the best cosine match among the candidate's spans. A query without candidate spans falls back
  to sentence similarity, and a pool sentence without entities scores 0 for span queries.
- `spacy_fsner.RandomRetriever.v1`: a random sample, fixed per (seed, sentence).

`fit(docs)` builds the index from annotated docs (`doc.ents`): the pool sentences and their vectors, saved with
the pipeline (`to_bytes`). `retrieve(queries)` ranks the pool for each query (a `Doc` or a sentence `Span`) and
keeps the best `k` that fit in `max_tokens` (spaCy tokens of demonstration text per prompt, 0: no limit): a
demonstration that does not fit is skipped, so a prompt gets fewer demonstrations, never a truncated input. A pool
sentence with the query's own text is never retrieved for it (training on a pool that holds the query).
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import srsly
from spacy.tokens import Doc, Span
from spacy.util import registry

from ..prompts.templates import AnnotatedText
from .embeddings import MODEL, Embeddings

Query = Doc | Span


@dataclass(frozen=True)
class PoolExample:
    """An annotated sentence of the pool."""

    text: str
    words: tuple[str, ...]
    """Its non-punctuation, non-space tokens (what word-level similarity matches)."""
    tokens: int
    """Its spaCy token count (what the demonstration budget counts)."""
    mentions: tuple[tuple[str, str], ...]
    """Its entities as (label, text), in text order."""

    @classmethod
    def of(cls, doc: Doc | Span) -> PoolExample:
        return cls(doc.text, _words(doc), len(doc), tuple((e.label_, e.text) for e in doc.ents))

    @property
    def entities(self) -> dict[str, list[str]]:
        """Per label, its entity strings in text order."""
        entities: dict[str, list[str]] = {}
        for label, text in self.mentions:
            entities.setdefault(label, []).append(text)
        return entities

    @property
    def spans(self) -> list[str]:
        return [text for _, text in self.mentions]

    @property
    def annotated(self) -> AnnotatedText:
        return (self.text, self.entities)


def _words(doc: Doc | Span) -> tuple[str, ...]:
    return tuple(t.text for t in doc if not (t.is_punct or t.is_space))


class Retriever:
    """Ranks a pool of annotated sentences for each query; subclasses define `_build` and `_scores`."""

    def __init__(self, k: int = 3, max_tokens: int = 0, embeddings: str = MODEL) -> None:
        if k < 1:
            raise ValueError(f"A retriever's k (demonstrations per prompt) must be >= 1, got {k}.")
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0 (0: no limit), got {max_tokens}.")
        self.k = k
        self.max_tokens = max_tokens
        self.embeddings_spec = embeddings
        self.pool: list[PoolExample] = []
        self.index: dict[str, np.ndarray] = {}
        self._factory: Callable[[str], Embeddings] | None = None
        self._embeddings: Embeddings | None = None

    def bind(self, factory: Callable[[str], Embeddings]) -> None:
        """Where vectors come from: `factory(self.embeddings_spec)`, called on first use (the component binds its
        model here, so `embeddings = "model"` means that model's input embeddings)."""
        self._factory, self._embeddings = factory, None

    @property
    def embeddings(self) -> Embeddings:
        if self._embeddings is None:
            if self._factory is None:
                from .embeddings import embeddings_from_spec

                self._factory = embeddings_from_spec
            self._embeddings = self._factory(self.embeddings_spec)
        return self._embeddings

    @property
    def fitted(self) -> bool:
        return bool(self.pool)

    def fit(self, docs: Sequence[Doc | Span]) -> None:
        """The pool: every doc (or sentence span) with its `ents`; empty docs are left out."""
        self.pool = [PoolExample.of(doc) for doc in docs if doc.text.strip()]
        self.index = self._build(self.pool) if self.pool else {}

    def retrieve(self, queries: Sequence[Query]) -> list[list[int]]:
        """Per query, pool indices best first: at most `k`, within `max_tokens`, never the query's own text."""
        if not self.pool:
            raise ValueError(
                "The retriever has no pool: give the component annotated examples first (nlp.initialize with "
                "training examples, or adapt(support_docs) for an episode)."
            )
        if not queries:
            return []
        scores = self._scores(queries)
        out = []
        for query, row in zip(queries, scores, strict=True):
            chosen, used = [], 0
            for i in np.argsort(-row, kind="stable"):
                example = self.pool[i]
                if example.text == query.text:
                    continue
                if self.max_tokens and used + example.tokens > self.max_tokens:
                    continue
                chosen.append(int(i))
                used += example.tokens
                if len(chosen) == self.k:
                    break
            out.append(chosen)
        return out

    def _build(self, pool: list[PoolExample]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _scores(self, queries: Sequence[Query]) -> np.ndarray:
        """[queries, pool] similarities."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        pool = [[e.text, list(e.words), e.tokens, [list(m) for m in e.mentions]] for e in self.pool]
        index = {k: {"shape": list(v.shape), "dtype": str(v.dtype), "data": v.tobytes()} for k, v in self.index.items()}
        return srsly.msgpack_dumps({"kind": type(self).__name__, "pool": pool, "index": index})

    def from_bytes(self, data: bytes) -> Retriever:
        msg = srsly.msgpack_loads(data)
        if msg["kind"] != type(self).__name__:
            raise ValueError(
                f"The saved retrieval index was built by a {msg['kind']}, but the component is configured with a "
                f"{type(self).__name__}: configure the same retriever, or fit the index again (nlp.initialize)."
            )
        self.pool = [
            PoolExample(text, tuple(words), tokens, tuple((label, entity) for label, entity in mentions))
            for text, words, tokens, mentions in msg["pool"]
        ]
        self.index = {
            k: np.frombuffer(v["data"], dtype=v["dtype"]).reshape(v["shape"]).copy() for k, v in msg["index"].items()
        }
        return self


def _segment_max(similarities: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[rows, segments]: the max of each row over each segment's columns (an empty segment gives 0)."""
    out = np.zeros((similarities.shape[0], len(starts)), np.float32)
    nonempty = lengths > 0
    if nonempty.any() and similarities.shape[1]:
        out[:, nonempty] = np.maximum.reduceat(similarities, starts[nonempty], axis=1)
    return out


def _segments(sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Lengths and start offsets of consecutive segments of these sizes in one flat array."""
    lengths = np.array(sizes, dtype=np.int64)
    return lengths, np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def _concat(rows: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of many examples in one matrix, with each example's start and length."""
    lengths, starts = _segments([len(r) for r in rows])
    matrix = np.concatenate(rows) if rows and lengths.sum() else np.zeros((0, dim), np.float32)
    return matrix.astype(np.float32), starts, lengths


class SentenceRetriever(Retriever):
    def _build(self, pool: list[PoolExample]) -> dict[str, np.ndarray]:
        return {"sentences": self.embeddings.sentences([e.words for e in pool])}

    def _scores(self, queries: Sequence[Query]) -> np.ndarray:
        return self.embeddings.sentences([_words(q) for q in queries]) @ self.index["sentences"].T


class WordRetriever(Retriever):
    def __init__(self, k: int = 3, max_tokens: int = 0, embeddings: str = MODEL, weighting: str = "idf") -> None:
        super().__init__(k, max_tokens, embeddings)
        if weighting not in ("idf", "uniform"):
            raise ValueError(f"WordRetriever weighting must be 'idf' or 'uniform', got {weighting!r}.")
        self.weighting = weighting
        self._df: Counter[str] | None = None

    def _build(self, pool: list[PoolExample]) -> dict[str, np.ndarray]:
        vectors = self.embeddings.words([e.words for e in pool])
        matrix, starts, lengths = _concat(vectors, vectors[0].shape[1] if vectors else 1)
        self._df = None
        return {"words": matrix, "starts": starts, "lengths": lengths}

    def _weights(self, words: Sequence[str]) -> np.ndarray:
        if self.weighting == "uniform":
            return np.ones(len(words), np.float32)
        if self._df is None:
            self._df = Counter(w for e in self.pool for w in {w.lower() for w in e.words})
        n = len(self.pool)
        return np.array([math.log((n + 1) / (self._df[w.lower()] + 1)) + 1 for w in words], np.float32)

    def _scores(self, queries: Sequence[Query]) -> np.ndarray:
        words = [_words(q) for q in queries]
        out = np.zeros((len(queries), len(self.pool)), np.float32)
        for row, (query_words, vectors) in enumerate(zip(words, self.embeddings.words(words), strict=True)):
            if not query_words:
                continue
            best = _segment_max(vectors @ self.index["words"].T, self.index["starts"], self.index["lengths"])
            weights = self._weights(query_words)
            out[row] = weights @ best / weights.sum()
        return out


class SpanRetriever(Retriever):
    def __init__(self, k: int = 3, max_tokens: int = 0, embeddings: str = MODEL, spans_key: str = "candidates"):
        super().__init__(k, max_tokens, embeddings)
        self.spans_key = spans_key

    def _build(self, pool: list[PoolExample]) -> dict[str, np.ndarray]:
        spans = [e.spans for e in pool]
        flat = [s for texts in spans for s in texts]
        vectors = self.embeddings.phrases(flat)
        lengths, starts = _segments([len(texts) for texts in spans])
        return {
            "spans": vectors,
            "starts": starts,
            "lengths": lengths,
            "sentences": self.embeddings.sentences([e.words for e in pool]),
        }

    def query_spans(self, query: Query) -> list[str]:
        """The candidate spans of `query` in `doc.spans[spans_key]` (those inside it, for a sentence span)."""
        doc = query if isinstance(query, Doc) else query.doc
        if self.spans_key not in doc.spans:
            return []
        start, end = (0, len(doc)) if isinstance(query, Doc) else (query.start, query.end)
        return list(dict.fromkeys(s.text for s in doc.spans[self.spans_key] if start <= s.start and s.end <= end))

    def _scores(self, queries: Sequence[Query]) -> np.ndarray:
        out = self.embeddings.sentences([_words(q) for q in queries]) @ self.index["sentences"].T
        for row, query in enumerate(queries):
            spans = self.query_spans(query)
            if spans:
                best = _segment_max(
                    self.embeddings.phrases(spans) @ self.index["spans"].T,
                    self.index["starts"],
                    self.index["lengths"],
                )
                out[row] = best.mean(0)
        return out


class RandomRetriever(Retriever):
    def __init__(self, k: int = 3, max_tokens: int = 0, seed: int = 0) -> None:
        super().__init__(k, max_tokens, embeddings="none")
        self.seed = seed

    def _build(self, pool: list[PoolExample]) -> dict[str, np.ndarray]:
        return {}

    def _scores(self, queries: Sequence[Query]) -> np.ndarray:
        return np.stack(
            [
                np.random.default_rng([self.seed, zlib.crc32(q.text.encode("utf-8"))]).random(len(self.pool))
                for q in queries
            ]
        )


@registry.misc("spacy_fsner.WordRetriever.v1")
def word_retriever_v1(k: int = 3, max_tokens: int = 0, embeddings: str = MODEL, weighting: str = "idf") -> Retriever:
    """IF-WRANER's word-level retrieval (`embeddings`: "model" for the base model's input embeddings, or a
    sentence encoder such as "all-minilm-l6-v2")."""
    return WordRetriever(k, max_tokens, embeddings, weighting)


@registry.misc("spacy_fsner.SentenceRetriever.v1")
def sentence_retriever_v1(k: int = 3, max_tokens: int = 0, embeddings: str = MODEL) -> Retriever:
    return SentenceRetriever(k, max_tokens, embeddings)


@registry.misc("spacy_fsner.SpanRetriever.v1")
def span_retriever_v1(
    k: int = 3, max_tokens: int = 0, embeddings: str = MODEL, spans_key: str = "candidates"
) -> Retriever:
    """EL4NER's span-level retrieval; the query's candidate spans are read from `doc.spans[spans_key]`."""
    return SpanRetriever(k, max_tokens, embeddings, spans_key)


@registry.misc("spacy_fsner.RandomRetriever.v1")
def random_retriever_v1(k: int = 3, max_tokens: int = 0, seed: int = 0) -> Retriever:
    return RandomRetriever(k, max_tokens, seed)
