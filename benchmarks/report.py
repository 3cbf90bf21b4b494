"""The benchmark's tables: bench.md (main table, ratios vs PEFT and the others, checks) and bench.json."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.contenders import VARIANTS

CHECKS = {"graph_vs_eager": "CUDA-graph forward vs the same model run eagerly",
          "packed_vs_padded": "Packed rows vs the padded batch, both eager (GPU: variable-length flash attention)"}
RATIO_TO = ("peft", "official", "official_bf16", "ft", "ft_eager", "ptv2_nopack")


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def row_line(row: dict) -> str:
    head = f"{row['shape']:>14} {row['setting']:>7} {row['contender']:>21}"
    if row.get("status") != "ok":
        return f"{head}: {row.get('status')}"
    mem = f"{row['peak_memory_mb']:9.0f} MB" if row.get("peak_memory_mb") is not None else "      - MB"
    return (f"{head}: {row['ms_per_step']:8.1f} ms/step {row['tokens_per_s']:10.0f} tok/s {mem} "
            f"MFU {_fmt(row.get('mfu'), '.1%')} warm-up {row.get('warm_up_s', 0):.1f} s")


def ratios(rows: list[dict]) -> list[dict]:
    """ptv2 / other (tokens/s; peak memory vs FT) per shape x setting."""
    index = {(r["shape"], r["setting"], r["contender"]): r for r in rows if r.get("status") == "ok"}
    out = []
    for (shape, setting, name), ptv2 in index.items():
        if name != "ptv2":
            continue
        row = {"shape": shape, "setting": setting}
        for other in RATIO_TO:
            if (shape, setting, other) in index:
                row[f"speed_vs_{other}"] = ptv2["tokens_per_s"] / index[(shape, setting, other)]["tokens_per_s"]
        ft = index.get((shape, setting, "ft")) or index.get((shape, setting, "ft_eager"))
        if ft and ft.get("peak_memory_mb") and ptv2.get("peak_memory_mb"):
            row["memory_vs_ft"] = ptv2["peak_memory_mb"] / ft["peak_memory_mb"]
        out.append(row)
    return out


def _main_table(rows: list[dict]) -> list[str]:
    lines = ["| shape | setting | contender | precision | ms/step | real tok/s | padding | peak MB | TFLOP/s | MFU | warm-up s |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['shape']} | {r['setting']} | {r['contender']} | | {r.get('status')} | | | | | | |")
            continue
        lines.append(
            f"| {r['shape']} | {r['setting']} | {r['contender']} | {r.get('dtype', '')} | {r['ms_per_step']:.1f} | "
            f"{r['tokens_per_s']:.0f} | {_fmt(r.get('padding_fraction'), '.0%')} | {_fmt(r.get('peak_memory_mb'), '.0f')} | "
            f"{_fmt(r.get('tflops'), '.1f')} | {_fmt(r.get('mfu'), '.1%')} | {_fmt(r.get('warm_up_s'), '.1f')} |"
        )
    return lines


def _ratio_table(result: dict) -> list[str]:
    lines = ["| shape | setting | vs PEFT | vs official | vs official+bf16 | vs FT | vs FT eager | vs ptv2 no packing/compile | memory vs FT |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["ratios"]:
        keys = [f"speed_vs_{k}" for k in RATIO_TO] + ["memory_vs_ft"]
        lines.append(f"| {r['shape']} | {r['setting']} | " + " | ".join(_fmt(r.get(k), ".2f") for k in keys) + " |")
    return lines


def render_markdown(result: dict) -> str:
    meta, peak = result["meta"], result.get("matmul_peak") or {}
    ptv2 = next((r for r in result["rows"] if r["contender"] == "ptv2" and r.get("status") == "ok"), {})
    meta["ptv2_defaults"] = f"packing {ptv2.get('packing')}, compile {ptv2.get('compiled')}"
    checks = {name: [(r["setting"], r[name]) for r in result["rows"] if name in r] for name in CHECKS}
    peft = f" (PEFT process: transformers {meta['peft_transformers']}, peft {meta['peft']})" if meta.get("peft") else ""
    lines = [
        "# Training speed and memory", "",
        f"device: {meta.get('device')}; torch {meta.get('torch')}; transformers {meta.get('transformers')}{peft}",
        f"batch size {meta['batch_size']}, prompt length {meta['prompt_length']}, {meta['steps']} measured steps after "
        f"{meta['warmup']} warm-up, seed {meta['seed']}; random batches; matmul peak {_fmt(peak.get('tflops'), '.3g')} "
        f"TFLOP/s ({peak.get('dtype')} {peak.get('n')}^3); ptv2 defaults here: {meta.get('ptv2_defaults')}", "",
        *_main_table(result["rows"]), "",
        "Ratios (ptv2 tokens/s over the other's; memory: ptv2 peak over FT peak):", "",
        *_ratio_table(result), "",
    ]
    for name, found in checks.items():
        if found:
            lines.append(f"{CHECKS[name]} (relative L2 difference of the logits, bf16): "
                         + ", ".join(f"{setting} {value:.2g}" for setting, value in found))
    lines += ["", "Contenders:", ""] + [f"- `{k}`: {v[0]}" for k, v in VARIANTS.items()] + ["- `ptv2_eval`: ptv2's evaluation forward (no_grad), batches of 128"]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, result: dict) -> None:
    result["ratios"] = ratios(result["rows"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    (out / "bench.md").write_text(render_markdown(result))
    print(f"wrote {out / 'bench.md'} and {out / 'bench.json'}")
