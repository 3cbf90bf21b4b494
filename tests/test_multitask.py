"""MPT-2: shared deep prompt across datasets (stage 1), per-dataset training from it (stage 2), init_from."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptv2.data import TaskBatches, in_order_batches, sampling_probabilities
from tests.conftest import FIXTURE_DATA, run_cli

TINY = ("model=tiny-bert", f"data.root={FIXTURE_DATA}", "train.progress=false", "data.max_train_samples=8")
CUSTOM = ("multitask=custom", "multitask.tasks=[rte,cb]")


def _run(root: Path, *args: str):
    result = run_cli(*TINY, f"results.root={root}", *args)
    assert result.returncode == 0, result.stderr
    return result


def _metrics(root: Path, task: str, method: str = "mpt2") -> tuple[Path, dict]:
    (path,) = root.glob(f"runs/{task}/tiny-bert/{method}/*/metrics.json")
    return path.parent, json.loads(path.read_text())


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> Path:
    """One stage-1 run on rte (2 labels) + cb (3 labels), with the collate instrumented."""
    root = tmp_path_factory.mktemp("mpt")
    seen: list[set[int]] = []
    import ptv2.data as data_module

    original = data_module.collate

    def spy(features, pad_token_id, **options):  # every batch the loop builds, train and eval
        seen.append({f["task_id"] for f in features})
        return original(features, pad_token_id, **options)

    data_module.collate = spy
    try:
        _run(root, *CUSTOM, "multitask.stage=1", "train.epochs=2", "train.batch_size=4")
    finally:
        data_module.collate = original
    (root / "batches.json").write_text(json.dumps([sorted(s) for s in seen]))
    return root


def test_stage1_shares_one_prompt_with_separate_heads_and_single_dataset_batches(stage1):
    directory, metrics = _metrics(stage1, "mpt-custom")
    batches = json.loads((stage1 / "batches.json").read_text())
    # 8 rte + 8 cb train examples at batch 4 -> 4 train batches per epoch; dev 8 + 8 at eval batch 128 -> 2.
    assert len(batches) == 2 * (4 + 2)
    assert all(len(ids) == 1 for ids in batches)  # no batch mixes datasets
    assert {ids[0] for ids in batches} == {0, 1}  # both datasets were drawn
    assert metrics["status"] == "done" and metrics["method"] == "mpt2" and metrics["head"] == "multi"
    dev = metrics["best"]["dev"]
    assert {"rte/accuracy", "cb/accuracy", "cb/macro_f1", "mean_primary"} <= set(dev)
    assert dev["mean_primary"] == pytest.approx((dev["rte/accuracy"] + dev["cb/accuracy"]) / 2)
    assert all(set(e["metrics"]["dev"]) == set(dev) for e in metrics["epochs"])  # per dataset, every epoch
    # Artifact: one prompt (no per-task copies), two heads of their own sizes.
    prompt = load_file(directory / "prompt.safetensors")
    assert set(prompt) == {"prompt.embedding", "prompt.computed_prefix"}
    assert prompt["prompt.computed_prefix"].shape == (4, 2, 4, 16, 8)  # layers, k|v, heads, P, head_dim
    heads = load_file(directory / "heads.safetensors")
    assert heads["head.heads.rte.classifier.weight"].shape == (2, 32)
    assert heads["head.heads.cb.classifier.weight"].shape == (3, 32)
    meta = json.loads((directory / "prompt.json").read_text())
    assert meta | {"stage1_run": None} == {
        "backbone": "tiny-bert", "num_layers": 4, "layers": [0, 1, 2, 3], "depth_range": "1-4", "prompt_length": 16,
        "reparam": "embedding", "mlp_hidden_size": None, "hidden_size": 32, "num_heads": 4, "head_dim": 8,
        "heads": {"rte": {"kind": "cls", "num_labels": 2}, "cb": {"kind": "cls", "num_labels": 3}}, "stage1_run": None,
    }
    assert not (directory / "prompt_head.safetensors").exists()


def test_one_prompt_feeds_both_heads(tiny_cfg):
    """Gradients of an rte batch and of a cb batch both reach the single prompt tensor; each only its head."""
    from ptv2.backbone import load_backbone
    from ptv2.data import collate
    from ptv2.model import build_model

    cfg = tiny_cfg("model=tiny-bert")
    backbone = load_backbone(cfg.model, "eager")
    model = build_model(cfg, backbone, {"rte": ("cls", 2), "cb": ("cls", 3)}, "multi")
    tok = backbone.tokenizer
    for task_id, (name, width) in enumerate([("rte", 2), ("cb", 3)]):
        model.zero_grad()
        feature = dict(tok("a b", "c", truncation=True)) | {"labels": 1, "task_id": task_id}
        batch = collate([feature, feature], tok.pad_token_id)
        logits = model(batch)
        assert logits.shape == (2, width)
        model.loss(logits, batch).backward()
        assert model.prompt.embedding.grad.abs().sum() > 0
        other = "cb" if name == "rte" else "rte"
        assert model.head.heads[name].classifier.weight.grad is not None
        assert model.head.heads[other].classifier.weight.grad is None


def test_sampling_probabilities_by_hand():
    assert sampling_probabilities([10, 40], [100, 400], "proportional", 2.0) == pytest.approx([0.2, 0.8])
    # size^(1/2): 10 and 20 -> 1/3, 2/3
    assert sampling_probabilities([10, 40], [100, 400], "temperature", 2.0) == pytest.approx([1 / 3, 2 / 3])


@pytest.mark.parametrize(("sampling", "expected"), [("proportional", 0.2), ("temperature", 1 / 3)])
def test_task_batches_draw_counts(sampling, expected):
    task_ids = [0] * 100 + [1] * 400
    batches = TaskBatches(task_ids, [5] * 500, batch_size=10, seed=3, group_by_length=False, sampling=sampling)
    assert len(batches) == 50
    counts: Counter = Counter()
    for epoch in range(60):  # 3000 draws
        batches.set_epoch(epoch)
        for batch in batches:
            owners = {task_ids[i] for i in batch}
            assert len(owners) == 1 and len(batch) == 10
            counts[owners.pop()] += 1
    assert counts[0] / 3000 == pytest.approx(expected, abs=0.025)
    batches.set_epoch(7)
    assert list(batches) == list(batches)  # a function of seed + epoch (resume replays it)


def test_in_order_batches_never_cross_datasets():
    assert in_order_batches([0, 0, 0, 1, 1, 2], 2) == [[0, 1], [2], [3, 4], [5]]


def test_stage2_starts_from_stage1_prompt_and_head(stage1, tmp_path, monkeypatch):
    import ptv2.train as train_module

    directory, _ = _metrics(stage1, "mpt-custom")
    captured = {}
    original = train_module.checkpoint.load

    def capture(out, model, optimizer, scheduler):  # the loop calls this right before the first step
        captured["prompt"] = model.prompt.embedding.detach().clone()
        captured["head"] = model.head.classifier.weight.detach().clone()
        return original(out, model, optimizer, scheduler)

    monkeypatch.setattr(train_module.checkpoint, "load", capture)
    _run(tmp_path, "task=cb", f"prompt.init_from={directory}", "train.epochs=1")
    assert torch.equal(captured["prompt"], load_file(directory / "prompt.safetensors")["prompt.embedding"])
    assert torch.equal(captured["head"], load_file(directory / "heads.safetensors")["head.heads.cb.classifier.weight"])
    _, metrics = _metrics(tmp_path, "cb", method="pt2")
    assert metrics["stage1_run"] == str(directory)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("prompt_length=8", "prompt_length 16 there, 8 here (use prompt_length=16)"),
        ("depth_range=top", "layers 1-4 there, 4-4 here (use depth_range.layers=1-4)"),
        ("model=tiny-roberta", "backbone tiny-bert there, tiny-roberta here (use model=tiny-bert)"),
        ("reparam=mlp", "reparam embedding there, mlp here (use reparam=embedding)"),
    ],
)
def test_init_from_mismatch_is_one_clear_line(stage1, tmp_path, override, named):
    directory, _ = _metrics(stage1, "mpt-custom")
    extra = ("depth_range.k=1",) if override == "depth_range=top" else ()
    result = run_cli(*TINY, f"results.root={tmp_path}", "task=rte", override, *extra, f"prompt.init_from={directory}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


def test_init_from_missing_artifact(tmp_path):
    result = run_cli(*TINY, f"results.root={tmp_path}", "task=rte", f"prompt.init_from={tmp_path}")
    assert result.returncode == 2 and "no prompt.safetensors + prompt.json" in result.stderr


def test_custom_needs_tasks_and_stage2_needs_stage1(tmp_path):
    result = run_cli(*TINY, f"results.root={tmp_path}", "multitask=custom")
    assert result.returncode == 2 and "multitask.tasks=[rte,cb]" in result.stderr
    result = run_cli(*TINY, f"results.root={tmp_path}", *CUSTOM, "multitask.stage=2")
    assert result.returncode == 2 and "run multitask.stage=1" in result.stderr


def test_end_to_end_both_stages(tmp_path):
    """`ptv2-train multitask=custom multitask.tasks=[rte,cb]`: stage 1, then stage 2 per dataset, each a run."""
    _run(tmp_path, *CUSTOM, "train.epochs=1", "multitask.sampling=temperature")
    stage1_dir, stage1 = _metrics(tmp_path, "mpt-custom")
    assert stage1["status"] == "done" and stage1["stage1_run"] is None
    for task in ("rte", "cb"):
        _, metrics = _metrics(tmp_path, task)
        assert metrics["status"] == "done" and metrics["method"] == "mpt2"
        assert metrics["stage1_run"] == str(stage1_dir)
    # A re-run finds every stage done and redoes nothing.
    result = _run(tmp_path, *CUSTOM, "train.epochs=1", "multitask.sampling=temperature")
    assert result.stdout.count("already done") == 3


def test_end_to_end_ner_family(tmp_path):
    """`ptv2-train multitask=ner model=tiny-bert`: conll03 + ontonotes + conll04, token heads of their own label sets."""
    _run(tmp_path, "multitask=ner", "train.epochs=1", "data.max_eval_samples=4")
    stage1_dir, stage1 = _metrics(tmp_path, "mpt-ner")
    assert stage1["status"] == "done" and stage1["family"] == "ner"
    assert {"conll03/f1", "ontonotes/f1", "conll04/f1", "mean_primary"} <= set(stage1["best"]["dev"])
    heads = json.loads((stage1_dir / "prompt.json").read_text())["heads"]
    assert {name: h["kind"] for name, h in heads.items()} == {"conll03": "token", "ontonotes": "token", "conll04": "token"}
    for task in ("conll03", "ontonotes", "conll04"):
        _, metrics = _metrics(tmp_path, task)
        assert metrics["status"] == "done" and metrics["stage1_run"] == str(stage1_dir)
