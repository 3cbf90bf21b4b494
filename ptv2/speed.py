"""The speed and memory switches of a run: packing sequences into rows, compiling the model (CUDA graphs)
and lean layer norms.

None changes what a run computes beyond floating-point rounding (tests/test_speed.py compares them with
the plain path); packing and compiling are off on the CPU unless asked for, where they would only cost
compile time.

- ``train.packing`` (auto | true | false): several sequences per ``pack_length``-token row
  (``ptv2.data.packed_rows``), so random batches of mixed lengths carry almost no padding. auto: on with
  CUDA where the model can pack (BERT/RoBERTa-style attention, deep prompts or fine-tuning).
- ``train.compile`` (auto | true | false) with ``train.compile_mode``: ``torch.compile`` of the model;
  ``reduce-overhead`` replays CUDA graphs, one per batch shape (packing keeps those few). auto: on with
  CUDA where packing is on and the run has at least ``train.compile_min_steps`` training steps (compiling
  costs tens of seconds: short runs finish sooner without it). If compilation fails under auto, the run
  says so once and goes on eagerly.
- ``train.lean_norms`` (false | true): the backbone's layer norms keep their normalised input in bf16
  for the backward pass instead of their fp32 input (``ptv2.lean_norm``): 12-14% less peak memory on
  roberta-large, 10-11% fewer tokens/s compiled (H200, 2026-12-04) (one opaque operator that Inductor cannot fuse;
  docs/performance.md), the gradient rounded as a bf16 matmul's is. Off by default: speed first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from omegaconf import DictConfig

from ptv2.data import feature_length
from ptv2.errors import UserError
from ptv2.lean_norm import use_lean_layer_norms

_CHOICES = ("auto", True, False)
ROWS_MULTIPLE = 4  # compiled runs round packed row counts up to a multiple: few distinct CUDA-graph shapes


def _switch(cfg: DictConfig, key: str) -> str | bool:
    value = cfg.train.get(key, "auto")
    if value not in _CHOICES:
        raise UserError(f"train.{key}={value!r}: use auto, true or false")
    return value


def use_packing(cfg: DictConfig, model, device: torch.device) -> bool:
    value = _switch(cfg, "packing")
    if value is True and not model.can_pack:
        raise UserError("train.packing=true needs a BERT/RoBERTa-style backbone and deep prompts or method=ft")
    return model.can_pack and device.type == "cuda" if value == "auto" else bool(value)


def pack_length(feature_sets: list[list[dict]], multiple: int) -> int:
    """One row length for the whole run (train and eval): the longest sequence, rounded up to ``multiple``."""
    longest = max(feature_length(f) for features in feature_sets for f in features)
    multiple = max(1, multiple)
    return -(-longest // multiple) * multiple


class ModelRunner:
    """Calls the model, compiled or not, and marks each step for CUDA graphs; makes the layer norms lean
    (``train.lean_norms``) before the first compilation. (What compiling costs shows in metrics.json as the
    first step's and first evaluation's time, ``timing.first_step_s`` / ``first_eval_s``.)"""

    def __init__(self, model: torch.nn.Module, cfg: DictConfig, device: torch.device, packing: bool,
                 steps: int | None = None) -> None:
        value = _switch(cfg, "compile")
        self.model, self.auto = model, value == "auto"
        long_enough = steps is None or steps >= int(cfg.train.get("compile_min_steps", 0))
        enabled = (packing and device.type == "cuda" and long_enough) if self.auto else bool(value)
        mode = cfg.train.get("compile_mode", "reduce-overhead")
        self.lean_norms = bool(cfg.train.get("lean_norms", False))
        if self.lean_norms:
            use_lean_layer_norms(model)
        self.compiled: Callable | None = torch.compile(model, mode=None if mode == "default" else mode) if enabled else None
        self._warm: set[bool] = set()  # model.training values already compiled

    @property
    def enabled(self) -> bool:
        return self.compiled is not None

    def __call__(self, batch: dict) -> torch.Tensor:
        if self.compiled is None:
            return self.model(batch)
        torch.compiler.cudagraph_mark_step_begin()  # a new step: the previous replay's outputs may go
        for value in batch.values():  # rows and lengths vary: one compiled graph (CUDA graphs still per shape)
            if torch.is_tensor(value):
                for dim in range(value.dim()):
                    torch._dynamo.maybe_mark_dynamic(value, dim)
        if self.model.training in self._warm:
            return self.compiled(batch)
        return self._first_call(batch)

    def _first_call(self, batch: dict) -> torch.Tensor:
        try:
            out = self.compiled(batch)
        except Exception as error:  # noqa: BLE001 - auto falls back to eager on any compiler failure
            if not self.fall_back(error):
                raise
            return self.model(batch)
        self._warm.add(self.model.training)
        return out

    def fall_back(self, error: Exception) -> bool:
        """Under train.compile=auto, give up compiling after a failure (said once); False: not ours to hide."""
        if not (self.auto and self.compiled is not None):
            return False
        print(f"ptv2-train: torch.compile failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
              "training without it (train.compile=false hides this)", file=sys.stderr)
        self.compiled = None
        return True
