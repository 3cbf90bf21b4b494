"""Tables 2-4 of the paper (ours next to the paper's numbers) and the real-evidence MiniLM table.

Reads only `results/**/metrics.json` (docs/metrics.md). A cell is one (task, backbone, method, head):
runs that differ only in `seed` form a group (mean, sample std, n); where several configs exist, the
one with the best mean dev primary metric is shown, as the paper picks hyper-parameters per task.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ptv2.errors import ArgumentParser
from ptv2.results import SCHEMA_VERSION

PAPER_CSV = Path(__file__).with_name("paper_numbers.csv")
DASH = "—"
# Paper backbones in the paper's (size) order; our other backbones follow alphabetically.
PAPER_BACKBONES = ["bert-large", "roberta-large", "deberta-xlarge", "glm-xlarge", "glm-xxlarge"]
METHOD_LABELS = {"ft": "FT", "pt": "PT", "pt2": "PT-2", "mpt2": "MPT-2"}
CELL_KEYS = ["task", "model", "method", "head"]
DATA_KEY = "data"  # a run's data identity (ptv2/identity.py by way of metrics.json): cells never mix two
TIDY_COLUMNS = ["table", "backbone", "variant", "task", "split", "metric", "method", "head",
                "ours_mean", "ours_std", "n", "paper", "diff"]


@dataclass(frozen=True)
class Column:
    """One table column: which runs' (split, metric) it shows, and where it sits."""

    block: str  # a sub-table, like the paper's halves (LaTeX: one tabular each)
    group: str  # column group heading; bold marks the best of ours inside a group and row
    label: str
    task: str
    split: str
    metric: str
    method: str
    head: str = "cls"

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return self.task, self.split, self.metric, self.method, self.head


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    columns: list[Column]
    footnotes: list[str]


def _method_columns(block: str, group: str, task: str, split: str, metric: str,
                    methods: tuple[str, ...]) -> list[Column]:
    return [Column(block, group, METHOD_LABELS[m], task, split, metric, m) for m in methods]


_FLATTER = ("the best epoch is chosen on dev, so a number reported on that same dev split is flattered "
            "by the choice, as it is in the paper")
_SUPERGLUE = [("BoolQ", "boolq", "accuracy"), ("CB", "cb", "accuracy"), ("COPA", "copa", "accuracy"),
              ("MultiRC (F1a)", "multirc", "f1a"), ("ReCoRD (F1)", "record", "f1"), ("RTE", "rte", "accuracy"),
              ("WiC", "wic", "accuracy"), ("WSC", "wsc", "accuracy")]
_T3 = ("ft", "pt", "pt2", "mpt2")

