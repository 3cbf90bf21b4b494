"""Multi-task P-Tuning v2 (MPT-2, paper Table 3): deep prompts shared across a family's datasets.

Stage 1 trains ONE deep prompt on the union of the datasets' training sets, with a separate head per
dataset; stage 2 trains each dataset on its own, starting from those prompts (and its stage-1 head).
Both stages are ordinary runs of the one loop (``ptv2.train.run``); what makes stage 1 multi-task is
only what the loop is handed:

- ``MultiTask``: a Task over several tasks. Records and features carry ``task_id``; its metrics are
  each dataset's metrics as ``<task>/<metric>`` plus ``mean_primary`` (the mean of the datasets'
  primary metrics), the stage's primary metric, so the loop's best epoch is chosen on that mean.
- ``TaskBatches``: the training batch sampler - each batch from one dataset, the dataset drawn per
  batch in proportion to its training batches (or to size^(1/T)); ``in_order_batches`` for eval.
- ``heads.MultiTaskHeads`` (head kind ``multi``): one head per dataset, chosen by ``batch["task_id"]``;
  the model's one ``DeepPrompt`` is therefore shared by construction.

``run_family`` is the driver behind ``ptv2-train multitask=<family>``: it composes each stage's config
and calls the loop. Stage 1 leaves a reusable artifact in its run dir: ``prompt.safetensors`` (prompt
parameters incl. the MLP, and the computed per-layer k/v), ``prompt.json`` (what it fits) and
``heads.safetensors``; ``prompt.init_from=PATH`` loads it into any later pt2 run (``init_prompt_from``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch.utils.data import Sampler

from ptv2.data import LengthGroupedSampler, RandomBatches
from ptv2.errors import UserError
from ptv2.prompts.deep import DeepPrompt, format_depth_range, resolve_depth_range
from ptv2.tasks.base import Task, build_task

PRIMARY = "mean_primary"
ARTIFACT_FILES = ("prompt.safetensors", "prompt.json", "heads.safetensors")


# -- sampling --------------------------------------------------------------------------------------
def sampling_probabilities(num_batches: list[int], sizes: list[int], sampling: str, temperature: float) -> list[float]:
    """Per-dataset probability of drawing the next batch: proportional to its training batches, or
    ``temperature``: to size^(1/T) (T > 1 flattens towards uniform, so small datasets are seen more)."""
    if sampling == "proportional":
        weights = [float(n) for n in num_batches]
    elif sampling == "temperature":
        if temperature <= 0:
            raise UserError(f"multitask.temperature={temperature} must be positive")
        weights = [float(n) ** (1.0 / temperature) for n in sizes]
    else:
        raise UserError(f"multitask.sampling={sampling!r}: use proportional or temperature")
    total = sum(weights)
    return [w / total for w in weights]


class TaskBatches(Sampler[list[int]]):
    """Training batches over concatenated datasets, each batch from ONE dataset (indices are global).

    An epoch has as many batches as the datasets have together; each step draws a dataset with
    ``sampling_probabilities`` and takes its next batch from that dataset's own shuffled order (the
    loop's usual RandomBatches / LengthGroupedSampler), reshuffled when used up. Everything is a
    function of seed + epoch, so a resumed epoch replays the same batches.
    """

    def __init__(
        self, task_ids: list[int], lengths: list[int], batch_size: int, seed: int, group_by_length: bool,
        sampling: str = "proportional", temperature: float = 2.0,
    ) -> None:
        self.groups: list[list[int]] = [[] for _ in range(max(task_ids) + 1)]
        for i, t in enumerate(task_ids):
            self.groups[t].append(i)
        self.seed, self.epoch = seed, 0
        self.samplers = [
            LengthGroupedSampler([lengths[i] for i in g], batch_size, seed + 7919 * t)
            if group_by_length else RandomBatches(len(g), batch_size, seed + 7919 * t)
            for t, g in enumerate(self.groups)
        ]
        self.probabilities = sampling_probabilities(
            [len(s) for s in self.samplers], [len(g) for g in self.groups], sampling, temperature
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _stream(self, t: int) -> Iterator[list[int]]:
        sampler, group, cycle = self.samplers[t], self.groups[t], 0
        while True:  # a dataset drawn more often than it has batches starts a new shuffle of itself
            sampler.set_epoch(self.epoch * 100_003 + cycle)
            for batch in sampler:
                yield [group[i] for i in batch]
            cycle += 1

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        streams = [self._stream(t) for t in range(len(self.groups))]
        datasets = rng.choices(range(len(self.groups)), weights=self.probabilities, k=len(self))
        return iter([next(streams[t]) for t in datasets])

    def __len__(self) -> int:
        return sum(len(s) for s in self.samplers)


def in_order_batches(task_ids: list[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches in feature order that never cross from one dataset into the next."""
    batches: list[list[int]] = []
    for i, t in enumerate(task_ids):
        if not batches or len(batches[-1]) == batch_size or task_ids[batches[-1][0]] != t:
            batches.append([])
        batches[-1].append(i)
    return batches


