"""The bench/ scripts: each runs as `python -m bench.<name>` from the repository root (its `--help` exits 0 and
shows that command), none imports another, and their shared helper (`bench.common`) parses and sets threads."""

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from bench.common import add_training_arguments, base_parser, seconds_per_step, set_threads

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (REPO / "bench").glob("*.py") if p.stem not in ("__init__", "common"))
WITHOUT_THREADS = {"random_llama"}  # builds a model on --device; no CPU-bound work to size


def test_the_bench_scripts_are_all_here():
    assert SCRIPTS == [
        "annotate_throughput",
        "ddp_throughput",
        "el4ner_rules",
        "fused_head",
        "incontext_quality",
        "new_domain",
        "objective_overhead",
        "paired_episodes",
        "random_llama",
        "retrieval_episodes",
        "retrieval_quality",
        "training_cost",
        "training_objectives",
        "vllm_vs_hf",
    ]


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    """`python -m bench.<name> --help` of every script, from the repository root, a few at a time."""

    def run(name: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", f"bench.{name}", "--help"]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(SCRIPTS, pool.map(run, SCRIPTS), strict=True))


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_exits_0_and_shows_the_module_command(helps, name):
    done = helps[name]
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("usage:")
    assert f"python -m bench.{name} " in done.stdout  # the docstring's example, as the script is now run
    assert ("--threads THREADS" in done.stdout) is (name not in WITHOUT_THREADS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_import_bench_modules_through_the_package(name):
    """No `from retrieval_episodes import ...` (which needs bench/ on sys.path): only `bench.common`, absolute."""
    tree = ast.parse((REPO / "bench" / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            assert module.split(".")[0] not in SCRIPTS, f"{name} imports {module}"
            assert not module.startswith("bench.") or module == "bench.common", f"{name} imports {module}"


def test_the_readme_gives_every_script_its_command():
    readme = (REPO / "bench" / "README.md").read_text()
    missing = [name for name in SCRIPTS if f"python -m bench.{name}" not in readme]
    assert not missing


def test_set_threads_sets_torch_threads_and_0_leaves_them():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(0) == 1 == torch.get_num_threads()
        target = 2 if before == 1 else before
        assert set_threads(target) == target == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_base_parser_threads_option():
    assert base_parser("doc").parse_args([]).threads == 0
    assert base_parser("doc", threads=2).parse_args([]).threads == 2
    assert base_parser("doc").parse_args(["--threads", "3"]).threads == 3
    parser = base_parser("doc", threads=None)
    assert not hasattr(parser.parse_args([]), "threads")
    with pytest.raises(SystemExit):
        parser.parse_args(["--threads", "1"])


def test_training_arguments_defaults():
    parser = base_parser(None, threads=2)
    add_training_arguments(parser, train_sentences=150)
    args = parser.parse_args(["--batch-size", "4"])
    assert (args.model, args.data, args.train_sentences, args.batch_size, args.threads) == (
        "smollm2-135m-instruct",
        Path("../shared/data/conll2003"),
        150,
        4,
        2,
    )


def test_seconds_per_step_reads_the_trainer_runtime(tmp_path):
    history = [{"loss": 2.0, "step": 5}, {"train_runtime": 12.0, "step": 10}]
    (tmp_path / "metrics.json").write_text(json.dumps({"log_history": history}))
    assert seconds_per_step(tmp_path, 10) == 1.2


@pytest.mark.slow
def test_paired_episodes_resumes_and_compares_on_the_same_episodes(tiny_model_dir, tmp_path):
    """Two configurations on the same sampled episodes; a second run finds every episode done and runs none."""
    model = f"model={tiny_model_dir}"
    command = [sys.executable, "-m", "bench.paired_episodes", "--configs", f"a:template=cllmfs,{model}"]
    command += [f"b:template=shared,{model}", "--shots", "1", "--n", "2", "--output", str(tmp_path), "--threads", "1"]
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("episode 2/2") == 2
    assert "| b | " in first.stdout and "paired difference from a" in first.stdout
    episodes = tmp_path / "episodes_5w1s_n2_seed0.jsonl"
    assert len(episodes.read_text().splitlines()) == 2
    counts = [json.loads(line) for line in (tmp_path / "a_5w1s_n2_seed0.jsonl").read_text().splitlines()]
    assert [c["episode"] for c in counts] == [0, 1] and all(c["tp"] + c["fn"] > 0 for c in counts)
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0 and "episode 1/2" not in again.stdout
    assert first.stdout.split("| configuration")[1] == again.stdout.split("| configuration")[1]


def test_paired_episodes_refuses_unknown_settings():
    from bench.paired_episodes import parse_config

    assert parse_config("x:template=shared,k=3") == ("x", {"template": "shared", "k": "3"})
    with pytest.raises(SystemExit, match="keys from"):
        parse_config("x:temperature=1")


def test_paired_episodes_fine_tuning_settings_make_a_fine_tune_adaptation():
    """`fine_tune`, `objective` and `demonstrations` become the `adaptation` block that spaCy resolves into a
    FineTuneAdaptation with those steps, that contrastive term (CLLMFS's with its noise view) and demonstrations."""
    from spacy.util import registry

    from bench.paired_episodes import fine_tuning
    from spacy_fsner.training.adaptation import FineTuneAdaptation

    block = fine_tuning({"fine_tune": "8", "objective": "hidden-noise", "demonstrations": "true"})
    adaptation = registry.resolve({"a": block})["a"]
    assert isinstance(adaptation, FineTuneAdaptation)
    assert adaptation.steps == 8 and adaptation.demonstrations
    (objective,) = adaptation.objectives
    assert type(objective).__name__ == "HiddenStateContrastive" and objective.noise
    plain = registry.resolve({"a": fine_tuning({"fine_tune": "3"})})["a"]
    assert plain.steps == 3 and not plain.demonstrations and not plain.objectives
    with pytest.raises(SystemExit, match="objective='dpo'"):
        fine_tuning({"fine_tune": "8", "objective": "dpo"})
    with pytest.raises(SystemExit, match="true or false"):
        fine_tuning({"fine_tune": "8", "demonstrations": "yes"})


def test_new_domain_training_sentences_are_unique_and_never_test_sentences(tmp_path, monkeypatch):
    """The support sets' sentences once each, none of the test sentences among them; the test sentences are the
    first N of the test file."""
    import spacy
    from spacy.tokens import DocBin

    import bench.new_domain as new_domain

    gum = tmp_path / "gum"
    (gum / "support_proml" / "5shot").mkdir(parents=True)
    (gum / "support_container_bio" / "1shot").mkdir(parents=True)
    (gum / "gum-test.txt").write_text("I\tGATE-person\nran\tO\n\nWe\tGATE-person\nsat\tO\n\nHe\tGATE-person\nate\tO")
    (gum / "support_proml" / "5shot" / "0.txt").write_text(
        "I\tGATE-person\nran\tO\n\nDogs\tGATE-animal\nbark\tO\n\nDogs\tGATE-animal\nbark\tO\n"
    )
    (gum / "support_container_bio" / "1shot" / "0.txt").write_text("He\tB-person\nate\tO\n\nRice\tB-plant\ngrows\tO\n")
    monkeypatch.setattr(new_domain, "GUM", gum)
    train, test = new_domain.prepare(tmp_path / "out", test_sentences=2)
    vocab = spacy.blank("en").vocab
    texts = {path: [d.text for d in DocBin().from_disk(path).get_docs(vocab)] for path in (train, test)}
    assert texts[test] == ["I ran", "We sat"]
    assert sorted(texts[train]) == ["Dogs bark", "He ate", "Rice grows"]  # "I ran" is a test sentence