TABLE2 = TableSpec(
    "table2", "Table 2: SuperGLUE dev",
    [c for i, (g, t, m) in enumerate(_SUPERGLUE)
     for c in _method_columns(f"SuperGLUE ({i // 4 + 1}/2)", g, t, "dev", m, ("ft", "pt", "pt2"))],
    [f"SuperGLUE: dev split at the best dev epoch; {_FLATTER}."],
)
TABLE3 = TableSpec(
    "table3", "Table 3: NER, extractive QA and SRL",
    [*_method_columns("NER", "CoNLL03", "conll03", "test", "f1", _T3),
     *_method_columns("NER", "OntoNotes 5.0", "ontonotes", "test", "f1", _T3),
     *_method_columns("NER", "CoNLL04", "conll04", "test", "f1", _T3),
     *_method_columns("QA", "SQuAD 1.1 EM", "squad", "dev", "exact_match", _T3),
     *_method_columns("QA", "SQuAD 1.1 F1", "squad", "dev", "f1", _T3),
     *_method_columns("QA", "SQuAD 2.0 EM", "squad_v2", "dev", "exact_match", _T3),
     *_method_columns("QA", "SQuAD 2.0 F1", "squad_v2", "dev", "f1", _T3),
     *_method_columns("SRL", "CoNLL05 WSJ", "conll05", "test_wsj", "f1", _T3),
     *_method_columns("SRL", "CoNLL05 Brown", "conll05", "test_brown", "f1", _T3),
     *_method_columns("SRL", "CoNLL12", "conll12", "test", "f1", _T3)],
    ["NER and SRL: micro-F1 on test at the best dev epoch.",
     f"QA: dev split at the best dev epoch; {_FLATTER}.",
     "SQuAD 2.0 cells use the null-answer threshold 0 (`exact_match`, `f1`); the dev-tuned threshold "
     "numbers (`best_exact_match`, `best_f1`) are listed below."],
)
TABLE4 = TableSpec(
    "table4", "Table 4: [CLS] label with linear head vs verbalizer with LM head (PT-2)",
    [Column("Heads", g, lab, t, "dev", "accuracy", "pt2", h)
     for g, t in [("SST-2", "sst2"), ("RTE", "rte"), ("BoolQ", "boolq"), ("CB", "cb")]
     for lab, h in [("CLS", "cls"), ("Verb.", "verbalizer")]],
    [f"Dev accuracy at the best dev epoch; {_FLATTER}.",
     "Each head's cell takes its own best config; the paper kept the other hyper-parameters fixed."],
)
TABLES = [TABLE2, TABLE3, TABLE4]


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def parse_depth(depth_range: str) -> tuple[int, int] | None:
    """'21-24' -> (21, 24); '' (ft/pt) or malformed -> None."""
    lo, sep, hi = (depth_range or "").partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit():
        return None
    return int(lo), int(hi)


def is_partial_depth(depth_range: str, num_layers: int | None) -> bool:
    """A depth-ablation run: deep prompts on a proper subset of the layers (kept out of the main tables)."""
    span = parse_depth(depth_range)
    return span is not None and span != (1, num_layers)


def _data_identity(identity: dict) -> str:
    """What the run read, by content: its data files, weights and sample limits (never their locations)."""
    weights = {k: v for k, v in (identity.get("weights") or {}).items() if k != "source"}
    return json.dumps({"samples": identity.get("samples"), "data": (identity.get("data") or {}).get("splits"),
                       "weights": weights}, sort_keys=True)


def _run_rows(path: Path, m: dict) -> list[dict]:
    identity = m["identity"]
    params, timing = m.get("params") or {}, m.get("timing") or {}
    majority = m.get("majority_baseline") or {}
    base = {
        "run_dir": str(path.parent), "task": m["task"], "family": m.get("family"), "model": m["model"],
        "method": m["method"],
        # Table 4's distinction: LM-head verbalizer vs any linear head (cls/choice/token/span).
        "head": "verbalizer" if m.get("head") == "verbalizer" else "cls",
        "prompt_length": m.get("prompt_length"), "reparam": m.get("reparam"),
        "depth_range": m.get("depth_range") or "", "num_layers": m.get("num_layers"), "seed": m.get("seed"),
        "experiment": m.get("experiment"), "primary_metric": m["primary_metric"],
        "report_split": m["report_split"], "config": json.dumps(identity["config"], sort_keys=True),
        DATA_KEY: _data_identity(identity),
        "trainable_pct": params.get("trainable_pct"), "train_s": timing.get("train_s"),
        "partial_depth": is_partial_depth(m.get("depth_range") or "", m.get("num_layers")),
    }
    return [{**base, "split": split, "metric": metric, "value": float(value),
             "majority": (majority.get(split) or {}).get(metric)}
            for split, metrics in m["best"].items() for metric, value in metrics.items() if value is not None]


