"""The joint template: one prompt per chunk, every entity written with its type (` <<< Paris >>> LOC;`).

The grammar (only input substrings on token boundaries as entities, only label names after them), parsing, the
task's one request per chunk and its annotation, and the pipeline end to end on the tiny model.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import spacy
from conftest import fsner_config
from generator_settings import generator_config
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc, Span
from transformers import AutoTokenizer, GenerationConfig

from spacy_fsner.decoding.constraint import SubstringConstraint
from spacy_fsner.decoding.generator import ConstrainedGenerator
from spacy_fsner.decoding.parsing import parse_generation, parse_response
from spacy_fsner.decoding.vocab import TokenTrie
from spacy_fsner.pipeline.chunking import token_boundaries
from spacy_fsner.pipeline.task import JOINT_LABEL, make_ner_task
from spacy_fsner.prompts.templates import PromptContext, cllmfs_template_v1, joint_template_v1, typed_entities
from spacy_fsner.ty import DocGenerations, Generation, ResponseFormat

NLP = spacy.blank("en")
LABELS = ("PER", "LOC", "PERIOD")
FMT = joint_template_v1().format_for(LABELS)
TEXTS = (
    "Angela Merkel visited Paris .",
    "Ho Hi Ho , said Ho .",
    "São Paulo 😀 is big , said José .",
)
TABLE = [bytes([b]) for b in range(256)] + [
    b" <<< ",
    b" <<",
    b"<",
    b" >>>",
    b" PER",
    b" LOC",
    b";",
    b"PE",
    b"\n",
    b" Paris",
    b"Angela",
    b" Merkel",
    b"Ho",
    b" Ho",
]
TRIE = TokenTrie.from_token_bytes(TABLE)


def _constraint(text: str, fmt: ResponseFormat = FMT) -> SubstringConstraint:
    starts, ends = token_boundaries(NLP(text)[:])
    return SubstringConstraint(fmt, text, starts, ends, TRIE)


def _tokenize(data: bytes) -> list[int]:
    """Greedy longest-match ids of `data` in TABLE (every single byte is a token, so this always succeeds)."""
    by_bytes = {piece: i for i, piece in enumerate(TABLE)}
    ids, position = [], 0
    while position < len(data):
        size = max(n for n in range(1, len(data) - position + 1) if data[position : position + n] in by_bytes)
        ids.append(by_bytes[data[position : position + size]])
        position += size
    return ids


def _walk(constraint: SubstringConstraint, completion: str) -> str | None:
    """Why `completion` cannot be written under `constraint`, or None when it can (and may stop there)."""
    state = constraint.initial()
    for position, token in enumerate(_tokenize(completion.encode())):
        if token not in constraint.allowed_tokens(state):
            return f"token {position} {TABLE[token]!r} is not allowed"
        state = constraint.advance(state, token)
    if not (constraint.is_done(state) or constraint.can_stop(state)):
        return "may not stop there"
    return None


def _aligned(text: str, entity: str) -> bool:
    starts, ends = token_boundaries(NLP(text)[:])
    return any(text.startswith(entity, p) and p in starts and p + len(entity) in ends for p in range(len(text)))


def test_only_label_names_may_follow_an_entity():
    constraint = _constraint("Angela Merkel visited Paris .")
    state = constraint.initial()
    for token in _tokenize(b" <<< Paris >>>"):
        state = constraint.advance(state, token)
    allowed = {TABLE[i] for i in constraint.allowed_tokens(state)}
    assert allowed == {b" ", b" PER", b" LOC"}  # the label opener, alone or with a label's start
    assert not constraint.can_stop(state)  # no end without a label
    state = constraint.advance(state, TABLE.index(b" PER"))
    allowed = {TABLE[i] for i in constraint.allowed_tokens(state)}
    assert allowed == {b";", b"I"}  # PER is finished, or PERIOD goes on
    state = constraint.advance(state, TABLE.index(b";"))
    assert constraint.can_stop(state) and TABLE.index(b" <<< ") in constraint.allowed_tokens(state)
    assert TABLE.index(b"\n") in constraint.allowed_tokens(state)
    assert _walk(constraint, " <<< Paris >>> ORG;\n") is not None  # not a label of the task
    assert _walk(constraint, " <<< Paris >>> PE;\n") is not None  # a label's prefix is not a label
    assert _walk(constraint, " <<< Paris >>>;\n") is not None  # the label may not be left out
    assert _walk(constraint, " <<< Paris >>> LOC <<< Angela Merkel >>> PER;\n") is not None  # terminator needed


def test_typed_answers_walk_through_and_parse_back():
    text = "Angela Merkel visited Paris ."
    constraint = _constraint(text)
    answer = [("Angela Merkel", "PER"), ("Paris", "LOC")]
    completion = FMT.render(answer)
    assert completion == " <<< Angela Merkel >>> PER; <<< Paris >>> LOC;\n"
    assert _walk(constraint, completion) is None
    assert _walk(constraint, FMT.render([("Angela", "PERIOD")])) is None
    assert _walk(constraint, FMT.render([])) is None
    assert _walk(constraint, FMT.render([("Merkel visited", "PER")])) is None
    assert _walk(constraint, FMT.render([("Merk", "PER")])) is not None  # not on a token boundary
    assert _walk(constraint, FMT.render([("Berlin", "LOC")])) is not None  # not in the input
    parsed = parse_response(completion, FMT)
    assert [(e.text, e.label) for e in parsed.entities] == answer
    # the per-label format is unchanged: no label, None
    plain = cllmfs_template_v1().fmt
    assert [(e.text, e.label) for e in parse_response(plain.render(["Paris"]), plain).entities] == [("Paris", None)]


def test_the_score_counts_the_tokens_of_entity_and_label():
    pieces = [" <<< Paris >>>", " LOC", ";", "\n"]
    ends = [len("".join(pieces[: i + 1]).encode()) for i in range(len(pieces))]
    parsed = parse_response("".join(pieces), FMT, ends, [-1.0, -2.0, -4.0, -8.0])
    assert [(e.text, e.label, e.score) for e in parsed.entities] == [("Paris", "LOC", -3.0)]
    unfinished = parse_response(" <<< Paris >>> LO", FMT, [17], [-1.0])
    assert [(e.text, e.label) for e in unfinished.entities] == [("Paris", None)]


@settings(derandomize=True, max_examples=60, deadline=None)
@given(text=st.sampled_from(TEXTS), seed=st.integers(0, 2**32 - 1))
def test_any_walk_writes_only_input_substrings_and_label_names(text, seed):
    """Random walks through the allowed tokens: every entity is a token-aligned substring of the input, every
    finished label one of the task's, entities follow the text's order."""
    rng = random.Random(seed)
    constraint = _constraint(text)
    state, written = constraint.initial(), b""
    for _ in range(80):
        allowed = constraint.allowed_tokens(state)
        if constraint.is_done(state) or (constraint.can_stop(state) and rng.random() < 0.15):
            break
        assert allowed, "the grammar left no way forward"
        token = rng.choice(allowed)
        written += TABLE[token]
        state = constraint.advance(state, token)
        assert state
    parsed = parse_response(written.decode("utf-8", errors="replace"), FMT)
    for entity in parsed.entities:
        assert _aligned(text, entity.text), (entity.text, written)
        assert entity.label is None or entity.label in LABELS, (entity.label, written)
    assert all(e.label is not None for e in parsed.entities[:-1])  # only the last label may be cut off


@settings(derandomize=True, max_examples=60, deadline=None)
@given(text=st.sampled_from(TEXTS), seed=st.integers(0, 2**32 - 1))
def test_any_in_order_typed_answer_round_trips(text, seed):
    rng = random.Random(seed)
    doc = NLP(text)
    words = [t for t in doc if not t.is_space]
    answer, i = [], 0
    while i < len(words):
        i += rng.randint(0, 2)
        if i >= len(words):
            break
        j = min(len(words), i + rng.randint(1, 2))
        answer.append((doc[words[i].i : words[j - 1].i + 1].text, rng.choice(LABELS)))
        i = j
    constraint = _constraint(text)
    completion = FMT.render(answer)
    assert _walk(constraint, completion) is None, completion
    assert [(e.text, e.label) for e in parse_response(completion, FMT).entities] == answer


def test_format_and_template_checks():
    with pytest.raises(ValueError, match="label terminator"):
        ResponseFormat(label_close=";", labels=("A;B",))
    with pytest.raises(ValueError, match="typed"):
        SubstringConstraint(joint_template_v1().fmt, "a b", [0, 2], [1, 3], TRIE)  # no labels given
    with pytest.raises(ValueError, match="labels"):
        joint_template_v1(instruction="Types:\n")


def test_demonstrations_are_typed_in_text_order():
    entities = {"PER": ["Obama", "Obama"], "LOC": ["Berlin"], "ORG": ["UN"]}
    text = "Obama met the UN in Berlin and Obama left ."
    assert typed_entities(text, entities, ("PER", "LOC")) == [("Obama", "PER"), ("Berlin", "LOC"), ("Obama", "PER")]
    template = joint_template_v1()
    context = PromptContext(("PER", "LOC"), {"PER": "a person"}, ((text, entities),))
    prefix = template.prompt_prefix(None, context)
    assert "Types: PER, LOC.\nPER: a person.\n" in prefix
    assert " <<< Obama >>> PER; <<< Berlin >>> LOC; <<< Obama >>> PER;\n" in prefix
    assert "UN >>>" not in prefix  # ORG is not a label of this prompt
    part, offset = template.label_offset("LOC", context)
    assert part == "prefix" and prefix[offset : offset + 3] == "LOC"


def _joint_task(**settings):
    return make_ner_task(labels=["PER", "LOC"], template=joint_template_v1(), **settings)


def _answer(prompts, answers: dict[str, list[tuple[str, str]]], score: float = -1.0) -> DocGenerations:
    """Each request answered with `answers[source]` (typed), one token per entity, then the end marker."""
    generations = []
    for request in prompts.requests:
        entities = answers.get(request.source, [])
        pieces = [request.fmt.render([e])[: -len(request.fmt.end)] for e in entities] + [request.fmt.end]
        ends = [len("".join(pieces[: i + 1]).encode()) for i in range(len(pieces))]
        logprobs = [score] * len(entities) + [0.0]
        generations.append(Generation("".join(pieces), list(range(len(pieces))), logprobs, ends, True, request.fmt))
    return DocGenerations(prompts, generations)


def test_one_request_per_chunk_asks_for_every_label():
    task = _joint_task(max_chunk_tokens=4)
    doc = NLP("Angela Merkel visited Paris . She met Obama .")
    (prompts,) = task.generate_prompts([doc])
    assert prompts.labels == [JOINT_LABEL] * len(prompts.requests)
    assert len(prompts.requests) == len({r.source for r in prompts.requests}) >= 2
    assert {r.fmt.labels for r in prompts.requests} == {("PER", "LOC")}
    assert len({r.prefix for r in prompts.requests}) == 1  # one shared prefix
    # the per-label templates are untouched: one request per (chunk, label)
    (per_label,) = make_ner_task(labels=["PER", "LOC"]).generate_prompts([doc])
    assert per_label.labels == ["PER", "LOC"] and not per_label.requests[0].fmt.typed


GOLD = [
    ("Angela Merkel visited Paris and met Merkel in Paris .", [(0, 13, "PER"), (22, 27, "LOC"), (46, 51, "LOC")]),
    ("Paris Hilton is not in Paris .", [(0, 12, "PER"), (23, 28, "LOC")]),
    ("São Paulo 😀 is big , said José .", [(0, 9, "LOC"), (26, 30, "PER")]),
    ("Nothing here .", []),
]


@pytest.mark.parametrize(("text", "gold"), GOLD)
def test_annotating_a_gold_joint_answer_gives_the_gold_ents(text, gold):
    task = _joint_task()
    doc = NLP(text)
    (prompts,) = task.generate_prompts([doc])
    answers = {text: [(text[s:e], label) for s, e, label in gold]}
    for request in prompts.requests:
        assert _walk_real_table(request, answers[text]) is None
    annotated = task.annotate(doc, _answer(prompts, answers))
    assert [(e.start_char, e.end_char, e.label_) for e in annotated.ents] == gold
    assert list(annotated.spans["fsner"].attrs["scores"]) == [-1.0] * len(gold)
    assert annotated.user_data["fsner"] == {
        "unplaced": [],
        "repeated": [],
        "unterminated": [],
        "unfinished": [],
        "too_long": [],
    }


def _walk_real_table(request, answer) -> str | None:
    return _walk(
        SubstringConstraint(request.fmt, request.source, request.starts, request.ends, TRIE), request.fmt.render(answer)
    )


def test_untyped_and_unknown_labels_are_reported_not_set():
    task = _joint_task()
    doc = NLP("Angela Merkel visited Paris .")
    (prompts,) = task.generate_prompts([doc])
    request = prompts.requests[0]
    text = " <<< Angela Merkel >>> ORG; <<< Paris >>> LOC;\n"  # an unconstrained model may write any label
    generation = Generation(text, [0], [0.0], [len(text)], True, request.fmt)
    annotated = task.annotate(doc, DocGenerations(prompts, [generation]))
    assert [(e.text, e.label_) for e in annotated.ents] == [("Paris", "LOC")]
    assert annotated.user_data["fsner"]["untyped"] == [{"label": "ORG", "text": "Angela Merkel", "offset": 0}]


@pytest.fixture(scope="module")
def joint_nlp(tiny_model_dir: Path) -> spacy.Language:
    nlp = spacy.blank("en")
    config = {**fsner_config(tiny_model_dir, max_new_tokens=48), "template": {"@misc": "spacy_fsner.JointTemplate.v1"}}
    nlp.add_pipe("fsner", config=config)
    return nlp


PIPELINE_TEXTS = [
    "Angela Merkel visited Paris.",
    "EU rejects German call to boycott British lamb .",
    "São Paulo 😀 is big, said José.",
]


def _predictions(docs: list[Doc]) -> list:
    return [
        (
            [(e.start_char, e.end_char, e.label_) for e in doc.ents],
            [(s.start, s.end, s.label_) for s in doc.spans["fsner"]],
            [round(x, 4) for x in doc.spans["fsner"].attrs["scores"]],
        )
        for doc in docs
    ]


def test_the_pipeline_sets_typed_ents_and_survives_to_disk(joint_nlp, tmp_path):
    component = joint_nlp.get_pipe("fsner")
    support = NLP("Obama flew to Berlin .")
    support.ents = [Span(support, 0, 1, "PER"), Span(support, 3, 4, "LOC")]
    component.adapt([support], ["PER", "LOC"])
    docs = list(joint_nlp.pipe(PIPELINE_TEXTS))
    spans = [s for doc in docs for s in doc.spans["fsner"]]
    assert spans, "the tiny model wrote no entity at all"
    for doc in docs:
        for span in doc.spans["fsner"]:
            assert span.label_ in ("PER", "LOC")
        for ent in doc.ents:
            assert ent.label_ in ("PER", "LOC")
    (prompts,) = component.task.generate_prompts([joint_nlp.make_doc(PIPELINE_TEXTS[0])])
    assert len(prompts.requests) == 1 and " <<< Obama >>> PER; <<< Berlin >>> LOC;\n" in prompts.requests[0].prefix
    joint_nlp.to_disk(tmp_path / "joint")
    loaded = spacy.load(tmp_path / "joint")
    assert _predictions(list(loaded.pipe(PIPELINE_TEXTS))) == _predictions(docs)
    assert loaded.get_pipe("fsner").task.demonstrations == component.task.demonstrations


def test_real_tokenizer_round_trip(smollm2_dir):
    """SmolLM2's tokenizer: a typed answer, tokenized as training tokenizes it, walks through the grammar and parses
    back to the same (text, label) pairs; generation's byte table writes the same text."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    stand_in = SimpleNamespace(generation_config=GenerationConfig.from_pretrained(smollm2_dir))
    generator = ConstrainedGenerator(stand_in, tokenizer, generator_config())
    labels = ("person", "location", "organization", "PER", "LOC", "art-music")
    fmt = joint_template_v1().format_for(labels)
    cases = [
        ("Angela Merkel visited Paris .", [("Angela Merkel", "person"), ("Paris", "location")]),
        (
            "Zoë Saldaña flew from São Paulo to Kraków .",
            [("Zoë Saldaña", "PER"), ("São Paulo", "LOC"), ("Kraków", "LOC")],
        ),
        (
            "The Berlin Philharmonic played Beethoven 's Ninth .",
            [("Berlin Philharmonic", "organization"), ("Beethoven 's Ninth", "art-music")],
        ),
        ("Nothing here .", []),
    ]
    for text, answer in cases:
        starts, ends = token_boundaries(NLP(text)[:])
        constraint = SubstringConstraint(fmt, text, starts, ends, generator.trie)
        completion = fmt.render(answer)
        ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        state = constraint.initial()
        for position, token in enumerate(ids):
            assert token in generator.allowed_ids(constraint, state), (
                text,
                position,
                tokenizer.convert_ids_to_tokens(ids),
            )
            state = constraint.advance(state, token)
        assert constraint.is_done(state) or constraint.can_stop(state)
        generation = generator.generation(ids, [0.0] * len(ids), True, fmt)
        assert generation.text == completion
        assert [(e.text, e.label) for e in parse_generation(generation).entities] == answer
        # a wrong label cannot be written: after the entity's close, only label names' tokens
        if answer:
            state = constraint.initial()
            for token in tokenizer(fmt.open + answer[0][0] + fmt.close, add_special_tokens=False)["input_ids"]:
                state = constraint.advance(state, token)
            for token in generator.allowed_ids(constraint, state):
                piece = generator.trie.token_bytes[token].decode("utf-8", errors="replace")
                typed = [fmt.label_open + label + fmt.label_close for label in labels]
                assert any(t.startswith(piece) or piece.startswith(t) for t in typed), piece


