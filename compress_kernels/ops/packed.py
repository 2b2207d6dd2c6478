"""Packed weights: the header every pack op writes and the shape queries for packs.

Every pack op writes a header (csrc/include/ck/packed_header.h: magic, family, layout version, N,
K, family parameter, payload size, check value) where any slice, truncation or partial copy of
the tensor loses or contradicts it, and every op that reads a pack validates it (O(1), header
words only). 2-D packs (int8_pack_weight, int8_conv2d_pack_weight, codebook_pack, int4_pack) are
[header_rows + N, W] with header_rows = 16 / gcd(W, 16); the 1-D sparse24 packs start with a
64-byte header. The shapes are computed in C++ only (the packed_shape op).
"""

from __future__ import annotations

import torch

from ._native import _lib

__all__ = ["PACKED_FAMILIES", "packed_n", "packed_payload", "packed_shape"]

PACKED_FAMILIES = ("int8_pack_weight", "int8_conv2d_pack_weight", "codebook_pack", "sparse24_f32_pack",
                   "sparse24_bf16_pack", "sparse24_int8_pack", "int4_pack")
_PACKED_1D_HEADER_BYTES = 64


def packed_shape(family: str, n: int, k: int, param: int = 0) -> tuple[int, ...]:
    """The shape of the tensor the pack op `family` (one of PACKED_FAMILIES) returns for an N x K
    weight; param: bits for codebook_pack, groups for int8_conv2d_pack_weight, int4_pack_param(group_size,
    asymmetric) for int4_pack, 0 otherwise.
    Symbolic sizes are specialized (packing is not traced with dynamic weight shapes)."""
    return tuple(_lib().packed_shape(family, int(n), int(k), int(param)))


def packed_n(family: str, shape) -> int:
    """N (output rows) of a 2-D pack of that family and shape: shape[0] minus its header rows."""
    return _lib().packed_n(family, [int(d) for d in shape])


def packed_payload(packed: torch.Tensor, family: str) -> torch.Tensor:
    """The payload of a pack (a view past its header): what the kernels read, the layout of
    csrc/cpu/int8_gemm.h, ck/bitpack.h, csrc/cpu/sparse24.h or csrc/cpu/int4.h. For inspection and tests."""
    if packed.dim() == 2:
        return packed[packed.shape[0] - packed_n(family, packed.shape):]
    return packed[_PACKED_1D_HEADER_BYTES // packed.element_size():]
