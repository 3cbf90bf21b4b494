"""The one training loop: every task, backbone and method runs through ``run`` and ``Trainer.fit``.

Read top to bottom: a finished run is skipped; ``Trainer`` prepares the run (seed, device, processes),
builds backbone, task, data and model (``ptv2.build``), then the optimiser, loaders and the record; ``fit``
runs the epochs: ``train_epoch`` (one ``step`` per batch), ``evaluate`` every split, ``record_epoch``
(best dev epoch as the paper reports it, artifacts, metrics.json, checkpoint), and ``finish``.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import save as safetensors_bytes
from tqdm.auto import tqdm

from ptv2 import checkpoint, distributed, lock
from ptv2.backbone import count_parameters
from ptv2.build import Built, autocast_dtype, build, resolve_device, seed_everything
from ptv2.data import Batching, eval_loader, train_loader
from ptv2.divergence import LossWatch
from ptv2.errors import UserError
from ptv2.inference import predict, to_device
from ptv2.record import RunRecord
from ptv2.results import (
    read_metrics,
    record_failure,
    run_dir,
    run_identity,
    write_atomic,
    write_curves,
    write_json,
)
from ptv2.run_logger import open_logger
from ptv2.speed import ROWS_MULTIPLE, ModelRunner, pack_length, use_packing


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Train and evaluate one configuration unless it is done; returns the metrics.json content.

    One process owns the run folder while it trains (ptv2/lock.py; under torchrun, rank 0); a failure is
    recorded in it as it happens.
    """
    out = run_dir(cfg)
    if (done := _finished(out, cfg)) is not None:
        return done
    owner = distributed.launched_rank() == 0
    with lock.hold(out, wait=bool(cfg.results.get("wait")), enabled=owner):
        if (done := _finished(out, cfg)) is not None:  # it finished while this process waited for it
            return done
        try:
            return Trainer(cfg, out, list(overrides or [])).fit().to_json()
        except Exception as error:
            if owner:
                record_failure(out, error)
            raise


def _finished(out: Path, cfg: DictConfig) -> dict | None:
    """The run's metrics when it is done already and results.force is not set."""
    previous = read_metrics(out)
    if previous and previous.get("status") == "done" and not cfg.results.force:
        print(f"already done (results.force=true to redo): {out / 'metrics.json'}")
        return previous
    return None


@dataclass
class LoopState:
    """Where the loop is (the epoch to run, steps done in it) and what it has summed; a checkpoint keeps it."""

    epoch: int = 1
    step: int = 0
    loss_sum: float = 0.0
    train_tokens: int = 0
    train_seconds: float = 0.0
    allreduce_seconds: float = 0.0
    wall_seconds: float = 0.0  # of the processes before this one (resumed runs)


