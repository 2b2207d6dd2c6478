"""Shared pieces of the integer-only modules: weight / bias / multiplier quantization, dtype names
and the reference mode switch."""

from __future__ import annotations

import contextlib

import torch

from .. import numerics, ops

DTYPES = {"int8": torch.int8, "uint8": torch.uint8, "int32": torch.int32}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

_REFERENCE_MODE = [False]


@contextlib.contextmanager
def reference_mode():
    """Inside this context the integer modules compute with compress_kernels.reference (the slow,
    obvious int64 specification) instead of the kernels. Tests run a converted model both ways and
    require identical integers."""
    _REFERENCE_MODE.append(True)
    try:
        yield
    finally:
        _REFERENCE_MODE.pop()


def in_reference_mode() -> bool:
    return _REFERENCE_MODE[-1]


def quantize_layer(weight: torch.Tensor, bias: torch.Tensor | None, input_scale: float, output_scale: float,
                   per_channel: bool):
    """Symmetric int8 weights (narrow range), int32 bias at scale s_x * s_w[n] (round half to even,
    saturated), and the fixed-point multipliers s_x * s_w[n] / s_y as (m0, shift).
    Returns (w_q, w_scale, bias_q or None, m0, shift)."""
    w_q, w_scale = numerics.quantize_weight(weight, per_channel=per_channel)
    acc_scale = torch.tensor(float(input_scale), dtype=torch.float64) * w_scale.double()
    m0, shift = ops.quantize_multiplier(acc_scale / float(output_scale))
    bias_q = None
    if bias is not None:
        b = torch.round(bias.detach().double() / acc_scale.expand(weight.shape[0]))
        bias_q = b.clamp(-(2**31), 2**31 - 1).to(torch.int32)
    return w_q, w_scale, bias_q, m0.reshape(-1), shift.reshape(-1)


def fold_batchnorm(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of conv followed by bn in evaluation mode:
    w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta."""
    factor = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight.detach() * factor.reshape(-1, 1, 1, 1)
    b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return w, (b - bn.running_mean) * factor + bn.bias.detach()
