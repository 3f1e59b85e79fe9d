"""README.md works as written: every fenced code block runs.

Python blocks are executed as written, each in a fresh namespace in a temporary directory, and then checked
(`PYTHON_BLOCKS`). Each line of a bash block is either run as written or, when it is expensive, through a cheap
equivalent that proves it valid (`COMMANDS`, the one table of both). A block in another language, a Python block
without a check or a command missing from the table fails, so a README command cannot be added untested.
Blocks that name a real model (`fetch-model` names) are skipped with FSNER_SKIP_REAL_MODELS=1.
"""

from __future__ import annotations

import configparser
import importlib
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import srsly

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_LIMIT = 12_000
"""Bytes: the README is a user's guide; everything else lives in docs/."""

REAL_MODEL_FIXTURES = {
    "smollm2-135m-instruct": "smollm2_dir",
    "gemma3-270m": "gemma_dir",
    "all-minilm-l6-v2": "minilm_dir",
}
"""fetch-model names a block may mention -> the conftest fixture that fetches it once (or skips the test)."""

PROJECT_FILES = ("project.yml", "configs", "assets")
"""What the bash blocks' working directory gets from the repository (the commands name these paths)."""


# ------------------------------------------------------------------ README parsing


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # 1-based line of the opening fence
    section: str  # the nearest "## " heading above it

    @property
    def id(self) -> str:
        return f"{self.language}-line{self.line}-{re.sub(r'[^a-z0-9]+', '-', self.section.lower()).strip('-')}"


def fenced_blocks(text: str) -> list[Block]:
    blocks, section, fence, body = [], "", None, []
    for number, line in enumerate(text.splitlines(), 1):
        if fence is None:
            if line.startswith("## "):
                section = line[3:].strip()
            elif line.startswith("```"):
                fence, body = (line[3:].strip(), number), []
        elif line.strip() == "```":
            blocks.append(Block(fence[0], "\n".join(body) + "\n", fence[1], section))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"README.md: the code block opened at line {fence[1]} is not closed"
    return blocks


def bash_commands(block: Block) -> list[str]:
    """Command lines: continuation lines joined, comment lines and trailing `  # comments` dropped."""
    commands, pending = [], ""
    for line in block.code.splitlines():
        line = pending + line.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


