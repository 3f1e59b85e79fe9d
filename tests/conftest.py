"""Shared fixtures: the public data beside the repo and a tiny Llama built locally once per session."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FSNER_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (override with FSNER_SHARED_DATA); tests that need it are skipped without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public NER data not found at {SHARED_DATA} (set FSNER_SHARED_DATA)")
    return SHARED_DATA