# -- the multi-task Task -------------------------------------------------------------------------
class MultiTask(Task):
    """The union of ``cfg.tasks`` (name -> task config). Records wrap the datasets' own records."""

    head = "multi"

    def __init__(self, cfg: DictConfig, data_root, tokenizer) -> None:
        super().__init__(cfg, data_root, tokenizer)
        self.tasks = [build_task(sub, data_root, tokenizer) for sub in cfg.tasks.values()]
        # Sample caps apply per dataset (the loop's data.max_*_samples would cut the union to its first dataset).
        self.limits = {"train": cfg.get("max_train_samples"), "eval": cfg.get("max_eval_samples")}

    @property
    def num_labels(self) -> dict[str, tuple[str, int]]:  # type: ignore[override]
        """Per dataset (head kind, num_labels), in task_id order: what ``MultiTaskHeads`` builds."""
        return {t.name: (t.cfg.get("head") or t.head, t.num_labels) for t in self.tasks}

    def read(self, split: str) -> list[dict]:
        limit = self.limits["train" if split == "train" else "eval"]
        records = []
        for task_id, task in enumerate(self.tasks):
            own = task.read(split)[:limit] if limit else task.read(split)
            records += [{"task_id": task_id, "index": i, "record": r} for i, r in enumerate(own)]
        return records

    def encode(self, record: dict, index: int, split: str) -> list[dict]:
        features = self.tasks[record["task_id"]].encode(record["record"], record["index"], split)
        for feature in features:  # example_index stays the dataset's own: its metrics index its own records
            feature["task_id"] = record["task_id"]
        return features

    def _split(self, records, features, outputs) -> Iterator[tuple[Task, list, list, list]]:
        for task_id, task in enumerate(self.tasks):
            own = [(f, o) for f, o in zip(features, outputs, strict=True) if f["task_id"] == task_id]
            yield (
                task, [r["record"] for r in records if r["task_id"] == task_id], [f for f, _ in own], [o for _, o in own]
            )

    def metrics(self, records, features, outputs):
        result, primaries = {}, []
        for task, own_records, own_features, own_outputs in self._split(records, features, outputs):
            metrics = task.metrics(own_records, own_features, own_outputs)
            result |= {f"{task.name}/{k}": v for k, v in metrics.items()}
            primaries.append(metrics[task.cfg.primary_metric])
        result[PRIMARY] = sum(primaries) / len(primaries)
        return result

    def predictions(self, records, features, outputs):
        result = {}
        for task, *own in self._split(records, features, outputs):
            try:
                result[task.name] = task.predictions(*own)
            except NotImplementedError:
                continue
        if not result:
            raise NotImplementedError
        return result


# -- the prompt artifact ---------------------------------------------------------------------------
def _artifact_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """(prompt.safetensors, prompt.json, heads.safetensors) from a stage-1 run dir or one of its files."""
    path = Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    files = tuple(folder / name for name in ARTIFACT_FILES)
    if not path.exists() or not files[0].is_file() or not files[1].is_file():
        raise UserError(
            f"prompt.init_from={path}: no prompt.safetensors + prompt.json there; "
            "point it at an MPT-2 stage-1 run dir (results/.../mpt-<family>/<model>/mpt2/<key>)"
        )
    return files  # type: ignore[return-value]


