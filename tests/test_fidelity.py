"""The official recipe by default: every deviation from the official P-Tuning v2 code is a named option.

Covers random batches, the prompt / head initialisation, the pooled head input, the WiC template per
backbone, shifted positions, command-line group choices beating per-task defaults files, one prompt shape
per MPT-2 family, ptv2-predict on verbalizer runs, and the hub mappings of MultiRC and ReCoRD.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import FIXTURE_DATA, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from ptv2.backbone import load_backbone
from ptv2.cli import CONF_DIR
from ptv2.data import Batching, RandomBatches, collate, train_loader
from ptv2.model import build_model
from ptv2.tasks.base import build_task
from ptv2.tiny import build_tiny_tokenizer


def _cfg(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("config", overrides=["model=tiny-bert", *overrides], return_hydra_config=hydra)


def _model(*overrides: str, num_labels: int = 2):
    cfg = _cfg(*overrides)
    torch.manual_seed(0)
    head = cfg.head or cfg.task.head
    backbone = load_backbone(cfg.model, "eager", 0.0, with_lm_head=head == "verbalizer")
    return cfg, backbone, build_model(cfg, backbone, num_labels, head)


def _train(root: Path, *overrides: str):
    result = run_cli(f"data.root={FIXTURE_DATA}", f"results.root={root}", "train.epochs=1", "train.progress=false",
                     "data.max_train_samples=8", *overrides)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1].removeprefix("metrics: ")).parent


def _batch(tokenizer) -> dict:
    features = [dict(tokenizer(a, b)) | {"labels": i % 2} for i, (a, b) in
                enumerate([("The quick brown fox", "jumps over the dog."), ("A dog sleeps.", "Yes")])]
    return collate(features, tokenizer.pad_token_id)


# -- random batches ----------------------------------------------------------------------------------
def test_training_batches_are_random_by_default():
    cfg = _cfg()
    assert cfg.train.group_by_length is False
    loader = train_loader([{"input_ids": [1] * n} for n in range(1, 41)], 8, 11, Batching(0), cfg.train.group_by_length)
    assert isinstance(loader.batch_sampler.batches, RandomBatches)


# -- initialisation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("reparam", ["embedding", "mlp"])
def test_prompt_and_head_start_at_the_backbones_initializer_range(reparam):
    cfg, backbone, model = _model(f"reparam={reparam}")
    std = backbone.config.initializer_range
    assert std == 0.02
    prompt = model.prompt
    assert prompt.embedding.std().item() == pytest.approx(std, rel=0.1)
    if reparam == "mlp":
        for layer in (prompt.mlp[0], prompt.mlp[2]):
            assert layer.weight.std().item() == pytest.approx(std, rel=0.1) and not layer.bias.any()
    assert model.head.classifier.weight.std().item() == pytest.approx(std, rel=0.3)  # 2 x 32 weights
    assert not model.head.classifier.bias.any()


def test_init_std_options_and_the_shallow_prompts_layer_norm_scale():
    _, _, model = _model("prompt.init_std=0.5", "head_init_std=0.25", "head=token", num_labels=9)
    assert model.prompt.embedding.std().item() == pytest.approx(0.5, rel=0.1)
    assert model.head.classifier.weight.std().item() == pytest.approx(0.25, rel=0.15)
    _, _, shallow = _model("method=pt")
    assert shallow.prompt.embedding.std().item() == pytest.approx(1.0, rel=0.2)


# -- head input: pooler or raw [CLS] -----------------------------------------------------------------
def test_cls_head_reads_the_frozen_pooler_or_the_raw_first_token():
    _, backbone, pooled = _model()
    batch = _batch(backbone.tokenizer)
    pooled.eval()
    seen = []
    pooled.head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))  # the encoder's states
    with torch.no_grad():
        logits = pooled(batch)
        first = seen[0][:, 0]
        torch.testing.assert_close(logits, pooled.head.classifier(torch.tanh(backbone.pooler.dense(first))))
    assert not any(p.requires_grad for p in backbone.pooler.parameters())  # frozen with the backbone (pt2)
    _, raw_backbone, raw = _model("head_pool=cls")
    raw.eval()
    with torch.no_grad():
        torch.testing.assert_close(raw(batch), raw.head.classifier(first))
        assert not torch.allclose(raw(batch), pooled(batch))
    _, _, tuned = _model("method=ft")
    assert all(p.requires_grad for p in tuned.head.first_token.pooler.parameters())


def _checkpoint(path: Path, kind: str, pooler: bool) -> Path:
    tokenizer = build_tiny_tokenizer(kind)
    config = AutoConfig.for_model(kind, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, hidden_size=32,
                                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=514)
    torch.manual_seed(1)
    AutoModel.from_config(config, add_pooling_layer=pooler).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize(("kind", "pooler_in_checkpoint"), [("bert", True), ("roberta", False)])
def test_a_random_pooler_is_stored_with_the_head_a_pretrained_one_is_not(tmp_path, kind, pooler_in_checkpoint):
    path = _checkpoint(tmp_path / "weights", kind, pooler_in_checkpoint)
    run = _train(tmp_path / "results", f"model=tiny-{kind}", f"model.path={path}")
    stored = load_file(run / "prompt_head.safetensors")
    has_pooler = any(".pooler." in k for k in stored)
    assert has_pooler is not pooler_in_checkpoint  # roberta-large ships no pooler: its random one is kept
    from ptv2.predict import predict_split

    _, metrics = predict_split(run, "dev", tmp_path / "out", data_root=str(FIXTURE_DATA))
    assert metrics == pytest.approx(json.loads((run / "metrics.json").read_text())["best"]["dev"])


def test_deberta_heads_train_their_own_context_pooler():
    _, backbone, model = _model("model=tiny-deberta")
    assert backbone.pooler is None
    pooler = model.head.first_token.pooler
    assert type(pooler).__name__ == "ContextPooler" and all(p.requires_grad for p in pooler.parameters())


# -- WiC template per backbone -----------------------------------------------------------------------
@pytest.mark.parametrize(("model", "template"), [("roberta-large", 0), ("bert-large", 1), ("minilm", 1)])
def test_wic_template_follows_the_backbone_and_resolves_to_a_literal(model, template):
    result = run_cli("task=wic", f"model={model}", "--cfg", "job", "--resolve")
    assert result.returncode == 0, result.stderr
    assert f"\n  template: {template}\n" in result.stdout
    forced = run_cli("task=wic", f"model={model}", "task.template=0", "--cfg", "job", "--resolve")
    assert "\n  template: 0\n" in forced.stdout


def test_wic_templates_encode_as_the_official_code():
    record = {"idx": 0, "word": "bank", "sentence1": "A river bank.", "sentence2": "A bank loan.", "label": 1}
    roberta = _cfg("model=tiny-roberta", "task=wic")
    tokenizer = build_tiny_tokenizer("roberta")
    (one,) = build_task(roberta.task, FIXTURE_DATA, tokenizer).encode(record, 0, "train")
    question = "A river bank. A bank loan. Does bank have the same meaning in both sentences?"
    assert one["input_ids"] == tokenizer(question)["input_ids"]
    bert = _cfg("task=wic")
    tokenizer = build_tiny_tokenizer("bert")
    (pair,) = build_task(bert.task, FIXTURE_DATA, tokenizer).encode(record, 0, "train")
    assert pair["input_ids"] == tokenizer("bank: A river bank.", "bank: A bank loan.")["input_ids"]


# -- shifted positions -------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["tiny-bert", "tiny-roberta"])
def test_shift_positions_puts_real_tokens_after_the_prompt(model_name):
    cfg, backbone, shifted = _model(f"model={model_name}", "prompt.shift_positions=true", "prompt_length=5")
    _, _, plain = _model(f"model={model_name}", "prompt_length=5")
    batch = _batch(backbone.tokenizer)
    shifted.eval(), plain.eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if model_name == "tiny-roberta":  # padding_idx + 1 + 5 + i for real tokens, padding_idx for padding
        expected = (torch.cumsum(mask, 1) + 5) * mask + backbone.tokenizer.pad_token_id
    else:
        expected = torch.arange(ids.shape[1]).expand_as(ids) + 5
    seen = {}
    hook = shifted.encoder.embeddings.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True
    )
    with torch.no_grad():
        out = shifted(batch)
        assert not torch.allclose(out, plain(batch))
    hook.remove()
    assert torch.equal(seen["position_ids"], expected)


def test_shift_positions_limit_is_one_clear_line(tmp_path):
    result = run_cli(f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}", "train.progress=false",
                     "prompt.shift_positions=true", "prompt_length=500")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "exceeds the 12 left" in lines[0] and "lower task.max_length or prompt_length" in lines[0]
    bad = run_cli(f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}", "method=pt", "prompt.shift_positions=true")
    assert bad.returncode == 2 and "not for method=pt" in bad.stderr


# -- command-line group choices beat the per-task defaults files ----------------------------------------
def _hparams_files() -> list[tuple[str, str, str, dict]]:
    files = []
    for path in sorted((CONF_DIR / "hparams").glob("*/*.yaml")):
        model, _, method = path.stem.rpartition("-")
        files.append((path.parent.name, model, method, OmegaConf.to_container(OmegaConf.load(path))))
    return files


@pytest.mark.parametrize(("task", "model", "method", "content"), _hparams_files(), ids=lambda x: str(x)[:20])
def test_command_line_choices_win_over_every_hparams_file(task, model, method, content):
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    # Groups whose entry follows hparams in conf/config.yaml's defaults list (with a neutral default):
    # an hparams file may set only those, else a command-line choice of the group would silently lose.
    assert set(content) & groups <= {"reparam"}, f"conf/hparams/{task}/{model}-{method}.yaml sets another group"
    base = [f"task={task}", f"model={model}", f"method={method}"]
    for choice in ("embedding", "mlp"):
        assert _cfg(*base, f"reparam={choice}").reparam.type == choice
    assert _cfg(*base).reparam.type == content.get("reparam", {}).get("type", "embedding")  # the file's own
    assert _cfg(*base, "prompt_length=3").prompt_length == 3


# -- MPT-2: one prompt shape for the family -------------------------------------------------------------
@pytest.fixture
def family_hparams(tmp_path) -> str:
    """Per-task defaults files (a searchpath of the user's) that disagree on the prompt shape."""
    for task, body in {"rte": "prompt_length: 4\n", "cb": "prompt_length: 6\nreparam: {type: mlp, hidden_size: 8}\n"}.items():
        (tmp_path / "conf" / "hparams" / task).mkdir(parents=True)
        (tmp_path / "conf" / "hparams" / task / "tiny-bert-pt2.yaml").write_text("# @package _global_\n" + body)
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def _shapes(root: Path) -> dict[str, tuple]:
    rows = [json.loads(p.read_text()) for p in root.glob("runs/*/tiny-bert/mpt2/*/metrics.json")]
    return {m["task"]: (m["prompt_length"], m["reparam"], m["depth_range"], m["stage1_run"] is not None) for m in rows}


def test_mpt2_stages_share_one_prompt_shape_where_task_defaults_differ(tmp_path, family_hparams):
    _train(tmp_path / "a", "multitask=custom", "multitask.tasks=[cb,rte]", family_hparams)
    # stage 1 takes the first dataset's shape (cb: P=6, mlp); rte's stage 2 starts from it (its own: P=4)
    assert _shapes(tmp_path / "a") == {"mpt-custom": (6, "mlp", "1-4", False), "cb": (6, "mlp", "1-4", True),
                                       "rte": (6, "mlp", "1-4", True)}
    _train(tmp_path / "b", "multitask=custom", "multitask.tasks=[cb,rte]", "multitask.prompt_length=5", family_hparams)
    assert {v[0] for v in _shapes(tmp_path / "b").values()} == {5}
    _train(tmp_path / "c", "multitask=custom", "multitask.tasks=[cb,rte]", "multitask.prompt_length=5", "prompt_length=3",
           family_hparams)
    assert {v[0] for v in _shapes(tmp_path / "c").values()} == {3}  # the command line wins


def test_mpt2_dry_run_lists_every_stage_without_data_or_weights(tmp_path):
    result = run_cli("multitask=ner", "model=roberta-large", "data.root=/nonexistent", f"results.root={tmp_path}",
                     "results.dry_run=true")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[to run")]
    # without data the keys are unknown: each line says so, and names its stage and task
    assert [line.split("] ")[1].split(":")[0] for line in lines] == [
        "stage 1 mpt-ner", "stage 2 conll03", "stage 2 ontonotes", "stage 2 conll04"
    ]
    assert "[to run, data absent] stage 1" in lines[0] and "dry run: 4 job(s)" in result.stdout


# -- ptv2-predict on a verbalizer run ----------------------------------------------------------------
def test_predict_serves_a_verbalizer_run(tmp_path):
    tokenizer = build_tiny_tokenizer("bert")
    config = AutoConfig.for_model("bert", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, hidden_size=32,
                                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    torch.manual_seed(1)
    AutoModelForMaskedLM.from_config(config).save_pretrained(tmp_path / "mlm")
    tokenizer.save_pretrained(tmp_path / "mlm")
    run = _train(tmp_path / "results", f"model.path={tmp_path / 'mlm'}", "head=verbalizer", "task.verbalizer=[the,was]")
    assert not any(k.startswith("head.lm_head") for k in load_file(run / "prompt_head.safetensors"))
    from ptv2.predict import predict_split

    path, metrics = predict_split(run, "dev", tmp_path / "out", data_root=str(FIXTURE_DATA))
    assert metrics == pytest.approx(json.loads((run / "metrics.json").read_text())["best"]["dev"])
    assert path.name == "RTE.jsonl" and path.read_text().count("\n") == 8


# -- hub rows of MultiRC and ReCoRD ------------------------------------------------------------------
MULTIRC_HUB = [  # the hub's super_glue/multirc rows: one answer option each, ids nested under idx
    {"paragraph": "P0", "question": "Q0", "answer": "a", "idx": {"paragraph": 0, "question": 0, "answer": 0}, "label": 1},
    {"paragraph": "P0", "question": "Q0", "answer": "b", "idx": {"paragraph": 0, "question": 0, "answer": 1}, "label": 0},
    {"paragraph": "P1", "question": "Q1", "answer": "c", "idx": {"paragraph": 1, "question": 0, "answer": 2}, "label": 1},
]
RECORD_HUB = [
    {"passage": "Alice met Bob.@highlight\nIn Rome", "query": "@placeholder smiled.", "entities": ["Alice", "Bob", "Bob"],
     "entity_spans": {"text": [], "start": [], "end": []}, "answers": ["Bob"], "idx": {"passage": 3, "query": 9}},
]


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """`datasets.load_dataset` answering with hub-shaped rows; the hub reachable, no local files."""
    rows = {"multirc": MULTIRC_HUB, "record": RECORD_HUB}
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda path, name=None, split=None: rows[name]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr("ptv2.identity.hub_reachable", lambda: True)
    return tmp_path  # an empty data.root


def test_multirc_from_hub_keeps_what_its_metrics_need(fake_hub):
    task = build_task(_cfg("task=multirc").task, fake_hub, build_tiny_tokenizer("bert"))
    records = task.read("dev")
    assert [(r["idx"], r["question_uid"], r["label"]) for r in records] == [(0, (0, 0), 1), (1, (0, 0), 0), (2, (1, 0), 1)]
    yes, no = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])
    scores = task.metrics(records, [], [yes, yes, no])  # q (0,0): one false positive; q (1,0): a miss
    assert scores == {"f1a": pytest.approx(100 * 2 / 4), "em": 0.0}  # tp 1, fp 1, fn 1


def test_record_from_hub_scores_by_entity(fake_hub):
    task = build_task(_cfg("task=record").task, fake_hub, build_tiny_tokenizer("bert"))
    (record,) = task.read("dev")
    assert record["entities"] == ["Alice", "Bob"] and record["idx"] == 9 and "@highlight" not in record["passage"]
    features = task.encode(record, 0, "dev")
    assert [f["labels"] for f in features] == [0, 1]
    scores = task.metrics([record], features, [torch.tensor([0.0, 1.0]), torch.tensor([0.0, 2.0])])
    assert scores == {"f1": 100.0, "exact_match": 100.0}
