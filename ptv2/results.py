"""Run directories and atomic result files (schema: docs/metrics.md)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# 2: SRL `f1` is seqeval over all labels (verb span included, the official score; `f1_args` = arguments only);
#    cls/choice heads read the pooler; prompt and head inits, random batches and the WiC template follow the
#    official code by default. Version-1 results are never read as version 2 (tables, ptv2-status).
SCHEMA_VERSION = 2
# Keys that do not change what a run computes: where things live, how many workers load data, whether
# to redo a finished run. Everything else is part of the run's identity.
_NOT_IDENTITY = (
    "results", "data.root", "model.path", "train.num_workers", "train.progress", "train.gpu_per_job", "train.compile",
    "train.compile_mode", "train.compile_min_steps", "train.pad_to_multiple_of", "train.logger", "hydra",
)
# Keys added after runs existed: left out of the identity while null, so older runs keep their keys.
_IDENTITY_IF_SET = ("prompt.init_from",)


def _identity(cfg: DictConfig) -> dict:
    plain = OmegaConf.to_container(cfg, resolve=True)
    for dotted in _NOT_IDENTITY:
        *parents, leaf = dotted.split(".")
        node = plain
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    for dotted in _IDENTITY_IF_SET:
        parent, leaf = dotted.split(".")
        node = plain.get(parent)
        if isinstance(node, dict) and node.get(leaf) is None:
            node.pop(leaf, None)
            if not node:
                plain.pop(parent)
    return plain


def run_key(cfg: DictConfig) -> str:
    """Short stable hash of everything that determines a run's result (seed included)."""
    blob = json.dumps(_identity(cfg), sort_keys=True, default=str)
    return f"s{cfg.seed}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def run_dir(cfg: DictConfig) -> Path:
    group = cfg.results.get("experiment") or "runs"
    return Path(cfg.results.root) / group / cfg.task.name / cfg.model.name / cfg.method.name / run_key(cfg)


def run_status(cfg: DictConfig) -> tuple[Path, str]:
    """(run directory, what a dry run says of it): done / failed / running / "to run" (no metrics yet), and
    "done, forced: to run" under results.force=true."""
    directory = run_dir(cfg)
    status = (read_metrics(directory) or {}).get("status") or "to run"
    if status == "done" and cfg.results.get("force"):
        status = "done, forced: to run"
    return directory, status


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: metrics of an empty subset (e.g. SQuAD 2.0 has-answer) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(_json_safe(obj), indent=2, sort_keys=False) + "\n")


def read_metrics(directory: Path) -> dict | None:
    path = directory / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_curves(path: Path, epochs: list[dict]) -> None:
    """curves.csv: epoch, train_loss, lr, then one `<split>/<metric>` column per evaluated metric."""
    columns = sorted({f"{split}/{name}" for e in epochs for split, m in e["metrics"].items() for name in m})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["epoch", "train_loss", "lr", *columns])
    for e in epochs:
        values = {f"{split}/{name}": v for split, m in e["metrics"].items() for name, v in m.items()}
        writer.writerow([e["epoch"], e["train_loss"], e["lr"], *(values.get(c, "") for c in columns)])
    write_atomic(path, buffer.getvalue())


def record_failure(cfg: DictConfig, error: BaseException) -> None:
    """Mark the run failed in its run directory, keeping any epochs it finished; never touch a done run."""
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 owns the run directory
        return
    try:
        directory = run_dir(cfg)
    except Exception:  # the config itself is broken: nothing to name a directory after
        return
    previous = read_metrics(directory) or {}
    if previous.get("status") == "done":
        return
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    write_json(directory / "metrics.json", previous | {"status": "failed", "error": f"{type(error).__name__}: {message}"})
