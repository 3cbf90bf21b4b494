"""One validated config before any work: the schema of every config group and key.

`validate` runs right after Hydra composes a job's config, before any data or weights are read, and turns
the first problem into one line (exit 2): a wrong type or range, a value outside its choices, an unknown key
(a typo, with or without `+`), a device this machine cannot run, an interpolation that does not resolve.

A key is one line in its node's class below, `name: Rule`. `train`, `results`, `data`, `prompt`, `method`,
`reparam`, `depth_range`, `multitask` and the top level are strict (unknown keys are errors); `task` and
`model` nodes are typed where a key is known and accept others, so a new task YAML can bring its own keys.
Validation is pydantic's (already installed with transformers' hub client); each Rule checks the value as
Hydra parsed it, without coercing: `seed=abc` stays a string and is refused.
"""

import difflib
import math
import re
from collections.abc import Callable
from typing import Annotated, Any, get_args

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ptv2.errors import UserError
from ptv2.heads import HEADS
from ptv2.prompts.attention import ATTENTION_IMPLEMENTATIONS
from ptv2.prompts.deep import parse_layer_range
from ptv2.tiny import TINY_KINDS


# -- rules: a key's type and range in one -------------------------------------------------------------------
def spell(value: Any) -> str:
    """A value as it is written on the command line: true, null, [a,b]."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(spell(v) for v in value) + "]"
    return str(value)


def rule(description: str, test: Callable[[Any], bool], optional: bool = False) -> Any:
    """A value ``test`` accepts (or null when ``optional``); else "<key>=<value> must be <description>"."""

    def check(value: Any) -> Any:
        if (value is None and optional) or (value is not None and test(value)):
            return value
        raise ValueError(f"must be {description}{' or null' if optional else ''}")

    return Annotated[Any, AfterValidator(check)]


def choice(*options: Any) -> Any:
    """One of ``options``, compared with their types (true is not 1); None among them allows null."""
    values = [o for o in options if o is not None]
    return rule(
        "one of " + ", ".join(spell(o) for o in values),
        lambda v: any(v == o and type(v) is type(o) for o in values),
        optional=None in options,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, float) and math.isfinite(value)) or _is_int(value)


def _is_list_of(kind: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(kind(x) for x in v)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_layer_range(value: Any) -> bool:
    if value in (None, "", "all"):
        return True
    parse_layer_range(value)  # its ValueError says what is wrong (malformed, reversed)
    return True


Bool = rule("true or false", lambda v: isinstance(v, bool))
Text = rule("a string", _is_text)
OptText = rule("a string", _is_text, optional=True)
TextList = rule("a list of strings", _is_list_of(_is_text))
IntList = rule("a list of integers", _is_list_of(_is_int))
Mapping = rule("a mapping of keys", lambda v: isinstance(v, dict))
OptMapping = rule("a mapping of keys", lambda v: isinstance(v, dict), optional=True)
Int = rule("an integer", _is_int)
PositiveInt = rule("a positive integer", lambda v: _is_int(v) and v > 0)
OptPositiveInt = rule("a positive integer", lambda v: _is_int(v) and v > 0, optional=True)
PositiveNumber = rule("a positive number", lambda v: _is_number(v) and v > 0)
OptPositiveNumber = rule("a positive number", lambda v: _is_number(v) and v > 0, optional=True)
NonNegativeNumber = rule("a number >= 0", lambda v: _is_number(v) and v >= 0)
OptNonNegativeNumber = rule("a number >= 0", lambda v: _is_number(v) and v >= 0, optional=True)
Fraction = rule("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)
OpenFraction = rule("a number in (0, 1)", lambda v: _is_number(v) and 0 < v < 1, optional=True)
Dropout = rule("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1)
Seed = rule("an integer in [0, 2**32)", lambda v: _is_int(v) and 0 <= v < 2**32)
AutoSwitch = choice("auto", True, False)
OptBool = rule("true or false", lambda v: isinstance(v, bool), optional=True)
OptInt = rule("an integer", _is_int, optional=True)
OptTextList = rule("a list of strings", _is_list_of(_is_text), optional=True)
Column = rule("a column name or index", lambda v: _is_text(v) or _is_int(v), optional=True)
ColumnList = rule("a list of column names or indices", _is_list_of(lambda x: _is_text(x) or _is_int(x)), optional=True)
Workers = rule("auto or an integer >= 0", lambda v: v == "auto" or (_is_int(v) and v >= 0))
LayerRange = rule("an interval like 17-24 (1-based, inclusive)", _is_layer_range, optional=True)


def device_problem(device: Any) -> str | None:
    """Why this machine cannot run ``device`` (auto, cpu, cuda, cuda:N, mps); None when it can."""
    import torch

    if device in ("auto", "cpu"):
        return None
    if device == "mps":
        return None if torch.backends.mps.is_available() else "needs Apple's MPS, not available here: use auto or cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", str(device))
    if match is None:
        return "must be one of auto, cpu, cuda, cuda:N, mps"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU and this machine has none visible: use auto or cpu"
    if match[1] is not None and int(match[1]) >= torch.cuda.device_count():
        return f"names GPU {match[1]} but this machine has {torch.cuda.device_count()} visible"
    return None


# -- the schema -------------------------------------------------------------------------------------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class TinyBackbone(Strict):
    tokenizer: choice(*TINY_KINDS)
    config: Mapping  # free-form: transformers' config keys of the architecture


class ExpectedShape(Strict):
    num_layers: OptPositiveInt = None
    hidden_size: OptPositiveInt = None


class Model(Loose):
    name: Text
    arch: Text
    hub_id: OptText = None
    path: OptText = None
    package: OptText = None
    package_subdir: OptText = None
    install_hint: OptText = None
    has_lm_head: Bool = True
    random_init: Bool = False
    tiny: TinyBackbone | None = None
    expect: ExpectedShape | None = None


class Task(Loose):
    name: Text
    family: Text
    class_: Text = Field(alias="class")
    path: OptText = None
    files: OptMapping = None
    labels: OptTextList = None
    head: Text
    verbalizer: OptTextList = None
    primary_metric: Text
    report_split: Text
    eval_splits: TextList
    max_length: OptPositiveInt = None
    hub: OptMapping = None
    format: OptText = None
    template: Int = 1
    version_2: Bool = False
    stride: PositiveInt = 128
    n_best: PositiveInt = 20
    max_answer_length: PositiveInt = 30
    text_fields: ColumnList = None
    label_field: Column = None
    header: OptBool = None
    dev_fraction: OpenFraction = None
    token_column: OptInt = None
    tag_column: OptInt = None
    tasks: OptMapping = None  # MPT-2 stage 1: the datasets' own task configs
    max_train_samples: OptPositiveInt = None  # MPT-2 stage 1: per-dataset sample caps
    max_eval_samples: OptPositiveInt = None


class Method(Strict):
    name: Text
    prompt: choice("none", "shallow", "deep")
    freeze_backbone: Bool


class Reparam(Strict):
    type: choice("embedding", "mlp")
    hidden_size: PositiveInt = 512


class DepthRange(Strict):
    select: choice("all", "top", "bottom")
    k: OptPositiveInt = None
    layers: LayerRange = None


class Train(Strict):
    lr: PositiveNumber
    epochs: PositiveInt
    batch_size: PositiveInt
    eval_batch_size: PositiveInt
    schedule: choice("linear", "exponential", "constant")
    warmup_ratio: Fraction
    gamma: rule("a number in (0, 1]", lambda v: _is_number(v) and 0 < v <= 1)
    weight_decay: NonNegativeNumber
    max_grad_norm: OptNonNegativeNumber  # 0 or null: no clipping
    dropout: Dropout
    precision: choice("bf16", "fp32")
    attention: choice(*ATTENTION_IMPLEMENTATIONS)
    group_by_length: Bool
    compile: AutoSwitch
    compile_mode: choice("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs") = "reduce-overhead"
    compile_min_steps: rule("an integer >= 0", lambda v: _is_int(v) and v >= 0) = 3000
    packing: AutoSwitch = "auto"
    lean_norms: Bool = False
    pad_to_multiple_of: PositiveInt
    num_workers: Workers
    device: Text
    progress: Bool
    gpu_per_job: Bool
    logger: choice("none", "tensorboard", "wandb") = "none"

    @field_validator("device")
    @classmethod
    def _runnable_here(cls, device: str, info: ValidationInfo) -> str:
        problem = device_problem(device) if (info.context or {}).get("check_device", True) else None
        if problem:
            raise ValueError(problem)
        return device


class Stage1(Loose):
    """Stage-1 train.* settings (null = the family's first dataset's value): any train key."""

    epochs: OptPositiveInt = None
    lr: OptPositiveNumber = None

    @model_validator(mode="after")
    def _train_keys_only(self) -> "Stage1":
        unknown = sorted(set(self.model_extra or {}) - set(Train.model_fields))
        if unknown:
            raise ValueError(f"sets {unknown[0]!r}, which is not a train.* key")
        return self


class Multitask(Strict):
    name: Text
    tasks: TextList
    extra_tasks: TextList = []
    task_overrides: Mapping = {}
    sampling: choice("proportional", "temperature") = "proportional"
    temperature: PositiveNumber = 2.0
    stage: choice("both", 1, 2, "1", "2") = "both"
    stage1: Stage1 | None = None
    prompt_length: OptPositiveInt = None


class Prompt(Strict):
    init_from: OptText = None
    init_std: OptPositiveNumber = None
    shift_positions: Bool = False


class Data(Strict):
    root: Text
    max_train_samples: OptPositiveInt
    max_eval_samples: OptPositiveInt


class Results(Strict):
    root: Text
    experiment: OptText
    force: Bool
    dry_run: Bool
    wait: Bool = False


class Paper(Loose):  # +experiment=paper
    tables: TextList
    models: OptTextList = None  # null: each table's paper backbones
    seeds: IntList
    list: Bool = False
    backbones: Mapping = {}


class Config(Strict):
    model: Model
    task: Task
    method: Method
    reparam: Reparam
    depth_range: DepthRange
    multitask: Multitask
    prompt_length: PositiveInt
    head: choice(*HEADS, "verbalizer", None)
    head_pool: choice("pooler", "cls") = "pooler"
    head_init_std: OptPositiveNumber = None
    prompt: Prompt = Prompt()
    seed: Seed
    data: Data
    train: Train
    results: Results
    real_minilm: OptMapping = None  # +experiment=real_minilm: per-method lrs and per-task budgets
    lr_choice: choice("lo", "hi", None) = None
    paper: Paper | None = None


# -- one line per problem ---------------------------------------------------------------------------------
def _known_keys(path: tuple) -> list[str]:
    """The keys the schema knows at ``path`` ([] inside free-form mappings)."""
    node: type[BaseModel] | None = Config
    for part in path:
        field = node.model_fields.get(str(part)) if node else None
        candidates = (field.annotation, *get_args(field.annotation)) if field else ()
        node = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return [f.alias or name for name, f in node.model_fields.items()] if node else []


def unknown_key_message(dotted: str) -> str:
    """`unknown key train.lrr (did you mean train.lr?)`."""
    *path, leaf = dotted.split(".")
    close = difflib.get_close_matches(leaf, _known_keys(tuple(path)), n=1)
    return f"unknown key {dotted}" + (f" (did you mean {'.'.join([*path, close[0]])}?)" if close else "")


def _message(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return unknown_key_message(key)
    if error["type"] == "missing":
        return f"{key} is missing from the config"
    value = spell(error["input"])
    if error["type"] == "value_error":  # a node's own check (a mapping's keys) reads as "<node> <problem>"
        return f"{key}{'' if isinstance(error['input'], dict) else '=' + value} {error['ctx']['error']}"
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key}={value} must be a mapping of keys"
    return f"{key}={value}: {error['msg']}"


def omegaconf_message(error: OmegaConfBaseException) -> str:
    """OmegaConf's error (several lines) as one: its first line and the key it is about."""
    first = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
    key = getattr(error, "full_key", None)
    return f"{first} (at {key})" if key and key not in first else first


def validate(cfg: DictConfig, check_device: bool = True) -> None:
    """UserError (one line) unless ``cfg`` fits the schema. Dry runs pass ``check_device=False``: listing
    jobs on a machine without the GPU they will run on is fine."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        raise UserError(f"the config does not resolve: {omegaconf_message(error)}") from None
    try:
        Config.model_validate(plain, context={"check_device": check_device})
    except ValidationError as error:
        problems = [_message(e) for e in error.errors(include_url=False)]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise UserError(problems[0] + more) from None
