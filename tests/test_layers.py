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
