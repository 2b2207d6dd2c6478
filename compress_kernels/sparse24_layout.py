"""Conversions between our 2:4 layout (values [N, K/2] + uint8 meta, csrc/include/ck/sparse24.h) and
the layouts of PyTorch's semi-structured sparse tensors (torch.sparse.to_sparse_semi_structured).

CUTLASS backend (SparseSemiStructuredTensorCUTLASS: `packed` + `meta`, and what our CUDA kernels read):
  packed = the kept values [N, K/2], row-major, lower position first: the same bytes as our values.
  meta   = the same 2-bit positions (nibble idx0 | idx1 << 2 per group of four, lowest k in the
           lowest nibble), read as little-endian int16 words of 4 groups (fp16 / bf16) or int32
           words of 8 groups (int8), then reordered: rows r = 8a + b of each 32-row (int16) or
           16-row (int32) block go to row b * (4 or 2) + a, each 2x2 block of words is transposed,
           and the result is stored ColumnMajorInterleaved<2> (pairs of word columns, one after the
           other, each pair row by row). Byte-level consequence (32-bit words): for fp16 the 128
           bytes at word 32 * (c * N / 32 + R) are the mma.sp metadata registers of weight rows
           32 R .. 32 R + 31, k 32 c .. 32 c + 31 (lane l's word is word l); for int8 the same
           holds with 16-row blocks and 64-wide k blocks (see csrc/cuda/sparse24.cuh).
  Only the all-zero / one-non-zero groups may differ: PyTorch's encoder picks other kept zeros
  (e.g. positions 2, 3 for an empty group, ours 0, 1); both decode to the same dense weight.

cuSPARSELt backend (SparseSemiStructuredTensorCUSPARSELT: one `packed` buffer, "kept values, then
metadata", written by torch._cslt_compress): the metadata part is in cuSPARSELt's own layout,
which NVIDIA does not document (cusparseLtSpMMACompress writes it; the library only reports its
size). It is treated here as opaque: sparse24_to_cusparselt compresses the decompressed dense
weight with torch._cslt_compress, and sparse24_from_cusparselt recovers the dense weight as the
product packed @ I (torch._cslt_sparse_mm; exact, every output is one weight times 1 plus zeros)
and compresses it again. Both need a CUDA device with cuSPARSELt.
"""

from __future__ import annotations

import torch

CUTLASS_ROW_MULTIPLE = {torch.float16: 32, torch.bfloat16: 32, torch.int8: 16}
CUTLASS_K_MULTIPLE = {torch.float16: 32, torch.bfloat16: 32, torch.int8: 64}


