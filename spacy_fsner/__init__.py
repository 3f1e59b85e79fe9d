"""spacy-fsner: few-shot NER for spaCy with a causal LM, constrained decoding and LoRA adapters."""

__version__ = "0.1.0"
