"""Multi-task P-Tuning v2 (MPT-2, paper Table 3): deep prompts shared across a family's datasets.

Stage 1 trains ONE deep prompt on the union of the datasets' training sets, with a separate head per
dataset; stage 2 trains each dataset on its own, starting from those prompts (and its stage-1 head).
Both stages are ordinary runs of the one loop (``ptv2.train.run``); what makes stage 1 multi-task is
only what the loop is handed:

- ``MultiTask``: a Task over several tasks. Records and features carry ``task_id``; its metrics are
  each dataset's metrics as ``<task>/<metric>`` plus ``mean_primary`` (the mean of the datasets'
  primary metrics), the stage's primary metric, so the loop's best epoch is chosen on that mean.
- ``ptv2.data.TaskBatches``: the training batch sampler - each batch from one dataset, the dataset drawn
  per batch in proportion to its training batches (or to size^(1/T)); ``in_order_batches`` for eval.
- ``heads.MultiTaskHeads`` (head kind ``multi``): one head per dataset, chosen by ``batch["task_id"]``;
  the model's one ``DeepPrompt`` is therefore shared by construction.

The driver behind ``ptv2-train multitask=<family>`` (stage configs, both stages) is ``ptv2.mpt2``. Stage 1
leaves a reusable artifact in its run dir (``export_prompt``): ``prompt.safetensors`` (prompt parameters
incl. the MLP, and the computed per-layer k/v), ``prompt.json`` (what it fits) and ``heads.safetensors``;
``prompt.init_from=PATH`` loads it into any later pt2 run (``init_prompt_from``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from ptv2.errors import UserError
from ptv2.model import load_head_state
from ptv2.prompts.deep import format_depth_range, resolve_depth_range
from ptv2.tasks.base import Task, build_task

PRIMARY = "mean_primary"
ARTIFACT_FILES = ("prompt.safetensors", "prompt.json", "heads.safetensors")


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
        weights = [
            v for k, v in tensors.items() if k.startswith(f"head.heads.{name}.") and v.dim() == 2 and ".pooler." not in k
        ]
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
    if prompt.kind != "deep":
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
        load_head_state(model.head, {k.removeprefix(prefix): v for k, v in heads.items() if k.startswith(prefix)}, str(heads_path))
    return meta.get("stage1_run") or str(weights.parent)


def _num_labels(model) -> int:
    """The output width of a single-task head (its last Linear)."""
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1].out_features if linears else -1
