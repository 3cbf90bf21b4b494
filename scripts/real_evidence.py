"""Run a part of the real-evidence grid (conf/experiment/real_minilm.yaml) on one GPU, several runs at a time.

    python scripts/real_evidence.py conll|sentence|qa|fidelity [--parallel 6] [--deadline-s 540] [--dry-run]
                                    [--extra key=value ...]

Jobs are single ``ptv2-train`` runs, longest first within each seed (a part cut by its deadline still
leaves every configuration's first seed), ``--parallel`` at a time: MiniLM steps are launch-bound, so runs
side by side share one GPU well. Finished runs are skipped (ptv2-train's own skip), so a part can be rerun.
A run still going at the deadline is stopped (its checkpoint is lost with the machine). The ``fidelity``
part measures the named deviations from the official code (README, decisions) on CoNLL-2003 and SST-2 in
results/fidelity. Prints the GPU minutes the part took.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
PARTS = {"conll": ["conll03"], "sentence": ["sst2", "wic", "rte", "cb", "copa", "wsc"], "qa": ["quoref"]}
# The deviations from the official code measured on real data (README, decisions), in results/fidelity:
# (name, task, overrides) against the reference, PT-2 P=16 with the first learning rate, seed 11, on a
# budget that fits one GPU call (CoNLL-2003 10 epochs, SST-2 3 epochs on 20k sentences).
CONLL, SST2 = ["real_minilm.budget.conll03.epochs.pt2=10"], ["data.max_train_samples=20000", "real_minilm.budget.sst2.epochs.pt2=3"]
FIDELITY = [
    ("reference", "conll03", CONLL),
    ("shift_positions", "conll03", [*CONLL, "prompt.shift_positions=true"]),
    ("no_packing", "conll03", [*CONLL, "train.packing=false"]),
    ("fp32", "conll03", [*CONLL, "train.precision=fp32"]),
    ("pooler", "sst2", SST2),
    ("raw_cls", "sst2", [*SST2, "head_pool=cls"]),
]


def grid_jobs(tasks: list[str]) -> list[list[str]]:
    """Every (task, method, P, lr, seed) of the experiment's grid, first seeds first, longest runs first."""
    spec = OmegaConf.load(ROOT / "conf" / "experiment" / "real_minilm.yaml").real_minilm
    jobs = []
    for task in tasks:
        for method, grid in spec.grid[task].items():
            epochs = spec.budget[task].epochs[method]
            for length in grid.P:
                for seed in grid.seeds:
                    for lr in ("lo", "hi"):
                        overrides = [f"task={task}", f"method={method}", f"prompt_length={length}", f"lr_choice={lr}",
                                     f"seed={seed}"]
                        jobs.append((seed, -epochs * (length + 64), overrides))
    return [overrides for *_, overrides in sorted(jobs, key=lambda j: (j[0], j[1]))]


def fidelity_jobs() -> list[list[str]]:
    base = ["method=pt2", "prompt_length=16", "lr_choice=lo", "seed=11", "results.experiment=fidelity"]
    return [[f"task={task}", *base, *overrides] for _, task, overrides in FIDELITY]


def run_jobs(jobs: list[list[str]], common: list[str], parallel: int, deadline: float, logs: Path) -> dict:
    """Up to ``parallel`` runs at once until every job ran or the deadline passed; exit status per job."""
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, done = list(enumerate(jobs)), {}, {}
    while pending or running:
        while pending and len(running) < parallel and time.time() < deadline - 20:
            index, overrides = pending.pop(0)
            log = (logs / f"job{index:03d}.log").open("w")
            command = [sys.executable, "-m", "ptv2.cli", *common, *overrides]
            running[index] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), overrides)
        for index, (proc, overrides) in list(running.items()):
            if proc.poll() is not None:
                done[index] = (proc.returncode, overrides)
                del running[index]
        if time.time() > deadline:
            for proc, _ in running.values():
                proc.terminate()  # SIGTERM: the run checkpoints and exits 143
            for index, (proc, overrides) in running.items():
                done[index] = (proc.wait(), overrides)
            running.clear()
            break
        time.sleep(2)
    return {"done": done, "not_started": [o for _, o in pending]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=[*PARTS, "fidelity"])
    p.add_argument("--parallel", type=int, default=6)
    p.add_argument("--deadline-s", type=float, default=540)
    p.add_argument("--model-path", default=".carry/minilm")
    p.add_argument("--data-root", default="/tmp/real_data/data")
    p.add_argument("--extra", nargs="*", default=[], help="overrides for every run (smoke test: train.epochs=1)")
    p.add_argument("--dry-run", action="store_true", help="print the jobs, run nothing")
    args = p.parse_args(argv)
    started = time.time()
    jobs = fidelity_jobs() if args.part == "fidelity" else grid_jobs(PARTS[args.part])
    common = ["+experiment=real_minilm", f"model.path={args.model_path}", f"data.root={args.data_root}", *args.extra]
    if args.dry_run:
        print("\n".join(" ".join(j) for j in jobs) + f"\n{len(jobs)} jobs")
        return 0
    result = run_jobs(jobs, common, args.parallel, started + args.deadline_s, ROOT / "results" / "real_logs" / args.part)
    failed = [(code, o) for code, o in result["done"].values() if code != 0]
    minutes = (time.time() - started) / 60
    print(f"part {args.part}: {len(result['done'])} jobs ran ({len(failed)} not 0: {failed}), "
          f"{len(result['not_started'])} not started; {minutes:.1f} GPU minutes (one GPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