def load_runs(results_dir: str | Path) -> pd.DataFrame:
    """Every finished run under `results_dir`, one row per (run, split, metric) of its best-epoch metrics.

    Runs whose status is not "done" are skipped silently; unreadable or malformed files are skipped with
    a warning line on stderr, and runs of an older schema (made under an older run key, without the data
    and weights identity) with one line for all. `head` is normalised to "cls" (any linear head) or
    "verbalizer"; `partial_depth` marks depth-ablation runs; `data` is the run's data identity.
    """
    rows: list[dict] = []
    older = 0
    for path in sorted(Path(results_dir).rglob("metrics.json")):
        try:
            m = json.loads(path.read_text())
            if m.get("status") != "done":
                continue
            if not isinstance(m.get("schema_version"), int) or m["schema_version"] < SCHEMA_VERSION:
                older += 1
                continue
            rows.extend(_run_rows(path, m))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            _warn(f"skipping {path}: {type(e).__name__}: {e}")
    if older:
        _warn(f"skipping {older} run(s) of an older schema_version (< {SCHEMA_VERSION}, made under an older run "
              "key): re-run them to include them (ptv2-status lists them)")
    columns = ["run_dir", "task", "family", "model", "method", "head", "prompt_length", "reparam",
               "depth_range", "num_layers", "seed", "experiment", "primary_metric", "report_split", "config",
               DATA_KEY, "trainable_pct", "train_s", "partial_depth", "split", "metric", "value", "majority"]
    return pd.DataFrame(rows, columns=columns)


def _choose_config(group: pd.DataFrame) -> str:
    """The config with the best mean primary metric on dev (the report split if a task has no dev)."""
    metric = group["primary_metric"].iloc[0]
    on_metric = group[group["metric"] == metric]
    split = "dev" if (on_metric["split"] == "dev").any() else group["report_split"].iloc[0]
    means = on_metric[on_metric["split"] == split].groupby("config")["value"].mean()
    # sort_index makes ties deterministic; a group without the selection metric falls back to its first config
    return str(means.sort_index().idxmax()) if len(means) else str(group["config"].min())


def data_variants(cell: pd.DataFrame) -> list[str]:
    """The data identities among one cell's runs, the main one first: no sample limits, then the most
    runs, then a fixed order. Runs of different data, weights or sample limits are never averaged."""
    counts = cell.drop_duplicates(["run_dir"])[DATA_KEY].value_counts()

    def order(signature: str) -> tuple:
        limits = json.loads(signature).get("samples") or {}
        return any(v is not None for v in limits.values()), -int(counts[signature]), signature

    return sorted(counts.index, key=order)


def variant_notes(signatures: list[str]) -> list[str]:
    """Per data identity, what sets it apart from the others: `max_train_samples=2000, data.train 3f2a9c1b`."""
    flat = [pd.json_normalize(json.loads(s), sep=".").iloc[0].to_dict() for s in signatures]
    keys = sorted({k for f in flat for k in f if len({json.dumps(g.get(k), default=str) for g in flat}) > 1})

    def shown(key: str, value: object) -> str:
        name = key.removeprefix("samples.").removesuffix(".sha256").removesuffix(".bytes")
        return f"{name}={'all' if value is None else str(value)[:8] if key.endswith('sha256') else value}"

    return [", ".join(shown(k, f.get(k)) for k in keys[:4]) + (", ..." if len(keys) > 4 else "") for f in flat]


def aggregate_cells(runs: pd.DataFrame, keys: list[str] = CELL_KEYS) -> pd.DataFrame:
    """One row per (keys..., data variant, split, metric): seed mean, sample std (NaN for n=1) and n of the
    chosen config. Runs on different data, weights or sample limits are variants 1, 2, ... of a cell (1: the
    main one, `data_variants`), each its own row; configurations compete inside a variant.

    Repeats of the same (config, seed), e.g. a sweep rerunning a main-table run, count once.
    """
    out: list[dict] = []
    for key, cell in runs.groupby(keys, sort=True, dropna=False):
        signatures = data_variants(cell)
        notes = variant_notes(signatures) if len(signatures) > 1 else [""]
        for variant, (signature, note) in enumerate(zip(signatures, notes, strict=True), 1):
            group = cell[cell[DATA_KEY] == signature]
            facts = {**dict(zip(keys, key, strict=True)), "variant": variant, "n_variants": len(signatures),
                     "variant_note": note}
            out += _seed_means(group, facts)
    return pd.DataFrame(out)


