"""`ptv2-status`: which runs under results/ are done, failed, running or incomplete (interrupted).

A run directory is any folder holding metrics.json, checkpoint/ or a lock. Running = a live process holds
its lock (ptv2/lock.py). Incomplete = not done/failed and nobody training it: it has a checkpoint (re-run the
same command to resume) or its metrics.json says running (killed without one). `old-key` = done, but made
under an older run key (metrics.json's schema_version is older than this version's): the same command now
names another folder and trains it again. `unreadable` = its metrics.json is not a JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ptv2 import checkpoint
from ptv2.errors import ArgumentParser
from ptv2.lock import LOCK_FILE, describe, holder_of
from ptv2.results import SCHEMA_VERSION, read_metrics

STATES = ("done", "old-key", "failed", "running", "incomplete", "unreadable")


def _run_dirs(root: Path) -> set[Path]:
    return (
        {p.parent for p in root.glob("*/*/*/*/*/metrics.json")}
        | {p.parent for p in root.glob(f"*/*/*/*/*/{LOCK_FILE}")}
        | {p.parent.parent for p in root.glob("*/*/*/*/*/checkpoint/last.pt")}
    )


def _done_detail(metrics: dict) -> str:
    best = metrics.get("best") if isinstance(metrics.get("best"), dict) else {}
    split = best.get(metrics.get("report_split"))
    score = split.get(metrics.get("primary_metric")) if isinstance(split, dict) else None
    if not isinstance(score, int | float):
        return ""
    return f"{metrics.get('primary_metric')} {score:.2f} @ epoch {metrics.get('best_epoch')}"


def _state(directory: Path) -> tuple[str, str]:
    metrics = read_metrics(directory)
    if metrics is None and (directory / "metrics.json").exists():
        return "unreadable", "metrics.json is not a JSON object (a corrupt or foreign file)"
    metrics = metrics or {}
    status = metrics.get("status")
    if status == "done":
        version = metrics.get("schema_version")
        if not isinstance(version, int) or version < SCHEMA_VERSION:
            return "old-key", (f"schema_version {version} < {SCHEMA_VERSION}: made under an older run key, not "
                               "found by the same command now (it trains again)")
        return "done", _done_detail(metrics)
    if status == "failed":
        return "failed", str(metrics.get("error") or "")
    if holder := holder_of(directory):
        return "running", describe(holder)
    epochs = metrics.get("epochs") if isinstance(metrics.get("epochs"), list) else []
    return "incomplete", f"{'checkpoint, ' if checkpoint.path(directory).is_file() else ''}{len(epochs)} epoch(s) done"


def scan(root: Path, experiment: str | None = None) -> list[dict]:
    """One row per run directory under root (results/<experiment|runs>/<task>/<model>/<method>/<key>)."""
    rows = []
    for directory in sorted(_run_dirs(root)):
        group, task, model, method, key = directory.relative_to(root).parts
        if group.startswith(".") or (experiment and group != experiment):
            continue
        state, detail = _state(directory)
        rows.append({"state": state, "run": f"{group}/{task}/{model}/{method}/{key}", "detail": detail})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="ptv2-status", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", type=Path, help="results root (default: results)")
    parser.add_argument("--experiment", help="only results/<EXPERIMENT>/ (runs without one live in runs/)")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"ptv2-status: error: --results {args.results} is not a folder (ptv2-train writes results/)", file=sys.stderr)
        return 2
    rows = scan(args.results, args.experiment)
    width = max((len(r["run"]) for r in rows), default=0)
    for row in sorted(rows, key=lambda r: (STATES.index(r["state"]), r["run"])):
        print(f"{row['state']:<10}  {row['run']:<{width}}  {row['detail']}")
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    shown = [f"{n} {s}" for s, n in counts.items() if n or s in ("done", "failed", "incomplete")]
    print(", ".join(shown) + f" ({len(rows)} runs in {args.results})")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
