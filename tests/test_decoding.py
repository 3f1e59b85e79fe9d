"""Constrained decoding: every entity is a contiguous, token-aligned substring of the input."""

import random
from pathlib import Path

import pytest
import spacy
import torch
from generator_settings import generator_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from spacy_fsner.decoding.alignment import align_in_order, align_jointly
from spacy_fsner.decoding.constraint import SubstringConstraint
from spacy_fsner.decoding.encoding import decode_generated
from spacy_fsner.decoding.generator import ConstrainedGenerator
from spacy_fsner.decoding.parsing import parse_generation, parse_response
from spacy_fsner.decoding.vocab import TokenTrie, token_bytes
from spacy_fsner.pipeline.chunking import token_boundaries
from spacy_fsner.pipeline.task import make_ner_task
from spacy_fsner.prompts.templates import alpaca_template_v1, cllmfs_template_v1
from spacy_fsner.ty import DocGenerations, Generation, GenerationRequest, ResponseFormat

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


def test_an_entity_repeated_or_out_of_order_ends_the_response():
    table = [b" <<< ", b"Ho", b" >>>", b" <im_end>", b"Hi"]
    trie = TokenTrie.from_token_bytes(table)
    constraint = SubstringConstraint(FMT, "Ho Hi Ho", [0, 3, 6], [2, 5, 8], trie)

    def entity(state, token):
        return constraint.advance(constraint.advance(constraint.advance(state, 0), token), 2)

    state = entity(entity(constraint.initial(), 1), 1)  # "Ho" occurs twice: in order both times
    assert not constraint.is_done(state) and 0 in constraint.allowed_tokens(state)
    state = entity(state, 1)  # a third "Ho": kept, and the response ends
    assert constraint.is_done(state)
    state = entity(entity(constraint.initial(), 4), 1)  # "Hi", then the "Ho" after it: fine
    assert not constraint.is_done(state)
    state = entity(entity(constraint.initial(), 4), 4)  # "Hi" again: it occurs once
    assert constraint.is_done(state)


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
    for path, column in (
        (shared_data / "conll2003" / "eng.testb", 0),
        (shared_data / "fewnerd" / "inter_sentences" / "test-inter.txt", 0),
    ):
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
    generator = ConstrainedGenerator(model, tokenizer, generator_config(max_new_tokens=40, batch_size=4))
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
    generator = ConstrainedGenerator(model, tokenizer, generator_config(max_new_tokens=24, batch_size=8))
    batched = generator.generate(requests)
    alone = [generator.generate_naive(r) for r in requests]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    assert [g.finished for g in batched] == [g.finished for g in alone]
    for a, b in zip(batched, alone, strict=True):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)
    assert any(parse_generation(g).entities for g in batched), "the random model should write some entities"


def test_parse_scores_each_entity_by_the_tokens_that_wrote_it():
    text = " <<< Angela Merkel >>> <<< Paris >>> <im_end>"
    ends = [len(b" <<< Angela"), len(" <<< Angela Merkel >>>"), len(" <<< Angela Merkel >>> <<< Paris"), len(text)]
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


# --- generation cut inside a multi-byte character --------------------------------------------------------------

EMOJI_SOURCE = "Nadim Ladki 😀"
EMOJI = "😀".encode()


def test_bytes_cut_inside_a_character_decode_to_whole_characters():
    assert decode_generated(b" <<< Ladki " + EMOJI[:2]) == " <<< Ladki "
    assert decode_generated(b" <<< Ladki " + EMOJI) == " <<< Ladki 😀"
    assert decode_generated(b"a\xffb") == "a\ufffdb"  # invalid bytes inside (unconstrained models) are replaced


def test_generation_stopped_inside_a_multibyte_character_parses_to_a_copy_of_the_input():
    # max_new_tokens ran out after the first two of the emoji's four bytes, inside an unclosed entity
    table = [b" <<<", b" Nadim", b" >>>", b" Ladki", b" ", EMOJI[:1], EMOJI[1:2], EMOJI[2:], b" <im_end>"]
    ids = [0, 1, 2, 0, 1, 3, 4, 5, 6]
    trie = TokenTrie.from_token_bytes(table)
    doc = NLP(EMOJI_SOURCE)
    constraint = SubstringConstraint(FMT, EMOJI_SOURCE, *token_boundaries(doc[:]), trie)
    state = constraint.initial()
    for token in ids:  # a response the constrained generator could write
        assert token in constraint.allowed_tokens(state)
        state = constraint.advance(state, token)
    data = b"".join(table[t] for t in ids)
    ends = [len(b"".join(table[t] for t in ids[: i + 1])) for i in range(len(ids))]
    generation = Generation(
        decode_generated(data), ids, [-1.0, -2.0, -4.0, -8.0, -16.0, 0, 0, -32.0, -64.0], ends, False, FMT
    )
    assert generation.text == " <<< Nadim >>> <<< Nadim Ladki "
    assert generation.token_ends[-1] == len(data) > len(generation.text.encode())  # offsets stay on the bytes
    parsed = parse_generation(generation)
    assert [(e.text, e.score) for e in parsed.entities] == [("Nadim", -2.0)]
    assert parsed.unterminated == "Nadim Ladki" and parsed.unterminated in EMOJI_SOURCE


