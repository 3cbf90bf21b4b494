"""Where the configs live, composing one outside (or inside) the Hydra app, and reading a run's saved one."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ptv2.errors import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# What a run made before a key existed computed (schema_version 1): a saved config.yaml without the key
# is read with these values, so old run folders are rebuilt as they trained.
LEGACY_DEFAULTS = {
    "head_pool": "cls",                 # heads read the raw [CLS] state
    "prompt.shift_positions": False,
    "task.template": 1,                 # WiC: the word-prefixed pair for every backbone
    "task.rank_by": "probability",      # ReCoRD: candidates by their softmax probability
    "task.label_match": "normalized",   # ReCoRD: SQuAD-normalised matching of candidates to answers
    "train.packing": False,
    "train.compile": False,
}


def compose_config(overrides: list[str]) -> DictConfig:
    """The config a plain ``ptv2-train OVERRIDES`` would run (inside the Hydra app or outside it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if GlobalHydra.instance().is_initialized():
        # hydra.searchpath (the user's own conf folders, e.g. hparams files) is not among the task overrides
        extra = [o for o in HydraConfig.get().overrides.hydra if o.startswith("hydra.searchpath=")] if HydraConfig.initialized() else []
        return compose(config_name="config", overrides=[*extra, *overrides])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides)


def load_run_config(path: Path) -> DictConfig:
    """A run's saved config.yaml, keys it predates filled with what they meant then (LEGACY_DEFAULTS); one
    UserError line for a file that is not a ptv2 run config."""
    try:
        cfg = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not a readable config: {str(error).splitlines()[0]}") from None
    if not isinstance(cfg, DictConfig) or not {"model", "task", "method", "train"} <= set(cfg):
        raise UserError(f"{path} is not a ptv2 run config (no model/task/method/train): run=... must be a run directory")
    for dotted, value in LEGACY_DEFAULTS.items():
        parent, _, leaf = dotted.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is not None and leaf not in node:
            OmegaConf.update(cfg, dotted, value, force_add=True)
    return cfg
