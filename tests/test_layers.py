"""The package's layers (pyproject.toml, `[tool.importlinter]`): each package imports only from those below it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    executable = shutil.which("lint-imports")
    if executable is None:
        pytest.fail("import-linter is not installed: pip install -e '.[test]'")
    env = os.environ | {"PYTHONPATH": str(cwd)}
    return subprocess.run([executable, "--no-cache"], cwd=cwd, capture_output=True, text=True, env=env)


def test_layer_contract_is_kept():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract can fail: a copy of the package where `models` imports from `pipeline` is refused."""
    shutil.copytree(ROOT / "spacy_fsner", tmp_path / "spacy_fsner", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    module = tmp_path / "spacy_fsner" / "models" / "causal_lm.py"
    module.write_text(module.read_text() + "\nfrom ..pipeline.task import FewShotNERTask  # noqa: E402, F401\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "spacy_fsner.models.causal_lm -> spacy_fsner.pipeline.task" in result.stdout


SUBPACKAGES = [
    "annotation",
    "cli",
    "data",
    "decoding",
    "ensemble",
    "evaluation",
    "models",
    "pipeline",
    "prompts",
    "retrieval",
    "training",
]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_declares_its_public_names(name):
    import importlib

    package = importlib.import_module(f"spacy_fsner.{name}")
    assert package.__doc__, f"spacy_fsner.{name} has no docstring saying what it holds"
    public = getattr(package, "__all__", None)
    assert public, f"spacy_fsner.{name} declares no __all__"
    missing = [n for n in public if getattr(package, n, None) is None]
    assert not missing, f"spacy_fsner.{name}.__all__ names what it does not define: {missing}"


def test_every_subpackage_is_a_layer():
    packages = sorted(p.name for p in (ROOT / "spacy_fsner").iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted(SUBPACKAGES)
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {part.strip() for layer in layers for part in layer.split("|")}
    assert set(SUBPACKAGES) <= named, f"packages outside the layer contract: {set(SUBPACKAGES) - named}"
