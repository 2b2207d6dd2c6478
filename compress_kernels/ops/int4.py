"""Group-wise int4 weight ops: int4_pack / int4_unpack (two nibbles per byte with their group scales
and zero points, behind a pack header) and int4_linear (w4a8: dynamic int8 activations; w4a16:
fp32 or bf16 activations). Inference only: no autograd formula (the ops raise under autograd when an
input requires grad)."""

from __future__ import annotations

import torch

from ._native import _int_arg, _lib

__all__ = ["INT4_ACTIVATIONS", "int4_linear", "int4_pack", "int4_pack_param", "int4_unpack"]

INT4_ASYMMETRIC_FLAG = 1 << 16
INT4_ACTIVATIONS = ("int8", "fp32", "bf16")


def int4_pack_param(group_size: int, asymmetric: bool = False) -> int:
    """int4_pack's family parameter (packed_shape's `param`, header word 5): group_size, plus 65536
    for a pack with zero points."""
    return int(group_size) + (INT4_ASYMMETRIC_FLAG if asymmetric else 0)


def int4_pack(w_int4: torch.Tensor, scales: torch.Tensor, group_size: int,
              zero_points: torch.Tensor | None = None) -> torch.Tensor:
    """Pack a group-wise int4 weight w = scales[n, k // group_size] * (w_int4[n, k] - zero_points[n, k //
    group_size]): w_int4 int8 [N, K] in [-8, 7], scales fp32 [N, K / group_size] (finite, > 0),
    zero_points int8 [N, K / group_size] in [-8, 7] or None (symmetric), group_size 32, 64, 128 or
    256 dividing K. Returns the int32 pack packed_shape("int4_pack", N, K, int4_pack_param(group_size,
    zero_points is not None)) = [header_rows + N, (K / group_size) * (group_size / 8 + 1 [+ 1])]: the
    header rows (compress_kernels.ops.packed), then the payload of csrc/cpu/int4.h (rows in blocks of
    16; per group, two nibbles per byte of each row in the order the kernels load them, then the
    group's fp32 scales, then its zero points + 8)."""
    op = "int4_pack"
    return _lib().int4_pack(w_int4, scales, _int_arg(group_size, "group_size", op), zero_points)


def int4_unpack(w_packed: torch.Tensor, in_features: int, group_size: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of int4_pack: (w_int4 int8 [N, K], scales fp32 [N, K / group_size], zero_points int8
    [N, K / group_size], all zero for a symmetric pack), K = in_features. The caller states K and the
    group size (the pack's header must agree, else the op refuses it), so the output sizes never depend
    on the pack's values: torch.compile / torch.export see static sizes (C++ Meta kernel)."""
    op = "int4_unpack"
    return _lib().int4_unpack(w_packed, _int_arg(in_features, "in_features", op),
                              _int_arg(group_size, "group_size", op))


def int4_linear(x: torch.Tensor, w_packed: torch.Tensor, bias: torch.Tensor | None = None,
                activation: str = "int8") -> torch.Tensor:
    """y = x @ W.T + bias for the int4_pack weight W, x [M, K] (K = the pack's K), bias fp32 [N] or None.

    activation="int8" (w4a8): x fp32; each row quantized by quantize_rows, per group the exact int32
    dot product with the int4 weight (vpdpbusd), scaled per group in fp32, times the row's scale,
    + bias: bit-exact to reference.int4_linear_w4a8 on every CPU path and thread count; fp32 out.
    activation="fp32" / "bf16" (w4a16): x fp32 / bf16 (widened exactly to fp32), the nibbles decoded
    in registers, fp32 accumulation per group with the group scale applied to each group's sum;
    output in x's dtype (bf16: rounded once, nearest even), within reference.int4_linear_error_bound
    of reference.int4_linear_w4a16 (plus that final rounding)."""
    if activation not in INT4_ACTIVATIONS:
        raise ValueError(f'int4_linear: activation must be "int8", "fp32" or "bf16", got {activation!r}')
    return _lib().int4_linear(x, w_packed, bias, activation)
