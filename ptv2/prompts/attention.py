"""Attention functions that put a layer's prefix k/v in front of its keys and values.

Registered in transformers' ``AttentionInterface`` as ``ptv2_sdpa`` and ``ptv2_eager``, so BERT-like
self-attention modules call them unchanged; transformers passes the model's extra keyword arguments down
to them. ``PromptedModel`` computes every layer's prefix once per forward and hands it over as
``ptv2_prefix_kv`` ([layers, 2, rows, heads, P, head_dim]) with ``ptv2_prefix_mask``, the attention mask of
the prefixed layers ([rows, 1, queries, P + T] boolean, True = attend; or one such mask per layer,
[layers, rows, 1, queries, P + T], when the prefix slots visible differ by layer). Each prompted
self-attention module carries its slot in that stack (``ptv2_prefix_slot``, set by ``DeepPrompt.attach``);
other layers ignore both and use the model's own ``attention_mask``. Packed rows come as ``ptv2_packed``
(``PackedSequences``): each sequence attends to its own prefix copy and tokens, through torch's
variable-length flash kernel on GPUs. Nothing is stored between calls, so
the same functions serve compiled graphs, gradient checkpointing and mixed batches of several prompts.
"""

from __future__ import annotations

from typing import NamedTuple

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


class PackedSequences(NamedTuple):
    """Packed rows (``ptv2.data.packed_rows``) as attention units: a query sees the keys of its own unit only,
    and a sequence's unit has its prefix's P keys in front of its tokens (a padding unit has none). The
    collation builds the tensors (``attention_units``), so the model's graph holds no index arithmetic."""

    sequences: int  # sequences in the batch: the prefix stack has one row per sequence
    query_starts: torch.Tensor  # int32 [units + 1]: where each unit starts in the flattened rows
    key_starts: torch.Tensor  # int32 [units + 1]: the same over a prefixed layer's keys
    key_index: torch.Tensor  # [keys]: each key's place in cat(prefix keys [sequences * P], token keys)
    key_inverse: torch.Tensor  # [keys]: the inverse permutation (key_index reorders every key exactly once)
    max_query: int
    max_key: int


def attention_units(sizes: list[int], unit_sequence: list[int], sequences: int, prefix_length: int) -> dict:
    """The tensors of ``PackedSequences`` for units of ``sizes`` tokens in flattened-row order, unit u holding
    sequence ``unit_sequence[u]`` of the padded layout (-1: padding), with ``prefix_length`` prefix keys per
    sequence: batch keys ``pack_unit_starts`` (int32 [2, units + 1]: query starts, key starts; one tensor,
    as every tensor costs the loader processes a shared-memory transfer) and ``pack_key_index`` ([2, keys]:
    the key order, and its inverse for the backward pass)."""
    size, owner = torch.tensor(sizes, dtype=torch.long), torch.tensor(unit_sequence, dtype=torch.long)
    prefix_keys = (owner >= 0).long() * prefix_length
    key_size = size + prefix_keys
    starts = torch.zeros(2, len(sizes) + 1, dtype=torch.long)
    starts[:, 1:] = torch.stack([size, key_size]).cumsum(1)
    key_units = torch.arange(len(sizes)).repeat_interleave(key_size)
    offset = torch.arange(int(key_size.sum())) - starts[1, key_units]
    token_key = sequences * prefix_length + starts[0, key_units] + offset - prefix_keys[key_units]
    key_index = torch.where(offset < prefix_keys[key_units], owner[key_units] * prefix_length + offset, token_key)
    inverse = torch.empty_like(key_index)
    inverse[key_index] = torch.arange(len(key_index))
    return {"pack_unit_starts": starts.int(), "pack_key_index": torch.stack([key_index, inverse])}


def packed_sequences(batch: dict, row_length: int, prefix_length: int) -> PackedSequences:
    """A packed batch's attention units (``attention_units``' tensors in it)."""
    sequences = batch["pack_index"].shape[0] // batch["input_ids"].shape[-1]
    query_starts, key_starts = batch["pack_unit_starts"]
    key_index, key_inverse = batch["pack_key_index"]
    return PackedSequences(sequences, query_starts, key_starts, key_index, key_inverse, row_length,
                           row_length + prefix_length)


