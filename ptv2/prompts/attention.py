"""Attention functions that put a layer's prefix k/v in front of its keys and values.

Registered in transformers' ``AttentionInterface`` as ``ptv2_sdpa`` and ``ptv2_eager``, so BERT-like
self-attention modules call them unchanged. The backbone receives a 4-D boolean padding mask
[B, 1, 1, T] (True = attend), which transformers passes through as is; a layer with a prefix pads it
with P leading True columns. Without padding the mask is None, so SDPA may pick its flash kernel even
with a prefix (prefix columns never need masking).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask


def _with_prefix(key, value, mask, prefix_kv):
    if prefix_kv is None:
        return key, value, mask
    prefix_key, prefix_value = prefix_kv
    key = torch.cat([prefix_key.to(key.dtype), key], dim=2)
    value = torch.cat([prefix_value.to(value.dtype), value], dim=2)
    if mask is not None:
        mask = F.pad(mask, (prefix_key.shape[2], 0), value=True)
    return key, value, mask


def prefix_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, prefix_kv=None, **_):
    key, value, mask = _with_prefix(key, value, attention_mask, prefix_kv)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def prefix_eager_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, prefix_kv=None, **_):
    key, value, mask = _with_prefix(key, value, attention_mask, prefix_kv)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = F.dropout(torch.softmax(scores, dim=-1), p=dropout, training=dropout > 0)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


ATTENTION_IMPLEMENTATIONS = {"sdpa": "ptv2_sdpa", "eager": "ptv2_eager"}
AttentionInterface.register("ptv2_sdpa", prefix_sdpa_attention)
AttentionInterface.register("ptv2_eager", prefix_eager_attention)
# Without a mask function for our names transformers would silently drop a 2-D padding mask; both of
# our functions take boolean masks (True = attend), which is what the SDPA mask builder makes.
AttentionMaskInterface.register("ptv2_sdpa", sdpa_mask)
AttentionMaskInterface.register("ptv2_eager", sdpa_mask)
