"""Loading models: the registered `spacy_fsner.CausalLM.v1` (a Hugging Face causal LM + LoRA adapter as a spacy-llm
model, `causal_lm`), loading and checking base models and adapters (`loading`), real pretrained models from the
package index (`fetch`, the `fetch-model` command) and the tiny random Llama that tests and smoke runs build
(`tiny`)."""

from importlib import import_module

_HOMES = {
    "CausalLM": "causal_lm",
    "causal_lm_v1": "causal_lm",
    "SOURCES": "fetch",
    "FetchError": "fetch",
    "fetch_model": "fetch",
    "model_cache": "fetch",
    "load_base_model": "loading",
    "load_tokenizer": "loading",
    "model_location": "loading",
    "TinyModelSpec": "tiny",
    "build_tiny_model": "tiny",
}
"""Each name's module, imported on first use: `models.fetch` (the CLI's help lists its model names) stays cheap to
import without transformers."""


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOMES[name]}", __name__), name)


__all__ = [
    "SOURCES",
    "CausalLM",
    "FetchError",
    "TinyModelSpec",
    "build_tiny_model",
    "causal_lm_v1",
    "fetch_model",
    "load_base_model",
    "load_tokenizer",
    "model_cache",
    "model_location",
]
