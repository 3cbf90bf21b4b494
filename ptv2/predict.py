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
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError
from safetensors.torch import load_file

from ptv2.backbone import load_backbone
from ptv2.errors import UserError
from ptv2.model import PromptedModel, build_model
from ptv2.results import write_atomic
from ptv2.schema import device_problem
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


def load_prompt_head(model: PromptedModel, path: Path) -> None:
    """Inverse of the loop's _save_prompt_head: ``head.*`` into model.head, ``prompt.*`` into model.prompt."""
    tensors = load_file(str(path))
    head = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    # computed_prefix is derived from the prompt parameters (stored for deployment), not loaded back.
    prompt = {
        k.removeprefix("prompt."): v
        for k, v in tensors.items()
        if k.startswith("prompt.") and k != "prompt.computed_prefix"
    }
    unknown = [k for k in tensors if not k.startswith(("head.", "prompt."))]
    if unknown:
        raise UserError(f"{path}: unexpected tensors {unknown[:3]}: not a ptv2 prompt_head file")
    if model.prompt is None and prompt:
        raise UserError(f"{path} holds prompt tensors but the run's config has no prompt (method mismatch)")
    try:
        model.head.load_state_dict(head, strict=True)
        if model.prompt is not None:
            model.prompt.load_state_dict(prompt, strict=True)
    except RuntimeError as error:  # names or shapes of another run's model
        raise UserError(f"{path} does not fit the model of the run's config.yaml: {str(error).splitlines()[0]}") from None


def load_run(run: Path, data_root: str | None = None, device: str = "auto") -> tuple[DictConfig, Task, PromptedModel]:
    """The run's config, task and model with its trained prompt and head, in eval mode."""
    config_path, weights = run / "config.yaml", run / "prompt_head.safetensors"
    for path in (config_path, weights):
        if not path.is_file():
            raise UserError(f"missing {path}: run=... must be a run directory written by ptv2-train")
    try:
        cfg = OmegaConf.load(config_path)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as error:
        raise UserError(f"{config_path} is not a readable config: {str(error).splitlines()[0]}") from None
    if not isinstance(cfg, DictConfig) or not {"model", "task", "method", "train"} <= set(cfg):
        raise UserError(f"{config_path} is not a ptv2 run config (no model/task/method/train): run=... must be a run directory")
    if data_root:
        cfg.data.root = data_root
    if problem := device_problem(device):
        raise UserError(f"device={device} {problem}")
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
    model = build_model(cfg, backbone, task.num_labels, head_kind)
    load_prompt_head(model, weights)
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
    except (UserError, OmegaConfBaseException, SafetensorError) as error:  # a run's files that do not fit
        print(f"ptv2-predict: error: {str(error).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # an unreadable run dir, an out= folder that cannot be written
        print(f"ptv2-predict: error: {error.strerror or error}: {error.filename}", file=sys.stderr)
        sys.exit(2)
    if metrics is not None:
        print(f"{options['split']} metrics: {json.dumps(metrics)}")
    print(f"submission: {path}")


if __name__ == "__main__":
    main()
