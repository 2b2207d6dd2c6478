"""Fixed-point requantization: quantize_multiplier (real multiplier -> (m0, shift)), requantize
(int32 accumulators -> int8 / uint8 / int32) and int8_add (TFLite's quantized ADD)."""

from __future__ import annotations

import torch

from ._native import _int32, _int_arg, _lib

__all__ = ["int8_add", "quantize_multiplier", "requantize"]


def quantize_multiplier(real) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode real multipliers as (m0, shift): real ~= m0 * 2^(shift - 31), m0 in [2^30, 2^31),
    shift in [-31, 30] (TFLite convention). Accepts a float or a tensor (per channel); zero and
    multipliers below 2^-32 map to (0, 0), which is exact: |r * acc| < 2^-32 * 2^31 = 1/2 rounds to 0
    for every int32 accumulator. Negative, non-finite or >= 2^30 values are errors."""
    real_t = torch.as_tensor(real, dtype=torch.float64)
    return _lib().quantize_multiplier(real_t.cpu())


def requantize(acc: torch.Tensor, m0, shift, zero_point: int = 0, qmin: int = -128,
               qmax: int = 127, out_dtype: torch.dtype = torch.int8,
               rounding: str = "double") -> torch.Tensor:
    """clamp(MultiplyByQuantizedMultiplier(acc, m0, shift) + zero_point, qmin, qmax) as out_dtype.

    acc: int32 accumulators of any shape. m0 / shift: int32, one element (per tensor) or one per
    element of acc's last dimension (per channel). rounding: "double" (gemmlowp / TFLite default)
    or "single" (TFLite single rounding). out_dtype: int8, uint8 or int32. Bit-exact.

    Every op wrapper takes m0 / shift as Python / NumPy integers, sequences of them or integer
    tensors, and zero points / qmin / qmax as integers; floats (even integral ones such as 3.0),
    float tensors, bools and values outside int32 raise TypeError / ValueError naming the argument
    rather than being truncated (a real multiplier such as 0.0123 would become m0 = 0): encode a
    real multiplier with quantize_multiplier.
    """
    op = "requantize"
    return _lib().requantize(acc, _int32(m0, "m0", op), _int32(shift, "shift", op),
                             _int_arg(zero_point, "zero_point", op), _int_arg(qmin, "qmin", op),
                             _int_arg(qmax, "qmax", op), out_dtype, rounding)


def int8_add(a: torch.Tensor, a_zero_point: int, a_m0, a_shift, b: torch.Tensor, b_zero_point: int, b_m0, b_shift,
             out_m0, out_shift, out_zero_point: int = 0, qmin: int = -128, qmax: int = 127,
             out_dtype: torch.dtype = torch.int8, left_shift: int = 20) -> torch.Tensor:
    """TFLite's quantized ADD, elementwise, in one pass:

    s_i = MultiplyByQuantizedMultiplier((x_i - zero_point_i) << left_shift, m0_i, shift_i) for i = a, b
    y = clamp(MultiplyByQuantizedMultiplier(s_a + s_b, out_m0, out_shift) + out_zero_point, qmin, qmax)

    a, b: int8 / uint8 tensors of one shape (the output keeps a's layout when b shares it, so
    channels_last activations stay channels_last); every multiplier per tensor, double rounding,
    int32 intermediates. What QuantAdd computes; bit-exact against reference.int8_add. The kernel is
    a CPU one; on other devices the same integers come from three `requantize` calls.
    """
    op = "int8_add"
    a_m0, a_shift = _int32(a_m0, "a_m0", op), _int32(a_shift, "a_shift", op)
    b_m0, b_shift = _int32(b_m0, "b_m0", op), _int32(b_shift, "b_shift", op)
    out_m0, out_shift = _int32(out_m0, "out_m0", op), _int32(out_shift, "out_shift", op)
    a_zero_point, b_zero_point = _int_arg(a_zero_point, "a_zero_point", op), _int_arg(b_zero_point, "b_zero_point", op)
    out_zero_point = _int_arg(out_zero_point, "out_zero_point", op)
    qmin, qmax = _int_arg(qmin, "qmin", op), _int_arg(qmax, "qmax", op)
    left_shift = _int_arg(left_shift, "left_shift", op)
    if a.device.type != "cpu":
        from .. import reference

        return reference.int8_add(a, a_zero_point, a_m0, a_shift, b, b_zero_point, b_m0, b_shift, out_m0, out_shift,
                                  out_zero_point, qmin, qmax, out_dtype, left_shift, requant=requantize)
    return _lib().int8_add(a, a_zero_point, a_m0, a_shift, b, b_zero_point, b_m0, b_shift, out_m0, out_shift,
                           out_zero_point, qmin, qmax, out_dtype, left_shift)
