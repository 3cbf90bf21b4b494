"""Deep prompts (P-Tuning v2): trainable prefix keys/values in the self-attention of chosen layers.

The prefix is not passed through the model's key/value cache (that path shifts position ids, forces a
prefix in every layer and breaks under gradient checkpointing). ``PromptedModel`` computes every chosen
layer's prefix once per forward (``DeepPrompt.attention_inputs``) and passes it to the encoder as keyword
arguments, which transformers hands down to ``ptv2.prompts.attention``'s functions; each prompted
self-attention module knows its slot in the stack. Real tokens keep their positions 0..T-1 (unless
``prompt.shift_positions``), so prompt length and sequence length are independent. DeBERTa's attention
takes no such arguments: there a forward pre-hook hands each prompted layer its slice
(``ptv2.prompts.deberta``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ptv2.errors import UserError
from ptv2.heads import init_linear
from ptv2.prompts.attention import PREFIX_SLOT, with_prefix_columns
from ptv2.prompts.base import Prompt
from ptv2.prompts.deberta import PREFIX_ATTENTION, adapt_for_prefix


class DeepPrompt(Prompt):
    """Per-layer prefix k/v for ``layers`` (0-based), reparameterised by an embedding or an MLP.

    embedding: one trainable vector per (position, layer, k|v) - the k/v themselves.
    mlp: prefix-tuning's reparameterisation, embedding(P, H) -> Linear -> tanh -> Linear(-> layers*2*H).
    Every weight starts N(0, init_std) and every bias at 0: the official code's effective init (its
    from_pretrained re-initialised the prefix encoder with the backbone's initializer_range, 0.02).
    """

    def __init__(
        self,
        layers: list[int],
        prompt_length: int,
        num_heads: int,
        head_dim: int,
        reparam: str = "embedding",
        mlp_hidden_size: int = 512,
        dropout: float = 0.0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if reparam not in ("embedding", "mlp"):
            raise ValueError(f"unknown reparam {reparam!r}")
        self.layers = list(layers)
        self.prompt_length = prompt_length
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.reparam = reparam
        hidden = num_heads * head_dim
        out_size = len(self.layers) * 2 * hidden
        if reparam == "embedding":
            self.embedding = nn.Parameter(torch.randn(prompt_length, out_size) * init_std)
        else:
            self.embedding = nn.Parameter(torch.randn(prompt_length, hidden) * init_std)
            self.mlp = nn.Sequential(nn.Linear(hidden, mlp_hidden_size), nn.Tanh(), nn.Linear(mlp_hidden_size, out_size))
            init_linear(self.mlp, init_std)
        self.dropout = nn.Dropout(dropout)
        self._slot = {layer: i for i, layer in enumerate(self.layers)}
        self._step_prefix: torch.Tensor | None = None  # set only inside `one_pass` (DeBERTa)
        self.by_hooks = False  # set by attach: DeBERTa's attention takes the prefix from hooks

    kind = "deep"

    @property
    def packable(self) -> bool:  # type: ignore[override]
        return not self.by_hooks

    def attach(self, backbone) -> None:
        """Give each chosen layer's self-attention its slot in the prefix stack; DeBERTa's attention, which
        takes no extra keyword arguments, gets a prefix-aware subclass and a forward pre-hook instead."""
        for slot, layer in enumerate(self.layers):
            module = backbone.self_attention(layer)
            if type(module) in PREFIX_ATTENTION:
                self.by_hooks = True
                adapt_for_prefix(module).register_forward_pre_hook(PrefixInjector(self, layer), with_kwargs=True)
            else:
                setattr(module, PREFIX_SLOT, slot)

    def encoder_inputs(self, rows: int, mask: torch.Tensor | None, length: int) -> dict:
        return {} if self.by_hooks else self.attention_inputs(rows, mask, length)

    def around_encoder(self, rows: int, recomputed: bool = False):
        """DeBERTa: one prefix computation per forward for its hooks, unless gradient checkpointing
        recomputes the layers (the hooks then rebuild each layer's prefix inside its layer)."""
        return self.one_pass(rows) if self.by_hooks and not recomputed else contextlib.nullcontext()

    def artifact(self) -> dict[str, torch.Tensor]:
        return dict(self.state_dict()) | {"computed_prefix": self.computed_prefix()}

    def _all_vectors(self) -> torch.Tensor:
        """[P, layers*2*H]: every layer's prefix in one matmul (or no op for the embedding reparam)."""
        return self.embedding if self.reparam == "embedding" else self.mlp(self.embedding)

    def _as_kv(self, vectors: torch.Tensor, batch_size: int, layers: int) -> torch.Tensor:
        """[P, layers*2*H] -> [layers, 2, B, heads, P, head_dim], batch expanded (a view unless dropped out)."""
        kv = vectors.view(self.prompt_length, layers, 2, self.num_heads, self.head_dim).permute(1, 2, 3, 0, 4)
        kv = kv.unsqueeze(2).expand(layers, 2, batch_size, self.num_heads, self.prompt_length, self.head_dim)
        if self.training and self.dropout.p > 0:
            kv = self.dropout(kv)  # per example, as the official code drops out the batched prefix
        return kv

    def prefix(self, rows: int) -> torch.Tensor:
        """Every prompted layer's prefix k/v for ``rows`` sequences: [layers, 2, rows, heads, P, head_dim]."""
        return self._as_kv(self._all_vectors(), rows, len(self.layers))

    def attention_inputs(self, rows: int, token_mask: torch.Tensor | None, length: int) -> dict:
        """The encoder's keyword arguments for one forward: the prefix stack and the prefixed layers' mask
        (None when ``token_mask`` is None: nothing to mask, so SDPA may use its flash kernel)."""
        visible = None if token_mask is None else token_mask.new_ones(rows, self.prompt_length)
        mask = None if visible is None else with_prefix_columns(token_mask, visible, length)
        return {"ptv2_prefix_kv": self.prefix(rows), "ptv2_prefix_mask": mask}

    def packed_inputs(self, sequences: int) -> dict:
        """Packed rows: one prefix copy per sequence (its own prefix dropout, as unpacked), no mask here."""
        return {"ptv2_prefix_kv": self.prefix(sequences)}

    @contextlib.contextmanager
    def one_pass(self, batch_size: int) -> Iterator[None]:
        """DeBERTa (hook path): compute all layers' prefix once for one forward pass; the hooks slice it.

        Not for gradient checkpointing, whose recomputation must rebuild the prefix inside each layer.
        """
        self._step_prefix = self._as_kv(self._all_vectors(), batch_size, len(self.layers))
        try:
            yield
        finally:
            self._step_prefix = None

    def _layer_vectors(self, slot: int) -> torch.Tensor:
        """[P, 2*H] prefix for one layer; the MLP computes only that layer's rows of its output."""
        width = 2 * self.num_heads * self.head_dim
        rows = slice(slot * width, (slot + 1) * width)
        if self.reparam == "embedding":
            return self.embedding[:, rows]
        first, act, last = self.mlp
        return nn.functional.linear(act(first(self.embedding)), last.weight[rows], last.bias[rows])

    def layer_kv(self, layer: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix keys and values of one layer, each [B, heads, P, head_dim]."""
        cached = self._step_prefix
        if cached is not None and cached.shape[2] == batch_size:
            kv = cached[self._slot[layer]]
        else:
            kv = self._as_kv(self._layer_vectors(self._slot[layer]), batch_size, 1)[0]
        return kv[0], kv[1]

    def computed_prefix(self) -> torch.Tensor:
        """All layers' prefix k/v, [layers, 2, heads, P, head_dim]: what a task must store after training."""
        with torch.no_grad():
            return self._as_kv(self._all_vectors(), 1, len(self.layers))[:, :, 0].clone()

    def stored_parameter_count(self) -> int:
        return len(self.layers) * 2 * self.num_heads * self.head_dim * self.prompt_length


class PrefixInjector:
    """DeBERTa: forward pre-hook that gives one self-attention module its layer's prefix as ``prefix_kv``.

    A class, not a closure, so that ``copy.deepcopy`` of the whole model rebinds it to the copied prompt.
    The prefix is computed inside the hook, so gradient checkpointing recomputes it with the layer.
    """

    def __init__(self, prompt: DeepPrompt, layer: int) -> None:
        self.prompt = prompt
        self.layer = layer

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden_states = args[0] if args else kwargs["hidden_states"]
        kwargs["prefix_kv"] = self.prompt.layer_kv(self.layer, hidden_states.shape[0])
        return args, kwargs


def parse_layer_range(text: object) -> tuple[int, int]:
    """'17-24' -> (17, 24), 1-based inclusive. ValueError completing "depth_range.layers=<text> ..." when
    it is not such an interval or is reversed."""
    try:
        first, last = (int(x) for x in str(text).split("-"))
    except ValueError:
        raise ValueError("must be an interval like 17-24 (1-based, inclusive)") from None
    if first > last:
        raise ValueError(f"is reversed: write {last}-{first}")
    if first < 1:
        raise ValueError("must start at layer 1 or later (layers are 1-based)")
    return first, last


def resolve_depth_range(select: str, num_layers: int, k: int | None = None, layers: str | None = None) -> list[int]:
    """0-based layer indices from the paper's 1-based inclusive notation.

    ``layers="17-24"`` (an explicit interval) wins; else ``select`` is ``all``, ``top`` (the k last
    layers, the paper's "descending" [L-k+1, L]) or ``bottom`` (the k first, "ascending" [1, k]).
    """
    if layers not in (None, "", "all"):
        try:
            first, last = parse_layer_range(layers)
        except ValueError as error:
            raise UserError(f"depth_range.layers={layers} {error}") from None
        if last > num_layers:
            raise UserError(f"depth_range.layers={layers} is outside the model's layers 1-{num_layers}")
        return list(range(first - 1, last))
    if select == "all" or layers == "all":
        return list(range(num_layers))
    if select in ("top", "bottom"):
        if k is None or not 1 <= k <= num_layers:
            raise UserError(f"depth_range.k={k} must be between 1 and the model's {num_layers} layers")
        return list(range(num_layers - k, num_layers)) if select == "top" else list(range(k))
    raise UserError(f"depth_range.select={select!r}: use all, top or bottom")


def format_depth_range(layers: list[int]) -> str:
    """The paper's notation for contiguous 0-based layers: [20, 21, 22, 23] -> "21-24"."""
    return f"{layers[0] + 1}-{layers[-1] + 1}" if layers else ""
