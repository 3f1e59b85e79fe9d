"""Readers on the real public files (exact counts from their PROVENANCE.md) and on small malformed files."""

import json
from collections import Counter
from pathlib import Path

import pytest
import spacy
from hypothesis import given
from hypothesis import strategies as st
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab
from typer.testing import CliRunner

from spacy_fsner.cli import app
from spacy_fsner.data.readers import (
    Episode,
    conll_corpus_v1,
    detect_format,
    episode_corpus_v1,
    read_conll,
    read_docs,
    read_episodes,
    read_tagged,
    tagged_corpus_v1,
    write_episodes,
)
from spacy_fsner.data.spans import TagError, make_doc, tags_to_spans

EPISODES = "fewnerd/episodes_sample/inter/dev_5_1.recased.jsonl"
GUM_TYPES = {
    "abstract", "animal", "event", "object", "organization", "person", "place", "plant", "quantity", "substance",
    "time",
}  # fmt: skip


def stats(docs: list[Doc]) -> tuple[int, int, dict[str, int]]:
    """(sentences, tokens, entities per type)"""
    return len(docs), sum(len(doc) for doc in docs), dict(Counter(ent.label_ for doc in docs for ent in doc.ents))


def spans(doc: Doc) -> list[tuple[int, int, str]]:
    return [(ent.start, ent.end, ent.label_) for ent in doc.ents]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab()


# --- CoNLL-2003 -----------------------------------------------------------------------------------------------

CONLL = {  # split: (IOB1 file, IOB2 file, sentences, tokens, entities per type)
    "train": ("eng.train", "train.txt", 14041, 203621, {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}),
    "dev": ("eng.testa", "dev.txt", 3250, 51362, {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}),
    "test": ("eng.testb", "test.txt", 3453, 46435, {"LOC": 1668, "MISC": 702, "ORG": 1661, "PER": 1617}),
}


@pytest.fixture(scope="module")
def conll(shared_data: Path, vocab: Vocab) -> dict[str, tuple[list[Doc], list[Doc]]]:
    """Every split read once: the IOB1 original checked as IOB1, the IOB2 variant checked as IOB2."""
    root = shared_data / "conll2003"
    return {
        split: (read_conll(root / iob1, vocab, scheme="iob1"), read_conll(root / "iob2_variant" / iob2, vocab, "iob2"))
        for split, (iob1, iob2, *_) in CONLL.items()
    }


@pytest.mark.parametrize("split", CONLL)
def test_conll_counts_match_provenance(conll, split):
    *_, sentences, tokens, per_type = CONLL[split]
    iob1_docs, iob2_docs = conll[split]
    assert stats(iob1_docs) == (sentences, tokens, per_type)
    assert stats(iob2_docs) == (sentences, tokens, per_type)
    assert sum(per_type.values()) == {"train": 23499, "dev": 5942, "test": 5648}[split]


@pytest.mark.parametrize("split", CONLL)
def test_conll_iob1_and_iob2_variant_give_the_same_entities(conll, split):
    iob1_docs, iob2_docs = conll[split]
    assert [doc.text for doc in iob1_docs] == [doc.text for doc in iob2_docs]
    assert [spans(doc) for doc in iob1_docs] == [spans(doc) for doc in iob2_docs]


def test_conll_docs_are_tokens_joined_by_spaces(conll):
    doc = conll["test"][0][0]  # after "-DOCSTART- -X- -X- O", which is not a sentence
    assert doc.text == "SOCCER - JAPAN GET LUCKY WIN , CHINA IN SURPRISE DEFEAT ."
    assert [(ent.text, ent.label_) for ent in doc.ents] == [("JAPAN", "LOC"), ("CHINA", "PER")]
    assert doc.has_annotation("ENT_IOB")


def test_conll_iob2_check_names_the_first_line_that_opens_with_i(shared_data, vocab):
    path = shared_data / "conll2003" / "eng.testb"
    with pytest.raises(ValueError, match=r"eng\.testb, line 5: tag 'I-LOC' opens an entity") as error:
        read_conll(path, vocab, scheme="iob2")
    assert "iob1" in str(error.value)  # says what to use instead