def weight_rows(w: torch.Tensor) -> torch.Tensor:
    """The [N, K] matrix whose rows 2:4 sparsity groups along K: a Linear weight as it is; a conv
    weight [OC, C, KH, KW] as w.permute(0, 2, 3, 1).reshape(OC, KH * KW * C), i.e. K in (kernel
    row, kernel column, channel) order, so every group of four is four consecutive input channels
    at one kernel tap. That is NVIDIA's convention for 2:4 convolutions (ASP, TensorRT, cuSPARSELt
    on NHWC) and the order an NHWC input row is read in (C % 4 == 0 keeps groups inside a tap)."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1) if w.dim() == 4 else w.reshape(w.shape[0], -1)


def groups_over_two(w: torch.Tensor) -> int:
    """How many groups of four along K of weight_rows(w) hold more than two non-zeros (0: the weight
    is 2:4); K must be a multiple of 4."""
    rows = weight_rows(w)
    return int(((rows != 0).reshape(rows.shape[0], -1, 4).sum(-1) > 2).sum())


def weight_from_rows(rows: torch.Tensor, shape) -> torch.Tensor:
    """The inverse of weight_rows for a weight of `shape`."""
    shape = tuple(shape)
    if len(shape) == 4:
        oc, c, kh, kw = shape
        return rows.reshape(oc, kh, kw, c).permute(0, 3, 1, 2)
    return rows.reshape(shape)


def _cutlass_meta_offsets(rows: int, meta_cols: int, meta_dtype: torch.dtype, device=None) -> torch.Tensor:
    """Scatter offsets of CUTLASS's metadata reordering (ColumnMajorInterleaved<2> with the 2x2
    swizzle of cutlass/util/host_reorder.h): element (r, c) of the row-major metadata words goes
    to flat index offsets[r * meta_cols + c] of the reordered tensor."""
    r = torch.arange(rows, device=device)[:, None].expand(rows, meta_cols)
    c = torch.arange(meta_cols, device=device)[None, :].expand(rows, meta_cols)
    group, interweave = (32, 4) if meta_dtype == torch.int16 else (16, 2)
    r = r // group * group + (r % 8) * interweave + (r % group) // 8
    topright = ((r % 2 == 0) & (c % 2 == 1)).long()
    bottomleft = ((r % 2 == 1) & (c % 2 == 0)).long()
    r = r + topright - bottomleft
    c = c - topright + bottomleft
    return ((c // 2) * rows * 2 + r * 2 + c % 2).reshape(-1)


def _cutlass_meta_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype in (torch.float16, torch.bfloat16):
        return torch.int16
    if dtype == torch.int8:
        return torch.int32
    raise ValueError(f"sparse24 CUTLASS layout: values must be float16, bfloat16 or int8, got {dtype} "
                     "(CUTLASS stores fp32 as 1:2 tf32 sparsity; cast the values to float16/bfloat16)")


def sparse24_to_cutlass(values: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, meta) -> (sparse, meta_reordered) in the layout of PyTorch's CUTLASS semi-structured
    backend (torch.sparse.to_sparse_semi_structured / _semi_structured_conversions): the values are
    the same; the nibbles, read as int16 (fp16/bf16) or int32 (int8) words of 4 or 8 groups, are
    reordered for the tensor-core tiles. Needs N % 32 == 0 and K % 32 == 0 for fp16/bf16, N % 16 == 0
    and K % 64 == 0 for int8 (an even number of metadata words per row, which the 2x2 swizzle of
    the reordering needs; PyTorch's own converter fails on odd counts too). Any device."""
    meta_dtype = _cutlass_meta_dtype(values.dtype)
    n, half = values.shape
    k = 2 * half
    row_mult, k_mult = CUTLASS_ROW_MULTIPLE[values.dtype], CUTLASS_K_MULTIPLE[values.dtype]
    if n % row_mult or k % k_mult:
        raise ValueError(f"sparse24_to_cutlass: CUTLASS needs N % {row_mult} == 0 and K % {k_mult} == 0 "
                         f"for {values.dtype}, got N={n}, K={k}")
    words = meta.contiguous().view(meta_dtype)  # little-endian: group 0 in the low nibble
    offsets = _cutlass_meta_offsets(n, words.shape[1], meta_dtype, meta.device)
    reordered = torch.empty(words.numel(), dtype=meta_dtype, device=meta.device)
    reordered.scatter_(0, offsets, words.reshape(-1))
    return values.contiguous(), reordered.view(n, words.shape[1])


