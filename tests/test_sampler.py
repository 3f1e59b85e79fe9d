"""The Few-NERD episode sampler on the real INTER test sentences, and its command."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from spacy.tokens import Doc
from spacy.vocab import Vocab
from typer.testing import CliRunner

from spacy_fsner.cli import app
from spacy_fsner.data.readers import Episode, read_episodes, read_tagged
from spacy_fsner.data.sampler import EpisodeSampler, sample_episodes
from spacy_fsner.data.spans import make_doc

TEST_INTER = "fewnerd/inter_sentences/test-inter.txt"


@pytest.fixture(scope="module")
def sentences(shared_data: Path) -> list[Doc]:
    return read_tagged(shared_data / TEST_INTER, Vocab())


def mentions(docs: list[Doc]) -> Counter:
    return Counter(ent.label_ for doc in docs for ent in doc.ents)


def check_greedy_k_2k(docs: list[Doc], types: list[str], k: int) -> None:
    """Every type has K..2K mentions; each sentence, when added, mentioned a type still short of K."""
    totals = Counter()
    for doc in docs:
        labels = {ent.label_ for ent in doc.ents}
        assert labels and labels <= set(types), f"sentence with other types: {labels} vs {types}"
        assert any(totals[label] < k for label in labels), "a sentence was added that no type needed"
        totals.update(ent.label_ for ent in doc.ents)
    assert all(k <= totals[t] <= 2 * k for t in types), (dict(totals), types, k)


@pytest.mark.parametrize(("ways", "shots", "query_shots"), [(5, 1, None), (5, 5, None), (10, 1, 2), (10, 5, None)])
def test_episodes_follow_the_k_2k_rule(sentences, ways, shots, query_shots):
    episodes = list(sample_episodes(sentences, ways, shots, 40, seed=3, query_shots=query_shots))
    assert len(episodes) == 40
    for episode in episodes:
        assert len(set(episode.types)) == ways
        check_greedy_k_2k(episode.support, episode.types, shots)
        check_greedy_k_2k(episode.query, episode.types, query_shots or shots)
        assert not {id(doc) for doc in episode.support} & {id(doc) for doc in episode.query}
    assert len({tuple(episode.types) for episode in episodes}) > 1


def test_5_way_1_shot_sizes_match_the_official_episodes(sentences):
    # official INTER dev 5-way 1~2-shot: 3-5 support sentences per episode, mean 4.95
    episodes = list(sample_episodes(sentences, 5, 1, 200, seed=0))
    sizes = [len(episode.support) for episode in episodes]
    assert set(sizes) <= {3, 4, 5}
    assert 4.8 <= sum(sizes) / len(sizes) <= 5.0
    drawn = Counter(t for episode in episodes for t in episode.types)
    assert set(drawn) == set(mentions(sentences))  # all 17 test types get drawn


def test_same_seed_same_episodes_other_seed_other_episodes(sentences):
    def texts(seed: int) -> list[tuple]:
        return [
            (tuple(e.types), tuple(d.text for d in e.support), tuple(d.text for d in e.query))
            for e in sample_episodes(sentences, 5, 1, 20, seed=seed)
        ]

    assert texts(7) == texts(7)
    assert texts(7) != texts(8)


def test_impossible_settings_are_clear_errors(sentences):
    with pytest.raises(ValueError, match="cannot sample 18-way episodes: the sentences have only 17 entity types"):
        sample_episodes(sentences, 18, 1, 10)
    with pytest.raises(ValueError, match="shots=0: it must be at least 1"):
        sample_episodes(sentences, 5, 0, 10)
    with pytest.raises(ValueError, match="query_shots=0"):
        sample_episodes(sentences, 5, 1, 10, query_shots=0)
    with pytest.raises(ValueError, match="n=-1"):
        sample_episodes(sentences, 5, 1, -1)


def test_too_few_sentences_for_the_shots_is_a_clear_error():
    vocab = Vocab()
    # each sentence mentions A three times, more than 2K = 2 allows, so no 1-shot support set exists
    docs = [make_doc(vocab, ["a", "b", "c", "d", "e"], [(0, 1, "A"), (2, 3, "A"), (4, 5, "A")]) for _ in range(3)]
    docs.append(make_doc(vocab, ["b"], [(0, 1, "B")]))  # B's one sentence fills a support set, but no query set
    sampler = EpisodeSampler(docs, ways=1, shots=1, max_attempts=20)
    with pytest.raises(ValueError, match="no 1-way 1~2-shot episode .* in 20 draws of types.*lower the number of ways"):
        sampler.sample()


def test_sentences_with_other_types_are_never_used():
    vocab = Vocab()
    mixed = [make_doc(vocab, ["x", "y"], [(0, 1, "A"), (1, 2, "C")]) for _ in range(10)]
    clean = [make_doc(vocab, ["x"], [(0, 1, label)]) for label in "AABB"]
    clean_ids = {id(doc) for doc in clean}
    for episode in sample_episodes(mixed + clean, 2, 1, 30, seed=1):
        used = {id(doc) for doc in episode.support + episode.query}
        assert used <= clean_ids or set(episode.types) == {"A", "C"}
        check_greedy_k_2k(episode.support, episode.types, 1)


def test_sentences_are_drawn_at_random_not_in_file_order():
    vocab = Vocab()
    docs = [make_doc(vocab, [f"w{i}"], [(0, 1, "A")]) for i in range(50)]
    episodes = list(sample_episodes(docs, 1, 1, 200, seed=0))
    support = Counter(episode.support[0].text for episode in episodes)
    query = Counter(episode.query[0].text for episode in episodes)
    assert len(support) > 40 and len(query) > 40  # about 49 of 50 expected with uniform draws
    assert max(support.values()) < 20


def run_command(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_command_is_reproducible_and_writes_fewnerd_jsonl(shared_data, tmp_path, sentences):
    source = str(shared_data / TEST_INTER)
    common = ["--ways", "5", "--shots", "1", "--n", "25"]
    output = run_command(["sample-episodes", source, str(tmp_path / "a.jsonl"), *common, "--seed", "0"])
    assert "wrote 25 5-way 1~2-shot episodes (query 1~2)" in output
    run_command(["sample-episodes", source, str(tmp_path / "b.jsonl"), *common, "--seed", "1"])
    # another process, with another hash seed: the file must not depend on set or dict order
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    command = [sys.executable, "-m", "spacy_fsner", "sample-episodes", source, str(tmp_path / "c.jsonl"), *common]
    subprocess.run([*command, "--seed", "0"], check=True, env=env, capture_output=True)
    first = (tmp_path / "a.jsonl").read_bytes()
    assert first == (tmp_path / "c.jsonl").read_bytes()
    assert first != (tmp_path / "b.jsonl").read_bytes()
    assert first.count(b"\n") == 24 and not first.endswith(b"\n")  # Few-NERD's layout
    episodes = list(read_episodes(tmp_path / "a.jsonl", Vocab()))  # the reader's checks pass too
    expected = list(sample_episodes(sentences, 5, 1, 25, seed=0))
    assert [episode_texts(e) for e in episodes] == [episode_texts(e) for e in expected]


def episode_texts(episode: Episode) -> tuple:
    def part(docs: list[Doc]) -> tuple:
        return tuple((doc.text, tuple((e.start, e.end, e.label_) for e in doc.ents)) for doc in docs)

    return tuple(episode.types), part(episode.support), part(episode.query)


def test_command_refuses_episode_input_and_impossible_settings(shared_data, tmp_path):
    episodes = shared_data / "fewnerd" / "episodes_sample" / "inter" / "dev_5_1.jsonl"
    result = CliRunner().invoke(app, ["sample-episodes", str(episodes), str(tmp_path / "x.jsonl")])
    assert result.exit_code == 1
    assert "holds episodes; sample from a sentence file" in result.output
    gum = shared_data / "gum" / "gum-test.txt"
    result = CliRunner().invoke(app, ["sample-episodes", str(gum), str(tmp_path / "x.jsonl"), "--ways", "12"])
    assert result.exit_code == 1
    assert "only 11 entity types" in result.output
    assert not (tmp_path / "x.jsonl").exists()
