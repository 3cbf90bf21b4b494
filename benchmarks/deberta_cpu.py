"""CPU ms per training step (forward + backward + Adam) of P-Tuning v2 on tiny-bert vs tiny-deberta(-v2).

Same shapes for all: batch 16 x 128 tokens (a quarter of it padding), prompt length 16 in all 4 layers,
frozen backbone, cls head. Models are timed round-robin and the median step is reported, so a busy
machine slows all of them alike. Usage: python -m benchmarks.deberta_cpu [--rounds 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ptv2.backbone import load_backbone
from ptv2.heads import ClsHead
from ptv2.model import PromptedModel
from ptv2.prompts.deep import DeepPrompt

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


MODELS = ("tiny-bert", "tiny-deberta", "tiny-deberta-v2")


def make_step(model_name: str, batch_size: int = 16, length: int = 128, prompt_length: int = 16):
    """One training step (closure) of a frozen tiny backbone with deep prompts in every layer."""
    torch.manual_seed(0)
    backbone = load_backbone(OmegaConf.load(CONF / f"{model_name}.yaml"), attention="sdpa")
    config = backbone.config
    backbone.encoder.requires_grad_(False)
    heads = config.num_attention_heads
    prompt = DeepPrompt(
        list(range(config.num_hidden_layers)), prompt_length, heads, config.hidden_size // heads
    )
    model = PromptedModel(backbone, ClsHead(config.hidden_size, 2), prompt).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(5, len(backbone.tokenizer), (batch_size, length))
    mask = torch.ones_like(ids)
    mask[: batch_size // 2, length // 2 :] = 0
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": torch.randint(0, 2, (batch_size,)),
        "padded": True,
    }

    def step() -> None:
        loss = model.loss(model(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = {name: make_step(name) for name in MODELS}
    times: dict[str, list[float]] = {name: [] for name in MODELS}
    for round_ in range(args.rounds + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_:  # round 0 warms up
                times[name].append((time.perf_counter() - start) * 1000)
    base = statistics.median(times["tiny-bert"])
    for name in MODELS:
        ms = statistics.median(times[name])
        print(f"{name:16s} {ms:8.1f} ms/step  ({ms / base:.2f}x tiny-bert; CPU, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