class _PermutedRows(torch.autograd.Function):
    """``x``'s rows in the order of a permutation. Its gradient is a gather by the inverse permutation, where
    index_select's own backward scatters with atomic adds (10% of a packed step's GPU time on an H200)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def _unit_of(starts: torch.Tensor, count: int) -> torch.Tensor:
    """The unit of each of ``count`` consecutive positions, for units beginning at ``starts`` ([units + 1])."""
    return (torch.arange(count, device=starts.device)[:, None] >= starts[None, 1:]).sum(-1)


def _flash_varlen(query: torch.Tensor) -> bool:
    """Can the variable-length flash kernel take these queries ([tokens, heads, dim])?"""
    dim = query.shape[-1]
    return (query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and dim % 8 == 0 and dim <= 256
            and _ampere_or_newer(query.device.index or 0))


@torch.compiler.assume_constant_result
def _ampere_or_newer(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 8


def _packed_attention(module, query, key, value, dropout, scaling, prefix_kv, packed: PackedSequences, eager: bool):
    """Attention of packed rows: each token sees its own unit's keys (its sequence's prefix copy and tokens)."""
    rows, heads, length, dim = query.shape
    q, k, v = (t.transpose(1, 2).reshape(rows * length, heads, dim) for t in (query, key, value))
    key_starts, max_key = packed.query_starts, packed.max_query
    slot = getattr(module, PREFIX_SLOT, None)
    if prefix_kv is not None and slot is not None:  # [sequences, heads, P, dim] -> [sequences * P, heads, dim]
        prefix_key, prefix_value = (p.to(k.dtype).transpose(1, 2).reshape(-1, heads, dim) for p in prefix_kv[slot])
        k = _PermutedRows.apply(torch.cat([prefix_key, k]), packed.key_index, packed.key_inverse)
        v = _PermutedRows.apply(torch.cat([prefix_value, v]), packed.key_index, packed.key_inverse)
        key_starts, max_key = packed.key_starts, packed.max_key
    if not eager and _flash_varlen(q):
        out = torch.ops.aten._flash_attention_forward(
            q, k, v, packed.query_starts, key_starts, packed.max_query, max_key, dropout, False, False, scale=scaling
        )[0]
        return out.view(rows, length, heads, dim), None
    # The reference (CPU, fp32, eager attention): one masked attention over all units at once.
    mask = _unit_of(packed.query_starts, q.shape[0])[:, None] == _unit_of(key_starts, k.shape[0])[None, :]
    out, probs = _attend(*(t.transpose(0, 1)[None] for t in (q, k, v)), mask, dropout, scaling, eager)
    return out[0].transpose(0, 1).reshape(rows, length, heads, dim), probs


def _attend(query, key, value, mask, dropout, scaling, eager: bool):
    """Attention over [batch, heads, length, dim] (mask: True = attend); eager also returns the probabilities."""
    if not eager:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling), None
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = F.dropout(torch.softmax(scores, dim=-1), p=dropout, training=dropout > 0)
    return torch.matmul(probs, value), probs


def _attention(module, query, key, value, attention_mask, dropout, scaling, prefix_kv, prefix_mask, packed, eager):
    if packed is not None:
        return _packed_attention(module, query, key, value, dropout, scaling, prefix_kv, packed, eager)
    key, value, mask = _with_prefix(module, key, value, attention_mask, prefix_kv, prefix_mask)
    out, probs = _attend(query, key, value, mask, dropout, scaling, eager)
    return out.transpose(1, 2).contiguous(), probs


def prefix_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, ptv2_prefix_kv=None,
                          ptv2_prefix_mask=None, ptv2_packed=None, **_):
    return _attention(module, query, key, value, attention_mask, dropout, scaling, ptv2_prefix_kv, ptv2_prefix_mask,
                      ptv2_packed, eager=False)


def prefix_eager_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, ptv2_prefix_kv=None,
                           ptv2_prefix_mask=None, ptv2_packed=None, **_):
    return _attention(module, query, key, value, attention_mask, dropout, scaling, ptv2_prefix_kv, ptv2_prefix_mask,
                      ptv2_packed, eager=True)


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
