"""int8 GEMM, linear (fused requantization or float epilogue), per-row quantization and conv2d."""

from __future__ import annotations

import torch

from ._native import _int32, _int_arg, _int_pair, _lib

__all__ = ["int8_conv2d", "int8_conv2d_pack_weight", "int8_gemm", "int8_linear", "int8_linear_dequant",
           "int8_linear_float", "int8_pack_weight", "quantize_per_tensor", "quantize_rows"]


def int8_pack_weight(w: torch.Tensor) -> torch.Tensor:
    """Pack an int8 weight [N, K] once into the kernel's blocked layout: an int32 tensor
    packed_shape("int8_pack_weight", N, K) = [header_rows + N, ceil(K/4) + 2], the header rows
    (see compress_kernels.ops.packed), then VNNI-ordered bytes, the row sums and K (csrc/cpu/int8_gemm.h).
    Every int8 GEMM op accepts the packed tensor in place of the raw weight and validates its
    header (a slice, truncation, another family's pack or a pack for another K is refused)."""
    return _lib().int8_pack_weight(w)


def int8_gemm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int32 a @ b.T. a: int8 or uint8 [M, K]; b: int8 [N, K] or packed (int8_pack_weight)."""
    return _lib().int8_gemm(a, b)


def int8_linear(x: torch.Tensor, x_zero_point: int, w: torch.Tensor, bias: torch.Tensor | None,
                m0, shift, out_zero_point: int = 0, qmin: int = -128, qmax: int = 127,
                out_dtype: torch.dtype = torch.int8, rounding: str = "double") -> torch.Tensor:
    """Integer-only linear with the requantization fused into the GEMM:

    y[m, n] = clamp(out_zero_point + requant(sum_k w[n, k] * (x[m, k] - x_zero_point) + bias[n]),
                    qmin, qmax)

    x: int8 or uint8 [M, K]; w: symmetric int8 [N, K] or packed; bias: int32 [N] (scale
    s_x * s_w) or None; m0 / shift: int32 per tensor or per output channel ([N]); [qmin, qmax]
    fuses ReLU / ReLU6; out_dtype int8, uint8 or int32. The accumulator wraps modulo 2^32 like
    int32 hardware; K is refused where K * 255 * 128 could overflow it.
    """
    op = "int8_linear"
    return _lib().int8_linear(x, _int_arg(x_zero_point, "x_zero_point", op), w, bias, _int32(m0, "m0", op),
                              _int32(shift, "shift", op), _int_arg(out_zero_point, "out_zero_point", op),
                              _int_arg(qmin, "qmin", op), _int_arg(qmax, "qmax", op), out_dtype, rounding)


def int8_linear_dequant(x: torch.Tensor, x_zero_point: int, w: torch.Tensor, bias: torch.Tensor | None, m0, shift,
                        out_zero_point: int, qmin: int, qmax: int, int_dtype: torch.dtype, out_scale: torch.Tensor,
                        rounding: str = "double") -> torch.Tensor:
    """int8_linear with its integer output dequantized in the same pass (fp32 out):

    y[m, n] = float(q[m, n] - out_zero_point) * out_scale,  q = int8_linear(..., out_dtype=int_dtype)

    bit for bit what ``numerics.dequantize(int8_linear(...), out_scale, out_zero_point)`` gives,
    without the integer tensor in between: a static layer behind a float interface. int_dtype: int8
    or uint8 (the integer grid the output is requantized to, with out_zero_point and [qmin, qmax]);
    out_scale: fp32 of one element, finite and > 0. CPU kernel; on other devices the two ops."""
    op = "int8_linear_dequant"
    args = (x, _int_arg(x_zero_point, "x_zero_point", op), w, bias, _int32(m0, "m0", op), _int32(shift, "shift", op),
            _int_arg(out_zero_point, "out_zero_point", op), _int_arg(qmin, "qmin", op), _int_arg(qmax, "qmax", op))
    if x.device.type != "cpu":
        q = _lib().int8_linear(*args, int_dtype, rounding)
        return (q.to(torch.int32) - args[6]).float() * out_scale.float().reshape(())
    return _lib().int8_linear_dequant(*args, int_dtype, out_scale, rounding)


def quantize_per_tensor(x: torch.Tensor, scale: torch.Tensor, zero_point: int, qmin: int, qmax: int,
                        out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor affine quantization of fp32 x (any shape, rows along the last dimension):
    q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax) as out_dtype (int8 or uint8), one
    fp32 division per element (numerics.quantize's bits), in one vectorized pass. Returns (q,
    nonfinite_rows): an element that is NaN or +-Inf is quantized to zero_point and flags its row
    (bool [x.numel() / x.shape[-1]]), so the caller can compute such rows another way; a finite x
    whose x / scale overflows saturates. scale: fp32 of one element, finite and > 0. CPU kernel; on
    other devices the reference."""
    op = "quantize_per_tensor"
    zero_point, qmin, qmax = (_int_arg(zero_point, "zero_point", op), _int_arg(qmin, "qmin", op),
                              _int_arg(qmax, "qmax", op))
    if x.device.type != "cpu":
        from .. import reference

        return reference.quantize_per_tensor(x, scale, zero_point, qmin, qmax, out_dtype)
    return _lib().quantize_per_tensor(x, scale, zero_point, qmin, qmax, out_dtype)


