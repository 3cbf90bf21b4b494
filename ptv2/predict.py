"""`ptv2-predict`: finished runs' predictions as the official SuperGLUE submission files.

    ptv2-predict run=<run dir> [split=test] [out=<folder>] [data.root=<folder>] [device=auto]
    ptv2-predict runs=[<run dir>,<run dir>,...] [split=test] [out=<folder>] [batch_size=128] ...

One run: rebuilds the model from the run's config.yaml (same seed, so a tiny random backbone comes out
identical), loads the trained prompt and head from prompt_head.safetensors, predicts the split and
writes ``<out>/<Task>.jsonl`` (default out: ``<run dir>/submission``). Splits with labels also print
their metrics, which must equal the run's own numbers for the best epoch.

Several runs of one backbone: the backbone is loaded once and the runs' examples share batches, each
with its own run's prompt and head (``ptv2.mixed.MixedPromptPredictor``); each run's file is the one it
gets alone. Default out: ``predictions/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError
from safetensors.torch import load_file

from ptv2.build import Built, autocast_dtype, build, resolve_device, seed_everything
from ptv2.config import load_run_config
from ptv2.data import Batching, eval_loader
from ptv2.errors import UserError
from ptv2.inference import predict, write_submission
from ptv2.schema import device_problem

USAGE = ("ptv2-predict run=<run dir> | runs=[<run dir>,...] [split=test] [out=<folder>] [data.root=<folder>] "
         "[device=auto] [batch_size=128]")
_OPTIONS = {"run": None, "runs": None, "split": "test", "out": None, "data.root": None, "device": "auto",
            "batch_size": "128"}


def parse_args(argv: list[str]) -> dict[str, str | None]:
    """``key=value`` arguments, Hydra style, so commands read like ptv2-train's."""
    options = dict(_OPTIONS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in _OPTIONS:
            raise UserError(f"unknown argument {arg!r}; usage: {USAGE}")
        options[key] = value
    if bool(options["run"]) == bool(options["runs"]):
        raise UserError(f"give run=<run dir> or runs=[<run dir>,...]; usage: {USAGE}")
    if not options["batch_size"].isdigit() or int(options["batch_size"]) < 1:
        raise UserError(f"batch_size={options['batch_size']} must be a positive integer")
    return options


def run_list(value: str) -> list[Path]:
    """``[a,b,c]`` (Hydra's list syntax) or ``a,b,c`` -> run directories."""
    runs = [Path(p.strip()).expanduser() for p in value.strip().strip("[]").split(",") if p.strip()]
    if len(runs) < 2:
        raise UserError(f"runs={value}: list at least two run directories (one run: run=<run dir>)")
    return runs


def load_run(run: Path, split: str, data_root: str | None = None, device: str = "auto") -> tuple[DictConfig, Built]:
    """The run's config and what it trains (``ptv2.build``, the loop's own path) with ``split`` encoded and
    its trained prompt and head loaded, in eval mode."""
    config_path, weights = run / "config.yaml", run / "prompt_head.safetensors"
    for path in (config_path, weights):
        if not path.is_file():
            raise UserError(f"missing {path}: run=... must be a run directory written by ptv2-train")
    cfg = load_run_config(config_path)
    if data_root:
        cfg.data.root = data_root
    if problem := device_problem(device):
        raise UserError(f"device={device} {problem}")
    cfg.train.device = device
    cfg.prompt.init_from = None  # the trained prompt comes from prompt_head.safetensors, not from stage 1
    if not cfg.method.freeze_backbone:
        raise UserError(
            f"run {run} fine-tuned its backbone (method={cfg.method.name}); only prompt and head are stored, "
            "so ptv2-predict can rebuild frozen-backbone runs only"
        )
    if split not in cfg.task.files:
        raise UserError(f"split={split} unknown for task={cfg.task.name}; use one of {list(cfg.task.files)}")
    seed_everything(cfg.seed)  # the loop seeds before building: a tiny random backbone is rebuilt identically
    built = build(cfg, resolve_device(cfg), [split])
    built.model.load_prompt_head_state(load_file(str(weights)), str(weights))
    built.model.eval()
    return cfg, built


def predict_split(run: Path, split: str = "test", out: Path | None = None, data_root: str | None = None,
                  device: str = "auto") -> tuple[Path, dict[str, float] | None]:
    """Write the split's submission file; returns its path and the split's metrics (None on test)."""
    cfg, built = load_run(run, split, data_root, device)
    task, data, torch_device = built.task, built.splits[split], resolve_device(cfg)
    batching = Batching(task.tokenizer.pad_token_id, cfg.train.pad_to_multiple_of)
    outputs = predict(built.model, eval_loader(data.features, cfg.train.eval_batch_size, batching), torch_device,
                      autocast_dtype(cfg, torch_device))
    path = (out or run / "submission") / task.submission_file
    write_submission(task, data, outputs, path)
    # Hidden test labels: metrics only where the split has them.
    metrics = task.metrics(data.records, data.features, outputs) if split != "test" else None
    return path, metrics


def _predict_one(options: dict) -> None:
    path, metrics = predict_split(
        Path(options["run"]).expanduser(), options["split"], Path(options["out"]).expanduser() if options["out"] else None,
        options["data.root"], options["device"],
    )
    if metrics is not None:
        print(f"{options['split']} metrics: {json.dumps(metrics)}")
    print(f"submission: {path}")


def _predict_mixed(options: dict) -> None:
    from ptv2.mixed import MixedPromptPredictor

    predictor = MixedPromptPredictor(run_list(options["runs"]), options["data.root"], options["device"])
    paths = predictor.write(options["split"], Path(options["out"] or "predictions").expanduser(), int(options["batch_size"]))
    print(f"{predictor.forwards} backbone forwards, {predictor.mixed_forwards} of them serving several runs")
    for path in paths:
        print(f"submission: {path}")


def main(argv: list[str] | None = None) -> None:
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
        (_predict_mixed if options["runs"] else _predict_one)(options)
    except (UserError, OmegaConfBaseException, SafetensorError) as error:  # a run's files that do not fit
        print(f"ptv2-predict: error: {str(error).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # an unreadable run dir, an out= folder that cannot be written
        print(f"ptv2-predict: error: {error.strerror or error}: {error.filename}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
