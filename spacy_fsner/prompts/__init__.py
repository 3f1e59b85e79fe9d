"""Prompt templates, registered in spaCy's `misc` registry: the papers' per-label templates (CLLMFS, OBP-LLM's
alpaca prompt), the shared-input template, and EL4NER's classification and validation prompts."""

from .el4ner import ClassificationTemplate, ValidationTemplate
from .templates import PromptContext, PromptTemplate, SharedInputTemplate

__all__ = ["ClassificationTemplate", "PromptContext", "PromptTemplate", "SharedInputTemplate", "ValidationTemplate"]
