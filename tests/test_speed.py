"""The fast paths compute what the plain path computes: packing (every head, prompts, FT), compile and lean
layer norms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import FIXTURE_DATA, run_cli
from hydra import compose, initialize_config_dir

from ptv2.backbone import load_backbone
from ptv2.cli import CONF_DIR
from ptv2.data import BatchBuffer, collate, pack_rows, packed_rows
from ptv2.inference import to_device
from ptv2.lean_norm import lean_layer_norm, use_lean_layer_norms
from ptv2.model import build_model
from ptv2.prompts.attention import _PermutedRows, _unit_of, packed_sequences
from ptv2.tasks.base import build_task


def test_pack_rows_first_fit_decreasing():
    assert pack_rows([5, 3, 8, 2, 6], 10) == [[2, 3], [4, 1], [0]]  # 8+2, 6+3, 5
    assert pack_rows([4, 4], 4) == [[0], [1]]
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows([11], 10)


def test_packed_rows_keep_every_token_and_its_place():
    batch = {"input_ids": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]]),
             "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])}
    packed = packed_rows(batch, 0, 6)
    # 4 -> row 0, 3 -> row 1, 2 -> row 0 after the 4
    assert packed["pack_input_ids"].tolist() == [[1, 2, 3, 4, 8, 9], [5, 6, 7, 0, 0, 0]]
    assert packed["pack_positions"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, -1, -1, -1]]
    flat = torch.cat([packed["pack_input_ids"].flatten(), torch.tensor([-1])])
    assert flat[packed["pack_index"]].view(3, 4).tolist() == [[5, 6, 7, -1], [8, 9, -1, -1], [1, 2, 3, 4]]
    assert packed["pack_dense"] is False
    # attention units: row 0 = sequence 2, sequence 1, no padding; row 1 = sequence 0, 3 padding slots
    units = packed_sequences(batch | packed_rows(batch, 0, 6, prefix_length=2), 6, 2)
    assert units.query_starts.tolist() == [0, 4, 6, 6, 9, 12] and units.sequences == 3
    assert _unit_of(units.query_starts, 12).tolist() == [0, 0, 0, 0, 1, 1, 3, 3, 3, 4, 4, 4]
    # keys index cat(prefix keys [3 sequences x 2], tokens [12]): each unit's prefix pair, then its tokens
    assert units.key_index.tolist() == [4, 5, 6, 7, 8, 9, 2, 3, 10, 11, 0, 1, 12, 13, 14, 15, 16, 17]
    assert units.key_starts.tolist() == [0, 6, 10, 10, 15, 18]
    assert units.key_index[units.key_inverse].tolist() == list(range(18))  # a permutation, and its inverse
    keys = torch.randn(18, 2, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x: _PermutedRows.apply(x, units.key_index, units.key_inverse), keys)
    assert (units.max_query, units.max_key) == (6, 8)
    rounded = packed_rows(batch, 0, 6, rows_multiple=4)  # compiled runs: few distinct row counts
    assert rounded["pack_input_ids"].shape == (4, 6) and rounded["pack_positions"][2:].eq(-1).all()
    assert torch.equal(rounded["pack_index"] % 6, packed["pack_index"] % 6)
    assert packed_rows({"input_ids": batch["input_ids"][2:], "attention_mask": batch["attention_mask"][2:]}, 0, 4)["pack_dense"]


def test_collate_pads_flat_and_multiple_choice_rows():
    features = [{"input_ids": [[5, 6], [7]], "attention_mask": [[1, 1], [1]], "labels": 1},
                {"input_ids": [[8], [9, 10, 11]], "attention_mask": [[1], [1, 1, 1]], "labels": 0}]
    batch = collate(features, 0, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[[5, 6, 0, 0], [7, 0, 0, 0]], [[8, 0, 0, 0], [9, 10, 11, 0]]]
    assert batch["attention_mask"].sum().item() == 7 and batch["labels"].tolist() == [1, 0]
    tokens = collate([{"input_ids": [3, 4, 5], "attention_mask": [1, 1, 1], "labels": [1, 2, 3]},
                      {"input_ids": [6], "attention_mask": [1], "labels": [4]}], 0)
    assert tokens["labels"].tolist() == [[1, 2, 3], [4, -100, -100]]
    with pytest.raises(ValueError, match="as many rows"):
        collate([features[0], {**features[1], "input_ids": [[8]], "attention_mask": [[1]]}], 0)


def test_batch_buffer_gives_back_every_tensor_and_value():
    batch = collate([{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": 1},
                     {"input_ids": [8], "attention_mask": [1], "labels": 0}], 0, pack_length=4, prefix_length=2)
    batch["score"] = torch.tensor([[0.5], [1.5]])
    buffer = BatchBuffer(batch)
    assert len(buffer.buffers) == 3  # int64, int32 (unit starts), float32: one tensor each
    unpacked = to_device(buffer, torch.device("cpu"))
    assert unpacked.keys() == batch.keys() and buffer["labels"].tolist() == [1, 0]
    for key, value in batch.items():
        if torch.is_tensor(value):
            assert unpacked[key].dtype == value.dtype and torch.equal(unpacked[key], value), key
        else:
            assert unpacked[key] == value, key


def _model(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=["model=tiny-bert", "train.dropout=0", *overrides])
    torch.manual_seed(0)
    backbone = load_backbone(cfg.model, cfg.train.attention, 0.0)
    task = build_task(cfg.task, FIXTURE_DATA, backbone.tokenizer)
    features = [f for i, r in enumerate(task.read("train")[:6]) for f in task.encode(r, i, "train")]
    return build_model(cfg, backbone, task.num_labels, cfg.head or cfg.task.head).eval(), features, backbone


@pytest.mark.parametrize(
    "overrides",
    [
        ("task=rte",),
        ("task=rte", "model=tiny-roberta", "reparam=mlp", "depth_range.layers=2-3"),
        ("task=rte", "method=ft"),
        ("task=rte", "model=tiny-roberta", "prompt.shift_positions=true", "prompt_length=3"),
        ("task=copa", "model=tiny-roberta"),
        ("task=conll03",),
        ("task=squad", "model=tiny-roberta", "task.max_length=64", "task.stride=16"),
    ],
    ids=lambda o: " ".join(o),
)
def test_packed_rows_give_the_padded_batchs_logits_and_loss(overrides):
    model, features, backbone = _model(*overrides)
    pad = backbone.tokenizer.pad_token_id
    plain = collate(features, pad, 8)
    length = max(len(r) for f in features for r in (f["input_ids"] if isinstance(f["input_ids"][0], list) else [f["input_ids"]]))
    packed = collate(features, pad, 8, pack_length=2 * length, rows_multiple=3,
                     prefix_length=model.prompt.prompt_length)  # an empty row or two as well
    assert len(packed["pack_input_ids"]) < packed["input_ids"].flatten(0, -2).shape[0]  # rows share sequences
    with torch.no_grad():
        a, b = model(plain), model(packed)
        real = plain["attention_mask"].bool()
        if a.dim() == 3:  # token/span logits: compare the real tokens (the layouts pad differently)
            a, b = a[real], b[:, : a.shape[1]][real]
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        la, lb = model.loss(model(plain), plain), model.loss(model(packed), packed)
    assert abs(lb.item() - la.item()) <= 1e-5 * abs(la.item())


def test_packed_rows_draw_prefix_dropout_per_sequence_as_unpacked():
    """Each packed sequence has its own prefix copy, so the prefix dropout (the official code drops out the
    batched prefix per example) draws the same masks as in the padded layout, not one per packed row."""
    model, features, backbone = _model("task=rte")
    model.train()
    model.prompt.dropout.p = 0.5  # the only random op left (train.dropout=0 elsewhere)
    with torch.no_grad():
        model.prompt.embedding.normal_(0, 1)  # a prefix large enough to move the logits
    pad = backbone.tokenizer.pad_token_id
    longest = max(len(f["input_ids"]) for f in features)
    plain, packed = collate(features, pad, 8), collate(features, pad, 8, pack_length=3 * longest,
                                                            prefix_length=model.prompt.prompt_length)
    assert len(packed["pack_input_ids"]) < len(features)
    logits = []
    for batch in (plain, packed):
        torch.manual_seed(3)
        logits.append(model(batch))
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)


def _epochs(root: Path, *overrides: str) -> list[dict]:
    result = run_cli(f"data.root={FIXTURE_DATA}", f"results.root={root}", "train.epochs=2", "train.progress=false",
                     "train.dropout=0", *overrides)
    assert result.returncode == 0, result.stderr
    return json.loads(Path(result.stdout.strip().splitlines()[-1].removeprefix("metrics: ")).read_text())["epochs"]


@pytest.mark.parametrize("task", ["rte", "conll03"])
def test_training_with_packing_follows_the_plain_loss_curve(tmp_path, task):
    plain = _epochs(tmp_path / "plain", f"task={task}", "train.packing=false")
    packed = _epochs(tmp_path / "packed", f"task={task}", "train.packing=true")
    for p, q in zip(plain, packed, strict=True):
        assert q["train_loss"] == pytest.approx(p["train_loss"], rel=1e-5)
        for split, metrics in p["metrics"].items():
            assert q["metrics"][split] == pytest.approx(metrics, rel=1e-4)


def test_compiled_training_follows_the_plain_loss_curve(tmp_path):
    plain = _epochs(tmp_path / "plain", "train.packing=true", "data.max_train_samples=8")
    compiled = _epochs(tmp_path / "compiled", "train.packing=true", "data.max_train_samples=8", "train.compile=true",
                       "train.compile_mode=default")
    for p, q in zip(plain, compiled, strict=True):
        assert q["train_loss"] == pytest.approx(p["train_loss"], rel=1e-5)


def test_lean_layer_norms_follow_the_plain_loss_curve(tmp_path):
    plain = _epochs(tmp_path / "plain", "train.lean_norms=false")
    lean = _epochs(tmp_path / "lean", "train.lean_norms=true")
    for p, q in zip(plain, lean, strict=True):
        assert q["train_loss"] == pytest.approx(p["train_loss"], rel=1e-5)
    metrics = json.loads(next((tmp_path / "lean").rglob("metrics.json")).read_text())
    assert metrics["timing"]["lean_norms"] is True


def _saved_bytes_and_grads(norm, x: torch.Tensor, weights: torch.Tensor) -> tuple[int, list[torch.Tensor]]:
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel() * t.element_size()) or t, lambda t: t):
        out = norm(x)
    (out * weights).sum().backward()
    return sum(kept), [t.grad for t in (x, norm.weight, norm.bias)]


@pytest.mark.parametrize("kept_dtype", [torch.float32, torch.bfloat16])
def test_lean_layer_norm_keeps_less_and_gives_the_same_forward_and_near_gradients(kept_dtype):
    torch.manual_seed(0)
    plain = torch.nn.LayerNorm(256)
    torch.nn.init.normal_(plain.weight, 1.0, 0.3), torch.nn.init.normal_(plain.bias, 0.0, 0.3)
    lean = torch.nn.LayerNorm(256)
    lean.load_state_dict(plain.state_dict())
    assert use_lean_layer_norms(torch.nn.Sequential(lean)) == 1 and list(lean.state_dict()) == ["weight", "bias"]
    x, weights = (torch.randn(64, 256) * 3 + 1).requires_grad_(), torch.randn(64, 256)
    plain_bytes, plain_grads = _saved_bytes_and_grads(plain, x, weights)
    x_lean = x.detach().clone().requires_grad_()
    if kept_dtype == torch.float32:  # the module's own path: no autocast on the CPU, nothing rounded
        lean_bytes, lean_grads = _saved_bytes_and_grads(lean, x_lean, weights)
        tolerance = 1e-5
    else:  # what CUDA autocast does: fp32 compute, the normalised input kept in bf16
        lean.forward = lambda t: lean_layer_norm(t, lean.weight, lean.bias, lean.eps, kept_dtype)[0]
        lean_bytes, lean_grads = _saved_bytes_and_grads(lean, x_lean, weights)
        tolerance = 1e-2
        assert lean_bytes < 0.6 * plain_bytes  # the [64, 256] fp32 input became bf16
    torch.testing.assert_close(lean(x_lean), plain(x))
    for a, b in zip(plain_grads, lean_grads, strict=True):
        assert (a - b).norm() <= tolerance * a.norm()
    torch.library.opcheck(lean_layer_norm, (x.detach().requires_grad_(), lean.weight, lean.bias, lean.eps, kept_dtype))


def test_packing_is_refused_where_it_cannot_work(tmp_path):
    result = run_cli(f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}", "method=pt", "train.packing=true")
    assert result.returncode == 2 and "train.packing=true needs" in result.stderr