def export_prompt(run_directory: Path, cfg: DictConfig, num_layers: int) -> None:
    """Split the stage-1 best-epoch ``prompt_head.safetensors`` into the reusable artifact."""
    source = run_directory / "prompt_head.safetensors"
    if not source.is_file():  # already exported (a re-run of a finished stage 1)
        return
    tensors = load_file(source)
    prompt = {k: v for k, v in tensors.items() if k.startswith("prompt.")}
    prefix = prompt["prompt.computed_prefix"]  # [layers, 2, heads, P, head_dim]
    layers = resolve_depth_range(cfg.depth_range.select, num_layers, cfg.depth_range.get("k"), cfg.depth_range.get("layers"))
    meta = {
        "backbone": cfg.model.name,
        "num_layers": num_layers,
        "layers": layers,
        "depth_range": format_depth_range(layers),
        "prompt_length": int(cfg.prompt_length),
        "reparam": cfg.reparam.type,
        "mlp_hidden_size": int(prompt["prompt.mlp.0.weight"].shape[0]) if cfg.reparam.type == "mlp" else None,
        "hidden_size": int(prefix.shape[2] * prefix.shape[4]),
        "num_heads": int(prefix.shape[2]),
        "head_dim": int(prefix.shape[4]),
        "heads": _head_specs(cfg, tensors),
        "stage1_run": str(run_directory),
    }
    save_file(prompt, str(run_directory / "prompt.safetensors"))
    save_file({k: v for k, v in tensors.items() if k.startswith("head.")}, str(run_directory / "heads.safetensors"))
    (run_directory / "prompt.json").write_text(json.dumps(meta, indent=2) + "\n")
    source.unlink()  # the same tensors now live in the two files above


def _head_specs(cfg: DictConfig, tensors: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Each stage-1 head's kind (its task YAML's head) and output width (its Linear's rows), as
    ``init_prompt_from`` compares them with a later run's head."""
    specs = {}
    for name, sub in cfg.task.tasks.items():
        weights = [v for k, v in tensors.items() if k.startswith(f"head.heads.{name}.") and v.dim() == 2]
        specs[name] = {"kind": sub.get("head"), "num_labels": int(weights[-1].shape[0]) if weights else -1}
    return specs


def init_prompt_from(path: str | Path, cfg: DictConfig, model, head_kind: str) -> str:
    """Load a saved prompt (and this task's stage-1 head, when it has one of the same shape) into ``model``.

    Refuses with one line naming the mismatch when the prompt does not fit this run. Returns the
    stage-1 run dir it came from (metrics.json's ``stage1_run``).
    """
    weights, meta_path, heads_path = _artifact_paths(path)
    meta = json.loads(meta_path.read_text())
    prompt = model.prompt
    if not isinstance(prompt, DeepPrompt):
        raise UserError(f"prompt.init_from needs deep prompts (method=pt2), not method={cfg.method.name}")
    here = {
        "backbone": (cfg.model.name, f"model={meta['backbone']}"),
        "num_layers": (model.encoder.config.num_hidden_layers, f"a backbone with {meta['num_layers']} layers"),
        "hidden_size": (prompt.num_heads * prompt.head_dim, f"a backbone of hidden size {meta['hidden_size']}"),
        "layers": (prompt.layers, f"depth_range.layers={meta['depth_range']}"),
        "prompt_length": (prompt.prompt_length, f"prompt_length={meta['prompt_length']}"),
        "reparam": (prompt.reparam, f"reparam={meta['reparam']}"),
    }
    if prompt.reparam == "mlp":
        here["mlp_hidden_size"] = (prompt.mlp[0].out_features, f"reparam.hidden_size={meta['mlp_hidden_size']}")
    for key, (value, fix) in here.items():
        if meta.get(key) != value:
            shown = format_depth_range(value) if key == "layers" else value
            there = meta.get("depth_range") if key == "layers" else meta.get(key)
            raise UserError(f"prompt.init_from={path} does not fit this run: {key} {there} there, {shown} here (use {fix})")
    tensors = load_file(str(weights))
    state = {k.removeprefix("prompt."): v for k, v in tensors.items() if k != "prompt.computed_prefix"}
    prompt.load_state_dict(state)
    # Stage 2: this dataset's own stage-1 head, when the run uses the same kind of head over the same labels.
    stage1_head = meta.get("heads", {}).get(cfg.task.name)
    if stage1_head and heads_path.is_file() and stage1_head == {"kind": head_kind, "num_labels": _num_labels(model)}:
        prefix = f"head.heads.{cfg.task.name}."
        heads = load_file(str(heads_path))
        model.head.load_state_dict({k.removeprefix(prefix): v for k, v in heads.items() if k.startswith(prefix)})
    return meta.get("stage1_run") or str(weights.parent)


def _num_labels(model) -> int:
    """The output width of a single-task head (its last Linear)."""
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1].out_features if linears else -1


# -- the two-stage driver --------------------------------------------------------------------------
def is_multitask(cfg: DictConfig) -> bool:
    return OmegaConf.select(cfg, "multitask.name", default="none") != "none"