class Trainer:
    def __init__(self, cfg: DictConfig, out: Path, overrides: list[str]) -> None:
        self.cfg, self.out, self.started = cfg, out, time.time()
        gc.unfreeze()  # a job that failed earlier in this process (sweeps) left its objects frozen
        seed_everything(cfg.seed)
        self.ranks = distributed.setup()  # torchrun: one process per GPU; else rank 0 of 1
        self.device = resolve_device(cfg)
        if self.device.type == "cuda":
            # cuDNN's SDPA builds a graph per new sequence length (~100 ms each): with dynamic padding that
            # dominated the step on an H200 (docs/performance.md). Flash / memory-efficient kernels do not.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self.amp_dtype = autocast_dtype(cfg, self.device)
        limits = {s: cfg.data.max_eval_samples for s in cfg.task.eval_splits} | {"train": cfg.data.max_train_samples}
        self.built = build(cfg, self.device, ["train", *cfg.task.eval_splits], limits)
        self.model, self.task = self.built.model, self.built.task
        distributed.broadcast_parameters([p for p in self.model.parameters() if p.requires_grad])
        self._make_loaders()
        self.optimization = Optimization(self.model, self.runner, cfg, self.device, len(self.train_loader), self.ranks)
        self.optimizer, self.scheduler = self.optimization.optimizer, self.optimization.scheduler
        self.record = RunRecord.start(cfg, self.model, self.built.head, self.built.backbone.num_layers,
                                      self.built.stage1_run, self._majority(), parameter_counts(cfg, self.built), overrides)
        self.record.identity = run_identity(cfg)
        if self.ranks.main:
            write_atomic(out / "config.yaml", _config_yaml(cfg))
        self.state = LoopState()
        self._resume()
        self.totals = distributed.StepTotals(self.ranks, self.device)
        self.run_log = open_logger(cfg, out, self.ranks.main)  # train.logger: none | tensorboard | wandb
        self.first_step_s: float | None = None
        self.first_eval_s: float | None = None
        self.last_eval_s: float | None = None
        self.loss_watch = LossWatch(cfg.train.lr)  # NaN, inf or a finite explosion: the run fails

    def _make_loaders(self) -> None:
        cfg, splits = self.cfg, self.built.splits
        self.packing = use_packing(cfg, self.model, self.device)
        steps = math.ceil(len(splits["train"].features) / cfg.train.batch_size) * cfg.train.epochs
        self.runner = ModelRunner(self.model, cfg, self.device, self.packing, steps)  # the model, compiled or not
        batching = Batching(
            self.built.backbone.tokenizer.pad_token_id, cfg.train.pad_to_multiple_of,
            pack_length([s.features for s in splits.values()], cfg.train.pad_to_multiple_of) if self.packing else None,
            num_workers(cfg, self.device), pin_memory=self.device.type == "cuda",
            rows_multiple=ROWS_MULTIPLE if self.runner.enabled else 1, prefix_length=self.model.prompt.prompt_length,
        )
        multitask = cfg.get("multitask") or {}
        self.train_loader = train_loader(
            splits["train"].features, cfg.train.batch_size, cfg.seed, batching, cfg.train.group_by_length, self.ranks,
            multitask.get("sampling", "proportional"), multitask.get("temperature", 2.0),
        )
        self.eval_loaders = {s: eval_loader(splits[s].features, cfg.train.eval_batch_size, batching)
                             for s in cfg.task.eval_splits}

    def _majority(self) -> dict:
        train = self.built.splits["train"].records
        return {s: m for s in self.cfg.task.eval_splits
                if (m := self.task.majority_baseline(train, self.built.splits[s].records)) is not None}

    def _resume(self) -> None:
        loop = checkpoint.load(self.out, self.model, self.optimizer, self.scheduler)  # None: a fresh start
        if loop is None:
            return
        self.record = RunRecord.from_json(loop.pop("record"))
        self.state = LoopState(**loop)
        self.train_loader.batch_sampler.resume_at = (self.state.epoch, self.state.step)
        print(f"resuming from {checkpoint.path(self.out)}: epoch {self.state.epoch}, step {self.state.step}", flush=True)

    # -- the loop --------------------------------------------------------------------------------------
    def fit(self) -> RunRecord:
        # The encoded data and the model live as long as the run: keep them out of the collector's full
        # passes (hundreds of ms each over a large dataset, stalling every rank that waits on this one).
        gc.freeze()
        for epoch in range(self.state.epoch, self.cfg.train.epochs + 1):
            loss, lr, seconds = self.train_epoch(epoch)
            if self.ranks.main:  # rank 0 alone evaluates and writes
                self.record_epoch(epoch, loss, lr, seconds, *self.evaluate())
        gc.unfreeze()
        return self.finish()

    def train_epoch(self, epoch: int) -> tuple[float, float, float]:
        """One pass over the training batches; returns the mean loss, the epoch's lr and its seconds."""
        self.model.train()
        self.train_loader.batch_sampler.set_epoch(epoch)
        started = time.time()
        batches = tqdm(self.train_loader, desc=f"epoch {epoch}/{self.cfg.train.epochs}", leave=False,
                       disable=not self.cfg.train.progress)
        for batch in batches:
            real_tokens = int(batch["attention_mask"].sum())  # counted on the CPU: no GPU sync
            batch = to_device(batch, self.device)
            self.settle_last_step(epoch, started, batches)  # the previous step, now this batch is on its way
            self.step(batch, real_tokens)
        self.settle_last_step(epoch, started, batches)
        lr = self.optimization.end_epoch()
        seconds = time.time() - started
        state = self.state
        loss = state.loss_sum / max(1, state.step)
        state.train_seconds, state.loss_sum, state.step = state.train_seconds + seconds, 0.0, 0
        state.allreduce_seconds += self.ranks.allreduce_seconds()
        return loss, lr, seconds

    def step(self, batch: dict, real_tokens: int) -> None:
        """One optimisation step; the first one of a process is timed (it compiles) and may fall back to
        eager if compiling fails under train.compile=auto."""
        if self.first_step_s is not None:
            return self._step(batch, real_tokens)
        started = time.perf_counter()
        try:
            self._step(batch, real_tokens)
        except Exception as error:
            if not self.runner.fall_back(error):
                raise
            self.optimizer.zero_grad(set_to_none=True)
            self._step(batch, real_tokens)
        synchronize(self.device)
        self.first_step_s = time.perf_counter() - started

    def _step(self, batch: dict, real_tokens: int) -> None:
        weight = self.train_loader.batch_sampler.weights[self.state.step]  # this rank's share of the global batch
        loss = self.optimization(batch, weight)
        self.state.step += 1
        self.totals.add(loss * (weight / self.ranks.world), real_tokens * (weight > 0), checkpoint.stop_requested())

    def settle_last_step(self, epoch: int, epoch_start: float, batches: tqdm) -> None:
        """Book the last queued step (read one step late, see StepTotals); save and exit if asked to stop."""
        if (settled := self.totals.settle()) is None:
            return
        loss, tokens, stop = settled
        self.loss_watch.check(loss, epoch, self.state.step)
        self.state.loss_sum += loss
        self.state.train_tokens += tokens
        # lr: after this step's scheduler update, i.e. the one the next step uses
        global_step = (epoch - 1) * len(self.train_loader) + self.state.step
        self.run_log.log_step(global_step, loss, self.optimizer.param_groups[0]["lr"])
        batches.set_postfix(loss=f"{self.state.loss_sum / self.state.step:.4f}")
        if stop:  # SIGTERM/SIGUSR1/SIGUSR2: save after this step and exit (re-run resumes here)
            if self.ranks.main:
                elapsed = dataclasses.replace(self.state, epoch=epoch, train_seconds=self.state.train_seconds + time.time() - epoch_start)
                self.save_checkpoint(elapsed)
            checkpoint.exit_interrupted(self.out)

    def evaluate(self) -> tuple[dict, dict]:
        """Every evaluated split's metrics and head outputs."""
        started, metrics, outputs = time.perf_counter(), {}, {}
        for split, loader in self.eval_loaders.items():
            outputs[split] = predict(self.model, loader, self.device, self.amp_dtype, self.runner)
            data = self.built.splits[split]
            metrics[split] = self.task.metrics(data.records, data.features, outputs[split])
        self.last_eval_s = time.perf_counter() - started  # every evaluated split, metrics included
        if self.first_eval_s is None:
            self.first_eval_s = self.last_eval_s
        return metrics, outputs

    def record_epoch(self, epoch: int, loss: float, lr: float, seconds: float, metrics: dict, outputs: dict) -> None:
        """Book the epoch; at a new best dev epoch keep its artifacts; write metrics.json and the checkpoint."""
        # train_s per epoch: the first epoch's start-up costs (allocator, kernels, compiling) show apart
        self.run_log.log_epoch(epoch, metrics | {"train": {"epoch_loss": loss}})
        if self.record.add_epoch(epoch, loss, lr, metrics, seconds, self.last_eval_s):
            write_atomic(self.out / "prompt_head.safetensors", safetensors_bytes(self.model.prompt_head_state()))
            _write_predictions(self.out / "predictions.json", self.built, outputs["dev"])
        primary, best = self.record.primary_metric, self.record.best["dev"][self.record.primary_metric]
        shown = ", ".join(f"{s} {primary} {m[primary]:.2f}" for s, m in metrics.items() if primary in m)
        tqdm.write(f"epoch {epoch}: train loss {loss:.4f}, {shown} (best {best:.2f} @ {self.record.best_epoch})")
        self.record.timing = self.timing()
        write_curves(self.out / "curves.csv", self.record.epochs)
        write_json(self.out / "metrics.json", self.record.to_json())
        self.save_checkpoint(dataclasses.replace(self.state, epoch=epoch + 1))

    def save_checkpoint(self, state: LoopState) -> None:
        loop = dataclasses.asdict(state) | {"wall_seconds": self.wall_seconds(), "record": self.record.to_json()}
        checkpoint.save(self.out, self.model, self.optimizer, self.scheduler, loop)

    def wall_seconds(self) -> float:
        """Wall time of this run over all the processes it took (resumed runs add up)."""
        return self.state.wall_seconds + time.time() - self.started

    def timing(self) -> dict:
        state = self.state
        return {
            "wall_s": self.wall_seconds(),
            "train_s": state.train_seconds,
            "train_tokens_per_s": state.train_tokens / max(state.train_seconds, 1e-9),
            "peak_memory_mb": peak_memory_mb(self.device),
            "processes": self.ranks.world,
            "device": device_name(self.device),
            # GPU time in the gradient all-reduce (rank 0, waiting for slower ranks included); 0 in one process
            "allreduce_s": state.allreduce_seconds,
            "allreduce_share": state.allreduce_seconds / max(state.train_seconds, 1e-9),
            "packing": self.packing,
            "compiled": self.runner.enabled,
            "lean_norms": self.runner.lean_norms,
            # what compiling (and first-use allocation) costs: the first step's and first evaluation's time
            "first_step_s": self.first_step_s,
            "first_eval_s": self.first_eval_s,
        }

    def finish(self) -> RunRecord:
        self.run_log.close()
        self.record.status = "done"
        if self.ranks.main:
            write_json(self.out / "metrics.json", self.record.to_json())
            checkpoint.delete(self.out)
        return self.record


