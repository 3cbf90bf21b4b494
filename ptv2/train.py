"""The one training loop: every task, backbone and method runs through ``run``.

Read top to bottom: prepare data -> build model -> train epochs (eval each epoch, keep the best dev
epoch as the paper reports it) -> write the run directory.
"""

from __future__ import annotations

import functools
import gc
import math
import random
import resource
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save as safetensors_bytes
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import ptv2
from ptv2 import checkpoint, distributed, lock
from ptv2.backbone import count_parameters, load_backbone
from ptv2.data import LengthGroupedSampler, RandomBatches, collate, feature_length
from ptv2.divergence import LossWatch
from ptv2.errors import UserError
from ptv2.model import PromptedModel, build_model
from ptv2.multitask import TaskBatches, in_order_batches, init_prompt_from
from ptv2.prompts.deep import DeepPrompt, format_depth_range
from ptv2.results import (
    SCHEMA_VERSION,
    read_metrics,
    record_failure,
    run_dir,
    run_identity,
    write_atomic,
    write_curves,
    write_json,
)
from ptv2.tasks.base import Task, build_task


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode_split(task: Task, split: str, limit: int | None) -> tuple[list[dict], list[dict]]:
    records = task.read(split)
    if limit:
        records = records[:limit]
    features = task.encode_all(records, split)
    if not features:
        raise UserError(f"task={task.name} split {split} has no examples")
    return records, features


def _loader(
    features, batch_size, pad_id, shuffle, seed, group_by_length, num_workers, ranks=None, multitask=None,
    pad_to_multiple_of=1, pin_memory=False,
) -> DataLoader:
    """Eval: in order. Train: shuffled by seed + epoch, this rank's shard of each global batch.

    Multi-task features (MPT-2 stage 1) carry ``task_id``: every batch then holds one dataset, drawn as
    ``multitask.sampling`` says (ptv2/multitask.py). ``pin_memory`` (CUDA) lets batches copy to the GPU
    without waiting for it.
    """
    collate_fn = functools.partial(collate, pad_token_id=pad_id, pad_to_multiple_of=pad_to_multiple_of)
    options = {"collate_fn": collate_fn, "num_workers": num_workers, "pin_memory": pin_memory}
    mixed = "task_id" in features[0]
    if not shuffle:
        if mixed:
            return DataLoader(features, batch_sampler=in_order_batches([f["task_id"] for f in features], batch_size), **options)
        return DataLoader(features, batch_size, **options)
    if mixed:
        batches = TaskBatches(
            [f["task_id"] for f in features], [feature_length(f) for f in features], batch_size, seed, group_by_length,
            sampling=multitask.sampling, temperature=multitask.temperature,
        )
    elif group_by_length:
        batches = LengthGroupedSampler([feature_length(f) for f in features], batch_size, seed)
    else:
        batches = RandomBatches(len(features), batch_size, seed)
    ranks = ranks or distributed.Ranks()
    sampler = distributed.ShardedBatches(batches, ranks.rank, ranks.world)
    # Own generator: starting an epoch draws worker seeds from it, not from the global RNG (exact resume).
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(features, batch_sampler=sampler, generator=generator, **options)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def predict(model: PromptedModel, loader: DataLoader, device, amp_dtype) -> list[torch.Tensor]:
    """Head outputs per feature (float32, CPU); per-token outputs cut to the feature's real length."""
    model.eval()
    outputs: list[torch.Tensor] = []
    for batch in loader:
        batch = _to(batch, device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(batch).float().cpu()
        if logits.dim() == 3 and batch["input_ids"].dim() == 2:
            lengths = batch["attention_mask"].sum(-1).tolist()
            outputs += [row[:n] for row, n in zip(logits, lengths, strict=True)]
        else:
            outputs += list(logits)
    return outputs


def _scheduler(optimizer, cfg: DictConfig, steps_per_epoch: int):
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


def _device(cfg: DictConfig) -> torch.device:
    if cfg.train.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.train.device)


