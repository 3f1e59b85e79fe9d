"""The generator's prefix tree and token-budget batching: the same tokens as one `generate` call per prompt, each
shared part computed once, few pads."""

import dataclasses
import os
from pathlib import Path

import pytest
import spacy
import torch
from generator_settings import generator_config
from hypothesis import given
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from spacy_fsner.decoding.generator import ConstrainedGenerator
from spacy_fsner.decoding.parsing import parse_generation
from spacy_fsner.decoding.prefix_tree import prompt_tree_tokens
from spacy_fsner.pipeline.task import make_ner_task
from spacy_fsner.prompts.templates import PromptContext, cllmfs_template_v1, shared_input_template_v1
from spacy_fsner.ty import GenerationRequest

NLP = spacy.blank("en")
LABELS = {"PER": "a person", "LOC": "a place", "organization-government/governmentagency": None}


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():  # an output layer that writes entities
        model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape, generator=torch.Generator().manual_seed(1)))
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def sentences(shared_data: Path, n: int) -> list[str]:
    out, words = [], []
    for line in (shared_data / "conll2003" / "eng.testb").read_text().splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                out.append(" ".join(words))
            words = []
        else:
            words.append(line.split()[0])
        if len(out) == n:
            break
    return out


def requests_for(texts: list[str], template) -> list[GenerationRequest]:
    definitions = {k: v for k, v in LABELS.items() if v}
    task = make_ner_task(list(LABELS), definitions, template)
    task.set_demonstrations([NLP("Angela Merkel visited Paris .")])
    return [r for prompts in task.generate_prompts(map(NLP, texts)) for r in prompts.requests]


@pytest.mark.parametrize("template", [cllmfs_template_v1(), shared_input_template_v1()], ids=["cllmfs", "shared"])
@pytest.mark.parametrize("batch_size,batch_tokens", [(8, 64), (64, 4096)])
def test_tree_generation_equals_one_generate_call_per_prompt(
    model_and_tokenizer, shared_data, template, batch_size, batch_tokens
):
    model, tokenizer = model_and_tokenizer
    texts = sentences(shared_data, 14)
    requests = requests_for(texts + texts[:2], template)  # two inputs twice: generated once, answered twice
    config = generator_config(max_new_tokens=12, batch_size=batch_size, batch_tokens=batch_tokens)
    generator = ConstrainedGenerator(model, tokenizer, config)
    batched = generator.generate(requests)
    assert generator.counts["prompt_tokens"] == prompt_tree_tokens(generator, requests), "a shared part computed twice"
    assert generator.counts["pad_tokens"] <= 0.1 * generator.counts["prompt_tokens"] + batch_size
    alone = [generator.generate_naive(r) for r in requests]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    assert [g.finished for g in batched] == [g.finished for g in alone]
    for a, b in zip(batched, alone, strict=True):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)
    assert sum(bool(parse_generation(g).entities) for g in batched) >= 3, "the random model should write some entities"


def test_shared_input_computes_the_sentence_once_for_all_labels(model_and_tokenizer, shared_data):
    model, tokenizer = model_and_tokenizer
    texts = sentences(shared_data, 6)
    per_label, shared = (requests_for(texts, t) for t in (cllmfs_template_v1(), shared_input_template_v1()))
    assert len({r.prefix for r in shared}) == 1 and len({r.prefix for r in per_label}) == len(LABELS)
    counts = {}
    for name, requests in (("per_label", per_label), ("shared", shared)):
        generator = ConstrainedGenerator(model, tokenizer, generator_config(max_new_tokens=1))
        generator.generate(requests)
        sentence_tokens = sum(len(generator.encode(r)[1]) for r in requests[:: len(LABELS)])
        counts[name] = generator.counts["prompt_tokens"] - prompt_tree_tokens(generator, requests[:1]), sentence_tokens
    # the papers' template computes every sentence once per label, the shared-input one once
    assert counts["per_label"][0] > len(LABELS) * counts["per_label"][1] * 0.99
    assert counts["shared"][0] < counts["shared"][1] + len(texts) * len(LABELS) * 20


