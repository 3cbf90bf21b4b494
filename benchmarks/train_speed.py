"""Training speed and memory: ptv2 as ptv2-train runs it, against PEFT prefix tuning, the official code's
mechanism and full fine-tuning, on the same saved random batches (docs/performance.md).

    python -m benchmarks.train_speed --out results/bench            # GPU, real shapes
    python -m benchmarks.train_speed --quick --out /tmp/bench       # CPU smoke run, tiny shapes

PEFT runs in its own environment on the saved batches: ``--contender peft --batches FILE --json-out FILE``,
then ``--merge FILE`` into the main result (benchmarks/gpu.sh does all of it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks import contenders
from benchmarks.measure import compare_outputs, measure, measure_eval
from benchmarks.report import row_line, write_outputs
from benchmarks.workload import QUICK_SETTINGS, QUICK_SIZES, SETTINGS, SHAPES, make_batches, matmul_peak

DEFAULT_CONTENDERS = "ptv2,ptv2_eager,ptv2_nopack,official,official_bf16,ft"


def _peft_refuses(name: str, max_length: int, prompt_length: int) -> str | None:
    # PEFT shifts real-token positions by P: past the 512-position table it hits a CUDA device-side assert,
    # which would poison the process for every later setting.
    if name == "peft" and max_length + prompt_length > 512:
        return f"fails: positions {max_length}+{prompt_length} > 512"
    return None


def run_one(name: str, shape_name: str, data: dict, args, device: torch.device, peak: dict | None,
            on_row=lambda rows: None) -> list[dict]:
    """One contender over every setting; ``on_row`` sees the rows so far after each (partial results survive
    a time limit)."""
    shape = data["meta"]["shape_sizes"][shape_name]
    torch.manual_seed(data["meta"]["seed"])
    try:
        contender = contenders.build(name, shape, args.prompt_length, device)
    except torch.OutOfMemoryError:
        return [{"contender": name, "shape": shape_name, "setting": "*", "status": "oom (build)"}]
    rows = []
    for setting, spec in data["settings"].items():
        row = {"contender": name, "shape": shape_name, "setting": setting, "dtype": contender.dtype,
               "packing": contender.packing, "compiled": contender.compiled}
        if refused := _peft_refuses(name, spec["max_length"], args.prompt_length):
            rows.append(row | {"status": refused})
            continue
        try:
            row |= measure(contender, spec["batches"], spec["max_length"], args.warmup, shape, device, peak) | {"status": "ok"}
        except torch.OutOfMemoryError:
            row["status"] = "oom"
        rows.append(row)
        print(row_line(row), flush=True)
        on_row(rows)
        if name == "ptv2" and not args.no_eval:
            ev = measure_eval(contender, spec["batches"], spec["max_length"], args.warmup, device)
            ev |= compare_outputs(contender, spec["batches"], spec["max_length"])  # graphs and packing vs plain
            rows.append({"contender": "ptv2_eval", "shape": shape_name, "setting": setting, "dtype": contender.dtype,
                         "status": "ok"} | ev)
            print(row_line(rows[-1]), flush=True)
            on_row(rows)
    del contender
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results/bench"))
    p.add_argument("--quick", action="store_true", help="tiny shapes and lengths, few steps (CPU smoke run)")
    p.add_argument("--contenders", default=DEFAULT_CONTENDERS, help=f"comma list of {', '.join(contenders.VARIANTS)}")
    p.add_argument("--shapes", default="roberta-large")
    p.add_argument("--settings", default=None, help="comma list (default: all of len128 len256 len512 dist)")
    p.add_argument("--only-settings", default=None, help="with --contender: run these of the saved settings only")
    p.add_argument("--steps", type=int, default=None, help="measured steps (default 10, quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3, quick 1)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32, quick 4")
    p.add_argument("--prompt-length", type=int, default=16)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--no-eval", action="store_true", help="skip the ptv2 evaluation-speed rows")
    p.add_argument("--device", default="auto")
    p.add_argument("--contender", help="run this one contender on --batches and write --json-out (the PEFT process)")
    p.add_argument("--batches", type=Path, help="batches.pt written by the main run")
    p.add_argument("--json-out", type=Path)
    p.add_argument("--merge", type=Path, nargs="*", default=[], help="rows JSON files to merge into --out")
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.batch_size = args.batch_size or (4 if args.quick else 32)
    return args


def workload(args) -> dict:
    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if unknown := [s for s in names if s not in SHAPES]:
        raise SystemExit(f"unknown shape(s) {unknown}: choose from {', '.join(SHAPES)}")
    shapes = {s: SHAPES[s] | (QUICK_SIZES if args.quick else {}) for s in names}
    settings = QUICK_SETTINGS if args.quick else SETTINGS
    if args.settings:
        settings = {k: v for k, v in settings.items() if k in args.settings.split(",")}
    meta = {"seed": args.seed, "batch_size": args.batch_size, "prompt_length": args.prompt_length, "steps": args.steps,
            "warmup": args.warmup, "quick": args.quick, "shapes": names, "shape_sizes": shapes}
    vocab = min(s["vocab"] for s in shapes.values())
    return {"meta": meta, "settings": make_batches(args.seed, args.batch_size, args.warmup + args.steps, settings, vocab)}


def _versions(device: torch.device) -> dict:
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "torch": torch.__version__, "transformers": transformers.__version__}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (the official code's precision)
        torch.backends.cuda.enable_cudnn_sdp(False)  # as ptv2-train does, for every contender
    if args.contender:  # one contender in its own process (the PEFT environment)
        data = torch.load(args.batches, weights_only=False)
        args.prompt_length, args.warmup = data["meta"]["prompt_length"], data["meta"]["warmup"]
        if args.only_settings:  # the same saved batches, fewer settings
            data["settings"] = {k: v for k, v in data["settings"].items() if k in args.only_settings.split(",")}
        peak = matmul_peak(device, data["meta"]["quick"])
        meta = _versions(device)
        if args.contender == "peft":
            import peft

            meta |= {"peft": peft.__version__}
        done: list[dict] = []

        def save(rows: list[dict]) -> None:
            args.json_out.write_text(json.dumps({"rows": done + rows, "meta": meta}, indent=1))

        for shape_name in data["meta"]["shapes"]:
            done += run_one(args.contender, shape_name, data, args, device, peak, save)
        save([])
        return
    if args.merge:  # add rows from other processes to an existing result, re-render
        result = json.loads((args.out / "bench.json").read_text())
        for path in args.merge:
            extra = json.loads(path.read_text())
            result["rows"] += extra["rows"]
            if extra["meta"].get("peft"):
                result["meta"] |= {"peft": extra["meta"]["peft"], "peft_transformers": extra["meta"].get("transformers")}
        return write_outputs(args.out, result)
    data = workload(args)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(data, args.out / "batches.pt")  # the PEFT process trains on exactly these
    peak = matmul_peak(device, args.quick)
    print(f"matmul peak: {peak['tflops']:.1f} TFLOP/s ({peak['dtype']} {peak['n']}^3) on {device}", flush=True)
    names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    result: dict = {"meta": data["meta"] | _versions(device), "matmul_peak": peak, "rows": []}

    def save(rows: list[dict]) -> None:  # after every row: a time limit keeps the finished ones
        write_outputs(args.out, result | {"rows": result["rows"] + rows})

    for shape_name in data["meta"]["shapes"]:
        for name in names:
            result["rows"] += run_one(name, shape_name, data, args, device, peak, save)
    write_outputs(args.out, result)


if __name__ == "__main__":
    main()