BLOCKS = fenced_blocks(README.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ how each bash command is run


def _env() -> dict[str, str]:
    """The tests' interpreter first on PATH, and this checkout's package before any installed copy."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _shell(command: str, cwd: Path, timeout: int = 600) -> str:
    done = subprocess.run(command, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"`{command}` exited {done.returncode} in {cwd}:\n{output[-4000:]}"
    return output


def as_written(command: str, workdir: Path) -> None:
    """Cheap: run the line itself."""
    _shell(command, workdir)


def installed(command: str, workdir: Path) -> None:
    """No network installs in tests: the pinned torch is the one installed, spacy_fsner imports, and every
    requirement of the `test` extra is installed."""
    import torch

    pinned = re.search(r"torch==([\w.]+)", command).group(1)
    assert torch.__version__.split("+")[0] == pinned, f"torch {torch.__version__} installed, README pins {pinned}"
    assert importlib.import_module("spacy_fsner").__version__
    extra = re.search(r'-e "\.\[(\w+)\]"', command).group(1)
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    requirements = setup["options.extras_require"][extra].split()
    for requirement in requirements:
        name = re.split(r"[<>=!~\[;]", requirement)[0]
        importlib.metadata.version(name)  # raises PackageNotFoundError when missing


def project_workflow_dry(command: str, workdir: Path) -> None:
    """The workflow exists in project.yml and weasel resolves all its steps (`--dry`: nothing runs)."""
    workflow = shlex.split(command)[-1]
    project = srsly.read_yaml(workdir / "project.yml")
    assert workflow in project["workflows"], f"project.yml has no workflow {workflow!r}"
    output = _shell(f"{command} --dry", workdir)
    for step in project["workflows"][workflow]:
        assert f" {step} " in output, f"`{command} --dry` did not reach step {step!r}:\n{output[-3000:]}"


def pytest_collects(command: str, workdir: Path) -> None:
    """The suite collects (imports every test module) without running; this file is among it."""
    output = _shell(f"{command} --collect-only -p no:cacheprovider", REPO)
    count = re.search(r"(\d+) tests? collected", output)
    assert count and int(count.group(1)) > 0, output[-3000:]
    assert "tests/test_readme.py::" in output


CLI_APPS = {"spacy_fsner": "spacy_fsner.cli", "spacy": "spacy.cli"}
"""`python -m MODULE ...` -> the module whose typer `app` parses its command line."""


def parsed(command: str, workdir: Path, creates: tuple[str, ...] = ()) -> None:
    """Expensive: the command's own CLI parses and validates the line (its inputs must exist) without running it;
    config overrides must name settings of the config. `creates`: directories it would write, made empty so that
    the next lines' inputs exist."""
    import typer
    from click import Context
    from spacy.cli._util import parse_config_overrides
    from thinc.api import Config

    python, flag, module, name, *args = shlex.split(command)
    assert (python, flag) == ("python", "-m") and module in CLI_APPS, f"not a known CLI: {command}"
    group = typer.main.get_command(importlib.import_module(CLI_APPS[module]).app)
    cli = group.get_command(Context(group), name)
    assert cli is not None, f"`python -m {module}` has no command {name!r}"
    context = cli.make_context(name, list(args))  # raises on unknown options, missing or nonexistent inputs
    if context.args:
        assert "config" in context.params, f"{command}: unexpected arguments {context.args}"
        config = Config().from_disk(context.params["config"], interpolate=False)
        for key in parse_config_overrides(context.args):
            section = config
            for part in key.split("."):
                assert isinstance(section, dict) and part in section, f"{command}: {key} is not in the config"
                section = section[part]
    for path in creates:
        (workdir / path).mkdir(parents=True, exist_ok=True)


COMMANDS: dict[str, Callable[[str, Path], None]] = {
    # install and the two commands
    'pip install torch==2.13.0 && pip install -e ".[test]"': installed,
    "python -m spacy project run all": project_workflow_dry,
    "python -m pytest -q": pytest_collects,
    # train, evaluate, package
    "python -m spacy_fsner convert assets/fewnerd_inter_dev_sample.txt corpus/source.spacy": as_written,
    "python -m spacy_fsner sample-episodes assets/fewnerd_inter_sample.txt corpus/episodes.jsonl --ways 5 --shots 1 "
    "--n 5 --seed 0": as_written,
    "python -m spacy_fsner train configs/obp.cfg --output training/obp --paths.train corpus/source.spacy "
    "--paths.base_model smollm2-135m-instruct --train.max_steps 60": partial(
        parsed, creates=("training/obp/pipeline",)
    ),
    "python -m spacy_fsner evaluate training/obp/pipeline corpus/episodes.jsonl --protocol fewnerd "
    '--output metrics/obp.json --report metrics/obp.html --meta --source "Few-NERD INTER dev sample" '
    '--source-licence "CC BY-SA 4.0"': parsed,
    "mkdir -p packages": as_written,
    "python -m spacy package training/obp/pipeline packages --build wheel --name fsner_obp --version 0.1.0": parsed,
    # real models offline: a no-op once the model is cached (the block's fixture fetches it first)
    "python -m spacy_fsner fetch-model smollm2-135m-instruct": as_written,
}
"""Every command line of README.md's bash blocks -> how this test runs it."""


# ------------------------------------------------------------------ how each Python block is checked


def _ents(doc) -> list[tuple[str, str]]:
    return [(ent.text, ent.label_) for ent in doc.ents]


def check_quickstart(namespace: dict[str, Any], stdout: str, block: Block) -> None:
    expected = [("Angela Merkel", "PER"), ("Paris", "LOC")]
    doc = namespace["doc"]
    assert _ents(doc) == expected
    assert stdout.splitlines()[0] == str(expected)
    assert f"# {expected}" in block.code, "the README shows what the quickstart prints"
    assert not any(doc.user_data["fsner"].values()), doc.user_data["fsner"]
    candidates = doc.spans["fsner"]
    assert len(candidates.attrs["scores"]) == len(candidates) >= len(expected)
    # the batch found a person and a place in each text, and the saved pipeline predicts the same
    docs, texts, nlp2 = namespace["docs"], namespace["texts"], namespace["nlp2"]
    assert [sorted({label for _, label in _ents(d)}) for d in docs] == [["LOC", "PER"]] * len(texts)
    assert [_ents(d) for d in nlp2.pipe(texts)] == [_ents(d) for d in docs]
    # what the README says next: without demonstrations SmolLM2 finds no entity in the sentence
    nlp = namespace["nlp"]
    nlp.get_pipe("fsner").adapt([], labels=["PER", "LOC"])
    assert _ents(nlp("Angela Merkel visited Paris.")) == []


PYTHON_BLOCKS: dict[str, Callable[[dict[str, Any], str, Block], None]] = {
    "Quickstart": check_quickstart,
}
"""README section -> the checks run after its Python block has run as written."""


# ------------------------------------------------------------------ the tests


def _params(language: str) -> list:
    return [pytest.param(block, id=block.id, marks=pytest.mark.slow) for block in BLOCKS if block.language == language]


def _fetch_named_models(block: Block, request: pytest.FixtureRequest) -> None:
    """Fetch (once) every real model the block names, or skip with FSNER_SKIP_REAL_MODELS=1."""
    for name, fixture in REAL_MODEL_FIXTURES.items():
        if name in block.code:
            request.getfixturevalue(fixture)


def test_every_block_and_command_is_known():
    """Only Python and bash blocks; each Python block has its checks, each command its entry in COMMANDS, and
    COMMANDS holds no command the README has dropped."""
    assert BLOCKS, "README.md has no code blocks"
    commands = []
    for block in BLOCKS:
        assert block.language in ("python", "bash"), f"README.md line {block.line}: a {block.language!r} block"
        if block.language == "python":
            assert block.section in PYTHON_BLOCKS, f"README.md line {block.line}: no checks for this Python block"
        else:
            commands += bash_commands(block)
    unknown = [command for command in commands if command not in COMMANDS]
    assert not unknown, f"README commands without an entry in COMMANDS: {unknown}"
    stale = [command for command in COMMANDS if command not in commands]
    assert not stale, f"COMMANDS lists commands the README no longer has: {stale}"


@pytest.fixture
def one_thread():
    """One torch thread: on a busy 2-core machine two threads spin against each other (the quickstart took 5 minutes
    with two threads beside other jobs, about 40 s with one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("block", _params("python"))
def test_python_block_runs_as_written(block: Block, request, tmp_path, monkeypatch, capsys):
    _fetch_named_models(block, request)
    assert block.section in PYTHON_BLOCKS, f"README.md line {block.line}: add checks to PYTHON_BLOCKS"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)
    PYTHON_BLOCKS[block.section](namespace, capsys.readouterr().out, block)


@pytest.mark.parametrize("block", _params("bash"))
def test_bash_block_runs(block: Block, request, tmp_path, monkeypatch):
    """The block's lines in order, in one directory holding copies of the project files."""
    _fetch_named_models(block, request)
    for name in PROJECT_FILES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    for command in bash_commands(block):
        assert command in COMMANDS, f"README.md line {block.line}: add `{command}` to COMMANDS"
        COMMANDS[command](command, tmp_path)


def test_readme_is_a_short_guide():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes (at most {README_LIMIT}): move details to docs/"


def test_configuration_reference_names_every_key():
    """Every setting of the fsner factory and of spacy_fsner.CausalLM.v1 has a row in the README's tables."""
    import inspect

    import spacy
    from spacy_llm.registry import registry as llm_registry

    spacy.blank("en")  # loads the entry points
    factory = spacy.language.Language.get_factory_meta("fsner").default_config
    model = inspect.signature(llm_registry.llm_models.get("spacy_fsner.CausalLM.v1")).parameters
    text = README.read_text(encoding="utf-8")
    missing = [key for key in [*factory, *model] if f"| `{key}` |" not in text]
    assert not missing, f"README.md's configuration tables lack {missing}"


OUTSIDE_REFERENCES = re.compile(r"SPEC\.md|\bSPEC\b|papers/|\bissue \d|issue's|\.\./shared/(?!data/)", re.IGNORECASE)
"""Documents outside the repository (a specification, a papers folder, issue numbers); data paths are fine."""


def test_no_references_to_documents_outside_the_repository():
    files = [README, *DOCS.glob("*.md"), REPO / "project.yml", *(REPO / "configs").glob("*.cfg")]
    files.append(REPO / "assets" / "README.md")
    hits = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE_REFERENCES.search(line)
    ]
    assert not hits, "\n".join(hits)


def _anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_links_between_readme_and_docs_resolve():
    broken = []
    for path in [README, *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # an address on the web
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
                broken.append(f"{path.relative_to(REPO)}: {target}")
    assert DOCS.joinpath("README.md").exists() and not broken, broken
