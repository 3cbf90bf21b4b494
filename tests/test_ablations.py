"""Baselines and ablations: FT, PT (shallow prompts), verbalizer + LM head, depth presets, sweeps."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import run_cli, with_test_model
from hydra import compose, initialize_config_dir
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from ptv2.backbone import load_backbone
from ptv2.cli import CONF_DIR
from ptv2.data import collate
from ptv2.errors import UserError
from ptv2.heads import verbalizer_token_ids
from ptv2.model import build_model
from ptv2.prompts.deep import format_depth_range, resolve_depth_range
from ptv2.tasks.base import build_task
from ptv2.tiny import build_tiny_tokenizer

REPO = Path(__file__).resolve().parent.parent


def _cfg(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("config", overrides=with_test_model(["train.attention=eager", *overrides]), return_hydra_config=hydra)


def _model(*overrides: str, num_labels: int = 2):
    cfg = _cfg(*overrides)
    torch.manual_seed(0)
    backbone = load_backbone(cfg.model, cfg.train.attention, 0.0, with_lm_head=(cfg.head == "verbalizer"))
    return cfg, backbone, build_model(cfg, backbone, num_labels, cfg.head or cfg.task.head)


def _batch(tokenizer, num: int = 3) -> dict:
    texts = [
        ("The quick brown fox", "jumps over the lazy dog."),
        ("A dog sleeps.", "The sun."),
        ("Is it true?", "Yes"),
    ]
    features = [dict(tokenizer(a, b)) | {"labels": i % 2} for i, (a, b) in enumerate(texts[:num])]
    return collate(features, tokenizer.pad_token_id)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args)


# -- FT ----------------------------------------------------------------------------------------------
def test_ft_trains_every_backbone_parameter():
    _, backbone, model = _model("method=ft")
    params = dict(model.encoder.named_parameters())
    assert params and all(p.requires_grad for p in params.values())
    before = {k: v.detach().clone() for k, v in params.items()}
    batch = _batch(backbone.tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    model.loss(model(batch), batch).backward()
    optimizer.step()
    unchanged = [k for k, v in params.items() if torch.equal(v, before[k])]
    assert unchanged == []


# -- PT ----------------------------------------------------------------------------------------------
def _reference_hidden(encoder, prompt: torch.Tensor, batch: dict, arch: str) -> torch.Tensor:
    """Hand-built PT forward: embeddings of the real tokens once (+positions, +types, LayerNorm), the
    prompt inserted after [CLS] as-is, the stock layers on that, prompt positions dropped."""
    emb, ids, mask = encoder.embeddings, batch["input_ids"], batch["attention_mask"]
    if arch == "roberta":  # positions count real tokens from padding_idx + 1
        real = (ids != emb.padding_idx).long()
        positions = torch.cumsum(real, 1) * real + emb.padding_idx
    else:
        positions = torch.arange(ids.shape[1]).expand_as(ids)
    types = batch.get("token_type_ids", torch.zeros_like(ids))
    x = emb.LayerNorm(
        emb.word_embeddings(ids) + emb.position_embeddings(positions) + emb.token_type_embeddings(types)
    )
    P = prompt.shape[0]
    x = torch.cat([x[:, :1], prompt.expand(ids.shape[0], -1, -1), x[:, 1:]], 1)
    full_mask = torch.cat([mask[:, :1], torch.ones(ids.shape[0], P, dtype=mask.dtype), mask[:, 1:]], 1)
    for layer in encoder.encoder.layer:  # ptv2's attention functions take a boolean [B, 1, 1, T] mask
        x = layer(x, full_mask[:, None, None, :].bool())
    return torch.cat([x[:, :1], x[:, 1 + P :]], 1)


@pytest.mark.parametrize("model_name,arch", [("tiny-bert", "bert"), ("tiny-roberta", "roberta")])
def test_pt_matches_hand_built_reference(model_name, arch):
    _, backbone, model = _model(f"model={model_name}", "method=pt", "prompt_length=3")
    model.eval()
    batch = _batch(backbone.tokenizer)
    assert batch["padded"]
    with torch.no_grad():
        ref = _reference_hidden(model.encoder, model.prompt.embedding, batch, arch)
        logits = model(batch)
    # the cls head reads the backbone's pooler (head_pool=pooler, the official input): dense + tanh on [CLS]
    pooler = backbone.pooler.dense
    torch.testing.assert_close(logits, model.head.classifier(torch.tanh(pooler(ref[:, 0]))), rtol=1e-5, atol=1e-5)
    # frozen backbone: only the prompt (P x H) and the head train; no layer gets a prefix k/v
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"prompt.embedding", "head.classifier.weight", "head.classifier.bias"}
    assert model.prompt.embedding.shape == (3, backbone.config.hidden_size)
    assert all(not layer.attention.self._forward_pre_hooks for layer in model.encoder.encoder.layer)


def test_pt_token_head_sees_only_real_tokens_and_token_types_matter():
    _, backbone, model = _model("method=pt", "prompt_length=4", "head=token", num_labels=5)
    model.eval()
    batch = _batch(backbone.tokenizer)
    with torch.no_grad():
        out = model(batch)
        ref = model.head.classifier(_reference_hidden(model.encoder, model.prompt.embedding, batch, "bert"))
        assert out.shape == (*batch["input_ids"].shape, 5)  # per real token, offsets unchanged
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(out[real], ref[real], rtol=1e-5, atol=1e-5)
        # token types reach the embeddings as in the stock model: flipping them changes the output, as the
        # reference (which adds the type embeddings by hand) says it must
        flipped = dict(batch, token_type_ids=1 - batch["token_type_ids"])
        ref_flipped = model.head.classifier(
            _reference_hidden(model.encoder, model.prompt.embedding, flipped, "bert")
        )
        torch.testing.assert_close(model(flipped)[real], ref_flipped[real], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model(flipped)[real], out[real], atol=1e-3)


def test_pt_rejects_non_positive_length_and_unsupported_arch():
    with pytest.raises(UserError, match="prompt_length"):
        _model("method=pt", "prompt_length=0")
    cfg = _cfg("method=pt", "model.arch=deberta-v2")
    backbone = load_backbone(_cfg().model, "eager")
    with pytest.raises(UserError, match="arch=deberta-v2"):
        build_model(cfg, backbone, 2, "cls")


# -- verbalizer + LM head -------------------------------------------------------------------------------
def _checkpoint(tmp_path: Path, kind: str, with_lm_head: bool) -> Path:
    tokenizer = build_tiny_tokenizer(kind)
    config = AutoConfig.for_model(
        kind,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=514,
    )
    torch.manual_seed(1)
    model = (AutoModelForMaskedLM if with_lm_head else AutoModel).from_config(config)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_verbalizer_reads_lm_head_logits_of_label_words(tmp_path, fixture_data, kind):
    path = _checkpoint(tmp_path, kind, with_lm_head=True)
    overrides = (
        f"model=tiny-{kind}",
        f"model.path={path}",
        "method=ft",
        "head=verbalizer",
        "task.verbalizer=[the,was]",
    )
    cfg, backbone, model = _model(*overrides)
    tokenizer = backbone.tokenizer
    task = build_task(cfg.task, fixture_data, tokenizer)
    task.append_mask = True
    features = [f for i, r in enumerate(task.read("train")[:4]) for f in task.encode(r, i, "train")]
    for f in features:  # "... [MASK] [SEP]": the mask before the final separator
        assert f["input_ids"][-2:] == [tokenizer.mask_token_id, tokenizer.sep_token_id]
    batch = collate(features, tokenizer.pad_token_id)
    model.eval()
    reference = AutoModelForMaskedLM.from_pretrained(path, attn_implementation="eager").eval()
    word_ids = [
        tokenizer(" the", add_special_tokens=False)["input_ids"][0],
        tokenizer(" was", add_special_tokens=False)["input_ids"][0],
    ]
    with torch.no_grad():
        logits = model(batch)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        vocab_logits = reference(**inputs).logits
    expected = torch.stack(
        [vocab_logits[i, len(f["input_ids"]) - 2, word_ids] for i, f in enumerate(features)]
    )
    assert logits.shape == (len(features), 2)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_verbalizer_lm_head_frozen_under_pt2():
    _, _, model = _model("method=pt2", "head=verbalizer", "task.verbalizer=[the,was]", "prompt_length=2")
    assert not any(p.requires_grad for p in model.head.parameters())
    assert {k.split(".")[0] for k, p in model.named_parameters() if p.requires_grad} == {"prompt"}


def test_verbalizer_errors(tmp_path):
    tokenizer = build_tiny_tokenizer("bert")
    with pytest.raises(UserError, match="no verbalizer words"):
        verbalizer_token_ids(tokenizer, _cfg("task=wic").task, 2)
    with pytest.raises(UserError, match="is 3 tokens"):  # "true" is not one token in the tiny vocab
        verbalizer_token_ids(tokenizer, _cfg("task=rte").task, 2)
    assert verbalizer_token_ids(tokenizer, _cfg("task=rte", "task.verbalizer=[the,was]").task, 2) == [
        tokenizer.convert_tokens_to_ids("the"),
        tokenizer.convert_tokens_to_ids("was"),
    ]
    # a checkpoint without MLM weights (like all-MiniLM-L6-v2) is refused, not given a random LM head
    path = _checkpoint(tmp_path, "bert", with_lm_head=False)
    with pytest.raises(UserError, match="ships no masked-LM head"):
        load_backbone(_cfg(f"model.path={path}").model, "eager", with_lm_head=True)
    minilm = _cfg("model=minilm").model
    assert minilm.has_lm_head is False
    with pytest.raises(UserError, match="model=minilm ships no masked-LM head"):
        load_backbone(minilm, "eager", with_lm_head=True)  # before looking for its weights


# -- depth presets -------------------------------------------------------------------------------------
def test_depth_presets_select_expected_layers():
    top, bottom = (
        _cfg("depth_range=top").depth_range,
        _cfg("depth_range=bottom", "depth_range.k=6").depth_range,
    )
    assert resolve_depth_range(top.select, 24, top.k, top.layers) == [20, 21, 22, 23]
    assert format_depth_range(resolve_depth_range(top.select, 24, top.k, top.layers)) == "21-24"
    assert resolve_depth_range(bottom.select, 24, bottom.k, bottom.layers) == [0, 1, 2, 3, 4, 5]
    assert format_depth_range([0, 1, 2, 3, 4, 5]) == "1-6"
    assert resolve_depth_range("all", 24, None, "17-24") == list(range(16, 24))
    _, _, model = _model("depth_range=top", "depth_range.k=2")  # tiny-bert has 4 layers
    assert model.prompt.layers == [2, 3]


# -- experiments and sweeps --------------------------------------------------------------------------
GRIDS = {
    "table2_bert": 8 * 3,
    "table2_roberta": 8 * 3,
    "table3_ner": 3 * 3,
    "table3_qa": 2 * 3,
    "table3_srl": 2 * 3,
    "table4": 4 * 2,
    "fig3_depth": 2 * 2 * 24,
    "fig4_length": 4 * 6 * 2,
}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_experiment_configs(name):
    cfg = _cfg(f"+experiment={name}", hydra=True)
    assert cfg.results.experiment == name
    size = 1
    for value in cfg.hydra.sweeper.params.values():
        value = str(value)
        size *= (
            len(range(*map(int, value[6:-1].split(","))))
            if value.startswith("range(")
            else len(value.split(","))
        )
    assert size == GRIDS[name]
    assert set(GRIDS) <= {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")}


def test_experiment_sweep_writes_one_run_per_job_and_rerun_skips(tmp_path, fixture_data):
    """fig3_depth through -m, its task/model/k lists replaced from the command line: top,bottom x k=1,3."""
    common = [
        "+experiment=fig3_depth", "task=rte", "model=tiny-bert", f"data.root={fixture_data}",
        f"results.root={tmp_path}", "train.epochs=1", "train.progress=false", "data.max_train_samples=8",
        "data.max_eval_samples=8", "prompt_length=2",
    ]  # fmt: skip
    first = _cli("-m", *common, "depth_range.k=1,3")
    assert first.returncode == 0, first.stderr
    runs = sorted((tmp_path / "fig3_depth" / "rte" / "tiny-bert" / "pt2").glob("*/metrics.json"))
    assert len(runs) == 4
    records = [json.loads(p.read_text()) for p in runs]
    assert all(r["status"] == "done" and r["experiment"] == "fig3_depth" for r in records)
    assert sorted(r["depth_range"] for r in records) == ["1-1", "1-3", "2-4", "4-4"]  # tiny-bert: 4 layers
    mtimes = [p.stat().st_mtime_ns for p in runs]

    again = _cli("-m", *common, "depth_range.k=1,3")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already done") == 4
    assert [p.stat().st_mtime_ns for p in runs] == mtimes

    listing = _cli("-m", *common, "depth_range.k=1,3,4", "results.dry_run=true")
    assert listing.returncode == 0, listing.stderr
    lines = [line for line in listing.stdout.splitlines() if line.startswith(("[done] ", "[to run] "))]
    assert len(lines) == 6 and all(f"{tmp_path}/fig3_depth/rte/tiny-bert/pt2/s11-" in line for line in lines)
    assert listing.stdout.count("[done] ") == 4 and listing.stdout.count("[to run] ") == 2
    assert "dry run: 6 job(s): 4 done, 2 to run" in listing.stdout
    assert len(list(tmp_path.glob("fig3_depth/**/metrics.json"))) == 4  # the listing trained nothing
