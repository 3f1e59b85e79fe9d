"""Constrained decoding: every entity is a contiguous, token-aligned substring of the input."""

import random
from pathlib import Path

import pytest
import spacy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from spacy_fsner.decoding.alignment import align_in_order
from spacy_fsner.decoding.constraint import ResponseFormat, SubstringConstraint
from spacy_fsner.decoding.generator import ConstrainedGenerator, GenerationRequest
from spacy_fsner.decoding.parsing import parse_response
from spacy_fsner.decoding.vocab import TokenTrie, token_bytes
from spacy_fsner.pipeline.chunking import token_boundaries
from spacy_fsner.prompts.templates import alpaca_template_v1, cllmfs_template_v1

FMT = ResponseFormat()
NLP = spacy.blank("en")


def _request(text: str, template=None, label: str = "PER") -> GenerationRequest:
    template = template or cllmfs_template_v1()
    doc = NLP(text)
    starts, ends = token_boundaries(doc[:])
    return GenerationRequest(template.prefix(label, "a name"), template.suffix(text), text, starts, ends, template.fmt)


def _assert_token_aligned(text: str, entities: list[str]) -> None:
    doc = NLP(text)
    starts, ends = token_boundaries(doc[:])
    for entity in entities:
        positions = [i for i in range(len(text)) if text.startswith(entity, i)]
        assert any(p in starts and p + len(entity) in ends for p in positions), (entity, text)


def test_leading_space_can_sit_in_the_entity_token_or_in_the_marker():
    # " Paris" (space inside the token) and "Paris" (space already written by the marker) are both right.
    table = [b" <<<", b" <<< ", b" ", b"Paris", b" Paris", b" >>>", b" <im_end>", b"Par", b"is", b"aris"]
    trie = TokenTrie.from_token_bytes(table)
    constraint = SubstringConstraint(FMT, "He saw Paris.", [0, 3, 7, 12], [2, 6, 12, 13], trie)
    state = constraint.advance(constraint.initial(), 0)  # " <<<"
    allowed = {table[i] for i in constraint.allowed_tokens(state)}
    assert b" Paris" in allowed and b" " in allowed
    assert b"Paris" not in allowed  # the marker's space is still missing
    state = constraint.advance(state, 2)  # " "
    allowed = {table[i] for i in constraint.allowed_tokens(state)}
    assert {b"Paris", b"Par"} <= allowed
    assert b" Paris" not in allowed and b"aris" not in allowed  # no double space, no start inside a token
    state = constraint.advance(state, 7)  # "Par": not a token end, cannot close
    assert b" >>>" not in {table[i] for i in constraint.allowed_tokens(state)}
    state = constraint.advance(state, 8)  # "is"
    assert b" >>>" in {table[i] for i in constraint.allowed_tokens(state)}


