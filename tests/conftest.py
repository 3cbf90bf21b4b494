"""Shared fixtures: paths to the small hand-written fixtures and to the real data (skipped if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURE_DATA = Path(__file__).resolve().parent / "fixtures" / "data"


def shared_data_path() -> Path | None:
    """The real-data folder: $PTV2_SHARED_DATA, else ../shared/data beside the checkout; None if absent."""
    env = os.environ.get("PTV2_SHARED_DATA")
    # Worktrees sit beside main (/work/wt-x, /work/main), so parents[2] is the shared parent in both.
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def fixture_data() -> Path:
    """Root of tests/fixtures/data (the layout data.root expects)."""
    return FIXTURE_DATA


@pytest.fixture
def shared_data() -> Path:
    """Root of the real data in official formats; skips the test when it is not present."""
    path = shared_data_path()
    if path is None:
        pytest.skip("real data not present (set PTV2_SHARED_DATA or provide ../shared/data)")
    return path