def _num_workers(cfg: DictConfig, device: torch.device) -> int:
    """Collation in worker processes keeps the GPU fed; on the CPU they would compete for the same cores."""
    if cfg.train.num_workers == "auto":
        return 2 if device.type == "cuda" else 0
    return int(cfg.train.num_workers)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        index = torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return device.type


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (KiB on Linux)


def _save_prompt_head(path: Path, model: PromptedModel) -> None:
    """The per-task artifact: trainable prompt parameters, the computed prefix k/v, and the head."""
    # trainable head parameters only: a frozen pretrained LM head (verbalizer) belongs to the backbone
    tensors = {f"head.{k}": v for k, v in model.head.named_parameters() if v.requires_grad}
    if model.prompt is not None:
        tensors |= {f"prompt.{k}": v for k, v in model.prompt.state_dict().items()}
        if isinstance(model.prompt, DeepPrompt):
            tensors["prompt.computed_prefix"] = model.prompt.computed_prefix()
    data = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
    write_atomic(path, safetensors_bytes(data))


def _write_predictions(path: Path, task: Task, records: list[dict], features: list[dict], outputs: list) -> None:
    """predictions.json for the dev split at the best epoch, where the task defines predictions()."""
    try:
        predictions = task.predictions(records, features, outputs)
    except NotImplementedError:
        return
    write_json(path, predictions)


def _finished(out: Path, cfg: DictConfig) -> dict | None:
    """The run's metrics when it is done already and results.force is not set."""
    previous = read_metrics(out)
    if previous and previous.get("status") == "done" and not cfg.results.force:
        print(f"already done (results.force=true to redo): {out / 'metrics.json'}")
        return previous
    return None


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
            return train_and_evaluate(cfg, out, overrides)
        except Exception as error:
            if owner:
                record_failure(out, error)
            raise


