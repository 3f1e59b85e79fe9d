"""Demonstration retrieval (IF-WRANER and EL4NER): word-, sentence- and span-level retrievers over a pool of
annotated sentences, and the embeddings they compare (the model's input embeddings or a sentence encoder)."""

from .embeddings import Embeddings, EncoderEmbeddings, InputEmbeddings, embeddings_from_spec
from .retrievers import PoolExample, RandomRetriever, Retriever, SentenceRetriever, SpanRetriever, WordRetriever

__all__ = [
    "Embeddings",
    "EncoderEmbeddings",
    "InputEmbeddings",
    "PoolExample",
    "RandomRetriever",
    "Retriever",
    "SentenceRetriever",
    "SpanRetriever",
    "WordRetriever",
    "embeddings_from_spec",
]
