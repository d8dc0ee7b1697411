"""Shared pytest fixtures: where ../shared lives, and skipping politely when it does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SIEVE_SHARED", ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared data); absent on this machine")
    return path


@pytest.fixture
def shared():
    """The shared/ directory (skips the test when it is absent)."""
    return shared_path()