def _seed_means(group: pd.DataFrame, facts: dict) -> list[dict]:
    configs = sorted(group["config"].unique())
    chosen = group[group["config"] == _choose_config(group)]
    chosen = chosen.drop_duplicates(["seed", "split", "metric"])
    rows = []
    for (split, metric), g in chosen.groupby(["split", "metric"], sort=True):
        n = len(g)
        rows.append({
            **facts, "split": split, "metric": metric,
            "ours_mean": g["value"].mean(), "ours_std": g["value"].std(ddof=1) if n > 1 else math.nan,
            "n": n, "majority": g["majority"].mean(), "train_s": g["train_s"].mean(),
            "trainable_pct": g["trainable_pct"].mean(), "primary_metric": g["primary_metric"].iloc[0],
            "report_split": g["report_split"].iloc[0], "config": g["config"].iloc[0],
            "n_configs": len(configs), "config_note": _config_note(configs, g["config"].iloc[0]),
        })
    return rows


def _config_note(configs: list[str], chosen: str) -> str:
    """The chosen config's settings that differ among the candidates ('' when there was one config)."""
    if len(configs) < 2:
        return ""
    dicts = [json.loads(c) for c in configs]
    pick = json.loads(chosen)
    varying = sorted(k for k in pick if len({json.dumps(d.get(k)) for d in dicts}) > 1)
    return ", ".join(f"{k}={pick[k]}" for k in varying)


def load_paper() -> pd.DataFrame:
    return pd.read_csv(PAPER_CSV)


def fmt_ours(mean: float, std: float, n: int) -> str:
    """'72.0 ± 2.0 (n=3)'; n=1 has no std: '72.0 (n=1)'; no runs: '—'."""
    if not n:
        return DASH
    if n == 1 or math.isnan(std):
        return f"{mean:.1f} (n={n})"
    return f"{mean:.1f} ± {std:.1f} (n={n})"


def row_label(backbone: str, variant: int) -> str:
    """A table row: the backbone, and for a cell's other data variants `[data N]` (explained in the notes)."""
    return backbone if variant == 1 else f"{backbone} [data {variant}]"