def test_entity_bytes_may_split_a_multibyte_character():
    text = "Über São Paulo"
    data = text.encode()
    table = [b" <<< ", data[:1], data[1:2], data[2:5], b" >>>", b" <im_end>"]
    trie = TokenTrie.from_token_bytes(table)
    constraint = SubstringConstraint(FMT, text, [0, 5, 9], [4, 8, 14], trie)
    state = constraint.advance(constraint.initial(), 0)
    assert 1 in constraint.allowed_tokens(state)
    state = constraint.advance(constraint.advance(state, 1), 2)  # "Ü" written in two tokens
    state = constraint.advance(state, 3)
    assert 4 in constraint.allowed_tokens(state)  # "Über" is a whole token: may close


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def real_sentences(shared_data: Path) -> list[str]:
    sentences = []
    for path, column in ((shared_data / "conll2003" / "eng.testb", 0), (shared_data / "fewnerd" / "inter_sentences"
                                                                         / "test-inter.txt", 0)):
        words: list[str] = []
        for line in path.read_text(encoding="utf-8").splitlines()[:6000]:
            if not line.strip() or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append(" ".join(words))
                words = []
            else:
                words.append(line.split()[column])
    non_ascii = [s for s in sentences if not s.isascii()]
    assert len(non_ascii) > 10, "expected Few-NERD sentences with non-ASCII characters"
    return sentences


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_weight_model_only_writes_token_aligned_substrings(model_and_tokenizer, real_sentences, data):
    model, tokenizer = model_and_tokenizer
    seed = data.draw(st.integers(0, 2**16))
    text = data.draw(st.sampled_from(real_sentences))
    extra = data.draw(st.sampled_from(["", " 😀", " \u0007ctrl", " naïve café"]))
    text = text + extra
    generator_rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a freshly drawn output layer: a different random-weight model per example
        model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape, generator=generator_rng) * 0.5)
    template = data.draw(st.sampled_from([cllmfs_template_v1(), alpaca_template_v1()]))
    generator = ConstrainedGenerator(model, tokenizer, max_new_tokens=40, batch_size=4)
    generations = generator.generate([_request(text, template, label) for label in ("PER", "LOC")])
    for generation in generations:
        parsed = parse_response(generation.text, template.fmt)
        _assert_token_aligned(text, [e.text for e in parsed.entities])
        if parsed.unterminated:  # cut by max_new_tokens: still a prefix of a copy of the input
            assert parsed.unterminated in text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_walk_through_the_allowed_tokens_stays_in_the_grammar(model_and_tokenizer, real_sentences, data):
    _, tokenizer = model_and_tokenizer
    text = data.draw(st.sampled_from(real_sentences))
    trie = _trie(tokenizer)
    request = _request(text)
    constraint = SubstringConstraint(request.fmt, text, request.starts, request.ends, trie)
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    state, written = constraint.initial(), b""
    for _ in range(60):
        allowed = constraint.allowed_tokens(state)
        assert allowed, "a live response must always have a next token"
        token = rng.choice(allowed)
        written += trie.token_bytes[token]
        state = constraint.advance(state, token)
        assert state, "an allowed token must keep the automaton alive"
        if constraint.is_done(state):
            break
    parsed = parse_response(written.decode("utf-8", errors="replace"), request.fmt)
    _assert_token_aligned(text, [e.text for e in parsed.entities])


_TRIES: dict[int, TokenTrie] = {}


def _trie(tokenizer) -> TokenTrie:
    return _TRIES.setdefault(id(tokenizer), TokenTrie.from_token_bytes(token_bytes(tokenizer)))


def test_batched_cached_generation_equals_one_generate_call_per_prompt(model_and_tokenizer, real_sentences):
    model, tokenizer = model_and_tokenizer
    with torch.no_grad():
        model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape, generator=torch.Generator().manual_seed(1)))
    requests = [_request(s, label=label) for s in real_sentences[:12] + real_sentences[-12:] for label in ("A", "B")]
    generator = ConstrainedGenerator(model, tokenizer, max_new_tokens=24, batch_size=8)
    batched = generator.generate(requests)
    alone = [generator.generate_naive(r) for r in requests]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    assert [g.finished for g in batched] == [g.finished for g in alone]
    for a, b in zip(batched, alone, strict=True):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)
    assert any(g.parse().entities for g in batched), "the random model should write some entities"


def test_parse_scores_each_entity_by_the_tokens_that_wrote_it():
    text = " <<< Angela Merkel >>> <<< Paris >>> <im_end>"
    ends = [len(b" <<< Angela"), len(" <<< Angela Merkel >>>"), len(" <<< Angela Merkel >>> <<< Paris"),
            len(text)]
    parsed = parse_response(text, FMT, ends, [-1.0, -2.0, -4.0, -8.0])
    assert [(e.text, e.score) for e in parsed.entities] == [("Angela Merkel", -3.0), ("Paris", -4.0)]
    assert parse_response(" <<< Ange", FMT).unterminated == "Ange"
    assert parse_response(" <<< Angela >>> <<< Paris >>", FMT).unterminated == "Paris"


def test_alignment_follows_output_order_and_reports_what_it_cannot_place():
    source = "B met A and B"
    starts, ends = {0, 2, 6, 8, 12}, {1, 5, 7, 11, 13}
    result = align_in_order(source, ["A", "B", "B", "B", "Zed", "me"], starts, ends)
    assert [(i, s, e) for i, s, e in result.spans] == [(0, 6, 7), (1, 12, 13), (2, 0, 1)]
    assert result.repeated == [3]
    assert result.unplaced == [4, 5]  # "me" occurs only inside the token "met"
