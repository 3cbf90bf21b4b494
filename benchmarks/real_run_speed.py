"""A real ptv2-train run's speed: MiniLM on real CoNLL-2003 alone on one GPU, this checkout's defaults vs the
same run without packing and compilation vs the compared commits' code (.carry/<name>), in one call.

    python -m benchmarks.real_run_speed --data-root DIR [--epochs 2] [--out speed.json]

Each variant is the default run (PT-2, P=16, lr 1e-2, batch 32, 30 epochs: what auto-compilation sees),
stopped (SIGTERM) once ``--epochs`` epochs are done: the steady-state tokens/s comes from the epochs after
the first (the first one carries compilation, reported apart as first_step_s and first_eval_s), and the dev F1
per epoch shows whether the paths agree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ["task=conll03", "model=minilm", "method=pt2", "prompt_length=16", "train.lr=1e-2", "train.batch_size=32",
       "train.epochs=30", "seed=11", "train.progress=false"]
VARIANTS = {  # this checkout's; any other name runs the code tree .carry/<name> (e.g. a git archive); a
    # variant may add overrides after "+" signs
    "default": [],
    "plain": ["train.packing=false", "train.compile=false"],
}


def run_variant(name: str, data_root: str, model_path: str, epochs: int, results: Path) -> dict:
    base, *overrides = name.split("+")  # e.g. default+train.num_workers=4
    code_dir, extra = (ROOT, VARIANTS[base]) if base in VARIANTS else (ROOT / ".carry" / base, [])
    extra = [*extra, *overrides]
    root = results / name.replace("+", "_").replace("=", "-")  # a folder name Hydra reads back as one value
    shutil.rmtree(root, ignore_errors=True)  # a run left from an earlier call would be resumed, not measured
    command = [sys.executable, "-m", "ptv2.cli", *RUN, f"model.path={model_path}", f"data.root={data_root}",
               f"results.root={root}", *extra]
    env = os.environ | {"PYTHONPATH": f"{code_dir}:{os.environ.get('PYTHONPATH', '')}"}
    started = time.time()
    proc = subprocess.Popen(command, cwd=code_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics: dict = {}
    while proc.poll() is None:
        time.sleep(1)
        found = list(root.glob("runs/*/*/*/*/metrics.json"))
        metrics = json.loads(found[0].read_text()) if found else {}
        if len(metrics.get("epochs", [])) >= epochs:
            proc.send_signal(signal.SIGTERM)  # checkpoint and exit: enough epochs to measure
            break
    output, _ = proc.communicate(timeout=120)
    return summarize(name, metrics, time.time() - started, output)


def summarize(name: str, metrics: dict, wall: float, output: str) -> dict:
    epochs, timing = metrics.get("epochs", []), metrics.get("timing", {})
    if len(epochs) < 2:
        return {"variant": name, "status": "failed", "tail": output[-1500:]}
    tokens_per_epoch = timing["train_tokens_per_s"] * timing["train_s"] / len(epochs)
    steady_s = sum(e["train_s"] for e in epochs[1:])
    compiler = [line for line in output.splitlines() if "cudagraph" in line.lower() or "recompil" in line.lower()]
    return {
        "variant": name, "status": "ok", "epochs": len(epochs), "wall_s": wall,
        "steady_tokens_per_s": tokens_per_epoch * (len(epochs) - 1) / steady_s,
        "epoch_train_s": [e["train_s"] for e in epochs], "epoch_eval_s": [e.get("eval_s") for e in epochs],
        "compiler_messages": compiler[:8],
        "first_step_s": timing.get("first_step_s"), "first_eval_s": timing.get("first_eval_s"),
        "packing": timing.get("packing"), "compiled": timing.get("compiled"), "lean_norms": timing.get("lean_norms"),
        "peak_memory_mb": timing.get("peak_memory_mb"),
        "dev_f1_per_epoch": [e["metrics"]["dev"]["f1"] for e in epochs], "device": timing.get("device"),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--model-path", default=str(ROOT / ".carry" / "minilm"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--variants", default="baseline,default,plain")
    p.add_argument("--out", type=Path, default=Path("results/bench/real_run_speed.json"))
    args = p.parse_args(argv)
    results = ROOT / "results" / "real_run_speed"
    rows = []
    for name in args.variants.split(","):
        rows.append(run_variant(name, args.data_root, args.model_path, args.epochs, results))
        print(json.dumps(rows[-1]), flush=True)
    ok = {r["variant"]: r for r in rows if r["status"] == "ok"}
    for name in ok.keys() - VARIANTS.keys() if "default" in ok else ():
        print(f"default vs {name}: {ok['default']['steady_tokens_per_s'] / ok[name]['steady_tokens_per_s']:.2f}x tokens/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
