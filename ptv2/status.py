"""`ptv2-status`: which runs under results/ are done, failed, or incomplete (interrupted or still running).

A run directory is any folder holding metrics.json or checkpoint/. Incomplete = not done/failed: it has a
checkpoint (re-run the same command to resume) or its metrics.json says running (killed without one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ptv2 import checkpoint
from ptv2.results import read_metrics

STATES = ("done", "failed", "incomplete")


def scan(root: Path, experiment: str | None = None) -> list[dict]:
    """One row per run directory under root (results/<experiment|runs>/<task>/<model>/<method>/<key>)."""
    rows = []
    for directory in sorted(
        {p.parent for p in root.glob("*/*/*/*/*/metrics.json")}
        | {p.parent.parent for p in root.glob("*/*/*/*/*/checkpoint/last.pt")}
    ):
        group, task, model, method, key = directory.relative_to(root).parts
        if group.startswith(".") or (experiment and group != experiment):
            continue
        metrics = read_metrics(directory) or {}
        status = metrics.get("status")
        state = status if status in ("done", "failed") else "incomplete"
        if state == "incomplete":
            done = len(metrics.get("epochs", []))
            detail = f"{'checkpoint, ' if checkpoint.path(directory).is_file() else ''}{done} epoch(s) done"
        elif state == "failed":
            detail = metrics.get("error") or ""
        else:
            best = metrics.get("best") or {}
            score = (best.get(metrics.get("report_split")) or {}).get(metrics.get("primary_metric"))
            detail = (
                f"{metrics.get('primary_metric')} {score:.2f} @ epoch {metrics.get('best_epoch')}"
                if score is not None
                else ""
            )
        rows.append({"state": state, "run": f"{group}/{task}/{model}/{method}/{key}", "detail": detail})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptv2-status", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", type=Path, help="results root (default: results)")
    parser.add_argument("--experiment", help="only results/<EXPERIMENT>/ (runs without one live in runs/)")
    args = parser.parse_args(argv)
    rows = scan(args.results, args.experiment)
    width = max((len(r["run"]) for r in rows), default=0)
    for row in sorted(rows, key=lambda r: (STATES.index(r["state"]), r["run"])):
        print(f"{row['state']:<10}  {row['run']:<{width}}  {row['detail']}")
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    print(", ".join(f"{n} {s}" for s, n in counts.items()) + f" ({len(rows)} runs in {args.results})")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
