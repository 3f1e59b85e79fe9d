"""Demonstration retrieval: the four retrievers on hand-made cases, the budget, the index saved with a pipeline."""

from collections.abc import Sequence

import numpy as np
import pytest
import spacy
import torch
from conftest import fsner_config
from spacy.tokens import Doc, Span
from spacy.training import Example

from spacy_fsner.retrieval.embeddings import InputEmbeddings
from spacy_fsner.retrieval.retrievers import (
    RandomRetriever,
    SentenceRetriever,
    SpanRetriever,
    WordRetriever,
)

# Hand-made word vectors: three topics (people, places, finance) on three axes, function words on a fourth.
TOPICS = {
    "merkel": 0,
    "obama": 0,
    "biden": 0,
    "minister": 0,
    "paris": 1,
    "berlin": 1,
    "london": 1,
    "city": 1,
    "stocks": 2,
    "shares": 2,
    "fell": 2,
    "bank": 2,
}


class ToyEmbeddings:
    """Unit vectors: a topic word on its topic's axis, anything else on the function-word axis."""

    def _word(self, word: str) -> np.ndarray:
        vector = np.zeros(4, np.float32)
        vector[TOPICS.get(word.lower(), 3)] = 1
        return vector

    def words(self, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return [
            np.stack([self._word(w) for w in words]) if words else np.zeros((0, 4), np.float32) for words in sentences
        ]

    def sentences(self, sentences: Sequence[Sequence[str]]) -> np.ndarray:
        rows = [w.mean(0) for w in self.words(sentences)]
        return np.stack([r / np.linalg.norm(r) for r in rows])

    def phrases(self, phrases: Sequence[str]) -> np.ndarray:
        return self.sentences([p.split() for p in phrases])


NLP = spacy.blank("en")


def doc(text: str, ents: Sequence[tuple[str, str]] = ()) -> Doc:
    made = NLP.make_doc(text)
    spans = []
    for entity, label in ents:
        start = text.index(entity)
        spans.append(made.char_span(start, start + len(entity), label=label))
    made.ents = spans
    return made


POOL = [
    doc("Merkel and Obama .", [("Merkel", "PER"), ("Obama", "PER")]),
    doc("Paris is a city .", [("Paris", "LOC")]),
    doc("Stocks fell and shares fell at the bank .", [("bank", "ORG")]),
    doc("The the the the of of of Berlin .", [("Berlin", "LOC")]),
]


def fitted(retriever):
    retriever.bind(lambda spec: ToyEmbeddings())
    retriever.fit(POOL)
    return retriever


def test_word_level_matches_words_where_sentence_level_is_drowned_by_function_words():
    query = doc("Biden visited the old hall of the building with the minister .")
    # sentence level: the query's mean vector is mostly function words, like pool sentence 3's
    assert fitted(SentenceRetriever(k=1)).retrieve([query]) == [[3]]
    # word level with idf: "Biden" and "minister" find their best match in sentence 0; "the" counts for little
    assert fitted(WordRetriever(k=1)).retrieve([query]) == [[0]]


def test_word_level_scores_are_the_weighted_mean_of_each_query_words_best_match():
    retriever = fitted(WordRetriever(k=4, weighting="uniform"))
    query = doc("Biden in London")
    scores = retriever._scores([query])[0]
    # Biden matches a person in 0; London a place in 1 and 3; "in" a function word in 0, 1, 2 and 3
    np.testing.assert_allclose(scores, [2 / 3, 2 / 3, 1 / 3, 2 / 3], rtol=1e-6)
    assert retriever.retrieve([query]) == [[0, 1, 3, 2]], "ties keep pool order"


def test_span_level_compares_the_querys_candidate_spans_with_the_pool_entities():
    retriever = fitted(SpanRetriever(k=2))
    query = doc("Yesterday London and Berlin were quiet , said the minister .")
    query.spans["candidates"] = [Span(query, 1, 2), Span(query, 3, 4)]  # London, Berlin: places
    assert retriever.query_spans(query) == ["London", "Berlin"]
    assert retriever.retrieve([query]) == [[1, 3]]
    bare = doc("Yesterday London and Berlin were quiet , said the minister .")
    assert retriever.query_spans(bare) == []
    sentence = fitted(SentenceRetriever(k=2)).retrieve([bare])
    assert retriever.retrieve([bare]) == sentence, "without candidate spans: sentence similarity"


def test_a_sentence_span_query_reads_only_the_candidates_inside_it():
    retriever = fitted(SpanRetriever(k=1))
    two = doc("Obama spoke . Stocks fell .")
    two.spans["candidates"] = [Span(two, 0, 1), Span(two, 3, 4)]
    assert retriever.query_spans(two[0:3]) == ["Obama"]
    assert retriever.query_spans(two[3:6]) == ["Stocks"]
    assert retriever.retrieve([two[0:3], two[3:6]]) == [[0], [2]]


def test_random_is_fixed_per_seed_and_sentence_and_differs_across_seeds():
    queries = [doc(f"Query number {i} .") for i in range(20)]
    first = fitted(RandomRetriever(k=2, seed=0)).retrieve(queries)
    assert first == fitted(RandomRetriever(k=2, seed=0)).retrieve(queries)
    assert first != fitted(RandomRetriever(k=2, seed=1)).retrieve(queries)
    assert len({tuple(ids) for ids in first}) > 1, "not the same demonstrations for every query"


def test_budget_gives_fewer_demonstrations_never_a_cut_one_and_k_bounds_them():
    query = doc("Merkel in Paris with shares .")
    unlimited = fitted(WordRetriever(k=4)).retrieve([query])[0]
    assert len(unlimited) == 4
    budget = 10
    expected, used = [], 0
    for i in unlimited:  # in rank order, each one that still fits
        if used + len(POOL[i]) <= budget:
            expected.append(i)
            used += len(POOL[i])
    assert 0 < len(expected) < 4
    assert fitted(WordRetriever(k=4, max_tokens=budget)).retrieve([query])[0] == expected
    assert fitted(WordRetriever(k=2)).retrieve([query])[0] == unlimited[:2]


def test_the_query_itself_is_never_retrieved():
    for retriever in (WordRetriever(k=4), SentenceRetriever(k=4), RandomRetriever(k=4)):
        for i, example in enumerate(fitted(retriever).retrieve(POOL)):
            assert i not in example and len(example) == 3


def test_settings_and_an_empty_pool_are_checked():
    with pytest.raises(ValueError, match="k .* must be >= 1"):
        WordRetriever(k=0)
    with pytest.raises(ValueError, match="max_tokens must be >= 0"):
        SentenceRetriever(max_tokens=-1)
    with pytest.raises(ValueError, match="weighting must be 'idf' or 'uniform'"):
        WordRetriever(weighting="tfidf")
    with pytest.raises(ValueError, match="no pool: .*nlp.initialize"):
        WordRetriever().retrieve([doc("A query .")])


@pytest.mark.parametrize("make", [WordRetriever, SentenceRetriever, SpanRetriever, RandomRetriever])
def test_index_round_trips_through_bytes(make):
    retriever = fitted(make(k=2))
    queries = [doc("Biden in London ."), doc("Shares fell .")]
    restored = make(k=2)
    restored.bind(lambda spec: ToyEmbeddings())
    restored.from_bytes(retriever.to_bytes())
    assert restored.pool == retriever.pool
    assert restored.retrieve(queries) == retriever.retrieve(queries)
    with pytest.raises(ValueError, match="built by a"):
        (SentenceRetriever if make is not SentenceRetriever else WordRetriever)().from_bytes(retriever.to_bytes())


def test_input_embeddings_average_a_words_token_rows(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    matrix = torch.randn(len(tokenizer), 8, generator=torch.Generator().manual_seed(0))
    embeddings = InputEmbeddings(matrix, tokenizer)
    ids = tokenizer(" Berlinerstrasse", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1, "a word of several tokens"
    expected = matrix[ids].mean(0).numpy()
    (vectors,) = embeddings.words([["Berlinerstrasse", "Paris"]])
    np.testing.assert_allclose(vectors[0], expected / np.linalg.norm(expected), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)
    assert embeddings.sentences([[]]).shape == (1, 8)


def _examples(nlp):
    return [Example(nlp.make_doc(d.text), doc(d.text, [(e.text, e.label_) for e in d.ents])) for d in POOL]


def test_component_retrieves_per_sentence_and_saves_the_index(tiny_model_dir, tmp_path):
    nlp = spacy.blank("en")
    config = fsner_config(tiny_model_dir)
    config["labels"] = ["PER", "LOC", "ORG"]
    config["label_definitions"] = {}
    config["retriever"] = {"@misc": "spacy_fsner.WordRetriever.v1", "k": 1}
    ner = nlp.add_pipe("fsner", config=config)
    with pytest.raises(ValueError, match="no pool"):
        nlp("Merkel spoke .")
    nlp.initialize(lambda: _examples(nlp))
    assert len(ner.task.retriever.pool) == len(POOL)
    texts = ["Obama met Merkel today .", "Stocks fell at the bank ."]
    prompts = [p.texts()[0] for p in ner.task.generate_prompts([nlp.make_doc(t) for t in texts])]
    retrieved = ner.task.retriever.retrieve([nlp.make_doc(t) for t in texts])
    for prompt, (index,) in zip(prompts, retrieved, strict=True):
        assert POOL[index].text in prompt
        assert sum(example.text in prompt for example in POOL) == 1, "k = 1: one demonstration"
    before = [[(e.text, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
    nlp.to_disk(tmp_path / "pipe")
    loaded = spacy.load(tmp_path / "pipe")
    assert loaded.get_pipe("fsner").task.retriever.pool == ner.task.retriever.pool
    assert [[(e.text, e.label_) for e in d.ents] for d in loaded.pipe(texts)] == before


def test_initialize_without_a_retriever_takes_n_prompt_examples(tiny_model_dir):
    nlp = spacy.blank("en")
    config = fsner_config(tiny_model_dir)
    config["labels"] = ["PER", "LOC", "ORG"]
    config["label_definitions"] = {}
    ner = nlp.add_pipe("fsner", config=config)
    nlp.initialize(lambda: _examples(nlp))
    assert ner.task.demonstrations == [], "zero-shot unless asked"
    nlp.get_pipe("fsner").initialize(lambda: _examples(nlp), n_prompt_examples=2)
    assert [text for text, _ in ner.task.demonstrations] == [d.text for d in POOL[:2]]
    ner.initialize(lambda: _examples(nlp), labels=["PER"], n_prompt_examples=-1)
    assert ner.labels == ("PER",) and len(ner.task.demonstrations) == len(POOL)


def test_episode_adaptation_makes_the_support_set_the_pool(tiny_model_dir):
    nlp = spacy.blank("en")
    config = fsner_config(tiny_model_dir)
    config["retriever"] = {"@misc": "spacy_fsner.SentenceRetriever.v1", "k": 2}
    ner = nlp.add_pipe("fsner", config=config)
    ner.adapt(POOL[:2], labels=["PER", "LOC"])
    assert [e.text for e in ner.task.retriever.pool] == [d.text for d in POOL[:2]]
    assert ner.task.demonstrations == []
    (prompts,) = ner.task.generate_prompts([nlp.make_doc("Biden in London .")])
    assert all(POOL[0].text in text and POOL[1].text in text for text in prompts.texts())


@pytest.mark.slow
def test_sentence_encoder_embeddings_of_the_packaged_minilm(minilm_dir):
    """all-MiniLM-L6-v2 from the package index: paraphrases closer than unrelated sentences, unit word rows."""
    from spacy_fsner.retrieval.embeddings import EncoderEmbeddings, embeddings_from_spec

    embeddings = embeddings_from_spec(str(minilm_dir))
    assert isinstance(embeddings, EncoderEmbeddings)
    cat, kitten, stocks = embeddings.sentences(
        [
            ["The", "cat", "sits", "on", "the", "mat"],
            ["A", "kitten", "is", "sitting", "on", "a", "rug"],
            ["Stocks", "fell"],
        ]
    )
    assert cat @ kitten > 0.5 > cat @ stocks
    (words,) = embeddings.words([["Angela", "Merkel", "visited", "Paris"]])
    assert words.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(words, axis=1), 1, rtol=1e-5)