def test_conll_iob1_decoding_docstart_forms_and_trailing_blank_lines(tmp_path, vocab):
    path = write(
        tmp_path,
        "mini.conll",
        "-DOCSTART- -X- O O\n\n"
        "Peter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\nJohn NNP I-NP B-PER\nof IN I-PP O\n"
        "EU NNP I-NP I-ORG\nGermany NNP I-NP I-LOC\nBonn NNP I-NP B-LOC\n\n"
        "-DOCSTART- -X- -X- O\n\nrain NN I-NP O\n\n\n",
    )
    docs = read_conll(path, vocab, scheme="iob1")
    assert [doc.text for doc in docs] == ["Peter Blackburn John of EU Germany Bonn", "rain"]
    assert spans(docs[0]) == [(0, 2, "PER"), (2, 3, "PER"), (4, 5, "ORG"), (5, 6, "LOC"), (6, 7, "LOC")]
    assert read_conll(path, vocab, scheme="auto")[0].to_json() == docs[0].to_json()


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("EU NNP I-NP I-ORG\nrejects VBZ I-VP\n", 2, "expected 4 space-separated columns"),
        ("EU NNP I-NP I-ORG\n\nrejects VBZ I-VP O extra\n", 3, "found 5"),
        ("EU NNP I-NP B-\n", 1, "empty type"),
        ("EU NNP I-NP I-\n", 1, "empty type"),
        ("EU NNP I-NP O\nGermany NNP I-NP LOC\n", 2, "neither O nor a B-/I-/E-/S-<type>"),
    ],
)
def test_conll_malformed_lines_name_file_and_line(tmp_path, vocab, text, line, problem):
    path = write(tmp_path, "bad.conll", text)
    with pytest.raises(ValueError, match=f"bad.conll, line {line}: .*{problem}"):
        read_conll(path, vocab)


def test_conll_rejects_unknown_scheme(tmp_path, vocab):
    with pytest.raises(ValueError, match="unknown tag scheme 'bioes'.*auto, iob1, iob2"):
        read_conll(write(tmp_path, "a.conll", "EU NNP I-NP I-ORG\n"), vocab, scheme="bioes")


# --- token-tag files: Few-NERD sentences, GUM -----------------------------------------------------------------

FEWNERD = {
    "test-inter.txt": (14007, 312782, {
        "art-music": 1125, "art-writtenart": 1104, "building-hospital": 412, "building-theater": 380,
        "event-election": 203, "event-sportsevent": 2798, "location-bodiesofwater": 1559, "location-other": 2523,
        "organization-government/governmentagency": 1829, "organization-politicalparty": 1488,
        "other-educationaldegree": 440, "other-livingthing": 2835, "other-medical": 1136, "person-actor": 2181,
        "person-athlete": 5444, "product-car": 1539, "product-weapon": 1346,
    }),
    "val-inter-new.txt": (18817, 426011, {
        "art-painting": 46, "building-library": 631, "building-other": 4012, "event-other": 1415,
        "location-park": 735, "organization-religion": 1532, "organization-showorganization": 1044,
        "other-chemicalthing": 4119, "other-currency": 1715, "person-other": 16775, "person-scholar": 1149,
        "product-game": 998, "product-train": 659,
    }),
}  # fmt: skip


@pytest.mark.parametrize("name", FEWNERD)
def test_fewnerd_inter_sentence_counts_match_provenance(shared_data, vocab, name):
    path = shared_data / "fewnerd" / "inter_sentences" / name
    assert detect_format(path) == "tagged"
    docs = read_tagged(path, vocab)  # IO tags: `person-athlete` is one type, not a B-/I- prefix
    assert stats(docs) == FEWNERD[name]
    assert sum(FEWNERD[name][2].values()) == {"test-inter.txt": 28342, "val-inter-new.txt": 34830}[name]


def test_gum_test_counts_with_gate_prefix_stripped(shared_data, vocab):
    path = shared_data / "gum" / "gum-test.txt"
    per_type = {
        "abstract": 798, "animal": 42, "event": 315, "object": 420, "organization": 192, "person": 823,
        "place": 469, "plant": 62, "quantity": 44, "substance": 95, "time": 179,
    }  # fmt: skip
    assert stats(read_tagged(path, vocab)) == (1000, 18236, per_type)
    kept = read_tagged(path, vocab, strip_tag_prefix="")
    assert stats(kept) == (1000, 18236, {f"GATE-{label}": n for label, n in per_type.items()})


