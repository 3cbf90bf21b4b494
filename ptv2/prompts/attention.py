"""Attention functions that put a layer's prefix k/v in front of its keys and values.

Registered in transformers' ``AttentionInterface`` as ``ptv2_sdpa`` and ``ptv2_eager``, so BERT-like
self-attention modules call them unchanged; transformers passes the model's extra keyword arguments down
to them. ``PromptedModel`` computes every layer's prefix once per forward and hands it over as
``ptv2_prefix_kv`` ([layers, 2, rows, heads, P, head_dim]) with ``ptv2_prefix_mask``, the attention mask of
the prefixed layers ([rows, 1, queries, P + T] boolean, True = attend; or one such mask per layer,
[layers, rows, 1, queries, P + T], when the prefix slots visible differ by layer). Each prompted
self-attention module carries its slot in that stack (``ptv2_prefix_slot``, set by ``DeepPrompt.attach``);
other layers ignore both and use the model's own ``attention_mask``. Nothing is stored between calls, so
the same functions serve compiled graphs, gradient checkpointing and mixed batches of several prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

PREFIX_SLOT = "ptv2_prefix_slot"  # attribute of a prompted self-attention module: its row in the prefix stack


def _with_prefix(module, key, value, mask, prefix_kv, prefix_mask):
    slot = getattr(module, PREFIX_SLOT, None)
    if prefix_kv is None or slot is None:
        return key, value, mask
    prefix_key, prefix_value = prefix_kv[slot]
    key = torch.cat([prefix_key.to(key.dtype), key], dim=2)
    value = torch.cat([prefix_value.to(value.dtype), value], dim=2)
    if prefix_mask is not None and prefix_mask.dim() == 5:  # per-layer masks (mixed prompts)
        prefix_mask = prefix_mask[slot]
    return key, value, prefix_mask


def prefix_sdpa_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, ptv2_prefix_kv=None, ptv2_prefix_mask=None, **_
):
    key, value, mask = _with_prefix(module, key, value, attention_mask, ptv2_prefix_kv, ptv2_prefix_mask)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def prefix_eager_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, ptv2_prefix_kv=None, ptv2_prefix_mask=None, **_
):
    key, value, mask = _with_prefix(module, key, value, attention_mask, ptv2_prefix_kv, ptv2_prefix_mask)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = F.dropout(torch.softmax(scores, dim=-1), p=dropout, training=dropout > 0)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def with_prefix_columns(mask: torch.Tensor | None, prefix_visible: torch.Tensor, length: int) -> torch.Tensor:
    """The prefixed layers' mask: ``prefix_visible`` ([rows, P], or [layers, rows, P] when it differs by layer;
    True = a usable slot) in front of the token mask ([rows, 1, 1 or queries, T]; None = all ``length``
    tokens visible to every query)."""
    queries = 1 if mask is None else mask.shape[-2]
    lead = prefix_visible.shape[:-1]  # (rows,) or (layers, rows)
    columns = prefix_visible[..., None, None, :].expand(*lead, 1, queries, prefix_visible.shape[-1])
    if mask is None:
        mask = torch.ones(lead[-1], 1, 1, length, dtype=torch.bool, device=prefix_visible.device)
    return torch.cat([columns, mask.expand(*lead, 1, queries, mask.shape[-1])], dim=-1)


ATTENTION_IMPLEMENTATIONS = {"sdpa": "ptv2_sdpa", "eager": "ptv2_eager"}
AttentionInterface.register("ptv2_sdpa", prefix_sdpa_attention)
AttentionInterface.register("ptv2_eager", prefix_eager_attention)
# Without a mask function for our names transformers would silently drop a 2-D padding mask; both of
# our functions take boolean masks (True = attend), which is what the SDPA mask builder makes.
AttentionMaskInterface.register("ptv2_sdpa", sdpa_mask)
AttentionMaskInterface.register("ptv2_eager", sdpa_mask)
