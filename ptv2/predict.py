"""`ptv2-predict`: a finished run's predictions as the official SuperGLUE submission file.

    ptv2-predict run=<run dir> [split=test] [out=<folder>] [data.root=<folder>] [device=auto]

Rebuilds the model from the run's config.yaml (same seed, so a tiny random backbone comes out
identical), loads the trained prompt and head from prompt_head.safetensors, predicts the split and
writes ``<out>/<Task>.jsonl`` (default out: ``<run dir>/submission``). Splits with labels also print
their metrics, which must equal the run's own numbers for the best epoch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from ptv2.backbone import load_backbone
from ptv2.errors import UserError
from ptv2.model import PromptedModel, build_model
from ptv2.results import write_atomic
from ptv2.tasks.base import Task, build_task
from ptv2.train import _device, _loader, encode_split, predict, seed_everything

USAGE = "ptv2-predict run=<run dir> [split=test] [out=<folder>] [data.root=<folder>] [device=auto]"
_OPTIONS = {"run": None, "split": "test", "out": None, "data.root": None, "device": "auto"}


def parse_args(argv: list[str]) -> dict[str, str | None]:
    """``key=value`` arguments, Hydra style, so commands read like ptv2-train's."""
    options = dict(_OPTIONS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in _OPTIONS:
            raise UserError(f"unknown argument {arg!r}; usage: {USAGE}")
        options[key] = value
    if not options["run"]:
        raise UserError(f"run=<run dir> is required; usage: {USAGE}")
    return options


def load_run(run: Path, data_root: str | None = None, device: str = "auto") -> tuple[DictConfig, Task, PromptedModel]:
    """The run's config, task and model with its trained prompt and head, in eval mode."""
    config_path, weights = run / "config.yaml", run / "prompt_head.safetensors"
    for path in (config_path, weights):
        if not path.is_file():
            raise UserError(f"missing {path}: run=... must be a run directory written by ptv2-train")
    cfg = OmegaConf.load(config_path)
    if data_root:
        cfg.data.root = data_root
    cfg.train.device = device
    if not cfg.method.freeze_backbone:
        raise UserError(
            f"run {run} fine-tuned its backbone (method={cfg.method.name}); only prompt and head are stored, "
            "so ptv2-predict can rebuild frozen-backbone runs only"
        )
    seed_everything(cfg.seed)  # the loop seeds before building: a tiny random backbone is rebuilt identically
    head_kind = cfg.head or cfg.task.head
    backbone = load_backbone(cfg.model, cfg.train.attention, cfg.train.dropout, with_lm_head=head_kind == "verbalizer")
    task = build_task(cfg.task, cfg.data.root, backbone.tokenizer)
    task.append_mask = head_kind == "verbalizer"
    model = build_model(cfg, backbone, task.num_labels, head_kind)
    model.load_prompt_head_state(load_file(str(weights)), str(weights))
    return cfg, task, model.to(_device(cfg)).eval()


def predict_split(run: Path, split: str = "test", out: Path | None = None, data_root: str | None = None,
                  device: str = "auto") -> tuple[Path, dict[str, float] | None]:
    """Write the split's submission file; returns its path and the split's metrics (None on test)."""
    cfg, task, model = load_run(run, data_root, device)
    torch_device = _device(cfg)
    amp_dtype = torch.bfloat16 if torch_device.type == "cuda" and cfg.train.precision == "bf16" else None
    if split not in cfg.task.files:
        raise UserError(f"split={split} unknown for task={task.name}; use one of {list(cfg.task.files)}")
    records, features = encode_split(task, split, None)
    loader = _loader(features, cfg.train.eval_batch_size, task.tokenizer.pad_token_id, False, cfg.seed, False, 0)
    outputs = predict(model, loader, torch_device, amp_dtype)
    rows = task.submission_rows(records, task.predictions(records, features, outputs))
    path = (out or run / "submission") / task.submission_file
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))
    # Hidden test labels: metrics only where the split has them.
    metrics = task.metrics(records, features, outputs) if split != "test" else None
    return path, metrics


def main(argv: list[str] | None = None) -> None:
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
        path, metrics = predict_split(
            Path(options["run"]).expanduser(),
            options["split"],
            Path(options["out"]).expanduser() if options["out"] else None,
            options["data.root"],
            options["device"],
        )
    except UserError as error:
        print(f"ptv2-predict: error: {error}", file=sys.stderr)
        sys.exit(2)
    if metrics is not None:
        print(f"{options['split']} metrics: {json.dumps(metrics)}")
    print(f"submission: {path}")


if __name__ == "__main__":
    main()