def build_table(spec: TableSpec, cells: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """The tidy table: one row per (backbone, data variant, column); backbones of the paper's table or with
    our runs; variants past the first only where some cell of the table has them."""
    table_no = int(spec.name.removeprefix("table"))
    paper = paper[paper["table"] == table_no]
    ours = {(r.model, r.variant, r.task, r.split, r.metric, r.method, r.head): r for r in cells.itertuples()}
    ref = {(r.backbone, r.task, r.split, r.metric, r.method, r.head): r.value for r in paper.itertuples()}
    col_keys = {c.key for c in spec.columns}
    present = {k[0] for k in ours if k[2:] in col_keys} | set(paper["backbone"])
    backbones = [b for b in PAPER_BACKBONES if b in present] + sorted(present - set(PAPER_BACKBONES))
    rows = []
    for b, v in ((b, v) for b in backbones for v in sorted({1} | {k[1] for k in ours if k[0] == b and k[2:] in col_keys})):
        for c in spec.columns:
            o, p = ours.get((b, v, *c.key)), ref.get((b, *c.key), math.nan)
            mean = o.ours_mean if o is not None else math.nan
            rows.append({"table": spec.name, "backbone": b, "variant": v, "task": c.task, "split": c.split, "metric": c.metric,
                         "method": c.method, "head": c.head, "ours_mean": mean,
                         "ours_std": o.ours_std if o is not None else math.nan,
                         "n": o.n if o is not None else 0, "paper": p, "diff": mean - p})
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def _cell_text(r: pd.Series) -> str:
    """Markdown cell: ours, then the paper's number and ours − paper when the paper has this cell."""
    parts = [fmt_ours(r["ours_mean"], r["ours_std"], int(r["n"]))]
    if not math.isnan(r["paper"]):
        parts.append(f"paper {r['paper']:.1f}")
        if r["n"]:
            parts.append(f"Δ {r['diff']:+.1f}")
    return "; ".join(parts)


def _indexed(spec: TableSpec, tidy: pd.DataFrame) -> dict[tuple[tuple[str, int], Column], pd.Series]:
    by_key = {(r["backbone"], r["variant"], r["task"], r["split"], r["metric"], r["method"], r["head"]): r
              for _, r in tidy.iterrows()}
    return {(row, c): by_key[(*row, *c.key)] for row in _rows(tidy) for c in spec.columns}


def _rows(tidy: pd.DataFrame) -> list[tuple[str, int]]:
    return list(dict.fromkeys(zip(tidy["backbone"], tidy["variant"], strict=True)))


def _groups(columns: list[Column]) -> dict[str, list[Column]]:
    groups: dict[str, list[Column]] = {}
    for c in columns:
        groups.setdefault(c.group, []).append(c)
    return groups


def render_markdown(spec: TableSpec, tidy: pd.DataFrame, notes: list[str]) -> str:
    """One Markdown table per column group (rows = backbone), then the footnotes."""
    cell = _indexed(spec, tidy)
    lines = [f"# {spec.title}", "",
             "Cells: ours as mean ± sample std over seeds (n runs) of the chosen config; the paper's number; "
             "Δ = ours − paper (same backbone only); n=1 shows no std. — = no runs / not in the paper. "
             "Depth-ablation runs (prompts on a subset of layers) are left out.", ""]
    for group, cols in _groups(spec.columns).items():
        c0 = cols[0]
        lines += [f"## {group} ({c0.task}, {c0.split}, {c0.metric})", "",
                  "| Backbone | " + " | ".join(c.label for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        lines += ["| " + " | ".join([row_label(*row), *(_cell_text(cell[(row, c)]) for c in cols)]) + " |"
                  for row in _rows(tidy)]
        lines.append("")
    lines += ["Notes:", "", *(f"- {n}" for n in [*spec.footnotes, *notes])]
    return "\n".join(lines) + "\n"


def render_latex(spec: TableSpec, tidy: pd.DataFrame) -> str:
    """booktabs tabulars, one per block; ours ± std with the paper in parentheses, best ours per group in bold."""
    cell = _indexed(spec, tidy)
    blocks: dict[str, list[Column]] = {}
    for c in spec.columns:
        blocks.setdefault(c.block, []).append(c)
    out = ["\\begin{table*}[t]", "\\centering", "\\small"]
    for block, cols in blocks.items():
        groups = _groups(cols)
        out += [f"% {block}", "\\begin{tabular}{l" + "c" * len(cols) + "}", "\\toprule",
                " & " + " & ".join(f"\\multicolumn{{{len(g)}}}{{c}}{{{name}}}" for name, g in groups.items())
                + " \\\\"]
        start, rules = 2, []
        for g in groups.values():
            rules.append(f"\\cmidrule(lr){{{start}-{start + len(g) - 1}}}")
            start += len(g)
        out += ["".join(rules), "Backbone & " + " & ".join(c.label for c in cols) + " \\\\", "\\midrule"]
        for row in _rows(tidy):
            texts = []
            for g in groups.values():
                means = [cell[(row, c)]["ours_mean"] for c in g]
                best = max((m for m in means if not math.isnan(m)), default=math.nan)
                for c, m in zip(g, means, strict=True):
                    texts.append(_latex_cell(cell[(row, c)], bold=not math.isnan(m) and m == best))
            out.append(f"{row_label(*row)} & " + " & ".join(texts) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", ""]
    out += [f"\\caption{{{spec.title}. Ours: mean$\\pm$std over seeds; paper in parentheses; bold: best of ours.}}",
            f"\\label{{tab:{spec.name}}}", "\\end{table*}"]
    return "\n".join(out) + "\n"


def _latex_cell(r: pd.Series, bold: bool) -> str:
    if r["n"]:
        ours = f"{r['ours_mean']:.1f}" + (f"$\\pm${r['ours_std']:.1f}" if r["n"] > 1 else "")
        ours = f"\\textbf{{{ours}}}" if bold else ours
    else:
        ours = "--"
    return ours + (f" ({r['paper']:.1f})" if not math.isnan(r["paper"]) else "")


def _table_notes(spec: TableSpec, cells: pd.DataFrame) -> list[str]:
    """Footnotes that depend on our runs: data variants kept apart, config choices, and SQuAD 2.0 at the
    tuned threshold."""
    col_keys = {c.key for c in spec.columns}
    notes = []
    if len(cells):
        keys = cells[["task", "split", "metric", "method", "head"]].itertuples(index=False, name=None)
        in_table = cells[[k in col_keys for k in keys]]
        for _, g in in_table[in_table["n_variants"] > 1].groupby(CELL_KEYS, sort=True):
            r = g.iloc[0]
            variants = g.drop_duplicates("variant").sort_values("variant")
            notes.append(f"{r.task} / {r.model} / {METHOD_LABELS[r.method]} / {r['head']}: runs on different data, "
                         "weights or sample limits are kept apart: "
                         + "; ".join(f"{row_label(r.model, v.variant)}: {v.variant_note}" for v in variants.itertuples())
                         + ".")
        multi = in_table[in_table["n_configs"] > 1].drop_duplicates([*CELL_KEYS, "variant"])
        for r in multi.itertuples():
            notes.append(f"{r.task} / {row_label(r.model, r.variant)} / {METHOD_LABELS[r.method]} / {r.head}: best of "
                         f"{r.n_configs} configs by mean dev {r.primary_metric}: {r.config_note}.")
    if spec is TABLE3 and len(cells):
        tuned = cells[(cells["task"] == "squad_v2") & cells["metric"].isin(["best_exact_match", "best_f1"])]
        for (model, variant, method), g in tuned.groupby(["model", "variant", "method"], sort=True):
            vals = {r.metric: fmt_ours(r.ours_mean, r.ours_std, r.n) for r in g.itertuples()}
            notes.append(f"SQuAD 2.0 {row_label(model, variant)} {METHOD_LABELS[method]}, dev-tuned threshold: EM "
                         f"{vals.get('best_exact_match', DASH)}, F1 {vals.get('best_f1', DASH)}.")
    return notes


def real_minilm_table(cells: pd.DataFrame) -> pd.DataFrame:
    """MiniLM evidence: per task its report split's primary metric (plus dev when the report split is test,
    and both EM and F1 for QA) against the majority class, FT, PT and PT-2; a task's other data variants
    (`aggregate_cells`) in rows of their own, `task [data N]`."""
    # each task's own head (cls, choice, token, span); MiniLM ships no MLM head for the verbalizer
    mini = cells[(cells["model"] == "minilm") & (cells["head"] != "verbalizer")] if len(cells) else cells
    rows = []
    for (task, variant), g in (mini.groupby(["task", "variant"], sort=True) if len(mini) else []):
        report, primary = g["report_split"].iloc[0], g["primary_metric"].iloc[0]
        splits = ["dev", report] if report != "dev" and (g["split"] == "dev").any() else [report]
        metrics = ["exact_match", "f1"] if {"exact_match", "f1"} <= set(g["metric"]) else [primary]
        for split in splits:
            for metric in metrics:
                sel = g[(g["split"] == split) & (g["metric"] == metric)].set_index("method")
                row = {"task": row_label(task, variant), "split": split, "metric": metric,
                       "majority": sel["majority"].dropna().mean() if len(sel) else math.nan}
                for m in ("ft", "pt", "pt2"):
                    has = m in sel.index
                    row |= {f"{m}_mean": sel.at[m, "ours_mean"] if has else math.nan,
                            f"{m}_std": sel.at[m, "ours_std"] if has else math.nan,
                            f"{m}_n": int(sel.at[m, "n"]) if has else 0,
                            f"{m}_train_s": sel.at[m, "train_s"] if has else math.nan}
                row["pt2_trainable_pct"] = sel.at["pt2", "trainable_pct"] if "pt2" in sel.index else math.nan
                rows.append(row)
    return pd.DataFrame(rows)


def _num(x: float, spec: str = ".1f") -> str:
    return DASH if x is None or math.isnan(x) else format(x, spec)


def render_real_minilm(table: pd.DataFrame, heading: str = "# Real evidence: MiniLM") -> str:
    head = ["Task", "Split", "Metric", "Majority", "FT", "PT", "PT-2", "PT-2 trainable %",
            "FT train s", "PT train s", "PT-2 train s"]
    lines = [*([heading, ""] if heading else []),
             "Mean ± sample std over seeds (n runs) of the best config per cell; majority = majority-class "
             "baseline on the same split; train s = mean `timing.train_s`.", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in table.to_dict("records"):
        cells = [r["task"], r["split"], r["metric"], _num(r["majority"]),
                 *(fmt_ours(r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_n"]) for m in ("ft", "pt", "pt2")),
                 _num(r["pt2_trainable_pct"], ".3f"), *(_num(r[f"{m}_train_s"], ".0f") for m in ("ft", "pt", "pt2"))]
        lines.append("| " + " | ".join(cells) + " |")
    if table.empty:
        lines.append("| " + " | ".join([DASH] * len(head)) + " |")
    lines += ["", "NER test rows are at the best dev epoch; dev rows are flattered by choosing the epoch on them."]
    return "\n".join(lines) + "\n"


def summarize(tidies: list[pd.DataFrame]) -> str:
    """Paper cells filled by ours, and the mean |ours − paper| over them, overall and per table."""
    def line(name: str, t: pd.DataFrame) -> str:
        paper_cells = t[t["paper"].notna() & (t["variant"] == 1)]  # a cell's main data variant
        filled = paper_cells[paper_cells["n"] > 0]
        gap = _num(filled["diff"].abs().mean(), ".2f") if len(filled) else DASH
        return f"{name}: {len(filled)}/{len(paper_cells)} paper cells filled by ours; mean |ours − paper| = {gap}"
    return "\n".join([line("all tables", pd.concat(tidies)), *(line(t["table"].iloc[0], t) for t in tidies)])


def write_tables(results: str | Path, out: str | Path) -> tuple[str, list[Path]]:
    """Write every table under `out`; return the summary text and the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(results)
    cells = aggregate_cells(runs[~runs["partial_depth"].astype(bool)])
    paper = load_paper()
    written, tidies = [], []
    for spec in TABLES:
        tidy = build_table(spec, cells, paper)
        tidies.append(tidy)
        for suffix, text in [(".md", render_markdown(spec, tidy, _table_notes(spec, cells))),
                             (".tex", render_latex(spec, tidy))]:
            written.append(out / f"{spec.name}{suffix}")
            written[-1].write_text(text)
        written.append(out / f"{spec.name}.csv")
        tidy.to_csv(written[-1], index=False)
    real = real_minilm_table(cells)
    written.append(out / "real_minilm.md")
    written[-1].write_text(render_real_minilm(real))
    written.append(out / "real_minilm.csv")
    real.to_csv(written[-1], index=False)
    summary = summarize(tidies)
    written.append(out / "summary.md")
    written[-1].write_text("# Summary\n\n" + "\n".join(f"- {s}" for s in summary.splitlines()) + "\n")
    return summary, written


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="Write the paper's Tables 2-4 (ours vs paper) and the MiniLM table.")
    parser.add_argument("--results", default="results", help="directory searched for metrics.json files")
    parser.add_argument("--out", default="results/tables", help="output directory")
    args = parser.parse_args(argv)
    if not Path(args.results).is_dir():
        print(f"tables: error: --results {args.results} is not a folder (of run directories)", file=sys.stderr)
        return 2
    try:
        summary, written = write_tables(args.results, args.out)
    except OSError as error:  # an --out that cannot be written: one line, like every ptv2 error
        print(f"tables: error: cannot write {error.filename or args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(summary)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
