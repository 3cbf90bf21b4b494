"""Run directories, run identity and atomic result files (schema: docs/metrics.md)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from contextlib import suppress
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptv2.atomic import write_atomic
from ptv2.identity import MissingInput, fingerprints, weights_source

# 2: the run key and metrics.json's `identity` cover the data and weights by content (ptv2/identity.py);
#    SRL `f1` is seqeval over all labels (verb span included, the official score; `f1_args` = arguments only);
#    cls/choice heads read the pooler; prompt and head inits, random batches and the WiC template follow the
#    official code by default. Version-1 results are never read as version 2 (tables, ptv2-status).
SCHEMA_VERSION = 2
# Keys that do not change what a run computes: where things live (data and weights count by their content,
# ptv2/identity.py), how many workers load data, whether to redo a finished run. Everything else is part of
# the run's identity.
_NOT_IDENTITY = (
    "results", "data.root", "model.path", "train.num_workers", "train.progress", "train.gpu_per_job", "train.compile",
    "train.compile_mode", "train.compile_min_steps", "train.lean_norms", "train.pad_to_multiple_of", "train.logger", "hydra",
)
# Keys added after runs existed: left out of the identity while null, so older runs keep their keys.
_IDENTITY_IF_SET = ("prompt.init_from",)
# How much of the data a run reads (MPT-2 stage 1 keeps its caps in task.*): runs that differ here never share
# a table cell.
SAMPLE_LIMITS = ("max_train_samples", "max_eval_samples")


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
    """Short stable hash of everything that determines a run's result: its config (seed included), the
    content of the data files it reads and of the weights it starts from. MissingInput when either is absent."""
    blob = json.dumps({"config": _identity(cfg), **fingerprints(cfg)}, sort_keys=True, default=str)
    return f"s{cfg.seed}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def run_parent(cfg: DictConfig) -> Path:
    """The run's folder up to its key (known without the data and weights)."""
    group = cfg.results.get("experiment") or "runs"
    return Path(cfg.results.root) / group / cfg.task.name / cfg.model.name / cfg.method.name


def run_dir(cfg: DictConfig) -> Path:
    return run_parent(cfg) / run_key(cfg)


def _flatten(node: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; an empty mapping stays a leaf."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run_identity(cfg: DictConfig) -> dict:
    """metrics.json's `identity`: the run key and what it covers (docs/metrics.md). `config` holds every
    identity key but the seed and the sample limits, flattened, so tables tell configurations apart."""
    prints, source = fingerprints(cfg), weights_source(cfg.model)
    config = _flatten(_identity(cfg))
    samples = {k: cfg.data.get(k) or cfg.task.get(k) for k in SAMPLE_LIMITS}
    for key in ("seed", *(f"{node}.{k}" for node in ("data", "task") for k in SAMPLE_LIMITS)):
        config.pop(key, None)
    return {
        "key": run_key(cfg),
        "config": config,
        "samples": samples,
        "data": {"root": str(Path(cfg.data.root).expanduser().resolve()), "splits": prints["data"]},
        "weights": {"source": str(source) if source else "random init from model.tiny and seed", **prints["weights"]},
    }


def run_status(cfg: DictConfig) -> tuple[Path, str]:
    """(run directory, what a dry run says of it): done / failed / running / "to run" (no metrics yet), and
    "done, forced: to run" under results.force=true; without its data or weights the key is unknown:
    (its folder up to the key, "to run, data absent" / "to run, weights absent")."""
    try:
        directory = run_dir(cfg)
    except MissingInput as missing:
        return run_parent(cfg) / f"s{cfg.seed}-?", f"to run, {missing.what} absent"
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


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(_json_safe(obj), indent=2, sort_keys=False) + "\n")


def read_metrics(directory: Path) -> dict | None:
    """A run's metrics.json; None when it is missing or not a JSON object (a corrupt file)."""
    path = directory / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def error_line(error: BaseException) -> str:
    """`Type: first line of the message`: how a failure is recorded and shown."""
    message = str(error).splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def record_failure(directory: Path, error: BaseException) -> None:
    """Mark a run failed, keeping the epochs it finished. A done run is never touched; a results folder
    that cannot be written (often the failure itself) is left as it is."""
    previous = read_metrics(directory) or {}
    if previous.get("status") == "done":
        return
    with suppress(OSError):
        write_json(directory / "metrics.json", previous | {"status": "failed", "error": error_line(error)})


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
