"""The benchmark on a tiny shape (CPU, fp32): its ptv2 contender is ptv2-train's path and trains like the
plain one, the official-mechanism contender's prefix reaches the attention, and the FLOP count by hand."""

from __future__ import annotations

import math
import re

import pytest
import torch

from benchmarks import contenders
from benchmarks.measure import measure
from benchmarks.workload import make_batches, useful_flops

TINY = {"arch": "bert", "layers": 2, "hidden": 32, "heads": 4, "ffn": 64, "vocab": 200}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend on a busy CPU (100x slower seen)
    yield
    torch.set_num_threads(threads)


def _batches(seed: int = 3) -> dict:
    return make_batches(seed, 4, 3, {"dist": (24, "dist"), "fixed": (24, "fixed")}, TINY["vocab"])


def _losses(name: str, setting: dict, *extra: str) -> list[float]:
    torch.manual_seed(0)
    contender = contenders.build_ptv2(TINY, 4, CPU, name, extra=("train.dropout=0", *extra))
    return measure(contender, setting["batches"], setting["max_length"], 0, TINY, CPU, None)["losses"]


def test_ptv2_contender_is_ptv2_trains_path_and_packing_trains_like_padding():
    data = _batches()
    packed = _losses("ptv2", data["dist"], "train.packing=true")  # CPU default is off: ask for it
    plain = _losses("ptv2_nopack", data["dist"])
    assert len(packed) == 3 and len(set(packed)) > 1  # the steps did train: the curve is not constant
    assert packed == pytest.approx(plain, rel=1e-5)
    torch.manual_seed(0)
    contender = contenders.build_ptv2(TINY, 4, CPU, "ptv2", extra=("train.packing=true",))
    batch = contender.prepare(data["dist"]["batches"][0], 24)
    assert batch["pack_input_ids"].shape[0] < batch["input_ids"].shape[0]  # several sequences per row
    assert contender.packing and not contender.compiled  # compile stays off on a CPU under auto


def test_random_batches_mix_lengths():
    lengths = [[len(f["input_ids"]) for f in b] for b in _batches()["dist"]["batches"]]
    assert all(4 <= n <= 24 for b in lengths for n in b) and any(len(set(b)) > 1 for b in lengths)


def test_pad_to_keeps_real_tokens_and_marks_padding():
    from ptv2.data import collate

    batch = collate([{"input_ids": [7, 8], "attention_mask": [1, 1], "labels": 0}], pad_token_id=1)
    padded = contenders.pad_to(batch, 4, pad_id=1)
    assert padded["input_ids"].tolist() == [[7, 8, 1, 1]]
    assert padded["attention_mask"].tolist() == [[1, 1, 0, 0]]


def test_official_mechanism_trains_its_cache_prefix():
    torch.manual_seed(0)
    contender = contenders.build_official(TINY, 4, CPU, bf16=False)
    batches = _batches()["dist"]["batches"][:2]
    prepared = [contender.prepare(b, 24) for b in batches]
    assert prepared[1]["input_ids"].shape == (4, 24)  # padded to max length, as the official scripts did
    assert all(math.isfinite(float(contender.step(b))) for b in prepared)
    from transformers import AutoModel

    model = contenders.CachePrefixModel(AutoModel.from_config(contenders.backbone_config(TINY, 0.0)), 4).eval()
    out = model(prepared[0])
    with torch.no_grad():
        model.prefix.weight.mul_(3)
    assert not torch.allclose(out, model(prepared[0]))  # the prefix goes through the cache


def test_flop_count_by_hand():
    shape = {"layers": 1, "hidden": 2, "ffn": 4}
    # N = 1 * (4*4 + 2*2*4) = 32; frozen: 4*N*tokens = 4*32*3; attention: 12 * 2 * 1 * 3 * (3 + 1)
    assert useful_flops(shape, [3], prefix=1, full_ft=False) == 4 * 32 * 3 + 12 * 2 * 3 * 4
    assert useful_flops(shape, [3], prefix=0, full_ft=True) == 6 * 32 * 3 + 12 * 2 * 3 * 3


def test_loader_speed_runs_and_prints_its_figures(capsys):
    from benchmarks import loader_speed

    loader_speed.main(["--examples", "96", "--workers", "0", "--epochs", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "collation" in lines[0] and "0 workers, epoch 2" in lines[2]
    assert all(float(re.search(r"([\d.]+) ms/batch", line).group(1)) > 0 for line in lines)
    loader_speed.main(["--tensor-counts", "2"])
    assert capsys.readouterr().out.startswith("2 tensors per batch: ")


def test_saved_activations_counts_what_each_step_keeps(capsys):
    from benchmarks import saved_activations

    saved_activations.main(["--quick"])
    totals = dict(re.findall(r"^(\w+), len16, batch 2: ([\d.]+) KB saved", capsys.readouterr().out, re.M))
    # Full fine-tuning also keeps every frozen projection's input (for its weight gradient)
    assert set(totals) == {"ptv2_eager", "ft_eager"} and 0 < float(totals["ptv2_eager"]) < float(totals["ft_eager"])