def int8_linear_float(x: torch.Tensor, x_zero_point: int, w: torch.Tensor, x_scale: torch.Tensor,
                      w_scale: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """int8 GEMM with a float epilogue for dynamic quantization:
    y[m, n] = ((float(acc[m, n]) * x_scale[m]) * w_scale[n]) + bias[n] in fp32,
    acc = sum_k w[n, k] * (x[m, k] - x_zero_point). x_scale: [M] or [1]; w_scale: [N] or [1]."""
    return _lib().int8_linear_float(x, _int_arg(x_zero_point, "x_zero_point", "int8_linear_float"), w, x_scale,
                                    w_scale, bias)


def quantize_rows(x: torch.Tensor, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 quantization of fp32 x [M, K]: returns (q, scale[M]) with
    scale = max|x[m]| / qmax (1 for an all-zero row), q = clamp(round_half_even(x / scale), ±qmax).
    A row holding any NaN or ±Inf gets scale NaN and q = 0 (int8_linear_float then gives NaN for
    every output of that row); no row affects another. Bit-identical on every path and the reference."""
    return _lib().quantize_rows(x, _int_arg(qmax, "qmax", "quantize_rows"))


def int8_conv2d_pack_weight(w: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Pack an int8 conv weight [OC, C/groups, KH, KW] once for int8_conv2d: per group, the
    [OC/groups, KH*KW*C/groups] matrix in (o, kh, kw, c) order packed like int8_pack_weight,
    stacked after the header rows into an int32 tensor
    packed_shape("int8_conv2d_pack_weight", OC, KH*KW*C/groups, groups)."""
    return _lib().int8_conv2d_pack_weight(w, groups)


def int8_conv2d(x: torch.Tensor, x_zero_point: int, w: torch.Tensor, bias: torch.Tensor | None, m0, shift,
                out_zero_point: int = 0, qmin: int = -128, qmax: int = 127,
                out_dtype: torch.dtype = torch.int8, stride=1, padding=0, dilation=1, groups: int = 1,
                rounding: str = "double", w_packed: torch.Tensor | None = None) -> torch.Tensor:
    """Integer-only conv2d with the int8_linear output stage fused:

    y[n, o, oh, ow] = clamp(out_zero_point + requant(sum_{c, kh, kw} w[o, c, kh, kw] *
                      (x[n, c, ih, iw] - x_zero_point) + bias[o]), qmin, qmax)

    x: int8 / uint8 [N, C, H, W] (channels_last memory preferred; NCHW is converted); pixels outside
    the image (padding) hold x_zero_point, i.e. contribute zero. w: int8 [OC, C/groups, KH, KW];
    w_packed: optional int8_conv2d_pack_weight(w, groups) to skip per-call packing. stride /
    padding / dilation: int or pair; groups >= 1 (depthwise runs a direct kernel). The output is
    [N, OC, OH, OW] in channels_last memory.
    """
    op = "int8_conv2d"
    return _lib().int8_conv2d(x, _int_arg(x_zero_point, "x_zero_point", op), w, bias, _int32(m0, "m0", op),
                              _int32(shift, "shift", op), _int_arg(out_zero_point, "out_zero_point", op),
                              _int_arg(qmin, "qmin", op), _int_arg(qmax, "qmax", op), out_dtype,
                              _int_pair(stride, "stride", op), _int_pair(padding, "padding", op),
                              _int_pair(dilation, "dilation", op), _int_arg(groups, "groups", op), rounding, w_packed)
