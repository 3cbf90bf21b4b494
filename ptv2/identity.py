"""What a run's result depends on beyond its config: the data files it reads and the weights it starts from.

Both are fingerprinted by content: each file's size and SHA-256, named relative to `data.root` (data) or to
the weights folder (weights). The same files in another place give the same fingerprint (and run key);
other files under the same path do not. Hashes are cached by (absolute path, size, mtime) in
`<results.root>/.cache/fingerprints.json`, so a large file is hashed once, not at every run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from contextlib import suppress
from pathlib import Path

from omegaconf import DictConfig

from ptv2.atomic import write_atomic
from ptv2.errors import UserError
from ptv2.hub import hub_reachable

CACHE_FILE = Path(".cache") / "fingerprints.json"
# What transformers reads from a weights folder: configs and tokenizer files, and the weights themselves
# (safetensors when the folder has them, else the PyTorch .bin files; TF/Flax/ONNX copies are never read).
_CONFIG_SUFFIXES = (".json", ".txt", ".model")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_memo: dict[str, str] = {}  # "<absolute path>|<size>|<mtime_ns>" -> sha256, for this process


class MissingInput(UserError):
    """Data or weights a run needs are not there; ``what`` is "data" or "weights" (a dry run says which)."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(message)
        self.what = what


# -- where a run's inputs come from ------------------------------------------------------------------------
def split_path(task_cfg: DictConfig, data_root: str | Path, split: str) -> Path:
    # task.path and task.files.<split> may be absolute (pathlib then drops what stands before them)
    return Path(data_root).expanduser() / Path(task_cfg.path).expanduser() / Path(task_cfg.files[split]).expanduser()


def split_source(task_cfg: DictConfig, data_root: str | Path, split: str) -> Path | None:
    """The file a split is read from; None when it is absent and comes from the hub instead."""
    path = split_path(task_cfg, data_root, split)
    if path.exists():
        return path
    if task_cfg.get("hub") and hub_reachable():
        return None
    where = Path(task_cfg.path)
    hint = ("task.path is absolute: check it and task.files.<split>" if where.is_absolute()
            else f"or pass data.root=/folder/holding/{where.parts[0]}, or task.path=/absolute/folder")
    raise MissingInput("data", f"missing {path} for task={task_cfg.name}: put the {task_cfg.path} files there ({hint})")


def weights_source(model_cfg: DictConfig) -> Path | str | None:
    """A local weights folder (`model.path`, or an installed package's), else the hub id when the hub is
    reachable; None for a tiny random backbone built from `model.tiny`. MissingInput when there is none."""
    if model_cfg.get("path"):
        path = Path(model_cfg.path).expanduser()
        if not (path / "config.json").is_file():
            raise MissingInput(
                "weights", f"model.path={path} has no config.json: point it at a directory of {model_cfg.name} weights"
            )
        return path
    if model_cfg.get("tiny"):
        return None
    if model_cfg.get("package"):
        spec = importlib.util.find_spec(model_cfg.package)
        if spec is None or not spec.submodule_search_locations:
            raise MissingInput("weights", f"model={model_cfg.name} needs its weights package: {model_cfg.install_hint}")
        return Path(spec.submodule_search_locations[0]) / model_cfg.get("package_subdir", "")
    if model_cfg.get("hub_id") and hub_reachable():
        return str(model_cfg.hub_id)
    raise MissingInput(
        "weights",
        f"no weights for model={model_cfg.name}: pass model.path=/dir/with/{model_cfg.name} (config.json + weights)"
        + (f" or make the hub reachable for {model_cfg.hub_id}" if model_cfg.get("hub_id") else ""),
    )


# -- fingerprints ----------------------------------------------------------------------------------------
class _HashCache:
    """SHA-256 of files, remembered by (absolute path, size, mtime) in memory and in the results folder."""

    def __init__(self, results_root: str | Path) -> None:
        self.path = Path(results_root).expanduser() / CACHE_FILE
        self.added = False
        try:
            self.stored = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.stored = {}
        if not isinstance(self.stored, dict):
            self.stored = {}

    def file(self, path: Path) -> dict:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        self.added |= key not in self.stored
        digest = self.stored.get(key) or _memo.get(key) or _sha256(path)
        _memo[key] = self.stored[key] = digest
        return {"bytes": stat.st_size, "sha256": digest}

    def save(self) -> None:
        if not self.added:
            return
        with suppress(OSError):  # a read-only results folder: hashing again next time is the only cost
            write_atomic(self.path, json.dumps(self.stored, indent=0, sort_keys=True))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 23):
            digest.update(chunk)
    return digest.hexdigest()


def _run_tasks(cfg: DictConfig) -> dict[str, DictConfig]:
    """The task configs whose files the run reads: the task, or every dataset of an MPT-2 stage 1."""
    tasks = cfg.task.get("tasks")
    return dict(tasks) if tasks else {"": cfg.task}


def data_fingerprint(cfg: DictConfig, cache: _HashCache) -> dict[str, dict]:
    """Per split the run reads (train and the evaluated splits): its file (path relative to data.root, size,
    SHA-256), or the hub dataset it comes from. Splits a task derives from another file have no entry."""
    fingerprint = {}
    for prefix, task in _run_tasks(cfg).items():
        for split in dict.fromkeys(["train", *cfg.task.eval_splits]):
            derived = split == "dev" and task.get("dev_fraction")  # carved out of train: train's entry covers it
            if split not in (task.get("files") or {}) or derived:
                continue
            source = split_source(task, cfg.data.root, split)
            name = f"{prefix}/{split}" if prefix else split
            if source is None:
                fingerprint[name] = {"hub": f"{task.hub.path}/{task.hub.get('name') or ''}", "split": task.hub.splits[split]}
            else:
                fingerprint[name] = {"file": str(Path(task.path) / task.files[split]), **cache.file(source)}
    return fingerprint


def _weight_files(folder: Path, random_init: bool) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    chosen = [p for p in files if p.suffix in _CONFIG_SUFFIXES]
    if not random_init:  # a random-init control reads the config and tokenizer only
        weights = [p for p in files if p.suffix == ".safetensors"] or [p for p in files if p.suffix == ".bin"]
        chosen += weights
    return chosen


def weights_fingerprint(cfg: DictConfig, cache: _HashCache) -> dict:
    """The weights folder's config, tokenizer and weight files (size, SHA-256); the hub id; or, for a tiny
    random backbone, nothing beyond its config and seed (both in the run's config already)."""
    source = weights_source(cfg.model)
    if source is None:
        return {"tiny": True}
    if isinstance(source, str):
        return {"hub_id": source}
    return {"files": {p.name: cache.file(p) for p in _weight_files(source, bool(cfg.model.get("random_init")))}}


def fingerprints(cfg: DictConfig) -> dict:
    """{"data": ..., "weights": ...}: content only, no locations, so the run key does not depend on them.
    MissingInput when the data or the weights are absent."""
    cache = _HashCache(cfg.results.root)
    try:
        return {"data": data_fingerprint(cfg, cache), "weights": weights_fingerprint(cfg, cache)}
    finally:
        cache.save()
