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


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300):
    """Run `ptv2-train` (as `python -m ptv2.cli`) in a subprocess; returns the CompletedProcess."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "ptv2.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


@pytest.fixture
def tiny_cfg():
    """Compose the real conf/ with overrides (no subprocess): for in-process model tests."""
    from hydra import compose, initialize_config_dir

    from ptv2.cli import CONF_DIR

    def compose_cfg(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name="config", overrides=list(overrides))

    return compose_cfg
