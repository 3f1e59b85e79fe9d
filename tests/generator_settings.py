"""`GeneratorConfig`s for tests that build a `ConstrainedGenerator` directly: small batches, all else as a user gets
it; a test names only what it is about (`generator_config(max_new_tokens=8)`)."""

from spacy_fsner.decoding.generator import GeneratorConfig

TEST_SETTINGS = {
    "batch_size": 32,
    "batch_tokens": 2048,
    "pad_tolerance": 0.1,
    "max_new_tokens": 128,
    "constrained": True,
    "prefix_cache": True,
}


def generator_config(**settings) -> GeneratorConfig:
    return GeneratorConfig(**{**TEST_SETTINGS, **settings})
