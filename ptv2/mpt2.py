"""The MPT-2 driver (``ptv2-train multitask=<family>``, paper Table 3): stage 1 trains one deep prompt on
the union of a family's datasets (a ``ptv2.multitask.MultiTask`` run of the loop), stage 2 trains each
dataset from that prompt. Both stages are ordinary ``ptv2.train.run`` calls with composed configs.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ptv2.config import CONF_DIR, compose_config
from ptv2.errors import UserError
from ptv2.multitask import PRIMARY, export_prompt
from ptv2.results import read_metrics, run_dir
from ptv2.train import run


def is_multitask(cfg: DictConfig) -> bool:
    return OmegaConf.select(cfg, "multitask.name", default="none") != "none"


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
        if not (CONF_DIR / "task" / f"{name}.yaml").is_file():
            raise UserError(f"multitask.tasks: unknown task {name!r} (no conf/task/{name}.yaml)")
        task_cfg = compose_config([*user, f"task={name}"]).task
        extra = (cfg.multitask.get("task_overrides") or {}).get(name) or {}
        per_task[name] = OmegaConf.merge(task_cfg, extra)
    base = OmegaConf.to_container(compose_config([*user, f"task={names[0]}"]), resolve=True)
    base["task"] = _family_task(cfg.multitask.name, per_task, base["data"])
    base["data"]["max_train_samples"] = base["data"]["max_eval_samples"] = None
    base["multitask"] = OmegaConf.to_container(cfg.multitask, resolve=True)
    base["prompt_length"] = family_prompt_length(cfg, overrides, base["prompt_length"])
    base["method"]["name"] = "mpt2"
    base["head"] = None
    for key, value in (cfg.multitask.get("stage1") or {}).items():
        if value is not None:
            base["train"][key] = value
    return OmegaConf.create(base)


def _family_task(family: str, per_task: dict[str, DictConfig], data: dict) -> dict:
    """The task node of stage 1: a MultiTask over the datasets, its sample caps applied per dataset."""
    families = sorted({t.family for t in per_task.values()})
    return {
        "name": f"mpt-{family}",
        "family": families[0] if len(families) == 1 else "mixed",
        "class": "ptv2.multitask.MultiTask",
        "head": "multi",
        "primary_metric": PRIMARY,
        "report_split": "dev",
        "eval_splits": ["dev"],
        "tasks": {n: OmegaConf.to_container(c, resolve=True) for n, c in per_task.items()},
        "max_train_samples": data["max_train_samples"],
        "max_eval_samples": data["max_eval_samples"],
    }


# The prompt's shape: stage 2 starts from the stage-1 prompt, so every dataset keeps stage 1's.
PROMPT_SHAPE_KEYS = ("prompt_length", "reparam", "depth_range")


def family_prompt_length(cfg: DictConfig, overrides: list[str], first_dataset_value: int) -> int:
    """One prompt length for the whole family: a command-line ``prompt_length=`` wins, then
    ``multitask.prompt_length``, then the family's first dataset's own default (its hparams file)."""
    if any(o.split("=", 1)[0].lstrip("+~") == "prompt_length" for o in overrides):
        return first_dataset_value  # composed from the command line already
    family_value = cfg.multitask.get("prompt_length")
    return int(family_value) if family_value is not None else first_dataset_value


def stage2_config(name: str, stage1: DictConfig, stage1_dir: Path, overrides: list[str]) -> DictConfig:
    """Stage 2 for one dataset: the plain pt2 run of it, started from the stage-1 prompt, method mpt2,
    with stage 1's prompt shape (the dataset's own defaults may differ: conll04 P=144 vs conll03 P=11)."""
    stage2 = compose_config([*_user_overrides(overrides), f"task={name}"])
    for key in PROMPT_SHAPE_KEYS:
        OmegaConf.update(stage2, key, stage1[key], merge=False)
    OmegaConf.update(stage2, "prompt.init_from", str(stage1_dir))
    OmegaConf.update(stage2, "method.name", "mpt2")
    return stage2


def family_runs(cfg: DictConfig, overrides: list[str]) -> list[tuple[str, DictConfig]]:
    """(label, config) of stage 1 and of every stage-2 run, in training order (also for dry runs)."""
    stage1 = stage1_config(cfg, overrides)
    stage1_dir = run_dir(stage1)
    return [("stage 1", stage1)] + [
        ("stage 2", stage2_config(name, stage1, stage1_dir, overrides)) for name in stage1.task.tasks
    ]


def run_family(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """``ptv2-train multitask=<family>``: stage 1 (shared prompt) then stage 2 for each dataset."""
    overrides = list(overrides or [])
    stage = str(cfg.multitask.get("stage", "both"))
    if stage not in ("both", "1", "2"):
        raise UserError(f"multitask.stage={stage}: use both, 1 or 2")

    def attempt(stage_cfg: DictConfig) -> dict:
        record = run(stage_cfg, overrides=overrides)  # records its own failure in its run dir
        print(f"metrics: {run_dir(stage_cfg) / 'metrics.json'}")
        return record

    (_, stage1), *stage2_runs = family_runs(cfg, overrides)
    stage1_dir = run_dir(stage1)
    result: dict = {"stage1": None, "stage2": {}}
    if stage in ("both", "1"):
        result["stage1"] = attempt(stage1)
        export_prompt(stage1_dir, stage1, result["stage1"]["num_layers"])
    if stage in ("both", "2"):
        done = read_metrics(stage1_dir)
        if not done or done.get("status") != "done" or not (stage1_dir / "prompt.json").is_file():
            raise UserError(f"multitask.stage=2 needs a finished stage 1 in {stage1_dir}: run multitask.stage=1 (or both) first")
        for _, stage2 in stage2_runs:
            result["stage2"][stage2.task.name] = attempt(stage2)
    return result
