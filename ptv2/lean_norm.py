"""Layer norms that keep their normalised input in bf16 for the backward pass (``train.lean_norms=true``).

Under bf16 autocast a layer norm runs in fp32 and autograd keeps its fp32 input: with the residual stream
at two norms per layer that is 8 KB per token and layer on roberta-large, about 30% of what a deep-prompt
step keeps (docs/performance.md, "Where the memory goes"). ``LeanLayerNorm`` computes the same fp32
forward but keeps the normalised input in bf16 (half the bytes) and rebuilds the input from it for torch's
own layer-norm backward: the forward is unchanged, the gradient carries bf16 rounding of the normalised
input, as a bf16 matmul's gradient does of its saved input. Without autocast nothing is rounded. Evaluation
and anything without a gradient take ``nn.LayerNorm``'s own path. Measured on an H200: 12-14% less peak
memory, 10-11% fewer tokens/s compiled (Inductor cannot fuse the operator with its neighbours), so it is
off by default. The swap keeps every parameter and state-dict key.
"""

from __future__ import annotations

import torch
from torch import nn


# One opaque operator, not traceable element-wise code: compiled, Inductor's partitioner would otherwise
# recompute the normalised input from the fp32 one and keep that instead (measured on an H200: the same
# 8 KB per token and layer of fp32 kept with and without this).
@torch.library.custom_op("ptv2::lean_layer_norm", mutates_args=())
def lean_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float,
                    kept_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Layer norm of an fp32 ``x`` over its last dimension: (output, normalised input in ``kept_dtype``,
    mean, 1 / std)."""
    out, mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), weight, bias, eps)
    return out, ((x - mean) * rstd).to(kept_dtype), mean, rstd


@lean_layer_norm.register_fake
def _(x, weight, bias, eps, kept_dtype):
    stats = x.new_empty((*x.shape[:-1], 1))
    return torch.empty_like(x), torch.empty_like(x, dtype=kept_dtype), stats, torch.empty_like(stats)


def _keep(ctx, inputs, output) -> None:
    _, weight, bias, _, _ = inputs
    _, normalized, mean, rstd = output
    ctx.save_for_backward(normalized, mean, rstd, weight, bias)


def _backward(ctx, grad_out, *_):
    normalized, mean, rstd, weight, bias = ctx.saved_tensors
    x = normalized.to(mean.dtype) / rstd + mean  # the input, up to the kept dtype's rounding
    wanted = tuple(ctx.needs_input_grad[:3])
    grad_x, grad_weight, grad_bias = torch.ops.aten.native_layer_norm_backward(
        grad_out, x, (x.shape[-1],), mean, rstd, weight, bias, wanted)
    return grad_x, grad_weight, grad_bias, None, None


lean_layer_norm.register_autograd(_backward, setup_context=_keep)


class LeanLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose backward pass keeps the normalised input in bf16 under bf16 autocast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        autocast = torch.is_autocast_enabled(device)
        # CPU autocast runs layer norm in bf16 (nothing fp32 to save); no gradient: nothing kept at all
        if (autocast and device != "cuda") or not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return super().forward(x)
        # kept as a bf16 matmul keeps its input: in the frozen backbone's dtype, else autocast's (else exact)
        if self.weight.dtype != torch.float32:
            kept = self.weight.dtype
        else:
            kept = torch.get_autocast_dtype(device) if autocast else x.dtype
        bias = None if self.bias is None else self.bias.float()
        with torch.autocast(device, enabled=False):  # computed in fp32, as CUDA autocast runs layer norm
            out = lean_layer_norm(x.float(), self.weight.float(), bias, self.eps, kept)[0]
        return out if autocast else out.to(x.dtype)


def use_lean_layer_norms(module: nn.Module) -> int:
    """Make every last-dimension ``nn.LayerNorm`` in ``module`` a ``LeanLayerNorm``; returns how many."""
    swapped = 0
    for norm in module.modules():
        if type(norm) is nn.LayerNorm and len(norm.normalized_shape) == 1 and norm.elementwise_affine:
            norm.__class__ = LeanLayerNorm  # same parameters, buffers and state-dict keys
            swapped += 1
    return swapped