def test_mixed_tails_and_no_prefix_cache_give_the_same_tokens(model_and_tokenizer, shared_data):
    """A group where some prompts have a tail and some not, and the whole prompt as one part (no prefix cache)."""
    model, tokenizer = model_and_tokenizer
    texts = sentences(shared_data, 5)
    requests = requests_for(texts, shared_input_template_v1())
    mixed = [
        r if i % 2 else GenerationRequest(r.prefix, r.suffix + r.tail, r.source, r.starts, r.ends, r.fmt)
        for i, r in enumerate(requests)
    ]
    for prefix_cache in (True, False):
        config = generator_config(max_new_tokens=10, batch_size=6, prefix_cache=prefix_cache)
        generator = ConstrainedGenerator(model, tokenizer, config)
        batched = generator.generate(mixed)
        assert [g.token_ids for g in batched] == [generator.generate_naive(r).token_ids for r in mixed]


@pytest.mark.parametrize("template", [cllmfs_template_v1(), shared_input_template_v1()], ids=["cllmfs", "shared"])
def test_retrieved_demonstrations_per_sentence_are_batched_together(model_and_tokenizer, shared_data, template):
    """Each sentence has its own prefix (its retrieved demonstrations): the prompts are still generated exactly as
    one by one, every token is computed once (the header the prefixes begin with too), and the sentences share
    forward passes instead of one pass each."""
    from spacy_fsner.retrieval.retrievers import RandomRetriever

    model, tokenizer = model_and_tokenizer
    texts = sentences(shared_data, 12)
    pool = [NLP(t) for t in sentences(shared_data, 30)[12:]]
    task = make_ner_task(list(LABELS), {}, template, retriever=RandomRetriever(k=2))
    task.set_demonstrations(pool)
    requests = [r for prompts in task.generate_prompts(map(NLP, texts)) for r in prompts.requests]
    assert len({r.prefix for r in requests}) >= len(texts), "a prefix per sentence (and label)"
    generator = ConstrainedGenerator(
        model, tokenizer, generator_config(max_new_tokens=8, batch_size=64, batch_tokens=8192)
    )
    batched = generator.generate(requests)
    prefixes = [list(p) for p in {tuple(generator.encode(r)[0]) for r in requests}]
    header = len(os.path.commonprefix(prefixes))  # what all the per-sentence prefixes begin with
    assert header > 0
    bound = prompt_tree_tokens(generator, requests) - (len(prefixes) - 1) * header
    assert generator.counts["prompt_tokens"] == bound, "the common header computed once, every other part once"
    passes = generator.counts["forward_passes"]
    assert [g.token_ids for g in batched] == [generator.generate_naive(r).token_ids for r in requests]
    generator.counts.clear()
    generator.generate(requests[: len(LABELS)])  # one sentence alone
    assert passes < len(texts) * generator.counts["forward_passes"] / 2, "sentences share forward passes"


@given(
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=40),
    budget=st.integers(1, 400),
    tolerance=st.sampled_from([0.0, 0.1, 0.3]),
)
def test_sub_batches_keep_the_token_budget_and_the_pad_tolerance(lengths, budget, tolerance):
    generator = ConstrainedGenerator.__new__(ConstrainedGenerator)
    generator.config = generator_config(batch_tokens=budget, pad_tolerance=tolerance)
    batches = generator._sub_batches(list(range(len(lengths))), lambda i: lengths[i])
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        width = max(lengths[i] for i in batch)
        total, real = width * len(batch), sum(lengths[i] for i in batch)
        if len(batch) > 1:  # a single row may exceed the budget: it cannot be split
            assert total <= budget
            assert total - real <= tolerance * total


def test_prompt_context_renders_every_label_for_the_shared_template():
    template = shared_input_template_v1()
    context = PromptContext(("PER", "LOC"), {"PER": "a person"}, (("Kohl was in Bonn .", {"PER": ["Kohl"]}),))
    prefix = template.prompt_prefix("LOC", context)
    assert prefix == template.prompt_prefix("PER", context), "the prefix must not depend on the label"
    assert "PER: a person.\n" in prefix
    assert "Kohl was in Bonn .\n\n### Entities:\nPER: <<< Kohl >>>\n\n### Input:\n" in prefix
    with_empty = dataclasses.replace(template, empty_answers=True).prompt_prefix("LOC", context)
    assert "### Entities:\nPER: <<< Kohl >>>\nLOC:\n\n### Input:\n" in with_empty
    part, offset = template.label_offset("LOC", context)
    assert part == "tail" and template.tail("LOC")[offset:].startswith("LOC")
    with pytest.raises(ValueError, match="definition"):
        type(template)(**{**template.__dict__, "instruction": "{label}{definition}:"})