@pytest.mark.parametrize(
    ("folder", "scheme", "sentences", "tokens"),
    [
        ("support_proml/1shot", "io", 81, 951),
        ("support_proml/5shot", "io", 276, 4631),
        ("support_container_bio/1shot", "bio", 54, 1178),
        ("support_container_bio/5shot", "bio", 200, 4039),
    ],
)
def test_gum_support_sets(shared_data, vocab, folder, scheme, sentences, tokens):
    files = sorted((shared_data / "gum" / folder).glob("[0-9].txt"))
    assert len(files) == 10
    docs = [doc for path in files for doc in read_tagged(path, vocab)]
    count, token_count, per_type = stats(docs)
    assert (count, token_count) == (sentences, tokens)
    assert set(per_type) == GUM_TYPES  # every support set is for all 11 types, whatever its tag scheme
    explicit = [doc for path in files for doc in read_tagged(path, vocab, scheme=scheme)]
    assert [spans(doc) for doc in explicit] == [spans(doc) for doc in docs]


def test_io_merges_adjacent_tokens_of_one_type_and_bio_does_not(tmp_path, vocab):
    io = read_tagged(write(tmp_path, "io.txt", "A\tx-y/z\nB\tx-y/z\nC\tO\nD\tx-y/z\nE\tp-q\n"), vocab)
    assert spans(io[0]) == [(0, 2, "x-y/z"), (3, 4, "x-y/z"), (4, 5, "p-q")]
    bio = read_tagged(write(tmp_path, "bio.txt", "A\tB-x-y\nB\tB-x-y\nC\tI-x-y\nD\tS-x\nE\tE-x\n"), vocab)
    assert spans(bio[0]) == [(0, 1, "x-y"), (1, 3, "x-y"), (3, 4, "x"), (4, 5, "x")]


def test_odd_tokens_and_whitespace_only_separators_survive(tmp_path, vocab):
    words = ["😀", "&amp;", "a\u00a0b", "\u200d", "``", "#ĝ/ß", "@user:"]
    text = "".join(f"{word}\tB-thing\r\n" if i == 2 else f"{word}\tO\r\n" for i, word in enumerate(words))
    path = write(tmp_path, "tweets.txt", text + " \t \r\nnext  O\nword B-thing\n")
    docs = read_tagged(path, vocab)
    assert [token.text for token in docs[0]] == words
    assert docs[0].text == " ".join(words)
    assert [(ent.text, ent.label_) for ent in docs[0].ents] == [("a\u00a0b", "thing")]
    assert [(doc.text, spans(doc)) for doc in docs[1:]] == [("next word", [(1, 2, "thing")])]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("EU\tO\nrejects\n", r"t\.txt, line 2: expected a token and a tag"),
        ("EU\tB-ORG\nbans\tI-\n", r"t\.txt, line 2: tag 'I-' has an empty type"),
        (
            "EU\tB-ORG\n\nbans\tO\nbeef\tfood\n",
            r"t\.txt: mixes prefixed tags \(line 1: 'B-ORG'\) and bare IO tags \(line 4",
        ),
    ],
)
def test_tagged_malformed_lines_name_file_and_line(tmp_path, vocab, text, message):
    with pytest.raises(ValueError, match=message):
        read_tagged(write(tmp_path, "t.txt", text), vocab)


def test_tagged_bio_scheme_on_io_tags_says_to_use_io(tmp_path, vocab):
    with pytest.raises(ValueError, match=r"line 1: tag 'person-actor' is neither O nor .* scheme 'io'"):
        read_tagged(write(tmp_path, "t.txt", "Tom\tperson-actor\n"), vocab, scheme="bio")


# --- the tag decoder, on every scheme -------------------------------------------------------------------------

LABELS = st.sampled_from(["PER", "person-athlete", "a/b"])


@st.composite
def tagged_spans(draw) -> tuple[int, list[tuple[int, int, str]]]:
    """A sentence length and non-overlapping spans; same-type spans may touch."""
    pieces = draw(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3), LABELS), max_size=6))
    result, position = [], 0
    for gap, length, label in pieces:
        position += gap
        result.append((position, position + length, label))
        position += length
    return position + draw(st.integers(0, 2)), result


