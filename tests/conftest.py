"""Shared fixtures: paths to the small hand-written fixtures and to the real data (skipped if absent)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the hub
FIXTURE_DATA = Path(__file__).resolve().parent / "fixtures" / "data"
TEST_MODEL = "tiny-bert"  # the suite's backbone unless a test names one (ptv2's own default is the real minilm)


def with_test_model(args) -> list[str]:
    """``args`` plus ``model=tiny-bert`` unless they choose a model themselves (``model=`` or an experiment)
    or ask for --help / --version (which show ptv2's own defaults)."""
    args = list(args)
    if any(a.lstrip("+").startswith(("model=", "experiment=")) or a in ("--help", "--version") for a in args):
        return args
    # just before the first override: Hydra takes none after `--cfg job`, and none before `-m`
    at = next((i for i, a in enumerate(args) if "=" in a and not a.startswith("-")), len(args))
    return [*args[:at], f"model={TEST_MODEL}", *args[at:]]


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


def run_cli(*args: str, subprocess_: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `ptv2-train ARGS` (with ``model=tiny-bert`` unless ARGS choose a model); returns a CompletedProcess.

    In-process by default (imports torch/transformers once for the whole suite, which keeps the suite
    fast on 2 cores); `subprocess_=True` for tests that need a real process (signals, exit paths).
    """
    args = tuple(with_test_model(args))
    if subprocess_:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        return subprocess.run(
            [sys.executable, "-m", "ptv2.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
        )
    from hydra.core.global_hydra import GlobalHydra

    from ptv2 import cli

    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    saved_argv, sys.argv = sys.argv, ["ptv2-train", *args]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            cli.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(list(args), code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def tiny_cfg():
    """Compose the real conf/ with overrides (no subprocess): for in-process model tests."""
    from hydra import compose, initialize_config_dir

    from ptv2.cli import CONF_DIR

    def compose_cfg(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name="config", overrides=with_test_model(overrides))

    return compose_cfg
