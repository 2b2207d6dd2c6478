"""2:4 sparse ops: compress / decompress, the per-kernel packs, linear and conv2d (fp32, bf16, int8).
The layout converters (CUTLASS, cuSPARSELt, the padded CUDA pack) live in compress_kernels.sparse24_layout
and are re-exported here."""

from __future__ import annotations

import torch

from ..sparse24_layout import (
    sparse24_cuda_pack,
    sparse24_from_cusparselt,
    sparse24_from_cutlass,
    sparse24_to_cusparselt,
    sparse24_to_cutlass,
)
from ._native import _int32, _int_arg, _int_pair, _lib

__all__ = [
    "sparse24_bf16_pack",
    "sparse24_compress",
    "sparse24_conv2d",
    "sparse24_cuda_pack",
    "sparse24_decompress",
    "sparse24_f32_pack",
    "sparse24_from_cusparselt",
    "sparse24_from_cutlass",
    "sparse24_int8_conv2d",
    "sparse24_int8_linear",
    "sparse24_int8_pack",
    "sparse24_linear",
    "sparse24_to_cusparselt",
    "sparse24_to_cutlass",
]


def sparse24_compress(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Compress a 2:4 sparse weight w [N, K] (K % 4 == 0, at most two non-zeros in every group of
    four consecutive k) into (values [N, K/2] of w's dtype, meta uint8 [N, ceil(K/8)]): per group
    the two stored positions i0 < i1 as the nibble i0 | i1 << 2, two groups per byte, low nibble
    first (layout: csrc/include/ck/sparse24.h). Raises when w is not 2:4 sparse."""
    return _lib().sparse24_compress(w)


def sparse24_decompress(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """The dense [N, K] weight of a compressed (values, meta) pair."""
    return _lib().sparse24_decompress(values, meta)


def sparse24_f32_pack(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Pack fp32 values [N, K/2] + meta once into the fp32 kernel's layout (a 1-D float tensor of
    packed_shape("sparse24_f32_pack", N, K): the 64-byte header, then blocks of eight interleaved
    columns, see csrc/cpu/sparse24.h); sparse24_linear accepts it in place of the values."""
    return _lib().sparse24_f32_pack(values, meta)


def sparse24_bf16_pack(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Pack bf16 values [N, K/2] + meta once into the CPU bf16 kernel's layout (a 1-D bf16 tensor of
    packed_shape("sparse24_bf16_pack", N, K): the 64-byte header, then blocks of 16 columns x 8 k,
    values as the (k0, k1) pairs vdpbf16ps reads, see csrc/cpu/sparse24.h); sparse24_linear with
    bf16 x accepts it in place of the values."""
    return _lib().sparse24_bf16_pack(values, meta)


def _pad_rows(t: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    if t is None or t.dim() == 0 or t.numel() == 1 or t.shape[0] == rows:
        return t
    return torch.cat([t, t.new_zeros(rows - t.shape[0])])


def sparse24_linear(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W.T + bias with W given compressed.

    CPU: x fp32 [M, K]; values fp32 [N, K/2] (packed for this call) or the 1-D tensor of
    sparse24_f32_pack(values, meta) (meta is passed either way); bias fp32 [N] or None. Each output
    is one fused multiply-add per stored value in k order, then + bias: every CPU path and thread
    count gives the same bits.
    CPU bf16: x bf16 [M, K]; values bf16 [N, K/2] or sparse24_bf16_pack(values, meta); bias bf16 or
    fp32; output bf16. fp32 accumulation with AVX512_BF16's vdpbf16ps semantics per group of four
    (the two products added in k order from the second, denormals flushed), then + bias in fp32 and
    one rounding to bf16 (nearest even): the AVX-512 kernel (Zen 4, Sapphire Rapids) and the portable
    emulation give the same bits (reference.sparse24_bf16_linear is the exact model).

    CUDA (sparse tensor cores, sm_80+): values float16 / bfloat16 [Np, Kp/2] with the CUTLASS int16
    meta of sparse24_cuda_pack (or torch.sparse.to_sparse_semi_structured's packed / meta); x of the
    values' dtype, or fp32 (cast to it); output [M, Np] of x's dtype, fp32 accumulation. Given our
    uint8 meta on CUDA, this wrapper packs per call (fp16 unless x is bf16) and returns [M, N]."""
    if x.is_cuda and meta.dtype == torch.uint8:
        n = values.shape[0]
        vp, mp = sparse24_cuda_pack(values, meta, torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float16)
        return _lib().sparse24_linear(x, vp, mp, _pad_rows(bias, vp.shape[0]))[:, :n]
    return _lib().sparse24_linear(x, values, meta, bias)


def sparse24_int8_pack(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Pack int8 values [N, K/2] + meta once into the int8 kernel's layout (a 1-D int32 tensor of
    packed_shape("sparse24_int8_pack", N, K): the 64-byte header, then the layout of
    csrc/cpu/sparse24.h); sparse24_int8_linear accepts it in place of the int8 values."""
    return _lib().sparse24_int8_pack(values, meta)


def sparse24_int8_linear(x: torch.Tensor, x_zero_point: int, values: torch.Tensor, meta: torch.Tensor,
                         bias: torch.Tensor | None, m0, shift, out_zero_point: int = 0, qmin: int = -128,
                         qmax: int = 127, out_dtype: torch.dtype = torch.int8,
                         rounding: str = "double") -> torch.Tensor:
    """int8_linear with a 2:4 sparse weight: y = clamp(out_zero_point + requant(sum_k w[n, k] *
    (x[m, k] - x_zero_point) + bias[n]), qmin, qmax), W = sparse24_decompress(values, meta).

    x: int8 or uint8 [M, K]; values: symmetric int8 [N, K/2] or the packed int32 tensor of
    sparse24_int8_pack(values, meta) (meta is passed either way); bias int32 [N] or None; m0 /
    shift per tensor or per output channel; out_dtype int8, uint8 or int32. Bit-exact; pruned
    weights stay exactly zero (they are never stored).

    CUDA (sm_80+): values int8 [Np, Kp/2] with the CUTLASS int32 meta of sparse24_cuda_pack (or
    to_sparse_semi_structured's), output [M, Np], bit-identical to the CPU. Given our uint8 meta on
    CUDA, this wrapper packs per call (per-channel m0 / shift / bias padded with zeros) and returns
    [M, N]."""
    op = "sparse24_int8_linear"
    m0, shift = _int32(m0, "m0", op), _int32(shift, "shift", op)
    x_zero_point = _int_arg(x_zero_point, "x_zero_point", op)
    out_zero_point = _int_arg(out_zero_point, "out_zero_point", op)
    qmin, qmax = _int_arg(qmin, "qmin", op), _int_arg(qmax, "qmax", op)
    if x.is_cuda and meta.dtype == torch.uint8:
        n = values.shape[0]
        vp, mp = sparse24_cuda_pack(values, meta, torch.int8)
        rows = vp.shape[0]
        return _lib().sparse24_int8_linear(x, x_zero_point, vp, mp, _pad_rows(bias, rows), _pad_rows(m0, rows),
                                           _pad_rows(shift, rows), out_zero_point, qmin, qmax, out_dtype,
                                           rounding)[:, :n]
    return _lib().sparse24_int8_linear(x, x_zero_point, values, meta, bias, m0, shift,
                                       out_zero_point, qmin, qmax, out_dtype, rounding)


def sparse24_conv2d(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None = None,
                    kernel_size=1, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """conv2d (groups = 1, zero padding) with a 2:4 sparse fp32 weight compressed as
    sparse24_layout.weight_rows(w) (values [OC, K/2] + meta, or their sparse24_f32_pack). x: fp32
    [N, C, H, W] (channels_last memory preferred). Input rows are gathered a chunk at a time into a
    per-thread buffer and run through the fp32 2:4 kernel: every output is one fused multiply-add per
    stored value in k order, then + bias (the bits of sparse24_linear on the gathered rows, on every
    CPU path). Output [N, OC, OH, OW], channels_last memory. CPU."""
    op = "sparse24_conv2d"
    return _lib().sparse24_conv2d(x, values, meta, bias, _int_pair(kernel_size, "kernel_size", op),
                                  _int_pair(stride, "stride", op), _int_pair(padding, "padding", op),
                                  _int_pair(dilation, "dilation", op))


def sparse24_int8_conv2d(x: torch.Tensor, x_zero_point: int, values: torch.Tensor, meta: torch.Tensor,
                         bias: torch.Tensor | None, m0, shift, out_zero_point: int = 0, qmin: int = -128,
                         qmax: int = 127, out_dtype: torch.dtype = torch.int8, kernel_size=1, stride=1, padding=0,
                         dilation=1, rounding: str = "double") -> torch.Tensor:
    """int8_conv2d (groups = 1) with a 2:4 sparse weight: the weight [OC, C, KH, KW] is compressed as
    sparse24_layout.weight_rows(w) = w.permute(0, 2, 3, 1).reshape(OC, KH * KW * C) (groups of four
    input channels at one kernel tap, NVIDIA's convention), i.e. values [OC, K/2] + meta, or their
    sparse24_int8_pack. x: int8 / uint8 [N, C, H, W] (channels_last memory preferred); padding holds
    x_zero_point. The input rows (KH * KW runs of C contiguous NHWC bytes) are gathered a chunk at a
    time into a per-thread buffer and multiplied by the whole weight with the int8 2:4 kernel and its
    fused output stage. Output [N, OC, OH, OW], channels_last memory. CPU."""
    op = "sparse24_int8_conv2d"
    return _lib().sparse24_int8_conv2d(x, _int_arg(x_zero_point, "x_zero_point", op), values, meta, bias,
                                       _int32(m0, "m0", op), _int32(shift, "shift", op),
                                       _int_arg(out_zero_point, "out_zero_point", op), _int_arg(qmin, "qmin", op),
                                       _int_arg(qmax, "qmax", op), out_dtype, _int_pair(kernel_size, "kernel_size", op),
                                       _int_pair(stride, "stride", op), _int_pair(padding, "padding", op),
                                       _int_pair(dilation, "dilation", op), rounding)