def train_and_evaluate(cfg: DictConfig, out: Path, overrides: list[str] | None = None) -> dict:
    """The loop: train cfg into the run folder ``out`` (resuming its checkpoint), evaluating every epoch."""
    started = time.time()
    gc.unfreeze()  # a job that failed earlier in this process (sweeps) left its objects frozen
    seed_everything(cfg.seed)
    ranks = distributed.setup()  # torchrun: one process per GPU (ptv2/distributed.py); else rank 0 of 1
    device = _device(cfg)
    if device.type == "cuda":
        # cuDNN's SDPA builds a graph per new sequence length (~100 ms each): with dynamic padding that
        # dominated the step on an H200 (docs/performance.md). Flash / memory-efficient kernels do not.
        torch.backends.cuda.enable_cudnn_sdp(False)
    amp_dtype = torch.bfloat16 if device.type == "cuda" and cfg.train.precision == "bf16" else None

    head_kind = cfg.head or cfg.task.head
    backbone = load_backbone(cfg.model, cfg.train.attention, cfg.train.dropout, with_lm_head=head_kind == "verbalizer")
    task = build_task(cfg.task, cfg.data.root, backbone.tokenizer)
    task.append_mask = head_kind == "verbalizer"
    train_records, train_features = encode_split(task, "train", cfg.data.max_train_samples)
    evals = {s: encode_split(task, s, cfg.data.max_eval_samples) for s in cfg.task.eval_splits}

    model = build_model(cfg, backbone, task.num_labels, head_kind).to(device)
    init_from = OmegaConf.select(cfg, "prompt.init_from")
    stage1_run = init_prompt_from(init_from, cfg, model, head_kind) if init_from else None  # MPT-2 stage 2
    if cfg.method.freeze_backbone and device.type == "cuda" and cfg.train.precision == "bf16":
        model.encoder.to(torch.bfloat16)  # frozen weights need no fp32 master copy
    if cfg.train.compile:
        model.compile()  # in place: parameter names (checkpoints, safetensors) stay as they are
    trainable = [p for p in model.parameters() if p.requires_grad]
    distributed.broadcast_parameters(trainable)
    optimizer = torch.optim.AdamW(
        trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=device.type == "cuda"
    )
    pad_id = backbone.tokenizer.pad_token_id
    multiple, workers = cfg.train.pad_to_multiple_of, _num_workers(cfg, device)
    train_loader = _loader(
        train_features, cfg.train.batch_size, pad_id, True, cfg.seed, cfg.train.group_by_length, workers,
        ranks, cfg.multitask, multiple, pin_memory=device.type == "cuda",
    )
    eval_loaders = {
        s: _loader(
            f, cfg.train.eval_batch_size, pad_id, False, cfg.seed, False, workers,
            pad_to_multiple_of=multiple, pin_memory=device.type == "cuda",
        )
        for s, (_, f) in evals.items()
    }
    scheduler, step_every = _scheduler(optimizer, cfg, len(train_loader))

    params = {"backbone": count_parameters(model.encoder), "trainable": sum(p.numel() for p in trainable)}
    params["stored"] = count_parameters(model.head, trainable_only=True) + (
        model.prompt.stored_parameter_count() if model.prompt is not None else 0
    )
    if not cfg.method.freeze_backbone:
        params["stored"] = params["trainable"]
    params |= {f"{k}_pct": 100 * params[k] / params["backbone"] for k in ("trainable", "stored")}
    layers = model.prompt.layers if isinstance(model.prompt, DeepPrompt) else []
    majority = {s: m for s, (r, _) in evals.items() if (m := task.majority_baseline(train_records, r)) is not None}
    record = {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "error": None,
        "task": task.name,
        "family": cfg.task.family,
        "model": cfg.model.name,
        "method": cfg.method.name,
        "head": head_kind,
        "prompt_length": int(cfg.prompt_length) if cfg.method.prompt != "none" else None,
        "reparam": cfg.reparam.type if cfg.method.prompt == "deep" else None,
        "depth_range": format_depth_range(layers),
        "num_layers": backbone.num_layers,
        "seed": int(cfg.seed),
        "experiment": cfg.results.get("experiment"),
        "stage1_run": stage1_run,
        "primary_metric": cfg.task.primary_metric,
        "report_split": cfg.task.report_split,
        "splits": list(cfg.task.eval_splits),
        "best_epoch": None,
        "best": None,
        "majority_baseline": majority or None,
        "epochs": [],
        "params": params,
        "timing": {},
        "hparams": OmegaConf.to_container(cfg.train, resolve=True),
        "overrides": list(overrides or []),
        "versions": {"ptv2": ptv2.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "identity": run_identity(cfg),
    }
    if ranks.main:
        write_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    primary, best_score, train_tokens, train_seconds = cfg.task.primary_metric, -math.inf, 0, 0.0
    first_epoch, loss_sum, steps, allreduce_seconds = 1, 0.0, 0, 0.0
    resumed = checkpoint.load(out, model, optimizer, scheduler)  # None: a fresh start
    if resumed:
        record, best_score, train_tokens, train_seconds = (resumed[k] for k in ("record", "best_score", "train_tokens", "train_seconds"))
        first_epoch, loss_sum, steps = resumed["epoch"], resumed["loss_sum"], resumed["step"]
        allreduce_seconds = record["timing"].get("allreduce_s", 0.0)
        started -= record["timing"].get("wall_s", 0.0)  # wall time adds up over the processes
        train_loader.batch_sampler.resume_at = (first_epoch, steps)
        print(f"resuming from {checkpoint.path(out)}: epoch {first_epoch}, step {steps}", flush=True)
    totals = distributed.StepTotals(ranks, device)
    # The encoded dataset and the model live as long as the run: keep them out of the collector's full passes
    # (hundreds of ms each over a large dataset's feature lists, stalling every rank that waits on this one).
    gc.freeze()
    loss_watch = LossWatch(cfg.train.lr)

    def settle_last_step(epoch: int, epoch_start: float, progress: tqdm) -> None:
        """Book the last queued step (read one step late, see StepTotals); save and exit if asked to stop."""
        nonlocal loss_sum, train_tokens
        if (settled := totals.settle()) is None:
            return
        step_loss, tokens, stop = settled
        loss_watch.check(step_loss, epoch, steps)  # NaN, inf or a finite explosion: the run fails
        loss_sum, train_tokens = loss_sum + step_loss, train_tokens + tokens
        progress.set_postfix(loss=f"{loss_sum / steps:.4f}")
        if stop:  # SIGTERM/SIGUSR1/SIGUSR2: save after this step and exit (re-run resumes here)
            if ranks.main:
                checkpoint.save(
                    out, model, optimizer, scheduler, epoch=epoch, step=steps, loss_sum=loss_sum, record=record,
                    best_score=best_score, train_tokens=train_tokens, train_seconds=train_seconds + time.time() - epoch_start,
                )
            checkpoint.exit_interrupted(out)

    for epoch in range(first_epoch, cfg.train.epochs + 1):
        model.train()
        train_loader.batch_sampler.set_epoch(epoch)
        epoch_start = time.time()
        progress = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.train.epochs}", leave=False, disable=not cfg.train.progress)
        for batch in progress:
            real_tokens = int(batch["attention_mask"].sum())  # counted on the CPU: no GPU sync
            batch = _to(batch, device)
            settle_last_step(epoch, epoch_start, progress)  # the previous step, now that this batch is on its way
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = model.loss(model(batch), batch)
            weight = train_loader.batch_sampler.weights[steps]  # this rank's share of the global batch
            (loss * weight).backward()
            ranks.average_gradients(trainable)
            if cfg.train.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.train.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step_every == "step":
                scheduler.step()
            steps += 1
            totals.add(loss * (weight / ranks.world), real_tokens * (weight > 0), checkpoint.stop_requested())
        settle_last_step(epoch, epoch_start, progress)
        lr = optimizer.param_groups[0]["lr"]
        if step_every == "epoch":
            scheduler.step()
        epoch_seconds = time.time() - epoch_start
        train_seconds += epoch_seconds
        allreduce_seconds += ranks.allreduce_seconds()
        epoch_loss, loss_sum, steps = loss_sum / max(1, steps), 0.0, 0
        if not ranks.main:  # rank 0 alone evaluates and writes
            continue

        metrics, outputs = {}, {}
        for split, (records, features) in evals.items():
            outputs[split] = predict(model, eval_loaders[split], device, amp_dtype)
            metrics[split] = task.metrics(records, features, outputs[split])
        # train_s per epoch: the first epoch's start-up costs (allocator, kernels) show apart from the rest
        record["epochs"].append({"epoch": epoch, "train_loss": epoch_loss, "lr": lr, "metrics": metrics, "train_s": epoch_seconds})
        score = metrics["dev"][primary]
        if score > best_score:
            best_score = score
            record["best_epoch"], record["best"] = epoch, metrics
            _save_prompt_head(out / "prompt_head.safetensors", model)
            _write_predictions(out / "predictions.json", task, *evals["dev"], outputs["dev"])
        shown = ", ".join(f"{s} {primary} {m[primary]:.2f}" for s, m in metrics.items() if primary in m)
        tqdm.write(f"epoch {epoch}: train loss {epoch_loss:.4f}, {shown} (best {best_score:.2f} @ {record['best_epoch']})")
        record["timing"] = {
            "wall_s": time.time() - started,
            "train_s": train_seconds,
            "train_tokens_per_s": train_tokens / max(train_seconds, 1e-9),
            "peak_memory_mb": _peak_memory_mb(device),
            "processes": ranks.world,
            "device": _device_name(device),
            # GPU time in the gradient all-reduce (rank 0, waiting for slower ranks included); 0 in one process
            "allreduce_s": allreduce_seconds,
            "allreduce_share": allreduce_seconds / max(train_seconds, 1e-9),
        }
        write_curves(out / "curves.csv", record["epochs"])
        write_json(out / "metrics.json", record)
        checkpoint.save(
            out, model, optimizer, scheduler, epoch=epoch + 1, step=0, loss_sum=0.0, record=record,
            best_score=best_score, train_tokens=train_tokens, train_seconds=train_seconds,
        )

    gc.unfreeze()
    record["status"] = "done"
    if ranks.main:
        write_json(out / "metrics.json", record)
        checkpoint.delete(out)
    return record
