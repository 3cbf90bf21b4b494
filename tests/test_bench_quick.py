"""The benchmark's contenders on a tiny shape (CPU, fp32): the optimised ptv2 path trains exactly like
the plain one, and the official-mechanism contender's prefix really reaches the attention."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_train.py"
TINY = {"arch": "bert", "layers": 2, "hidden": 32, "heads": 4, "ffn": 64, "vocab": 200}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_train"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend on a busy CPU (100x slower seen)
    yield module
    torch.set_num_threads(threads)


def _batches(bench, seed=3):
    # one batch of equal lengths (no padding -> mask=None on the optimised path) and padded ones
    data = bench.make_batches(seed, 4, 3, {"dist": (24, "dist"), "fixed": (24, "fixed")}, TINY["vocab"])
    return data["fixed"]["batches"][:1] + data["dist"]["batches"]


def _losses(bench, batches, **kwargs) -> list[float]:
    torch.manual_seed(0)
    runner, _ = bench.build_ptv2(TINY, 4, torch.device("cpu"), dropout=0.0, bf16=False, **kwargs)
    return [float(runner.step(runner.prepare(b, 24))) for b in batches]


def test_dynamic_padding_and_fused_adamw_match_the_plain_path(bench):
    batches = _batches(bench)
    lengths = [bench.real_lengths(b) for b in batches]
    assert len(set(lengths[0])) == 1 and any(len(set(n)) > 1 for n in lengths[1:])  # both kinds of batch
    optimised = _losses(bench, batches, padmax=False, fused=True)  # dynamic padding, mask=None when unpadded
    plain = _losses(bench, batches, padmax=True, fused=False)  # padded to 24 with a mask, for-loop AdamW
    assert len(optimised) == 4
    assert optimised == pytest.approx(plain, abs=1e-5)
    assert len(set(optimised)) > 1  # the steps did train (lr 1e-2), the curve is not constant


def test_pad_to_keeps_real_tokens_and_marks_padding(bench):
    from ptv2.data import collate

    batch = collate([{"input_ids": [7, 8], "attention_mask": [1, 1], "labels": 0}], pad_token_id=1)
    assert batch["padded"] is False
    padded = bench.pad_to(batch, 4, pad_id=1)
    assert padded["input_ids"].tolist() == [[7, 8, 1, 1]]
    assert padded["attention_mask"].tolist() == [[1, 1, 0, 0]]
    assert padded["padded"] is True


def test_official_mechanism_trains_its_cache_prefix(bench):
    torch.manual_seed(0)
    runner = bench.build_official(TINY, 4, torch.device("cpu"), bf16=False, dropout=0.0)
    batches = _batches(bench)[:2]
    prepared = [runner.prepare(b, 24) for b in batches]
    assert prepared[1]["input_ids"].shape == (4, 24)  # padded to max length, as the official scripts did
    losses = [float(runner.step(b)) for b in prepared]
    assert all(math.isfinite(x) for x in losses)
    # the prefix goes through the cache: changing it changes the output
    encoder = bench.CachePrefixModel(
        bench._random_encoder(bench.backbone_config(TINY, 0.0), "sdpa", torch.device("cpu")), 4
    )
    encoder.eval()
    out = encoder(prepared[0])
    with torch.no_grad():
        encoder.prefix.weight.mul_(3)
    assert not torch.allclose(out, encoder(prepared[0]))


def test_flop_count_by_hand(bench):
    shape = {"layers": 1, "hidden": 2, "ffn": 4}
    # N = 1 * (4*4 + 2*2*4) = 32; frozen: 4*N*tokens = 4*32*3; attention: 12 * 2 * 1 * 3 * (3 + 1)
    assert bench.useful_flops(shape, [3], prefix=1, full_ft=False) == 4 * 32 * 3 + 12 * 2 * 3 * 4
    assert bench.useful_flops(shape, [3], prefix=0, full_ft=True) == 6 * 32 * 3 + 12 * 2 * 3 * 3
