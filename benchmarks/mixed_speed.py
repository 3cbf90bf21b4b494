"""Many prompts on one frozen backbone: mixed batches vs the runs one after another (docs/performance.md).

    python -m benchmarks.mixed_speed --out results/bench          # GPU: roberta-large shape, 8 runs x 500
    python -m benchmarks.mixed_speed --quick --out /tmp/mixed     # CPU smoke run

Eight SuperGLUE runs (random weights of the chosen shape, prompt lengths 4 to 128, one seed: one backbone)
are written as run folders; each predicts the same number of dev examples. One process loads the backbone
once (its load time is reported apart), then predicts every run's split twice at the same batch size:
with the runs' examples mixed in each batch, and run after run. Reported: examples/s, peak memory, and
whether both give every run the same predictions.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks.contenders import ptv2_config
from benchmarks.workload import QUICK_SIZES, SHAPES, synchronize

RUNS = [("rte", 4), ("cb", 8), ("boolq", 16), ("wic", 24), ("wsc", 32), ("copa", 64), ("rte", 96), ("cb", 128)]
WORDS = ["the", "a", "of", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "his", "her", "it", "an", "be", "this", "are", "which", "or", "one", "had"]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_data(root: Path, tasks: set[str], examples: int, seed: int = 0) -> None:
    """SuperGLUE-shaped dev files of ``examples`` rows (plain words, lengths like the real sets)."""
    rng = random.Random(seed)
    rows = {
        "rte": lambda i: {"idx": i, "premise": _text(rng, rng.randint(20, 80)), "hypothesis": _text(rng, 8), "label": "entailment"},
        "cb": lambda i: {"idx": i, "premise": _text(rng, rng.randint(20, 60)), "hypothesis": _text(rng, 8), "label": "neutral"},
        "boolq": lambda i: {"idx": i, "question": _text(rng, 8), "passage": _text(rng, rng.randint(60, 110)), "label": True},
        "wic": lambda i: {"idx": i, "word": "bank", "sentence1": _text(rng, 12), "sentence2": _text(rng, 12),
                          "start1": 0, "end1": 1, "start2": 0, "end2": 1, "label": False},
        "wsc": lambda i: {"idx": i, "text": _text(rng, 25), "target": {"span1_text": "the", "span1_index": 0,
                                                                       "span2_text": "it", "span2_index": 3}, "label": True},
        "copa": lambda i: {"idx": i, "premise": _text(rng, 10), "choice1": _text(rng, 6), "choice2": _text(rng, 6),
                           "question": "cause", "label": 0},
    }
    folders = {"rte": "RTE", "cb": "CB", "boolq": "BoolQ", "wic": "WiC", "wsc": "WSC", "copa": "COPA"}
    for task in tasks:
        folder = root / "superglue" / folders[task]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "val.jsonl").write_text("".join(json.dumps(rows[task](i)) + "\n" for i in range(examples)))


def write_runs(root: Path, shape: dict, data_root: Path) -> list[Path]:
    """One run folder per (task, P): config.yaml and a random prompt_head.safetensors (no training)."""
    from safetensors.torch import save_file

    from ptv2.backbone import load_backbone
    from ptv2.build import seed_everything
    from ptv2.model import build_model
    from ptv2.tasks.base import build_task

    paths, backbone = [], None
    for i, (task, length) in enumerate(RUNS):
        cfg = ptv2_config(shape, length, (f"task={task}", f"data.root={data_root}", "prompt.init_std=1.0"))
        seed_everything(cfg.seed + i)  # each run its own random prompt and head
        backbone = backbone or load_backbone(cfg.model, cfg.train.attention, 0.0)  # one seed: one backbone
        model = build_model(cfg, backbone, build_task(cfg.task, data_root, backbone.tokenizer).num_labels, cfg.task.head)
        path = root / f"{i}-{task}-p{length}"
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        save_file(model.prompt_head_state(), str(path / "prompt_head.safetensors"))
        paths.append(path)
    return paths


def timed(predictor, mixed: bool, batch_size: int, device: torch.device) -> tuple[dict, dict]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    predictor.predict("dev", batch_size, mixed)  # warm-up: kernels, allocator
    synchronize(device)
    started = time.perf_counter()
    outputs = predictor.predict("dev", batch_size, mixed)
    synchronize(device)
    seconds = time.perf_counter() - started
    examples = sum(len(run.data.records) for run in predictor.runs)
    memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"examples_per_s": examples / seconds, "seconds": seconds, "peak_memory_mb": memory}, outputs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results/bench"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--shape", default="roberta-large", choices=sorted(SHAPES))
    p.add_argument("--examples", type=int, default=None, help="dev examples per run (default 500, quick 12)")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    from ptv2.mixed import MixedPromptPredictor

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = SHAPES[args.shape] | (QUICK_SIZES if args.quick else {})
    work = args.out / "mixed"
    write_data(work / "data", {t for t, _ in RUNS}, args.examples or (12 if args.quick else 500))
    with torch.device(device):  # initialise on the GPU: a CPU init of roberta-large takes tens of seconds
        runs = write_runs(work / "runs", shape, work / "data")
        started = time.perf_counter()
        predictor = MixedPromptPredictor(runs, str(work / "data"))
        predictor.load("dev")
    load_s = time.perf_counter() - started
    mixed, mixed_out = timed(predictor, True, args.batch_size, device)
    sequential, sequential_out = timed(predictor, False, args.batch_size, device)
    same = all(torch.equal(a.argmax(-1), b.argmax(-1)) for r in runs for a, b in zip(mixed_out[r], sequential_out[r], strict=True))
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "shape": args.shape,
              "runs": [f"{t} P={n}" for t, n in RUNS], "examples_per_run": args.examples or (12 if args.quick else 500),
              "batch_size": args.batch_size, "load_s": load_s, "mixed": mixed, "sequential": sequential,
              "speedup": mixed["examples_per_s"] / sequential["examples_per_s"], "same_predictions": same}
    (args.out / "mixed.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