def encode(length: int, span_list: list[tuple[int, int, str]], scheme: str) -> list[str]:
    tags = ["O"] * length
    previous_end, previous_label = -1, ""
    for start, end, label in span_list:
        for i in range(start, end):
            tags[i] = ("I-" if scheme != "io" else "") + label
        if scheme == "iob2" or (scheme == "iob1" and start == previous_end and label == previous_label):
            tags[start] = f"B-{label}"
        if scheme == "bioes":
            tags[start] = f"{'S' if end - start == 1 else 'B'}-{label}"
            if end - start > 1:
                tags[end - 1] = f"E-{label}"
        previous_end, previous_label = end, label
    return tags


def merge_touching(span_list: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    merged: list[tuple[int, int, str]] = []
    for start, end, label in span_list:
        if merged and merged[-1][1] == start and merged[-1][2] == label:
            merged[-1] = (merged[-1][0], end, label)
        else:
            merged.append((start, end, label))
    return merged


@given(tagged_spans())
def test_every_scheme_decodes_what_it_encodes(sentence):
    length, span_list = sentence
    assert tags_to_spans(encode(length, span_list, "iob1"), "iob1") == span_list
    assert tags_to_spans(encode(length, span_list, "iob2"), "iob2") == span_list
    assert tags_to_spans(encode(length, span_list, "iob1"), "bio") == span_list
    assert tags_to_spans(encode(length, span_list, "bioes"), "bio") == span_list
    assert tags_to_spans(encode(length, span_list, "io"), "io") == merge_touching(span_list)


def test_lenient_decoding_of_ill_formed_sequences():
    assert tags_to_spans(["B-x", "E-x", "I-x", "S-x", "I-x"], "bio") == [
        (0, 2, "x"),
        (2, 3, "x"),
        (3, 4, "x"),
        (4, 5, "x"),
    ]
    assert tags_to_spans(["O", "B-x", "I-y", "E-y"], "bio") == [(1, 2, "x"), (2, 4, "y")]
    assert tags_to_spans(["O", "B-x"], "iob1") == [(1, 2, "x")]  # eng.train has two B- after O


def test_decoder_errors_carry_the_token_position():
    with pytest.raises(TagError) as error:
        tags_to_spans(["O", "B-PER", "I-PER", "O", "I-LOC"], "iob2")
    assert error.value.position == 4
    with pytest.raises(TagError) as error:
        tags_to_spans(["O", "E-PER"], "iob1")  # BIOES prefixes are not IOB1
    assert error.value.position == 1
    with pytest.raises(ValueError, match="unknown tag scheme 'bilou'"):
        tags_to_spans(["O"], "bilou")


# --- Few-NERD episodes ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def episodes(shared_data: Path, vocab: Vocab) -> list[Episode]:
    return list(read_episodes(shared_data / EPISODES, vocab))


def test_episode_sample_counts_match_provenance(episodes):
    assert len(episodes) == 1000
    assert all(len(episode.types) == 5 for episode in episodes)
    assert sum(len(e.support) + len(e.query) for e in episodes) == 9900
    assert Counter(len(e.support) for e in episodes) == {5: 950, 4: 47, 3: 3}  # 3-5, mean 4.95
    assert {len(e.query) for e in episodes} == {3, 4, 5}
    assert Counter(t for e in episodes for t in e.types) == {
        "art-painting": 382, "building-library": 390, "building-other": 411, "event-other": 370,
        "location-park": 407, "organization-religion": 381, "organization-showorganization": 358,
        "other-chemicalthing": 377, "other-currency": 385, "person-other": 396, "person-scholar": 366,
        "product-game": 392, "product-train": 385,
    }  # fmt: skip
    support_spans = Counter()
    for episode in episodes:
        per_type = Counter(ent.label_ for doc in episode.support for ent in doc.ents)
        support_spans.update(per_type[t] for t in episode.types)
        query_per_type = Counter(ent.label_ for doc in episode.query for ent in doc.ents)
        assert {query_per_type[t] for t in episode.types} <= {1, 2}  # the query sets are 1~2-shot too
    assert support_spans == {1: 3602, 2: 1398}


@pytest.mark.parametrize("name", ["dev_5_1.jsonl", "dev_5_1.recased.jsonl"])
def test_episode_files_round_trip_byte_for_byte(shared_data, vocab, tmp_path, name):
    source = shared_data / "fewnerd" / "episodes_sample" / "inter" / name
    assert write_episodes(tmp_path / name, read_episodes(source, vocab)) == 1000
    assert (tmp_path / name).read_bytes() == source.read_bytes()


def episode_line(**changes) -> str:
    episode = {
        "support": {"word": [["Tom", "Hanks", "acts"], ["Bonn", "rains"]], "label": [["p", "p", "O"], ["l", "O"]]},
        "query": {"word": [["Meryl", "sings"]], "label": [["p", "O"]]},
        "types": ["p", "l"],
    }
    episode.update(changes)
    return json.dumps(episode)


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ('{"support": {"word": [["a"]], "label": [["O"]]', "not valid JSON"),
        (json.dumps([1, 2]), 'expected an object with the keys "support", "query" and "types"'),
        (episode_line(types=["p", "l", "x"]), r"type\(s\) 'x' have no example in the support set"),
        (episode_line(types=["p", "l", "p"]), "\"types\" lists 'p' more than once"),
        (episode_line(query={"word": [["Meryl", "sings"]], "label": [["p"]]}), "query sentence 1: expected lists"),
        (episode_line(query={"word": [["a"], ["b"]], "label": [["O"]]}), '"query" has 2 word lists but 1 label'),
        (episode_line(query={"word": [["Meryl"]], "label": [["m"]]}), "label 'm' is neither O nor one of"),
        (episode_line(query={"word": [[]], "label": [[]]}), "query sentence 1: expected a non-empty list"),
        (episode_line(query=[]), '"query" must be an object with the lists "word" and "label"'),
    ],
)
def test_episode_malformed_lines_name_file_and_line(tmp_path, vocab, bad_line, problem):
    path = write(tmp_path, "episodes.jsonl", episode_line() + "\n\n" + bad_line)
    with pytest.raises(ValueError, match=f"episodes.jsonl, line 3: .*{problem}"):
        list(read_episodes(path, vocab))