def test_benchmark_joint_on_the_tiny_model_gives_the_same_entities_both_ways(tmp_path):
    """`benchmark --templates joint`: the naive loop (one `generate` call per prompt) and `nlp.pipe` find the same
    entities; long enough answers that the random model writes some."""
    import json

    from spacy.tokens import DocBin
    from typer.testing import CliRunner

    from spacy_fsner.cli import app

    types = ["PER", "LOC", "ORG"]
    docs = []
    for i in range(10):
        doc = NLP(f"W{i} met V{i} at X{i} in Paris .")
        doc.ents = [Span(doc, 0, 1, types[i % 3]), Span(doc, 4, 5, types[(i + 1) % 3])]
        docs.append(doc)
    data = tmp_path / "data.spacy"
    DocBin(docs=docs).to_disk(data)
    args = ["benchmark", "--data", str(data), "--model", "tiny", "--pool", "6", "--sentences", "4"]
    args += ["--naive-sentences", "4", "--labels", "2,3", "--templates", "joint", "--max-new-tokens", "32"]
    args += ["--threads", "1", "--entities", str(tmp_path / "entities.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| joint | 3 | pipe |" in result.output and "| joint | 2 | naive |" in result.output
    assert "| True |" in result.output and "False" not in result.output
    records = json.loads((tmp_path / "entities.json").read_text())
    assert [(r["template"], r["labels"], r["path"]) for r in records] == [
        ("joint", 2, "naive"),
        ("joint", 2, "pipe"),
        ("joint", 3, "naive"),
        ("joint", 3, "pipe"),
    ]
    found = sum(len(ents) for r in records for ents in r["ents"])
    assert found > 0, "the tiny model wrote no entity: the comparison would be trivial"