def sparse24_from_cutlass(sparse: torch.Tensor, meta_reordered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of sparse24_to_cutlass: PyTorch's CUTLASS (sparse, meta_reordered) -> (values, meta)."""
    meta_dtype = _cutlass_meta_dtype(sparse.dtype)
    if meta_reordered.dtype != meta_dtype:
        raise ValueError(f"sparse24_from_cutlass: meta must be {meta_dtype} for {sparse.dtype} values, "
                         f"got {meta_reordered.dtype}")
    n, cols = meta_reordered.shape
    offsets = _cutlass_meta_offsets(n, cols, meta_dtype, meta_reordered.device)
    words = meta_reordered.reshape(-1).gather(0, offsets).view(n, cols).contiguous()
    return sparse.contiguous(), words.view(torch.uint8).reshape(n, -1)


def _round_up(v: int, m: int) -> int:
    return (v + m - 1) // m * m


def sparse24_cuda_pack(values: torch.Tensor, meta: torch.Tensor,
                       dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Our (values [N, K/2], meta uint8 [N, ceil(K/8)]) -> the CUTLASS layout the CUDA sparse24_linear /
    sparse24_int8_linear read, padded to what that layout can hold: values [Np, Kp/2] of `dtype`
    (default: float16 for floating values other than bfloat16, else the values' dtype) and meta
    int16 [Np, Kp/16] (fp16/bf16) or int32 [Np, Kp/32] (int8), with Np = N rounded up to 32 (16 for
    int8) and Kp = K rounded up to 32 (64). Padded groups are zero values with positions 0 and 1
    (nibble 0b0100), so the padded rows of the product are zero and x may keep its K columns (the
    kernel reads x's columns K .. Kp - 1 as zero). Torch ops only: runs on any device; done once when
    a module is moved to the GPU."""
    if values.dim() != 2 or meta.dim() != 2 or meta.dtype != torch.uint8:
        raise ValueError(f"sparse24_cuda_pack: expected values [N, K/2] and uint8 meta [N, ceil(K/8)], got "
                         f"{values.dtype} {tuple(values.shape)} and {meta.dtype} {tuple(meta.shape)}")
    if dtype is None:
        dtype = values.dtype if values.dtype in (torch.bfloat16, torch.int8) else torch.float16
    if dtype not in CUTLASS_ROW_MULTIPLE:
        raise ValueError(f"sparse24_cuda_pack: dtype must be float16, bfloat16 or int8, got {dtype}")
    if (dtype == torch.int8) != (values.dtype == torch.int8):
        raise ValueError(f"sparse24_cuda_pack: int8 values pack as int8 and floating values as float16/bfloat16, "
                         f"got {values.dtype} values for dtype={dtype}")
    n, half = values.shape
    k = 2 * half
    mcols = (k + 7) // 8
    if k % 4 or meta.shape != (n, mcols):
        raise ValueError(f"sparse24_cuda_pack: meta must have shape ({n}, {mcols}) for values of shape "
                         f"{tuple(values.shape)} (K % 4 == 0), got {tuple(meta.shape)}")
    np_, kp = _round_up(max(n, 1), CUTLASS_ROW_MULTIPLE[dtype]), _round_up(k, CUTLASS_K_MULTIPLE[dtype])
    vp = torch.zeros(np_, kp // 2, dtype=dtype, device=values.device)
    vp[:n, :half] = values.to(dtype)
    mp = torch.full((np_, kp // 8), 0x44, dtype=torch.uint8, device=meta.device)
    mp[:n, :mcols] = meta
    if (k // 4) % 2:  # our unused high nibble of the last byte is zero: make it positions 0, 1
        mp[:n, mcols - 1] |= 0x40
    return sparse24_to_cutlass(vp, mp)


def sparse24_to_cusparselt(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Our (values, meta) on a CUDA device -> the single packed buffer of PyTorch's cuSPARSELt backend
    (what torch.sparse.to_sparse_semi_structured stores without _FORCE_CUTLASS), via the public
    compressor torch._cslt_compress of the dense weight: cuSPARSELt's metadata layout is opaque."""
    from . import ops

    if not values.is_cuda:
        raise ValueError("sparse24_to_cusparselt: cuSPARSELt's layout is produced by the library on a CUDA "
                         f"device; got values on {values.device}")
    return torch._cslt_compress(ops.sparse24_decompress(values, meta))


def sparse24_from_cusparselt(packed: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of sparse24_to_cusparselt for a dense shape (N, K): the dense weight is read back as
    packed @ I through torch._cslt_sparse_mm (exact: each output is one weight times one), then
    compressed into our layout."""
    from . import ops

    if not packed.is_cuda:
        raise ValueError(f"sparse24_from_cusparselt: packed must be a CUDA tensor, got {packed.device}")
    n, k = shape
    eye = torch.eye(k, dtype=packed.dtype, device=packed.device)
    dense = torch._cslt_sparse_mm(packed, eye.t() if packed.dtype == torch.int8 else eye)
    return ops.sparse24_compress(dense[:n].contiguous())
