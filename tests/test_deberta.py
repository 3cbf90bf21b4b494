"""DeBERTa (v1, v2, v3-like) backbones with deep prompts: the prefix-aware attention subclasses."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModel
from transformers.models.deberta import modeling_deberta as v1
from transformers.models.deberta_v2 import modeling_deberta_v2 as v2

from ptv2.backbone import Backbone, load_backbone
from ptv2.heads import ClsHead
from ptv2.model import PromptedModel
from ptv2.prompts.deberta import PrefixDebertaSelfAttention, PrefixDebertaV2SelfAttention, adapt_for_prefix
from ptv2.prompts.deep import DeepPrompt

REPO = Path(__file__).resolve().parents[1]
BASE = dict(
    vocab_size=50,
    hidden_size=16,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    type_vocab_size=0,
)
CONFIGS = {
    "v1": (
        "deberta",
        dict(
            relative_attention=True,
            pos_att_type=["c2p", "p2c"],
            max_relative_positions=16,
            position_biased_input=False,
        ),
    ),
    "v1-talking": ("deberta", dict(relative_attention=True, pos_att_type=["c2p", "p2c"], talking_head=True)),
    "v2": (
        "deberta-v2",
        dict(
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            max_relative_positions=16,
            position_biased_input=False,
        ),
    ),
    "v2-shared": (
        "deberta-v2",
        dict(
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            max_relative_positions=16,
            share_att_key=True,
            norm_rel_ebd="layer_norm",
        ),
    ),
    "v3-like": (
        "deberta-v2",
        dict(
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_buckets=8,
            share_att_key=True,
            norm_rel_ebd="layer_norm",
            conv_kernel_size=3,
            conv_act="gelu",
            position_biased_input=False,
        ),
    ),
}
PREFIX_CLASSES = (PrefixDebertaSelfAttention, PrefixDebertaV2SelfAttention)


def tiny_model(kind: str, layers: int = 2, seed: int = 0, **extra):
    arch, cfg = CONFIGS[kind]
    torch.manual_seed(seed)
    config = AutoConfig.for_model(arch, num_hidden_layers=layers, **BASE, **cfg, **extra)
    return AutoModel.from_config(config, attn_implementation="eager").eval()


def batch(vocab: int = 50, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padded rows
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    return ids, mask


def attention(model, layer: int):
    return model.encoder.layer[layer].attention.self


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_swapped_class_without_prefix_equals_stock_exactly(kind):
    stock = tiny_model(kind)
    adapted = copy.deepcopy(stock)
    for layer in adapted.encoder.layer:
        adapt_for_prefix(layer.attention.self)
        assert isinstance(layer.attention.self, PREFIX_CLASSES)
    ids, mask = batch()
    with torch.no_grad():
        for m in (mask, None):
            assert torch.equal(
                stock(ids, attention_mask=m).last_hidden_state,
                adapted(ids, attention_mask=m).last_hidden_state,
            )


def _reference_attention(module, hidden, mask2d, rel_embeddings, prefix_key, prefix_value):
    """The rule written out: score = (q.k + q.PK[m+i-j] + k.PQ[m+i-j]) / sqrt(3d) on real columns,
    q.k_p / sqrt(3d) (no position term) on prefix columns; padded keys masked; values [v_p; v]."""
    batch_size, length, _ = hidden.shape
    heads, d = module.num_attention_heads, module.attention_head_size

    def split(x):  # [B, T, H*d] -> [B, H, T, d]
        return x.view(x.shape[0], x.shape[1], heads, d).transpose(1, 2)

    if isinstance(module, v1.DisentangledSelfAttention):
        qkv = module.in_proj(hidden).view(batch_size, length, heads, 3, d).transpose(1, 2)
        q = qkv[..., 0, :] + module.q_bias.view(heads, 1, d)
        k = qkv[..., 1, :]
        v = qkv[..., 2, :] + module.v_bias.view(heads, 1, d)
        pos_key, pos_query = module.pos_proj(rel_embeddings), module.pos_q_proj(rel_embeddings)
    else:
        q, k, v = (
            split(module.query_proj(hidden)),
            split(module.key_proj(hidden)),
            split(module.value_proj(hidden)),
        )
        shared = module.share_att_key
        pos_key = (module.key_proj if shared else module.pos_key_proj)(rel_embeddings)
        pos_query = (module.query_proj if shared else module.pos_query_proj)(rel_embeddings)
    pk, pq = split(pos_key[None]), split(pos_query[None])  # [1, H, 2m, d]
    m = module.max_relative_positions
    i = torch.arange(length)
    index = (
        m + i[:, None] - i[None, :]
    )  # relative distance i - j -> its embedding row (no clamping needed: T < m)
    c2p = torch.einsum("bhid,hijd->bhij", q, pk[0][:, index])
    p2c = torch.einsum("bhjd,hijd->bhij", k, pq[0][:, index])
    scale = math.sqrt(3 * d)
    real = (q @ k.transpose(-1, -2) + c2p + p2c) / scale
    real = real.masked_fill(mask2d[:, None, None, :] == 0, torch.finfo(real.dtype).min)
    prefix = q @ prefix_key.transpose(-1, -2) / scale
    probs = torch.softmax(torch.cat([prefix, real], dim=-1), dim=-1)
    out = probs @ torch.cat([prefix_value, v], dim=2)
    return out.transpose(1, 2).reshape(batch_size, length, heads * d)


@pytest.mark.parametrize("kind", ["v1", "v2", "v2-shared"])
def test_prefix_attention_matches_hand_written_rule(kind):
    model = tiny_model(kind, layers=1)
    prompt = DeepPrompt([0], prompt_length=3, num_heads=2, head_dim=8)
    prompt.attach(Backbone(model, None, None))
    module = attention(model, 0)
    seen = {}
    module.register_forward_hook(
        lambda mod, args, kwargs, out: seen.update(args=args, kwargs=kwargs, out=out[0]), with_kwargs=True
    )
    ids, mask = batch()
    with torch.no_grad():
        model(ids, attention_mask=mask)
        hidden = seen["args"][0]
        prefix_key, prefix_value = prompt.layer_kv(0, ids.shape[0])
        rel = seen["kwargs"]["rel_embeddings"]
        expected = _reference_attention(module, hidden, mask, rel, prefix_key, prefix_value)
    real = mask.bool()  # padded query rows are junk either way (DeBERTa masks their whole row)
    assert torch.allclose(seen["out"][real], expected[real], atol=1e-5)
    # ... and not the stock output: the prefix changed something.
    stock_forward = type(module).__mro__[1].forward
    stock = stock_forward(
        module, *seen["args"], **{k: w for k, w in seen["kwargs"].items() if k != "prefix_kv"}
    )
    assert not torch.allclose(seen["out"], stock[0], atol=1e-4)


def _prompted(kind: str, layers=(1, 2), seed: int = 0, **extra) -> PromptedModel:
    model = tiny_model(kind, layers=3, seed=seed, **extra)
    backbone = Backbone(model, None, None)
    model.requires_grad_(False)
    torch.manual_seed(seed + 1)
    prompt = DeepPrompt(list(layers), prompt_length=4, num_heads=2, head_dim=8)
    return PromptedModel(backbone, ClsHead(16, 2, dropout=0.0), prompt)


def _batch_dict():
    ids, mask = batch()
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1]), "padded": True}


@pytest.mark.parametrize("kind", ["v1", "v3-like"])
def test_only_chosen_layers_swapped_and_gradients_reach_prompt_and_head_only(kind):
    model = _prompted(kind, layers=(1, 2))
    assert model.mask_format == "2d"
    assert type(attention(model.encoder, 0)) in (v1.DisentangledSelfAttention, v2.DisentangledSelfAttention)
    assert all(isinstance(attention(model.encoder, i), PREFIX_CLASSES) for i in (1, 2))
    b = _batch_dict()
    model.train()
    model.loss(model(b), b).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.prompt.embedding.grad.abs().sum() > 0
    assert model.head.classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["v1", "v3-like"])
def test_prompts_alone_lower_the_loss(kind):
    model = _prompted(kind, initializer_range=0.5)
    model.head.requires_grad_(False)
    b = _batch_dict()
    optimizer = torch.optim.Adam(model.prompt.parameters(), lr=0.05)
    model.train()
    losses = []
    for _ in range(25):
        loss = model.loss(model(b), b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("kind", ["v1", "v3-like"])
def test_gradient_checkpointing_gives_the_same_gradients(kind):
    plain = _prompted(kind).train()
    checkpointed = copy.deepcopy(plain)
    encoder = checkpointed.encoder  # transformers 5.2x renamed gradient_checkpointing_enable (5.17 has only that)
    (getattr(encoder, "activation_checkpointing_enable", None) or encoder.gradient_checkpointing_enable)()
    b = _batch_dict()
    for m in (plain, checkpointed):
        m.loss(m(b), b).backward()
    assert checkpointed.prompt.embedding.grad.abs().sum() > 0
    assert torch.allclose(plain.prompt.embedding.grad, checkpointed.prompt.embedding.grad, atol=1e-6)
    assert torch.allclose(
        plain.head.classifier.weight.grad, checkpointed.head.classifier.weight.grad, atol=1e-6
    )


@pytest.mark.parametrize("kind", ["v1", "v3-like"])
def test_deepcopy_and_state_dict_round_trip(kind):
    model = _prompted(kind).eval()
    b = _batch_dict()
    with torch.no_grad():
        out = model(b)
        twin = copy.deepcopy(model)
        assert torch.equal(twin(b), out)
        twin.prompt.embedding.add_(1.0)  # the copy's hooks read the copy's prompt, not the original's
        assert not torch.allclose(twin(b), out)
        assert torch.equal(model(b), out)
        # Same keys as a stock backbone (the subclass adds no tensors); a fresh model takes the weights.
        assert set(model.encoder.state_dict()) == set(tiny_model(kind, layers=3).state_dict())
        fresh = _prompted(kind, seed=5).eval()
        assert not torch.allclose(fresh(b), out)
        fresh.load_state_dict(model.state_dict())
        assert torch.equal(fresh(b), out)


def test_backbone_loading_picks_eager_and_mask_format():
    deberta = load_backbone(OmegaConf.load(REPO / "conf/model/tiny-deberta-v2.yaml"), attention="sdpa")
    assert deberta.encoder.config._attn_implementation == "eager"
    assert deberta.mask_format == "2d"
    assert isinstance(deberta.self_attention(0), v2.DisentangledSelfAttention)
    bert = load_backbone(OmegaConf.load(REPO / "conf/model/tiny-bert.yaml"), attention="sdpa")
    assert bert.encoder.config._attn_implementation == "ptv2_sdpa"
    assert bert.mask_format == "4d"


def test_mask_2d_padded_batch_matches_unpadded_rows():
    """PromptedModel's 2-D mask: a padded row's real tokens get the same outputs as that row alone."""
    model = _prompted("v3-like").eval()
    b = _batch_dict()
    with torch.no_grad():
        hidden = model.encoder(b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        alone = model.encoder(b["input_ids"][1:2, :6]).last_hidden_state
    assert torch.allclose(hidden[1, :6], alone[0], atol=1e-5)


@pytest.mark.parametrize("model", ["tiny-deberta", "tiny-deberta-v2"])
def test_cli_trains_rte_on_tiny_deberta(model, tmp_path, fixture_data):
    cmd = [
        sys.executable,
        "-m",
        "ptv2.cli",
        "task=rte",
        f"model={model}",
        f"data.root={fixture_data}",
        "train.epochs=1",
        "data.max_train_samples=8",
        f"results.root={tmp_path}",
        "train.progress=false",
    ]
    proc = run_cli(*cmd[3:])
    assert proc.returncode == 0, proc.stderr[-2000:]
    (metrics_path,) = tmp_path.rglob("metrics.json")
    metrics = json.loads(metrics_path.read_text())
    assert model in str(metrics_path) and metrics
