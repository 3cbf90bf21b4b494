"""Several runs' prompts on one frozen backbone in shared batches: each run's file equals its solo one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import FIXTURE_DATA, run_cli
from safetensors.torch import load_file, save_file

from ptv2 import MixedPromptPredictor
from ptv2.errors import UserError
from ptv2.predict import main as predict_main
from ptv2.predict import predict_split

COMMON = ("model=tiny-roberta", f"data.root={FIXTURE_DATA}", "train.epochs=1", "train.progress=false",
          "data.max_train_samples=8", "prompt.init_std=1.0")  # large prompts: predictions depend on them


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Runs of one tiny backbone (seed 11): six tasks and heads, plus RTE with other prompt shapes and PT."""
    root = tmp_path_factory.mktemp("mixed")
    sweeps = [
        ("-m", "task=rte,cb,copa,boolq,multirc,record"),
        ("task=rte", "prompt_length=3", "depth_range.layers=2-3", "results.experiment=short"),
        ("task=rte", "method=pt", "prompt_length=5", "results.experiment=pt"),
        ("task=cb", "prompt.shift_positions=true", "prompt_length=4", "results.experiment=shift"),
    ]
    for sweep in sweeps:
        result = run_cli(*sweep, *COMMON, f"results.root={root}")
        assert result.returncode == 0, result.stderr
    found = {}
    for path in sorted(root.glob("*/*/tiny-roberta/*/*/metrics.json")):
        group, task, _, method, _ = path.relative_to(root).parts[:5]
        found[f"{task}" if group == "runs" else f"{task}-{group}"] = path.parent
    assert len(found) == 9, found
    return found


def test_mixed_batches_write_each_runs_solo_file_byte_for_byte(runs, tmp_path):
    predictor = MixedPromptPredictor(list(runs.values()), data_root=str(FIXTURE_DATA))
    paths = predictor.write("dev", tmp_path / "mixed", batch_size=16)
    assert predictor.mixed_forwards >= 1 and predictor.mixed_forwards <= predictor.forwards
    assert {p.parent.name for p in paths if p.name == "RTE.jsonl"} == {r.name for k, r in runs.items() if k.startswith("rte")}
    for run, path in zip(runs.values(), paths, strict=True):
        solo, _ = predict_split(run, "dev", tmp_path / "solo" / run.name, str(FIXTURE_DATA))
        assert path.read_bytes() == solo.read_bytes(), run


def test_each_row_carries_its_own_runs_prompt(runs, tmp_path):
    """Swapping two runs' prompts changes their outputs: the rows really use their own run's prefix."""
    a, b = runs["cb"], tmp_path / "cb-swapped"
    shutil.copytree(a, b)
    mine, other = load_file(a / "prompt_head.safetensors"), load_file(runs["rte"] / "prompt_head.safetensors")
    save_file({k: other[k] if k.startswith("prompt.") else v for k, v in mine.items()}, str(b / "prompt_head.safetensors"))
    outputs = MixedPromptPredictor([a, b, runs["rte"]], data_root=str(FIXTURE_DATA)).predict("dev")
    assert not all(torch.allclose(x, y) for x, y in zip(outputs[a], outputs[b], strict=True))


def test_cli_mixes_runs_and_refuses_other_backbones(runs, tmp_path, capsys):
    predict_main([f"runs=[{runs['rte']},{runs['cb']}]", "split=dev", f"out={tmp_path}", f"data.root={FIXTURE_DATA}"])
    out = capsys.readouterr().out
    assert "serving several runs" in out and (tmp_path / "RTE.jsonl").is_file() and (tmp_path / "CB.jsonl").is_file()
    other = run_cli("task=rte", *COMMON, "seed=12", f"results.root={tmp_path / 'seed12'}")  # another random backbone
    seed12 = Path(other.stdout.strip().splitlines()[-1].removeprefix("metrics: ")).parent
    with pytest.raises(SystemExit) as exit_:
        predict_main([f"runs=[{runs['rte']},{seed12}]", "split=dev", f"data.root={FIXTURE_DATA}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on different backbones" in err[0]
    ft = run_cli("task=rte", *COMMON, "method=ft", f"results.root={tmp_path / 'ft'}")
    ft_run = Path(ft.stdout.strip().splitlines()[-1].removeprefix("metrics: ")).parent
    with pytest.raises(UserError, match="fine-tuned its backbone"):
        MixedPromptPredictor([runs["rte"], ft_run])
