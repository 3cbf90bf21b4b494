"""Many tasks on one frozen backbone, in shared batches: every run's prompt is a small swappable artifact.

``MixedPromptPredictor(runs)`` loads the backbone once, then each run's task, split, prompt and head from
its run folder (config.yaml, prompt_head.safetensors). A batch mixes examples of several runs; each row
carries its own run's prompt:

- deep prompts: every run's computed prefix k/v sits in one bank, [runs, layers, 2, heads, P_max, d],
  with a mask of the slots it really has ([runs, layers, P_max]: shorter prompts and layer ranges leave
  slots masked); a batch gathers its rows' entries, and every layer attends over the prefix slots its
  row's run has there (ptv2.prompts.attention's per-layer masks), so a masked slot weighs nothing;
- input prompts (method=pt): the rows' vectors go in after [CLS], masked beyond their run's length;
- heads: each run's own head scores its own rows (a multiple-choice example's rows stay together).

Rows without a slot in a layer attend to the tokens alone, exactly as without a prompt, so each run's
predictions are what ``ptv2-predict run=`` gives for it alone (tested: the same bytes).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch import nn

from ptv2.backbone import absolute_position_ids, load_backbone
from ptv2.build import Split, autocast_dtype, encode_split, resolve_device, seed_everything
from ptv2.config import load_run_config
from ptv2.data import collate
from ptv2.errors import UserError
from ptv2.inference import per_feature, to_device, write_submission
from ptv2.model import build_head, load_head_state
from ptv2.prompts.attention import PREFIX_SLOT, with_prefix_columns
from ptv2.prompts.deep import resolve_depth_range
from ptv2.tasks.base import Task, build_task


@dataclass
class ServedRun:
    """One run as the mixed predictor serves it."""

    path: Path
    cfg: DictConfig
    task: Task
    head: nn.Module
    data: Split
    prefix: torch.Tensor | None  # deep prompt: computed k/v [its layers, 2, heads, P, head_dim]
    layers: list[int]
    inputs: torch.Tensor | None  # input prompt (method=pt): [P, hidden]
    position_offset: int  # prompt.shift_positions


def backbone_identity(cfg: DictConfig) -> dict:
    """What decides the frozen backbone a run computed with: weights (a random one: its seed too), precision."""
    identity = {"model": OmegaConf.to_container(cfg.model, resolve=True), "precision": cfg.train.precision}
    if cfg.model.get("tiny") or cfg.model.get("random_init"):
        identity["seed"] = int(cfg.seed)  # a random backbone is its seed
    return identity


def _configs(runs: list[Path], data_root: str | None) -> list[DictConfig]:
    cfgs = []
    for run in runs:
        for name in ("config.yaml", "prompt_head.safetensors"):
            if not (run / name).is_file():
                raise UserError(f"missing {run / name}: runs=[...] must be run directories written by ptv2-train")
        cfg = load_run_config(run / "config.yaml")
        if not cfg.method.freeze_backbone:
            raise UserError(f"run {run} fine-tuned its backbone (method={cfg.method.name}): it cannot share one")
        if data_root:
            cfg.data.root = data_root
        cfgs.append(cfg)
    first = backbone_identity(cfgs[0])
    for run, cfg in zip(runs, cfgs, strict=True):
        if backbone_identity(cfg) != first:
            raise UserError(f"runs {runs[0]} and {run} were trained on different backbones "
                            f"({backbone_identity(cfg)} vs {first}): mix runs of one backbone")
    verbalizer = {(cfg.head or cfg.task.head) == "verbalizer" for cfg in cfgs}
    if len(verbalizer) > 1:
        raise UserError("head=verbalizer runs read a masked-LM backbone, the others its pooler: mix them apart")
    return cfgs


class MixedPromptPredictor:
    """Predict several runs' splits with one frozen backbone, mixing the runs' examples in each batch.

    ``forwards`` / ``mixed_forwards`` count the backbone calls and those that served several runs.
    """

    def __init__(self, runs: list[str | Path], data_root: str | None = None, device: str = "auto") -> None:
        self.paths = [Path(r).expanduser() for r in runs]
        self.cfgs = _configs(self.paths, data_root)
        first = self.cfgs[0]
        first.train.device = device
        self.device = resolve_device(first)
        self.amp_dtype = autocast_dtype(first, self.device)
        seed_everything(first.seed)  # a tiny random backbone is rebuilt as its runs trained on it
        self.backbone = load_backbone(first.model, first.train.attention, 0.0,
                                      with_lm_head=(first.head or first.task.head) == "verbalizer")
        if self.backbone.own_attention:
            raise UserError(f"model={first.model.name}: mixed batches need BERT/RoBERTa-style attention")
        self.backbone.encoder.requires_grad_(False).eval()
        for layer in range(self.backbone.num_layers):  # every layer may hold some run's prefix
            setattr(self.backbone.self_attention(layer), PREFIX_SLOT, layer)
        self.runs: list[ServedRun] = []
        self.split: str | None = None
        self.forwards = self.mixed_forwards = 0

    # -- loading ---------------------------------------------------------------------------------------
    def load(self, split: str) -> None:
        """Read and encode every run's ``split``, load its prompt and head, and build the prompt banks."""
        self.runs = [self._serve(path, cfg, split) for path, cfg in zip(self.paths, self.cfgs, strict=True)]
        self.split = split
        self._banks()
        self.backbone.encoder.to(self.device)
        if self.amp_dtype == torch.bfloat16:
            self.backbone.encoder.to(torch.bfloat16)

    def _serve(self, path: Path, cfg: DictConfig, split: str) -> ServedRun:
        if split not in cfg.task.files:
            raise UserError(f"split={split} unknown for task={cfg.task.name} ({path}); use one of {list(cfg.task.files)}")
        head_kind = cfg.head or cfg.task.head
        task = build_task(cfg.task, cfg.data.root, self.backbone.tokenizer)
        task.append_mask = head_kind == "verbalizer"
        offset = int(cfg.prompt_length) if OmegaConf.select(cfg, "prompt.shift_positions") else 0
        task.reserved_positions = offset
        data = encode_split(task, split, None)
        backbone = copy.copy(self.backbone)
        backbone.pooler = copy.deepcopy(self.backbone.pooler)  # a stored random pooler is this run's own
        head = build_head(cfg, backbone, task.num_labels, head_kind)
        tensors = load_file(str(path / "prompt_head.safetensors"))
        load_head_state(head, {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}, str(path))
        deep = cfg.method.prompt == "deep"
        layers = resolve_depth_range(cfg.depth_range.select, self.backbone.num_layers, cfg.depth_range.get("k"),
                                     cfg.depth_range.get("layers")) if deep else []
        return ServedRun(path, cfg, task, head.to(self.device).eval(), data,
                         tensors.get("prompt.computed_prefix") if deep else None, layers,
                         tensors.get("prompt.embedding") if cfg.method.prompt == "shallow" else None, offset)

    def _banks(self) -> None:
        config = self.backbone.config
        heads, width = config.num_attention_heads, config.hidden_size // config.num_attention_heads
        longest = max([r.prefix.shape[3] for r in self.runs if r.prefix is not None], default=0)
        inputs = max([r.inputs.shape[0] for r in self.runs if r.inputs is not None], default=0)
        n, layers = len(self.runs), self.backbone.num_layers
        self.prefix_bank = torch.zeros(n, layers, 2, heads, longest, width)
        self.prefix_slots = torch.zeros(n, layers, longest, dtype=torch.bool)
        self.input_bank = torch.zeros(n, inputs, config.hidden_size)
        self.input_slots = torch.zeros(n, inputs, dtype=torch.bool)
        for i, run in enumerate(self.runs):
            if run.prefix is not None:
                length = run.prefix.shape[3]
                self.prefix_bank[i, run.layers, :, :, :length] = run.prefix.to(self.prefix_bank.device)
                self.prefix_slots[i, run.layers, :length] = True
            if run.inputs is not None:
                self.input_bank[i, : run.inputs.shape[0]] = run.inputs.to(self.input_bank.device)
                self.input_slots[i, : run.inputs.shape[0]] = True
        self.prefix_lengths = self.prefix_slots.any(1).sum(-1)
        self.input_lengths = self.input_slots.sum(-1)
        self.offsets = torch.tensor([run.position_offset for run in self.runs])
        banks = ("prefix_bank", "prefix_slots", "input_bank", "input_slots", "prefix_lengths", "input_lengths", "offsets")
        for name in banks:
            setattr(self, name, getattr(self, name).to(self.device))

    # -- batches ---------------------------------------------------------------------------------------
    def batches(self, batch_size: int, mixed: bool = True) -> list[list[tuple[int, int]]]:
        """(run, feature) pairs per batch, each example's features (a ReCoRD query's candidates, a MultiRC
        question's options) kept together. Mixed: the runs' examples one run after another, runs ordered by
        prompt length, filled across run boundaries; a batch attends over its longest run's prompt, so runs
        of similar lengths share batches and only the batches at a boundary mix runs (mixed=False: each run's
        batches alone)."""
        queues = []
        for r, run in enumerate(self.runs):
            groups: dict[int, list[tuple[int, int]]] = {}
            for f, feature in enumerate(run.data.features):
                groups.setdefault(feature["example_index"], []).append((r, f))
            queues.append(list(groups.values()))
        if not mixed:
            return [b for queue in queues for b in _fill(queue, batch_size)]
        lengths = (self.prefix_lengths + self.input_lengths).tolist()  # one transfer, not one per run
        order = sorted(range(len(queues)), key=lengths.__getitem__)
        return _fill([group for r in order for group in queues[r]], batch_size)

    def _rows(self, units: list[tuple[int, int]]) -> tuple[dict, torch.Tensor, list[int]]:
        """The batch's sequences, one row each (a multiple-choice feature gives one row per choice), their
        runs, and how many rows each feature has."""
        rows, run_ids, widths = [], [], []
        for r, f in units:
            feature = self.runs[r].data.features[f]
            keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in feature]
            split = [{k: feature[k][c] for k in keys} for c in range(len(feature["input_ids"]))] if _choices(feature) else [
                {k: feature[k] for k in keys}]
            rows += split
            run_ids += [r] * len(split)
            widths.append(len(split))
        batch = collate(rows, self.backbone.tokenizer.pad_token_id, 8)
        return to_device(batch, self.device), torch.tensor(run_ids, device=self.device), widths

    # -- one batch -------------------------------------------------------------------------------------
    def _hidden(self, batch: dict, run_ids: torch.Tensor) -> torch.Tensor:
        """The backbone's states of every row, each with its own run's prompt."""
        encoder, mask = self.backbone.encoder, batch["attention_mask"]
        inputs = {k: batch[k] for k in ("input_ids", "token_type_ids") if k in batch}
        offsets = self.offsets[run_ids]
        if bool(offsets.any()):
            positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
            inputs["position_ids"] = absolute_position_ids(encoder, positions, mask, offsets[:, None])
        width = int(self.input_lengths[run_ids].max()) if self.input_bank.shape[1] else 0
        if width:  # input prompts go after [CLS]: their slots join the mask
            mask = torch.cat([mask[:, :1], self.input_slots[run_ids, :width].to(mask.dtype), mask[:, 1:]], dim=1)
        mask = mask[:, None, None, :].bool()
        length = int(self.prefix_lengths[run_ids].max()) if self.prefix_bank.shape[4] else 0
        extra = {}
        if length:
            extra["ptv2_prefix_kv"] = self.prefix_bank[run_ids, :, :, :, :length].permute(1, 2, 0, 3, 4, 5)
            extra["ptv2_prefix_mask"] = with_prefix_columns(mask, self.prefix_slots[run_ids, :, :length].transpose(0, 1),
                                                            mask.shape[-1])
        vectors = self.input_bank[run_ids, :width]
        hook = encoder.embeddings.register_forward_hook(
            lambda module, args, out: torch.cat([out[:, :1], vectors.to(out.dtype), out[:, 1:]], dim=1)
        ) if width else None
        try:
            hidden = encoder(**inputs, attention_mask=mask, **extra).last_hidden_state
        finally:
            if hook is not None:
                hook.remove()
        return torch.cat([hidden[:, :1], hidden[:, 1 + width :]], dim=1) if width else hidden

    def _scores(self, units: list[tuple[int, int]]) -> list[tuple[int, int, torch.Tensor]]:
        """(run, feature, head output) for each feature of one mixed batch."""
        batch, run_ids, widths = self._rows(units)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            hidden = self._hidden(batch, run_ids)
            self.forwards += 1
            self.mixed_forwards += len({r for r, _ in units}) > 1
            starts = [sum(widths[:i]) for i in range(len(widths))]
            scored = []
            for r in dict.fromkeys(r for r, _ in units):
                mine = [i for i, (run, _) in enumerate(units) if run == r]
                rows = torch.tensor([starts[i] + k for i in mine for k in range(widths[i])], device=self.device)
                own = {k: batch[k][rows] for k in ("input_ids", "attention_mask")}
                if _choices(self.runs[r].data.features[units[mine[0]][1]]):
                    own = {k: v.view(len(mine), widths[mine[0]], -1) for k, v in own.items()}  # [B, choices, T]
                outputs = per_feature(self.runs[r].head(hidden[rows], own), own)
                scored += [(r, units[i][1], out) for i, out in zip(mine, outputs, strict=True)]
        return scored

    # -- a whole split ---------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, split: str, batch_size: int = 128, mixed: bool = True) -> dict[Path, list[torch.Tensor]]:
        """Every run's head outputs on ``split``, one tensor per feature in its own order."""
        if self.split != split:
            self.load(split)
        outputs: list[list] = [[None] * len(run.data.features) for run in self.runs]
        for units in self.batches(batch_size, mixed):
            for r, f, out in self._scores(units):
                outputs[r][f] = out
        return {run.path: outputs[r] for r, run in enumerate(self.runs)}

    def write(self, split: str, out: Path, batch_size: int = 128) -> list[Path]:
        """Each run's submission file: ``<out>/<Task>.jsonl``, or ``<out>/<run name>/<Task>.jsonl`` for tasks
        that several runs share; the same bytes ``ptv2-predict run=`` writes for the run alone."""
        outputs = self.predict(split, batch_size)
        tasks = [run.task.name for run in self.runs]
        paths = [out / (run.path.name if tasks.count(run.task.name) > 1 else "") / run.task.submission_file
                 for run in self.runs]
        if len(set(paths)) < len(paths):
            raise UserError("two runs of one task have the same run folder name: give them separate out= folders")
        for run, path in zip(self.runs, paths, strict=True):
            write_submission(run.task, run.data, outputs[run.path], path)
        return paths


def _choices(feature: dict) -> bool:
    """A multiple-choice feature: one row of tokens per choice."""
    return bool(feature["input_ids"]) and isinstance(feature["input_ids"][0], list)


def _fill(groups: list[list[tuple[int, int]]], batch_size: int) -> list[list[tuple[int, int]]]:
    """Whole groups into batches of at most ``batch_size`` features (a bigger group gets a batch alone)."""
    batches, current = [], []
    for group in groups:
        if current and len(current) + len(group) > batch_size:
            batches.append(current)
            current = []
        current += group
    return batches + ([current] if current else [])
