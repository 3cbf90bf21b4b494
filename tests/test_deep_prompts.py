"""Deep prompts: which parameters train, and the attention mechanism against hand-written references."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

import ptv2.prompts.attention  # noqa: F401  (registers ptv2_sdpa / ptv2_eager)
from ptv2.backbone import Backbone, load_backbone
from ptv2.model import build_model
from ptv2.prompts.deep import DeepPrompt, resolve_depth_range

L, H, HEADS, P = 4, 32, 4, 5


def _pair(arch: str, impl: str, layers: int = L):
    """A stock model and the same weights under ptv2's attention function."""
    cls, config_cls = (BertModel, BertConfig) if arch == "bert" else (RobertaModel, RobertaConfig)
    config = config_cls(
        vocab_size=60, hidden_size=H, num_hidden_layers=layers, num_attention_heads=HEADS, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=1,
    )
    torch.manual_seed(0)
    stock = cls._from_config(config, attn_implementation=impl, add_pooling_layer=False).eval()
    ours = cls._from_config(copy.deepcopy(config), attn_implementation=f"ptv2_{impl}", add_pooling_layer=False).eval()
    ours.load_state_dict(stock.state_dict())
    return stock, ours


def _batch():
    ids = torch.randint(3, 60, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 1  # pad id
    return ids, mask


def _mask4d(mask):
    return mask[:, None, None, :].bool()


def _prompted(model, prompt: DeepPrompt, ids, mask=None, **kwargs):
    """The encoder with the prompt's prefix, as PromptedModel calls it."""
    mask = None if mask is None else _mask4d(mask)
    return model(input_ids=ids, attention_mask=mask, **prompt.attention_inputs(ids.shape[0], mask, ids.shape[1]), **kwargs)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_without_prefix_equals_stock_model_exactly(arch, impl):
    stock, ours = _pair(arch, impl)
    ids, mask = _batch()
    expected = stock(input_ids=ids, attention_mask=mask).last_hidden_state
    got = ours(input_ids=ids, attention_mask=_mask4d(mask)).last_hidden_state
    real = mask.bool()
    assert torch.allclose(expected[real], got[real], atol=1e-6, rtol=0)
    two_d = ours(input_ids=ids, attention_mask=mask).last_hidden_state  # a 2-D mask is honoured too
    assert torch.allclose(expected[real], two_d[real], atol=1e-6, rtol=0)
    unpadded = ids[:1]
    assert torch.equal(stock(input_ids=unpadded).last_hidden_state, ours(input_ids=unpadded).last_hidden_state)


def _reference_forward(model: BertModel, prompt: DeepPrompt, ids, mask):
    """Hand-written BERT forward: each prompted layer attends over [prefix k/v ; token k/v]."""
    hidden = model.embeddings(input_ids=ids)
    batch, length, _ = hidden.shape
    for index, layer in enumerate(model.encoder.layer):
        attn = layer.attention.self
        heads = lambda x: x.view(batch, -1, HEADS, H // HEADS).transpose(1, 2)  # noqa: E731
        q, k, v = heads(attn.query(hidden)), heads(attn.key(hidden)), heads(attn.value(hidden))
        visible = mask.bool()
        if index in prompt.layers:
            pk, pv = prompt.layer_kv(index, batch)
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
            visible = torch.cat([torch.ones(batch, prompt.prompt_length, dtype=torch.bool), visible], 1)
        scores = q @ k.transpose(-1, -2) / (H // HEADS) ** 0.5
        scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, H)
        attended = layer.attention.output(context, hidden)
        hidden = layer.output(layer.intermediate(attended), attended)
    return hidden


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("layers", [[0, 1, 2, 3], [1, 2]])
def test_prefix_matches_hand_written_reference(impl, layers):
    _, ours = _pair("bert", impl)
    torch.manual_seed(1)
    prompt = DeepPrompt(layers, P, HEADS, H // HEADS).eval()
    prompt.attach(Backbone(ours, None, None))
    ids, mask = _batch()
    got = _prompted(ours, prompt, ids, mask).last_hidden_state
    with torch.no_grad():
        expected = _reference_forward(ours, prompt, ids, mask)
    real = mask.bool()
    assert torch.allclose(got[real], expected[real], atol=1e-5)


def test_sample_alone_equals_sample_in_padded_batch_and_prompt_changes_output():
    _, ours = _pair("roberta", "sdpa")
    prompt = DeepPrompt(list(range(L)), P, HEADS, H // HEADS, reparam="mlp").eval()
    prompt.attach(Backbone(ours, None, None))
    ids, mask = _batch()
    batched = _prompted(ours, prompt, ids, mask).last_hidden_state
    alone = _prompted(ours, prompt, ids[2:, :3]).last_hidden_state
    assert torch.allclose(batched[2, :3], alone[0], atol=1e-5)
    with torch.no_grad():
        prompt.embedding.add_(1.0)
    changed = _prompted(ours, prompt, ids[2:, :3]).last_hidden_state
    assert (changed - alone).abs().max() > 1e-3


def test_depth_range_only_changes_layers_from_its_first():
    stock, ours = _pair("bert", "sdpa", layers=6)
    prompt = DeepPrompt(resolve_depth_range("all", 6, layers="4-6"), P, HEADS, H // HEADS).eval()
    prompt.attach(Backbone(ours, None, None))
    ids, mask = _batch()
    expected = stock(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    got = _prompted(ours, prompt, ids, mask, output_hidden_states=True).hidden_states
    real = mask.bool()
    # hidden_states[i] is the input of (1-based) layer i+1: layers 1-3 see no prompt
    for i in range(4):
        assert torch.allclose(expected[i][real], got[i][real], atol=1e-6), i
    for i in range(4, 7):
        assert not torch.allclose(expected[i][real], got[i][real], atol=1e-3), i


def test_depth_range_presets_and_errors():
    from ptv2.errors import UserError

    assert resolve_depth_range("top", 24, k=4) == [20, 21, 22, 23]
    assert resolve_depth_range("bottom", 24, k=4) == [0, 1, 2, 3]
    assert resolve_depth_range("all", 24, layers="17-24") == list(range(16, 24))
    with pytest.raises(UserError, match="outside"):
        resolve_depth_range("all", 24, layers="20-25")


def _build(tiny_cfg, *overrides):
    cfg = tiny_cfg("model=tiny-bert", *overrides)
    torch.manual_seed(0)
    backbone = load_backbone(cfg.model, cfg.train.attention, cfg.train.dropout)
    return build_model(cfg, backbone, num_labels=2, head_kind="cls")


@pytest.mark.parametrize(
    ("reparam", "expected"),
    [
        # embedding: P*L*2*H = 16*4*2*32 = 4096; head: 32*2 + 2 = 66
        ("embedding", 4096 + 66),
        # mlp: P*H + (H*512 + 512) + (512*L*2*H + L*2*H) = 512 + 16896 + 131328 = 148736; + head 66
        ("mlp", 148736 + 66),
    ],
)
def test_only_prompt_and_head_train(tiny_cfg, reparam, expected):
    model = _build(tiny_cfg, f"reparam={reparam}", "prompt_length=16")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("prompt.", "head.")) for n in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected

    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(5, 100, (4, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 0, 1])}
    model.train()
    model.loss(model(batch), batch).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads == trainable
    optimizer.step()
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == trainable


def test_ft_trains_every_parameter(tiny_cfg):
    model = _build(tiny_cfg, "method=ft")
    assert model.prompt.kind == "none" and not list(model.prompt.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_prompts_alone_lower_the_loss_with_the_head_frozen(tiny_cfg):
    """The gradient really flows through the prefix: head frozen, only the prompt trains."""
    model = _build(tiny_cfg, "model.tiny.config.initializer_range=0.5", "train.dropout=0.0", "prompt_length=4")
    model.head.requires_grad_(False)
    torch.manual_seed(3)
    ids = torch.randint(5, 100, (16, 8))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (16,))}
    optimizer = torch.optim.AdamW(model.prompt.parameters(), lr=5e-2)
    model.train()
    losses = []
    for _ in range(30):
        loss = model.loss(model(batch), batch)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < 0.7 * losses[0], losses
