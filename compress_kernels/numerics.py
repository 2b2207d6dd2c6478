"""Quantization parameters and the float <-> integer conversions every module agrees on.

Float -> int is q = clamp(round_half_even(r / scale) + zero_point, qmin, qmax) (as torch.round).
Weights are symmetric (zero point 0) over the narrow range [-127, 127] by default, so -w is
representable and pruned (zero) weights stay exactly zero.
"""

from __future__ import annotations

import torch

DTYPE_RANGES = {torch.int8: (-128, 127), torch.uint8: (0, 255), torch.int32: (-(2**31), 2**31 - 1)}


def dtype_range(dtype: torch.dtype) -> tuple[int, int]:
    if dtype not in DTYPE_RANGES:
        raise ValueError(f"dtype must be one of {list(DTYPE_RANGES)}, got {dtype}")
    return DTYPE_RANGES[dtype]


def quantize(x: torch.Tensor, scale, zero_point, dtype: torch.dtype = torch.int8, qmin=None,
             qmax=None, axis: int | None = None) -> torch.Tensor:
    """clamp(round_half_even(x / scale) + zero_point, qmin, qmax) as dtype; per-channel along
    `axis` when scale has one element per channel."""
    lo, hi = dtype_range(dtype)
    qmin = lo if qmin is None else qmin
    qmax = hi if qmax is None else qmax
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point)
    if axis is not None and scale.numel() > 1:
        shape = [1] * x.dim()
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero_point = zero_point.reshape(shape) if zero_point.numel() > 1 else zero_point
    return (torch.round(x.float() / scale) + zero_point).clamp(qmin, qmax).to(dtype)


def dequantize(q: torch.Tensor, scale, zero_point, axis: int | None = None) -> torch.Tensor:
    """(q - zero_point) * scale in fp32."""
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point)
    if axis is not None and scale.numel() > 1:
        shape = [1] * q.dim()
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero_point = zero_point.reshape(shape) if zero_point.numel() > 1 else zero_point
    return (q.float() - zero_point) * scale


def choose_qparams(min_val: torch.Tensor, max_val: torch.Tensor, dtype: torch.dtype = torch.uint8,
                   symmetric: bool = False, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine qparams covering [min_val, max_val] (the range is widened to include 0, so that zero
    is exactly representable). Symmetric: zero point 0 (int8) or 128 (uint8)."""
    qmin, qmax = dtype_range(dtype)
    min_val = torch.as_tensor(min_val, dtype=torch.float32).clamp(max=0)
    max_val = torch.as_tensor(max_val, dtype=torch.float32).clamp(min=0)
    if symmetric:
        amax = torch.maximum(-min_val, max_val)
        scale = (amax / ((qmax - qmin) / 2)).clamp(min=eps)
        zp = torch.full_like(scale, 0 if dtype == torch.int8 else 128, dtype=torch.int64)
        return scale, zp
    scale = ((max_val - min_val) / (qmax - qmin)).clamp(min=eps)
    zp = (qmin - torch.round(min_val / scale)).clamp(qmin, qmax).to(torch.int64)
    return scale, zp


def weight_scale(w: torch.Tensor, per_channel: bool = True, bits: int = 8,
                 narrow_range: bool = True) -> torch.Tensor:
    """Symmetric weight scale max|w| / qmax per output channel (dim 0) or per tensor; qmax is
    2^(bits-1) - 1. An all-zero channel gets scale 1 (its weights quantize to 0 either way)."""
    del narrow_range  # the symmetric scale uses qmax = 2^(bits-1) - 1 in both ranges
    qmax = 2 ** (bits - 1) - 1
    amax = w.detach().abs().flatten(1).amax(dim=1) if per_channel else w.detach().abs().amax().reshape(1)
    scale = amax.float() / qmax
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def quantize_weight(w: torch.Tensor, per_channel: bool = True, bits: int = 8,
                    narrow_range: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 weights: (w_q, scale) with w_q = clamp(round(w / scale), qmin, qmax),
    [qmin, qmax] = [-(2^(b-1) - 1), 2^(b-1) - 1] (narrow) or [-2^(b-1), 2^(b-1) - 1]."""
    scale = weight_scale(w, per_channel, bits, narrow_range)
    qmax = 2 ** (bits - 1) - 1
    qmin = -qmax if narrow_range else -qmax - 1
    shape = [-1] + [1] * (w.dim() - 1)
    w_q = torch.round(w.detach().float() / scale.reshape(shape)).clamp(qmin, qmax).to(torch.int8)
    return w_q, scale


def activation_clamp(activation: str | None, scale: float, zero_point: int,
                     dtype: torch.dtype) -> tuple[int, int]:
    """[qmin, qmax] that fuses an activation into the output clamp: None, "relu" or "relu6"."""
    qmin, qmax = dtype_range(dtype)
    if activation is None:
        return qmin, qmax
    if activation == "relu":
        return max(qmin, zero_point), qmax
    if activation == "relu6":
        return max(qmin, zero_point), min(qmax, zero_point + round(6.0 / scale))
    raise ValueError(f'activation must be None, "relu" or "relu6", got {activation!r}')
