"""Figure 3 (prompt depth), Figure 4 (prompt length x reparameterisation) and per-run training curves.

Each point is the report split's primary metric, averaged over seeds (error bars: sample std) of the
best config at that point, as in the tables.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the training machines
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ptv2.report.tables import CELL_KEYS, DATA_KEY, aggregate_cells, data_variants, load_runs, parse_depth  # noqa: E402


def _cells(runs: pd.DataFrame) -> Iterator[tuple[tuple, str, pd.DataFrame]]:
    """Per figure: (task, model, method, head), a file-name suffix and the runs of one data variant (runs on
    different data, weights or sample limits never share a curve; `_data2` names a cell's second variant)."""
    for key, cell in runs.groupby(CELL_KEYS, sort=True):
        for number, signature in enumerate(data_variants(cell), 1):
            yield key, f"_data{number}" if number > 1 else "", cell[cell[DATA_KEY] == signature]


def _report_points(runs: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    """Seed-aggregated points per (cell, *extra), keeping only the report split's primary metric."""
    pts = aggregate_cells(runs, CELL_KEYS + extra)
    return pts[(pts["split"] == pts["report_split"]) & (pts["metric"] == pts["primary_metric"])]


def _errorbar(ax: plt.Axes, pts: pd.DataFrame, x: str, label: str) -> None:
    pts = pts.sort_values(x)
    ax.errorbar(pts[x], pts["ours_mean"], yerr=pts["ours_std"].fillna(0.0), marker="o", capsize=3, label=label)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def depth_figures(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Fig. 3: metric vs k layers with prompts, ascending (layers 1..k) vs descending (L-k+1..L)."""
    deep = runs[runs["depth_range"].map(parse_depth).notna()]
    written = []
    for (task, model, method, head), variant, g in _cells(deep):
        if not g["partial_depth"].any():
            continue
        pts = _report_points(g, ["depth_range", "num_layers"])
        if pts.empty:
            continue
        span = pts["depth_range"].map(parse_depth)
        pts = pts.assign(k=[hi - lo + 1 for lo, hi in span], lo=[lo for lo, _ in span], hi=[hi for _, hi in span])
        fig, ax = plt.subplots(figsize=(5, 3.5))
        # the full-depth run (1..L) is both orders' k = L point
        _errorbar(ax, pts[pts["lo"] == 1], "k", "ascending (layers 1..k)")
        _errorbar(ax, pts[pts["hi"] == pts["num_layers"]], "k", "descending (layers L-k+1..L)")
        ax.set(xlabel="k = number of layers with prompts", ylabel=f"{pts['primary_metric'].iloc[0]} "
               f"({pts['report_split'].iloc[0]})", title=f"Prompt depth: {task}, {model} ({method}, {head})")
        ax.legend()
        written.append(_save(fig, out / f"fig3_depth_{task}_{model}_{method}_{head}{variant}.png"))
    return written


def length_figures(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Fig. 4: metric vs prompt length, one line per reparameterisation (embedding, mlp)."""
    prompted = runs[runs["prompt_length"].notna() & ~runs["partial_depth"].astype(bool)]
    written = []
    for (task, model, method, head), variant, g in _cells(prompted):
        if g["prompt_length"].nunique() < 2:
            continue
        pts = _report_points(g, ["prompt_length", "reparam"])
        if pts.empty:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for reparam, line in pts.groupby("reparam", sort=True):
            _errorbar(ax, line, "prompt_length", str(reparam))
        ax.set(xlabel="prompt length", ylabel=f"{pts['primary_metric'].iloc[0]} ({pts['report_split'].iloc[0]})",
               title=f"Prompt length: {task}, {model} ({method}, {head})")
        ax.legend(title="reparam")
        written.append(_save(fig, out / f"fig4_length_{task}_{model}_{method}_{head}{variant}.png"))
    return written


def plot_curves(run_dir: str | Path) -> Path:
    """`curves.png` next to a run's `curves.csv`: train loss, and every `<split>/<metric>` per epoch."""
    run_dir = Path(run_dir)
    curves = pd.read_csv(run_dir / "curves.csv")
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_ax.plot(curves["epoch"], curves["train_loss"], marker=".")
    loss_ax.set(xlabel="epoch", ylabel="train loss")
    for col in (c for c in curves.columns if "/" in c):
        metric_ax.plot(curves["epoch"], curves[col], marker=".", label=col)
    metric_ax.set(xlabel="epoch", ylabel="metric (%)")
    if metric_ax.lines:
        metric_ax.legend()
    return _save(fig, run_dir / "curves.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write Figure 3 (prompt depth) and Figure 4 (prompt length) PNGs.")
    parser.add_argument("--results", default="results", help="directory searched for metrics.json files")
    parser.add_argument("--out", default="results/figures", help="output directory")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(args.results)
    depth, length = (depth_figures(runs, out), length_figures(runs, out)) if len(runs) else ([], [])
    if not depth:
        print("Figure 3: no prompt-depth runs (pt2 with depth_range a proper subset of the layers, e.g. 1-k "
              "and L-k+1..L for several k); run the prompt-depth sweep.")
    if not length:
        print("Figure 4: no prompt-length runs (one task/model/method with >= 2 prompt_length values, "
              "reparam embedding and mlp); run the prompt-length x reparam sweep.")
    for path in depth + length:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