# -- the loop's parts ----------------------------------------------------------------------------------
class Optimization:
    """The loop's optimisation step, also what the benchmark times: forward under autocast, the head's
    loss, backward, gradient all-reduce (torchrun), clipping, fused AdamW over the trainable parameters
    only, and the learning-rate schedule (per step, or per epoch via ``end_epoch``)."""

    def __init__(self, model, runner, cfg: DictConfig, device: torch.device, steps_per_epoch: int,
                 ranks: distributed.Ranks | None = None) -> None:
        self.model, self.runner, self.ranks = model, runner, ranks or distributed.Ranks()
        self.device, self.amp_dtype, self.max_grad_norm = device, autocast_dtype(cfg, device), cfg.train.max_grad_norm
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=device.type == "cuda"
        )
        self.scheduler, self.step_every = make_scheduler(self.optimizer, cfg, steps_per_epoch)

    def __call__(self, batch: dict, weight: float = 1.0) -> torch.Tensor:
        """One step on a device batch; returns its loss (not read: reading it would wait for the GPU)."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            loss = self.model.loss(self.runner(batch), batch)
        (loss * weight).backward()
        self.ranks.average_gradients(self.trainable)
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.step_every == "step":
            self.scheduler.step()
        return loss.detach()

    def end_epoch(self) -> float:
        """The epoch's learning rate; the per-epoch schedule steps."""
        lr = self.optimizer.param_groups[0]["lr"]
        if self.step_every == "epoch":
            self.scheduler.step()
        return lr


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: DictConfig, steps_per_epoch: int):
    """(scheduler, "step" | "epoch"): linear warm-up then decay per step, exponential per epoch, or constant."""
    total = steps_per_epoch * cfg.train.epochs
    if cfg.train.schedule == "linear":
        warmup = int(cfg.train.warmup_ratio * total)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: s / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
        ), "step"
    if cfg.train.schedule == "exponential":  # the official NER/SRL/QA scripts: gamma per epoch
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.train.gamma), "epoch"
    if cfg.train.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0), "step"
    raise UserError(f"train.schedule={cfg.train.schedule!r}: use linear, exponential or constant")