def test_generator_output_stopped_inside_a_multibyte_character_drops_the_partial_character(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    generator = ConstrainedGenerator(model, tokenizer, generator_config(max_new_tokens=40))
    single_byte = {piece: token for token, piece in enumerate(generator.trie.token_bytes) if piece and len(piece) == 1}
    data = b" <<< Nadim Ladki " + EMOJI[:3]
    ids = [single_byte[bytes([b])] for b in data]  # the worst split: one byte per token
    generation = generator.generation(ids, [-1.0] * len(ids), False, FMT)
    assert generation.text == " <<< Nadim Ladki "
    assert generation.token_ends == list(range(1, len(data) + 1))
    assert parse_generation(generation).unterminated == "Nadim Ladki"
    whole = generator.generation(ids + [single_byte[EMOJI[3:]]], [-1.0] * (len(ids) + 1), False, FMT)
    assert whole.text == " <<< Nadim Ladki 😀" and parse_generation(whole).unterminated == "Nadim Ladki 😀"


# --- joint alignment across labels ------------------------------------------------------------------------------

SCOTTISH = "After the Scottish Parliament election , the Scottish Parliament met"
EVENT, PARLIAMENT = "Scottish Parliament election", "Scottish Parliament"


def _bounds(text: str) -> tuple[set[int], set[int]]:
    starts, ends = token_boundaries(NLP(text)[:])
    return set(starts), set(ends)


def test_joint_alignment_moves_an_answer_out_of_another_labels_entity():
    assert align_in_order(SCOTTISH, [PARLIAMENT], *_bounds(SCOTTISH)).spans == [(0, 10, 29)]  # inside the event
    event, org = align_jointly(SCOTTISH, [[EVENT], [PARLIAMENT]], *_bounds(SCOTTISH))
    assert event.spans == [(0, 10, 38)]
    assert org.spans == [(0, 45, 64)]  # its second, free occurrence
    # one alignment per label, in the order given; only the organisation has somewhere else to go
    org, event = align_jointly(SCOTTISH, [[PARLIAMENT], [EVENT]], *_bounds(SCOTTISH))
    assert (org.spans, event.spans) == ([(0, 45, 64)], [(0, 10, 38)])


def test_joint_alignment_keeps_an_answer_without_a_free_alternative_in_place():
    text = "After the Scottish Parliament election , the Parliament met"
    event, org = align_jointly(text, [[EVENT], [PARLIAMENT, "Parliament"]], *_bounds(text))
    assert event.spans == [(0, 10, 38)]
    assert org.spans == [(0, 10, 29), (1, 45, 55)]  # the conflict is left to conflict resolution


def test_a_moved_answer_keeps_the_label_in_output_order():
    text = "After the Scottish Parliament election at Holyrood , the Scottish Parliament met at Holyrood"
    event, org = align_jointly(text, [[EVENT], [PARLIAMENT, "Holyrood"]], *_bounds(text))
    assert org.spans == [(0, 57, 76), (1, 84, 92)]  # Holyrood was written after the moved answer: follows it
    assert align_in_order(text, [PARLIAMENT, "Holyrood"], *_bounds(text)).spans == [(0, 10, 29), (1, 42, 50)]
    # the same string twice: the blocked occurrence is skipped, the answers keep their order
    text = "The Scottish Parliament election : the Scottish Parliament and the Scottish Parliament staff"
    _, org = align_jointly(text, [[EVENT], [PARLIAMENT, PARLIAMENT]], *_bounds(text))
    assert org.spans == [(0, 39, 58), (1, 67, 86)]


def test_a_free_occurrence_before_the_previous_placement_beats_a_conflict():
    text = "The Scottish Parliament met at Holyrood before the Scottish Parliament election"
    org, event = align_jointly(text, [["Holyrood", PARLIAMENT], [EVENT]], *_bounds(text))
    assert align_in_order(text, ["Holyrood", PARLIAMENT], *_bounds(text)).spans == [(0, 31, 39), (1, 51, 70)]
    assert org.spans == [(0, 31, 39), (1, 4, 23)]
    assert event.spans == [(0, 51, 79)]


def test_when_both_labels_could_move_the_later_label_yields():
    text = "Jordan played in Jordan"
    first, second = align_jointly(text, [["Jordan"], ["Jordan"]], *_bounds(text))
    assert (first.spans, second.spans) == ([(0, 0, 6)], [(0, 17, 23)])
    both = align_jointly(text, [["Jordan", "Jordan"], ["Jordan"]], *_bounds(text))
    assert [a.spans for a in both] == [[(0, 0, 6), (1, 17, 23)], [(0, 0, 6)]]  # nowhere free: stays


def test_joint_alignment_reports_unplaced_and_repeated_strings_like_the_single_label_one():
    text = "Ann met Bob"
    ann, bob = align_jointly(text, [["Ann", "Carl", "Ann"], ["Bob", "Bob"]], *_bounds(text))
    assert (ann.spans, ann.unplaced, ann.repeated) == ([(0, 0, 3)], [1], [2])
    assert (bob.spans, bob.unplaced, bob.repeated) == ([(0, 8, 11)], [], [1])
    assert align_jointly(text, [], *_bounds(text)) == []


_WORDS = ["A", "B", "C", "A B", "B C"]


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=10),
    answers=st.lists(st.lists(st.sampled_from([*_WORDS, "D"]), max_size=4), max_size=4),
)
def test_joint_alignment_places_the_same_strings_on_real_occurrences(words, answers):
    text = " ".join(words)
    starts, ends = _bounds(text)
    alone = [align_in_order(text, strings, starts, ends) for strings in answers]
    joint = align_jointly(text, answers, starts, ends)
    assert joint == align_jointly(text, answers, starts, ends)  # deterministic
    assert len(joint) == len(answers)
    for strings, a, j in zip(answers, alone, joint, strict=True):
        assert (j.unplaced, j.repeated) == (a.unplaced, a.repeated)
        assert [i for i, _, _ in j.spans] == [i for i, _, _ in a.spans]
        assert len({(s, e) for _, s, e in j.spans}) == len(j.spans)  # one string per occurrence
        for i, s, e in j.spans:
            assert text[s:e] == strings[i] and s in starts and e in ends
    if len(answers) == 1:
        assert joint == alone
    spans = [[(s, e) for _, s, e in a.spans] for a in alone]
    if not any(s < e2 and s2 < e for k, a in enumerate(spans) for b in spans[k + 1 :] for s, e in a for s2, e2 in b):
        assert joint == alone  # nothing collides: nothing moves


