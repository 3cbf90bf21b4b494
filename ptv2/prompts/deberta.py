"""Deep prompts for DeBERTa (v1 and v2/v3): a prefix-aware subclass of each disentangled self-attention.

DeBERTa's attention does not go through transformers' ``AttentionInterface`` and ignores key/value
caches, so ``ptv2.prompts.attention`` cannot reach it. ``DeepPrompt.attach`` instead swaps the class
of each chosen layer's self-attention module in place (``module.__class__ = ...``: same weights, no
re-initialisation) to a subclass whose forward accepts the ``prefix_kv`` the hook injects.

The rule for a prefix of P keys/values in front of T real tokens:
- prefix columns get the content score q.k_p only, scaled like the class scales content scores
  (1 / sqrt(head_dim * scale_factor), scale_factor = 1 + number of c2p/p2c terms), and ZERO
  relative-position bias (prompts have no position);
- the real columns keep the stock score: content + c2p + p2c over the T real tokens, relative
  positions built over the real tokens only (the parent's own bias method computes them);
- the mask gets P leading visible columns; the prefix values go in front of the values.
Without a prefix the subclasses call the parent's forward, so they equal the stock module exactly.

Follows transformers 5.24 (models/deberta/modeling_deberta.py and models/deberta_v2/modeling_deberta_v2.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.deberta import modeling_deberta as v1
from transformers.models.deberta_v2 import modeling_deberta_v2 as v2


def _attend(
    module: nn.Module, query, key, value, rel_att, attention_mask, prefix_kv, output_attentions: bool
):
    """Softmax attention over [prefix | real] columns; query is pre-scaled, all of them [B, H, T, d].

    rel_att ([B, H, T, T] or 0) is the stock relative-position bias of the real columns.
    """
    prefix_key, prefix_value = prefix_kv
    prefix_len = prefix_key.shape[2]
    keys = torch.cat([prefix_key.to(key.dtype), key], dim=2)
    values = torch.cat([prefix_value.to(value.dtype), value], dim=2)
    scores = torch.matmul(query, keys.transpose(-1, -2))
    if torch.is_tensor(rel_att):
        scores = scores + F.pad(rel_att, (prefix_len, 0))  # zero bias on the prefix columns
    if getattr(module, "head_logits_proj", None) is not None:  # v1 talking heads mix all columns
        scores = module.head_logits_proj(scores.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    mask = F.pad(attention_mask.bool(), (prefix_len, 0), value=True)
    scores = scores.masked_fill(~mask, torch.finfo(query.dtype).min)
    probs = module.dropout(torch.softmax(scores, dim=-1))
    if getattr(module, "head_weights_proj", None) is not None:
        probs = module.head_weights_proj(probs.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    context = torch.matmul(probs, values).permute(0, 2, 1, 3).flatten(2)
    return context, (probs if output_attentions else None)


class PrefixDebertaSelfAttention(v1.DisentangledSelfAttention):
    """DeBERTa (v1) disentangled self-attention that also attends to a deep-prompt prefix."""

    def forward(
        self,
        hidden_states,
        attention_mask,
        output_attentions=False,
        query_states=None,
        relative_pos=None,
        rel_embeddings=None,
        prefix_kv=None,
    ):
        if prefix_kv is None:
            return super().forward(
                hidden_states, attention_mask, output_attentions, query_states, relative_pos, rel_embeddings
            )
        query, key, value = self.transpose_for_scores(self.in_proj(hidden_states)).chunk(3, dim=-1)
        if query_states is not None:
            query = self.transpose_for_scores(self.in_proj(query_states)).chunk(3, dim=-1)[0]
        query = query + self.transpose_for_scores(self.q_bias[None, None, :])
        value = value + self.transpose_for_scores(self.v_bias[None, None, :])
        scale_factor = 1 + len(self.pos_att_type)
        query = query / v1.scaled_size_sqrt(query, scale_factor).to(
            dtype=query.dtype
        )  # as the parent: c2p uses it too
        rel_att = 0
        if self.relative_attention and rel_embeddings is not None and relative_pos is not None:
            rel_att = self.disentangled_att_bias(
                query, key, relative_pos, self.pos_dropout(rel_embeddings), scale_factor
            )
        return _attend(self, query, key, value, rel_att, attention_mask, prefix_kv, output_attentions)


class PrefixDebertaV2SelfAttention(v2.DisentangledSelfAttention):
    """DeBERTa-v2/v3 disentangled self-attention that also attends to a deep-prompt prefix."""

    def forward(
        self,
        hidden_states,
        attention_mask,
        output_attentions=False,
        query_states=None,
        relative_pos=None,
        rel_embeddings=None,
        prefix_kv=None,
    ):
        if prefix_kv is None:
            return super().forward(
                hidden_states, attention_mask, output_attentions, query_states, relative_pos, rel_embeddings
            )
        if query_states is None:
            query_states = hidden_states
        heads = self.num_attention_heads
        # The parent's layout: [B*heads, T, d] (its bias method expects that).
        query = self.transpose_for_scores(self.query_proj(query_states), heads)
        key = self.transpose_for_scores(self.key_proj(hidden_states), heads)
        value = self.transpose_for_scores(self.value_proj(hidden_states), heads)
        scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
        rel_att = 0
        if self.relative_attention:
            rel_att = self.disentangled_attention_bias(
                query, key, relative_pos, self.pos_dropout(rel_embeddings), scale_factor
            )
        if torch.is_tensor(rel_att):
            rel_att = rel_att.view(-1, heads, *rel_att.shape[1:])
        scale = v2.scaled_size_sqrt(query, scale_factor).to(dtype=query.dtype)

        def unflatten(x: torch.Tensor) -> torch.Tensor:
            return x.view(-1, heads, *x.shape[1:])

        return _attend(
            self,
            unflatten(query) / scale,
            unflatten(key),
            unflatten(value),
            rel_att,
            attention_mask,
            prefix_kv,
            output_attentions,
        )


# Stock attention class -> prefix-aware subclass; DeepPrompt.attach swaps through this table.
PREFIX_ATTENTION: dict[type, type] = {
    v1.DisentangledSelfAttention: PrefixDebertaSelfAttention,
    v2.DisentangledSelfAttention: PrefixDebertaV2SelfAttention,
}


def adapt_for_prefix(module: nn.Module) -> nn.Module:
    """Give a self-attention module without a ``prefix_kv`` path its prefix-aware subclass, in place."""
    subclass = PREFIX_ATTENTION.get(type(module))
    if subclass is not None:
        module.__class__ = subclass  # same parameters and buffers: loaded weights stay
    return module