def parameter_counts(cfg: DictConfig, built: Built) -> dict:
    """Backbone, trainable and stored (per-task) parameters, the last two also as % of the backbone."""
    model, backbone = built.model, built.backbone
    params = {
        "backbone": count_parameters(model.encoder) + (count_parameters(backbone.pooler) if backbone.pooler is not None else 0),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    params["stored"] = sum(p.numel() for p in model.head_state().values()) + model.prompt.stored_parameter_count()
    if not cfg.method.freeze_backbone:
        params["stored"] = params["trainable"]
    return params | {f"{k}_pct": 100 * params[k] / params["backbone"] for k in ("trainable", "stored")}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def num_workers(cfg: DictConfig, device: torch.device) -> int:
    """Collation in worker processes keeps the GPU fed (auto: up to 4 per GPU process, one core left to the
    loop; on the CPU they would compete with the model for the same cores). The cores are shared by the
    torchrun processes of this host and by the jobs a local parallel sweep runs at once."""
    if cfg.train.num_workers != "auto":
        return int(cfg.train.num_workers)
    if device.type != "cuda":
        return 0
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) * parallel_sweep_jobs()
    return max(1, min(4, len(os.sched_getaffinity(0)) // sharing - 1))


def parallel_sweep_jobs() -> int:
    """How many jobs of this sweep run at once on this host: the joblib launcher's n_jobs
    (`hydra/launcher=parallel`; joblib reads n_jobs <= 0 as all cores but |n_jobs| - 1), else 1."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 1
    launcher = HydraConfig.get().get("launcher") or {}
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        index = torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return device.type


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (KiB on Linux)


def _config_yaml(cfg: DictConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)


def _write_predictions(path: Path, built: Built, outputs: list) -> None:
    """predictions.json for the dev split at the best epoch, where the task defines predictions()."""
    dev = built.splits["dev"]
    try:
        predictions = built.task.predictions(dev.records, dev.features, outputs)
    except NotImplementedError:
        return
    write_json(path, predictions)