def test_write_episodes_rejects_entities_outside_the_types(tmp_path, vocab):
    doc = make_doc(vocab, ["Tom", "in", "Bonn"], [(0, 1, "p"), (2, 3, "l")])
    with pytest.raises(ValueError, match=r"other types \['l'\]"):
        write_episodes(tmp_path / "e.jsonl", [Episode(support=[doc], query=[], types=["p"])])


# --- spaCy registry, format detection and the convert command -------------------------------------------------

CONFIG = """
[paths]
conll = null
tagged = null
episodes = null

[corpora]

[corpora.conll]
@readers = "spacy_fsner.CoNLLCorpus.v1"
path = ${paths.conll}
scheme = "iob1"

[corpora.tagged]
@readers = "spacy_fsner.TaggedCorpus.v1"
path = ${paths.tagged}
limit = 2

[corpora.episodes]
@readers = "spacy_fsner.EpisodeCorpus.v1"
path = ${paths.episodes}
include_support = true
gold_preproc = false
"""


def test_readers_resolve_from_a_config(tmp_path, vocab):
    conll = write(tmp_path, "a.conll", "-DOCSTART- -X- O O\n\nU.N. NNP I-NP I-ORG\nsays VBZ I-VP O\n\n")
    tagged = write(tmp_path, "a.txt", "Bonn\tGATE-place\n\nit\tO\n\nTom\tGATE-person\n")
    episodes = write(tmp_path, "a.jsonl", episode_line())
    overrides = {"paths.conll": str(conll), "paths.tagged": str(tagged), "paths.episodes": str(episodes)}
    config = spacy.util.load_config_from_str(CONFIG, overrides=overrides)
    corpora = spacy.util.registry.resolve(config)["corpora"]
    assert spacy.util.registry.readers.get("spacy_fsner.CoNLLCorpus.v1") is conll_corpus_v1
    assert spacy.util.registry.readers.get("spacy_fsner.TaggedCorpus.v1") is tagged_corpus_v1
    assert spacy.util.registry.readers.get("spacy_fsner.EpisodeCorpus.v1") is episode_corpus_v1
    nlp = spacy.blank("en")

    [example] = corpora["conll"](nlp)
    assert [t.text for t in example.predicted] == ["U.N.", "says"]  # gold tokens, not the tokenizer's
    assert [(e.text, e.label_) for e in example.reference.ents] == [("U.N.", "ORG")]
    assert example.reference.vocab is nlp.vocab

    assert [[(e.text, e.label_) for e in eg.reference.ents] for eg in corpora["tagged"](nlp)] == [
        [("Bonn", "place")],
        [],
    ]

    examples = list(corpora["episodes"](nlp))  # support then query, re-tokenized by nlp
    assert [eg.reference.text for eg in examples] == ["Tom Hanks acts", "Bonn rains", "Meryl sings"]
    assert [[e.label_ for e in eg.reference.ents] for eg in examples] == [["p"], ["l"], ["p"]]
    assert list(corpora["episodes"](nlp))[0].predicted.text == "Tom Hanks acts"