def _answer(entities: list[tuple[str, float]], fmt: ResponseFormat) -> Generation:
    """What a model writes for `entities`: one token per entity, carrying its score, then the end marker."""
    pieces = [fmt.render([e])[: -len(fmt.end)] for e, _ in entities] + [fmt.end]
    ends = [len("".join(pieces[: i + 1]).encode()) for i in range(len(pieces))]
    scores = [float(score) for _, score in entities] + [0.0]
    return Generation("".join(pieces), list(range(len(pieces))), scores, ends, True, fmt)


def _annotate(text: str, labels: list[str], answers: dict[tuple[str, str], list[tuple[str, float]]]):
    """`FewShotNERTask.annotate` on `text` (one chunk per sentence) with `answers[label, chunk text]`."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    doc = nlp(text)
    task = make_ner_task(labels)
    (prompts,) = task.generate_prompts([doc])
    generations = [
        _answer(answers.get((label, r.source), []), r.fmt)
        for r, label in zip(prompts.requests, prompts.labels, strict=True)
    ]
    return task.annotate(doc, DocGenerations(prompts, generations))


def test_annotate_aligns_the_labels_of_a_chunk_jointly():
    doc = _annotate(
        SCOTTISH, ["EVENT", "ORG"], {("EVENT", SCOTTISH): [(EVENT, -1.0)], ("ORG", SCOTTISH): [(PARLIAMENT, -0.5)]}
    )
    assert [(e.start_char, e.text, e.label_) for e in doc.ents] == [(10, EVENT, "EVENT"), (45, PARLIAMENT, "ORG")]
    assert doc.user_data["fsner"] == {
        "unplaced": [],
        "repeated": [],
        "unterminated": [],
        "unfinished": [],
        "too_long": [],
    }


@pytest.mark.parametrize("org_score, winner", [(-0.5, "ORG"), (-3.0, "EVENT")])
def test_annotate_leaves_a_conflict_without_alternative_to_resolution(org_score, winner):
    # two sentences, two chunks: the other "Scottish Parliament" is in the other chunk, out of the answer's reach
    first, second = "The Scottish Parliament election came .", "The Scottish Parliament met ."
    answers = {("EVENT", first): [(EVENT, -1.0)], ("ORG", first): [(PARLIAMENT, org_score)]}
    doc = _annotate(f"{first} {second}", ["EVENT", "ORG"], answers)
    assert [(s.start_char, s.end_char, s.label_) for s in doc.spans["fsner"]] == [(4, 23, "ORG"), (4, 32, "EVENT")]
    assert [e.label_ for e in doc.ents] == [winner]