def _compose(overrides: list[str]) -> DictConfig:
    """The config a plain ``ptv2-train OVERRIDES`` would run (inside the Hydra app or outside it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ptv2.config import CONF_DIR

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides)


def _user_overrides(overrides: list[str]) -> list[str]:
    """The user's overrides minus the ones the driver sets per stage (task, multitask)."""
    keep = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] not in ("task", "multitask"):
            keep.append(o)
    return keep


def family_tasks(cfg: DictConfig) -> list[str]:
    names = list(cfg.multitask.tasks) + list(cfg.multitask.get("extra_tasks") or [])
    if len(names) < 2:
        raise UserError(
            f"multitask={cfg.multitask.name} needs at least two tasks, got {names}: pass multitask.tasks=[rte,cb]"
        )
    if len(set(names)) != len(names):
        raise UserError(f"multitask.tasks lists a task twice: {names}")
    return names


def stage1_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """Stage 1 as one loop run: the family's first dataset's settings, a MultiTask over all of them."""
    if cfg.method.prompt != "deep":
        raise UserError(f"multitask={cfg.multitask.name} shares deep prompts: use method=pt2, not method={cfg.method.name}")
    names, user = family_tasks(cfg), _user_overrides(overrides)
    per_task = {}
    for name in names:
        from ptv2.config import CONF_DIR

        if not (CONF_DIR / "task" / f"{name}.yaml").is_file():
            raise UserError(f"multitask.tasks: unknown task {name!r} (no conf/task/{name}.yaml)")
        task_cfg = _compose([*user, f"task={name}"]).task
        extra = (cfg.multitask.get("task_overrides") or {}).get(name) or {}
        per_task[name] = OmegaConf.merge(task_cfg, extra)
    base = OmegaConf.to_container(_compose([*user, f"task={names[0]}"]), resolve=True)
    families = sorted({t.family for t in per_task.values()})
    base["task"] = {
        "name": f"mpt-{cfg.multitask.name}",
        "family": families[0] if len(families) == 1 else "mixed",
        "class": "ptv2.multitask.MultiTask",
        "head": "multi",
        "primary_metric": PRIMARY,
        "report_split": "dev",
        "eval_splits": ["dev"],
        "tasks": {n: OmegaConf.to_container(c, resolve=True) for n, c in per_task.items()},
        "max_train_samples": base["data"]["max_train_samples"],
        "max_eval_samples": base["data"]["max_eval_samples"],
    }
    base["data"]["max_train_samples"] = base["data"]["max_eval_samples"] = None
    base["multitask"] = OmegaConf.to_container(cfg.multitask, resolve=True)
    base["method"]["name"] = "mpt2"
    base["head"] = None
    for key, value in (cfg.multitask.get("stage1") or {}).items():
        if value is not None:
            base["train"][key] = value
    return OmegaConf.create(base)


def stage2_config(name: str, stage1_dir: Path, overrides: list[str]) -> DictConfig:
    """Stage 2 for one dataset: the plain pt2 run of it, started from the stage-1 prompt, method mpt2."""
    stage2 = _compose([*_user_overrides(overrides), f"task={name}"])
    OmegaConf.update(stage2, "prompt.init_from", str(stage1_dir))
    OmegaConf.update(stage2, "method.name", "mpt2")
    return stage2


def run_family(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """``ptv2-train multitask=<family>``: stage 1 (shared prompt) then stage 2 for each dataset."""
    from ptv2.results import read_metrics, run_dir
    from ptv2.train import run

    overrides = list(overrides or [])
    stage = str(cfg.multitask.get("stage", "both"))
    if stage not in ("both", "1", "2"):
        raise UserError(f"multitask.stage={stage}: use both, 1 or 2")

    def attempt(stage_cfg: DictConfig) -> dict:
        record = run(stage_cfg, overrides=overrides)  # records its own failure in its run dir
        print(f"metrics: {run_dir(stage_cfg) / 'metrics.json'}")
        return record

    stage1 = stage1_config(cfg, overrides)
    stage1_dir = run_dir(stage1)
    result: dict = {"stage1": None, "stage2": {}}
    if stage in ("both", "1"):
        result["stage1"] = attempt(stage1)
        export_prompt(stage1_dir, stage1, result["stage1"]["num_layers"])
    if stage in ("both", "2"):
        done = read_metrics(stage1_dir)
        if not done or done.get("status") != "done" or not (stage1_dir / "prompt.json").is_file():
            raise UserError(f"multitask.stage=2 needs a finished stage 1 in {stage1_dir}: run multitask.stage=1 (or both) first")
        for name in stage1.task.tasks:
            result["stage2"][name] = attempt(stage2_config(name, stage1_dir, overrides))
    return result