def test_corpus_readers_fail_early_on_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="corpus file .*missing.conll does not exist"):
        conll_corpus_v1(tmp_path / "missing.conll")
    path = write(tmp_path, "a.txt", "Bonn\tO\n")
    with pytest.raises(ValueError, match="unknown tag scheme 'iob1' for token-tag files"):
        tagged_corpus_v1(path, scheme="iob1")
    with pytest.raises(ValueError, match="limit=-1"):
        episode_corpus_v1(path, limit=-1)


def test_detect_format(shared_data, tmp_path):
    assert detect_format(shared_data / "conll2003" / "eng.testa") == "conll"
    assert detect_format(shared_data / "conll2003" / "iob2_variant" / "dev.txt") == "conll"
    assert detect_format(shared_data / "gum" / "gum-test.txt") == "tagged"
    assert detect_format(shared_data / EPISODES) == "episodes"
    assert detect_format(write(tmp_path, "s.txt", "-DOCSTART- O\n\nBonn B-LOC\n")) == "tagged"
    with pytest.raises(ValueError, match="holds no sentences"):
        detect_format(write(tmp_path, "empty.txt", "\n \n-DOCSTART- -X- O O\n"))


def test_read_docs_dispatches_on_format(tmp_path, vocab):
    path = write(tmp_path, "two.jsonl", episode_line() + "\n" + episode_line())
    assert [doc.text for doc in read_docs(path, vocab)] == ["Meryl sings"] * 2
    assert len(read_docs(path, vocab, include_support=True, scheme="io")) == 6
    with pytest.raises(ValueError, match="episode files are IO-tagged; scheme 'bio'"):
        read_docs(path, vocab, scheme="bio")
    with pytest.raises(ValueError, match="unknown data format 'csv'"):
        read_docs(path, vocab, format="csv")
    conll = write(tmp_path, "a.conll", "EU NNP I-NP I-ORG\n")
    assert spans(read_docs(conll, vocab)[0]) == [(0, 1, "ORG")]
    with pytest.raises(ValueError, match="unknown tag scheme 'io' for CoNLL files"):
        read_docs(conll, vocab, scheme="io")


def test_convert_command_writes_a_docbin(shared_data, tmp_path, vocab):
    output = tmp_path / "out" / "gum.spacy"
    result = CliRunner().invoke(app, ["convert", str(shared_data / "gum" / "gum-test.txt"), str(output)])
    assert result.exit_code == 0, result.output
    assert "wrote 1000 docs with 3439 entities" in result.output
    assert "person\t823" in result.output
    docs = list(DocBin().from_disk(output).get_docs(vocab))
    assert stats(docs) == stats(read_tagged(shared_data / "gum" / "gum-test.txt", vocab))
    assert [spans(doc) for doc in docs[:50]] == [
        spans(doc) for doc in read_tagged(shared_data / "gum" / "gum-test.txt", vocab)[:50]
    ]


def test_convert_command_reports_bad_input(tmp_path):
    bad = write(tmp_path, "bad.conll", "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP\n")
    result = CliRunner().invoke(app, ["convert", str(bad), str(tmp_path / "x.spacy"), "--format", "conll"])
    assert result.exit_code == 1
    assert "bad.conll, line 3: expected 4 space-separated columns" in result.output
    assert not (tmp_path / "x.spacy").exists()
