"""Typed Python entry points for every op in torch.ops.compress_kernels, their fake (meta) kernels
for torch.compile / torch.export, and their autograd registrations.

The schemas live in csrc/ops/registration.cpp; the spec of each op is the function of the same name
in compress_kernels.reference.
"""

from __future__ import annotations

import contextlib
import operator
import warnings

import torch

try:
    from .. import _C  # noqa: F401  (loading it registers the ops)

    NATIVE_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    NATIVE_ERROR = exc
    warnings.warn(
        f"compress_kernels: the native extension compress_kernels._C failed to load ({exc}). "
        "Ops that need it will raise; rebuild with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )



def _lib():
    if NATIVE_ERROR is not None:
        raise RuntimeError(f"compress_kernels native ops are unavailable: {NATIVE_ERROR}")
    return torch.ops.compress_kernels


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# Integer arguments are checked before they reach the kernels: a float, a float tensor or a bool
# where an integer is meant is refused instead of being truncated (requantize(acc, 0.0123, 0) would
# otherwise run with m0 = 0 and return the zero point everywhere), and so are values outside int32.
_MULTIPLIER_HINT = ("; for a real multiplier r, quantize_multiplier(r) returns the (m0, shift) pair "
                    "(r ~= m0 * 2^(shift - 31))")


def _describe(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"a {v.dtype} tensor of shape {tuple(v.shape)}"
    return f"{type(v).__name__} {v!r}"


def _int32(v, name: str, op: str) -> torch.Tensor:
    """m0 / shift (a Python or NumPy integer, a sequence of them, or an integer tensor) as an int32
    tensor on v's device. TypeError for floats, float / complex tensors and bools (Python, NumPy or
    tensor); ValueError for values outside [-2^31, 2^31 - 1]. An int32 tensor passes unchanged."""
    if type(v) is int and INT32_MIN <= v <= INT32_MAX:  # the common per-tensor case, without a min / max pass
        return torch.tensor(v, dtype=torch.int32)
    hint = _MULTIPLIER_HINT if name.endswith(("m0", "shift")) else ""
    if isinstance(v, torch.Tensor):
        t = v
    else:
        if isinstance(v, (bool, float)):
            raise TypeError(f"{op}: {name} must be an integer (int32, or an integer tensor), got {_describe(v)}{hint}")
        try:
            t = torch.as_tensor(v)
        except (RuntimeError, TypeError, ValueError, OverflowError) as exc:  # e.g. an int beyond int64
            raise ValueError(f"{op}: {name} must hold int32 integers in [{INT32_MIN}, {INT32_MAX}], got {v!r} "
                             f"({exc})") from None
    if t.dtype == torch.int32:
        return t
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{op}: {name} must be an integer (int32, or an integer tensor), got {_describe(v)}{hint}")
    # (the range check reads the values: skipped while torch.compile traces, where they are symbolic)
    if t.numel() and not torch.compiler.is_compiling() and (int(t.min()) < INT32_MIN or int(t.max()) > INT32_MAX):
        raise ValueError(f"{op}: {name} must hold int32 integers in [{INT32_MIN}, {INT32_MAX}], got values in "
                         f"[{int(t.min())}, {int(t.max())}]")
    return t.to(torch.int32)


def _int_arg(v, name: str, op: str, lo: int = INT32_MIN, hi: int = INT32_MAX) -> int:
    """A scalar integer argument (zero point, qmin / qmax, shift amounts, conv geometry) as a Python
    int: a Python / NumPy integer or a one-element integer tensor. TypeError for floats (even
    integral ones such as 3.0), float tensors and bools; ValueError outside [lo, hi]."""
    if isinstance(v, bool) or (isinstance(v, torch.Tensor) and v.dtype == torch.bool):
        raise TypeError(f"{op}: {name} must be an integer, got {_describe(v)}")
    try:
        i = operator.index(v)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an integer, got {_describe(v)}") from None
    if not lo <= i <= hi:
        raise ValueError(f"{op}: {name} must be an integer in [{lo}, {hi}], got {i}")
    return i


def _int_pair(v, name: str, op: str) -> list[int]:
    """An int or a pair of ints (conv stride / padding / dilation / kernel size); the ops check the
    values against the geometry."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
        return [_int_arg(e, name, op) for e in v]
    i = _int_arg(v, name, op)
    return [i, i]


# ---------------------------------------------------------------- packed weights
#
# Every pack op writes a header (csrc/include/ck/packed_header.h: magic, family, layout version, N,
# K, family parameter, payload size, check value) where any slice, truncation or partial copy of
# the tensor loses or contradicts it, and every op that reads a pack validates it (O(1), header
# words only). 2-D packs (int8_pack_weight, int8_conv2d_pack_weight, codebook_pack) are
# [header_rows + N, W] with header_rows = 16 / gcd(W, 16); the 1-D sparse24 packs start with a
# 64-byte header. The shapes are computed in C++ only (the packed_shape op).

PACKED_FAMILIES = ("int8_pack_weight", "int8_conv2d_pack_weight", "codebook_pack", "sparse24_f32_pack",
                   "sparse24_bf16_pack", "sparse24_int8_pack")
_PACKED_1D_HEADER_BYTES = 64


def packed_shape(family: str, n: int, k: int, param: int = 0) -> tuple[int, ...]:
    """The shape of the tensor the pack op `family` (one of PACKED_FAMILIES) returns for an N x K
    weight; param: bits for codebook_pack, groups for int8_conv2d_pack_weight, 0 otherwise.
    Symbolic sizes are specialized (packing is not traced with dynamic weight shapes)."""
    return tuple(_lib().packed_shape(family, int(n), int(k), int(param)))


def packed_n(family: str, shape) -> int:
    """N (output rows) of a 2-D pack of that family and shape: shape[0] minus its header rows."""
    return _lib().packed_n(family, [int(d) for d in shape])


def packed_payload(packed: torch.Tensor, family: str) -> torch.Tensor:
    """The payload of a pack (a view past its header): what the kernels read, the layout of
    csrc/cpu/int8_gemm.h, ck/bitpack.h or csrc/cpu/sparse24.h. For inspection and tests."""
    if packed.dim() == 2:
        return packed[packed.shape[0] - packed_n(family, packed.shape):]
    return packed[_PACKED_1D_HEADER_BYTES // packed.element_size():]


def _packed_rows(w: torch.Tensor, family: str) -> int:
    """N of a weight argument as the fake kernels see it: a raw [N, K] weight's rows, or the rows
    of a 2-D int32 pack after its header."""
    if w.dtype == torch.int32 and w.dim() == 2:
        return packed_n(family, w.shape)
    return w.shape[0]


# ---------------------------------------------------------------- fixed-point requantization


def quantize_multiplier(real) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode real multipliers as (m0, shift): real ~= m0 * 2^(shift - 31), m0 in [2^30, 2^31),
    shift in [-31, 30] (TFLite convention). Accepts a float or a tensor (per channel); zero and
    multipliers below 2^-32 map to (0, 0). Negative, non-finite or >= 2^30 values are errors."""
    real_t = torch.as_tensor(real, dtype=torch.float64)
    return _lib().quantize_multiplier(real_t.cpu())


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
    return _lib().requantize(acc, _int32(m0, "m0", op), _int32(shift, "shift", op), _int_arg(zero_point, "zero_point", op),
                             _int_arg(qmin, "qmin", op), _int_arg(qmax, "qmax", op), out_dtype, rounding)


# ---------------------------------------------------------------- int8 GEMM / linear


def int8_pack_weight(w: torch.Tensor) -> torch.Tensor:
    """Pack an int8 weight [N, K] once into the kernel's blocked layout: an int32 tensor
    packed_shape("int8_pack_weight", N, K) = [header_rows + N, ceil(K/4) + 2], the header rows
    (see "packed weights" above), then VNNI-ordered bytes, the row sums and K (csrc/cpu/int8_gemm.h).
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


# ---------------------------------------------------------------- int8 conv2d (issue 3)


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


# ---------------------------------------------------------------- codebook (issue 4)


def codebook_words_per_row(k: int, bits: int) -> int:
    """int32 words per packed row of k indices of `bits` bits: ceil(k / (32 // bits)) (the second
    dimension of codebook_pack's result)."""
    per_word = 32 // bits
    return (k + per_word - 1) // per_word


def codebook_pack(idx: torch.Tensor, bits: int) -> torch.Tensor:
    """Bit-pack codebook indices idx [N, K] (integers in [0, 2^bits), bits in 1..8) into the kernel
    layout: an int32 tensor packed_shape("codebook_pack", N, K, bits) = [header_rows + N,
    ceil(K / (32 // bits))], the header rows first (see "packed weights" above; payload:
    packed_payload(p, "codebook_pack")). Each 32-bit word holds 32 // bits indices
    of one row (index j at bits [j*bits, (j+1)*bits), no index straddles two words; bits 3/5/6/7
    leave 32 mod bits bits unused), and rows are interleaved in blocks of 16 so that one 64-byte
    load gives a 16-lane vector of indices (full description: csrc/include/ck/bitpack.h)."""
    return _lib().codebook_pack(idx, bits)


def codebook_unpack(packed_idx: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of codebook_pack: uint8 indices [N, k]."""
    return _lib().codebook_unpack(packed_idx, bits, k)


def codebook_linear(x: torch.Tensor, packed_idx: torch.Tensor, codebook: torch.Tensor, bits: int,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W.T + bias with W[n, k] = codebook[n // (N // G), idx[n, k]], the lookup fused into
    the kernel. x: fp32 [M, K] (CUDA also fp16 / bf16; the output has x's dtype); packed_idx: from
    codebook_pack (N rows); codebook: fp32 [G, 2^bits] (G divides N: one codebook per group of N // G
    consecutive output rows); bias: fp32 [N] or None.
    CPU, per output: acc = 0; acc = fmaf(x[m, k], W[n, k], acc) for k in order; y = acc + bias[n]
    (identical on every CPU path and thread count). CUDA: M <= 8 runs a fused GEMV (fp32 sums in
    another order, one rounding to x's dtype); larger M decodes W to x's dtype and uses cuBLAS
    (see csrc/ops/cuda_codebook.cpp). Differentiable in x, codebook and bias; the
    codebook gradient is the sum of the weight gradients of each entry's members."""
    return _lib().codebook_linear(x, packed_idx, codebook, bits, bias)


def codebook_conv2d(x: torch.Tensor, packed_idx: torch.Tensor, codebook: torch.Tensor, bits: int,
                    bias: torch.Tensor | None, kernel_size, stride=1, padding=0, dilation=1,
                    groups: int = 1) -> torch.Tensor:
    """F.conv2d with a codebook weight: W [C_out, C_in / groups, kh, kw] flattened to
    [C_out, C_in / groups * kh * kw], its indices packed by codebook_pack. x: fp32 NCHW (CUDA:
    also fp16 / bf16, computed by decoding W to x's dtype, then cuDNN with TF32 off);
    kernel_size / stride / padding / dilation: int or pair (zero padding); groups: 1, or any
    divisor of both channel counts with C_out / groups a multiple of 16 (depthwise is refused).
    Computed as im2col + the codebook_linear kernel, so each output has the same fmaf order over
    (c, i, j). Differentiable in x, codebook and bias."""
    op = "codebook_conv2d"
    return _lib().codebook_conv2d(x, packed_idx, codebook, _int_arg(bits, "bits", op), bias,
                                  _int_pair(kernel_size, "kernel_size", op), _int_pair(stride, "stride", op),
                                  _int_pair(padding, "padding", op), _int_pair(dilation, "dilation", op),
                                  _int_arg(groups, "groups", op))


def _codebook_dense(packed_idx: torch.Tensor, codebook: torch.Tensor, bits: int, k: int) -> tuple[
        torch.Tensor, torch.Tensor]:
    """(W [N, k], flat index [N, k] into codebook.view(-1)) for the backward passes."""
    n, entries = packed_n("codebook_pack", packed_idx.shape), 1 << bits
    idx = codebook_unpack(packed_idx, bits, k).long()
    group = torch.arange(n, device=idx.device) // (n // codebook.shape[0])
    flat = group[:, None] * entries + idx
    return codebook.reshape(-1)[flat], flat


def _codebook_grad(grad_w: torch.Tensor, flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """d loss / d codebook[g, c] = sum of d loss / d W[n, k] over the members (n, k) of entry c of
    group g (Deep Compression's centroid gradient)."""
    out = torch.zeros(codebook.numel(), dtype=codebook.dtype, device=grad_w.device)
    return out.index_add_(0, flat.reshape(-1), grad_w.reshape(-1).to(codebook.dtype)).view(codebook.shape)


def _register_codebook_autograd() -> None:
    def linear_setup(ctx, inputs, output):
        x, packed_idx, codebook, bits, bias = inputs
        ctx.save_for_backward(x, packed_idx, codebook)
        ctx.bits, ctx.has_bias = bits, bias is not None

    def linear_backward(ctx, grad):
        x, packed_idx, codebook = ctx.saved_tensors
        w, flat = _codebook_dense(packed_idx, codebook, ctx.bits, x.shape[1])
        grad_x = grad @ w.to(grad.dtype) if ctx.needs_input_grad[0] else None  # fp16 / bf16 x on CUDA
        grad_cb = _codebook_grad(grad.T @ x, flat, codebook) if ctx.needs_input_grad[2] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[4] else None
        return grad_x, None, grad_cb, None, grad_b

    torch.library.register_autograd("compress_kernels::codebook_linear", linear_backward,
                                    setup_context=linear_setup)

    def conv_setup(ctx, inputs, output):
        x, packed_idx, codebook, bits, bias, kernel_size, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, packed_idx, codebook)
        ctx.bits, ctx.has_bias = bits, bias is not None
        ctx.conv = (list(kernel_size), list(stride), list(padding), list(dilation), groups)

    def conv_backward(ctx, grad):
        x, packed_idx, codebook = ctx.saved_tensors
        kernel_size, stride, padding, dilation, groups = ctx.conv
        c_in = x.shape[1] // groups
        w, flat = _codebook_dense(packed_idx, codebook, ctx.bits, c_in * kernel_size[0] * kernel_size[1])
        w4 = w.view(w.shape[0], c_in, kernel_size[0], kernel_size[1]).to(x.dtype)
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.has_bias and ctx.needs_input_grad[4]]
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad.contiguous(), x, w4, [w4.shape[0]] if ctx.has_bias else None, stride, padding, dilation,
            False, [0, 0], groups, mask)
        grad_cb = _codebook_grad(grad_w, flat, codebook) if mask[1] else None
        return grad_x, None, grad_cb, None, grad_b, None, None, None, None, None

    torch.library.register_autograd("compress_kernels::codebook_conv2d", conv_backward,
                                    setup_context=conv_setup)


# ---------------------------------------------------------------- 2:4 sparse (issue 5)

# The layout converters (CUTLASS, cuSPARSELt, the padded CUDA pack) live in sparse24_layout.
from ..sparse24_layout import (  # noqa: E402, F401
    sparse24_cuda_pack,
    sparse24_from_cusparselt,
    sparse24_from_cutlass,
    sparse24_to_cusparselt,
    sparse24_to_cutlass,
)


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
    packed_shape("sparse24_bf16_pack", N, K): the 64-byte header, then blocks of 16 columns x 8 k, values as the (k0, k1) pairs vdpbf16ps reads, see
    csrc/cpu/sparse24.h); sparse24_linear with bf16 x accepts it in place of the values."""
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
    x_zero_point, out_zero_point = _int_arg(x_zero_point, "x_zero_point", op), _int_arg(out_zero_point, "out_zero_point", op)
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


# ---------------------------------------------------------------- fake-quant (issue 6)


def _qparam_tensor(v, dtype: torch.dtype, device) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.tensor([v], dtype=dtype, device=device)


def fake_quant(x: torch.Tensor, scale, zero_point=0, qmin: int = -128, qmax: int = 127,
               axis: int | None = None, mask: torch.Tensor | None = None,
               grad_factor: float | None = None) -> torch.Tensor:
    """Fused fake quantization y = (clamp(round_half_even(x / s) + z, qmin, qmax) - z) * s.

    x: float32, bfloat16, float16 (computed in fp32 registers) or float64 (computed in fp64), any
    shape. x / s is evaluated as x * (1 / s) with 1 / s rounded to fp32, as PyTorch's
    fake_quantize_per_tensor_affine / per_channel_affine do, so the forward equals theirs exactly.
    scale: a float or a floating tensor with 1 element (axis=None, per tensor) or x.shape[axis]
    elements (per channel along `axis`, any axis, negative allowed); finite and > 0.
    zero_point: an int or an integer / floating tensor shaped like scale; a floating (learnable)
    zero point is rounded half to even; it must lie in [qmin, qmax]. qmin < qmax, |q| <= 2^23.
    mask: optional bool (or 0 / 1) tensor of x's shape; where it is false, y and grad_x are exactly
    zero and nothing reaches the qparam gradients (pruned weights stay pruned).

    Autograd: grad_x is the clipped straight-through estimator (grad_y where qmin <= round(x/s) + z
    <= qmax, else 0). When scale requires grad: the LSQ gradient (Esser et al.)
    g * sum(grad_y * dy/ds) with dy/ds = round(x/s) - x/s inside the range, qmin - z below,
    qmax - z above; when a floating zero_point requires grad: g * sum(grad_y * dy/dz) with
    dy/dz = 0 inside, -s outside. g = grad_factor, default 1 / sqrt(n * qmax) with n the number of
    elements that share the scale (numel per tensor, numel / channels per channel; qmax - qmin
    when qmax <= 0). torch._fake_quantize_learnable_* take g as an argument (1.0 unless the caller
    scales): pass grad_factor=1.0 to match them. Forward and backward each read and write x once.
    """
    scale_t = _qparam_tensor(scale, torch.float32, x.device)
    zp_t = _qparam_tensor(zero_point, torch.int32, x.device)
    return _lib().fake_quant(x, scale_t, zp_t, qmin, qmax, axis, mask, grad_factor)


def fake_quant_backward(grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor,
                        zero_point: torch.Tensor, qmin: int, qmax: int, axis: int | None = None,
                        mask: torch.Tensor | None = None, grad_factor: float | None = None,
                        scale_grad: bool = True, zero_point_grad: bool = True):
    """One pass over (grad, x): returns (grad_x, grad_scale, grad_zero_point) of fake_quant (see
    its docstring). The qparam gradients are reduced from fixed-size blocks in a fixed order, so
    they do not depend on the thread count; they are zeros when not requested."""
    return _lib().fake_quant_backward(grad, x, scale, zero_point, qmin, qmax, axis, mask,
                                      grad_factor, scale_grad, zero_point_grad)


class _ObservedFakeQuant(torch.autograd.Function):
    """fake_quant_observe with the straight-through gradient for x (the observed qparams are not
    learnable, so they get none)."""

    @staticmethod
    def forward(x, running_min, running_max, momentum, qmin, qmax, symmetric, axis, mask):
        return _lib().fake_quant_observe(x, running_min, running_max, momentum, qmin, qmax,
                                         symmetric, axis, mask)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, _, _, qmin, qmax, _, axis, mask = inputs
        _, scale, zero_point = output
        ctx.save_for_backward(x, scale, zero_point, mask)
        ctx.qparams = (qmin, qmax, axis)
        ctx.mark_non_differentiable(scale, zero_point)

    @staticmethod
    def backward(ctx, grad, _grad_scale, _grad_zero_point):
        x, scale, zero_point, mask = ctx.saved_tensors
        qmin, qmax, axis = ctx.qparams
        grad_x, _, _ = _lib().fake_quant_backward(grad, x, scale, zero_point, qmin, qmax, axis,
                                                  mask, None, False, False)
        return grad_x, None, None, None, None, None, None, None, None


def fake_quant_observe(x: torch.Tensor, running_min: torch.Tensor, running_max: torch.Tensor,
                       momentum: float = 0.01, qmin: int = 0, qmax: int = 255,
                       symmetric: bool = False, axis: int | None = None,
                       mask: torch.Tensor | None = None):
    """EMA min/max observer update and fake quantization with the updated qparams, in one op
    (the peer: torch.fused_moving_avg_obs_fake_quant). Returns (y, scale, zero_point).

    running_min / running_max: float32, 1 element (axis=None) or x.shape[axis] elements, updated
    in place. Entries still at their initial values (running_min = +inf or running_max = -inf)
    take the batch's min / max; the others move by r += momentum * (batch - r) in fp32.
    qparams, in fp32 as torch.ao.quantization's MinMaxObserver computes them, from the updated
    range widened to include 0:
      asymmetric (default): scale = max((max - min) / (qmax - qmin), eps),
                            zero_point = clamp(qmin - round(min / scale), qmin, qmax);
      symmetric: scale = max(max(-min, max) / ((qmax - qmin) / 2), eps), zero_point = 0 when
                 qmin < 0 (int8) else (qmin + qmax + 1) // 2 (128 for uint8);
    eps = float32 machine epsilon. Defaults [qmin, qmax] = [0, 255] are the uint8 activation range;
    use [-128, 127] for int8. y = fake_quant(x, scale, zero_point, qmin, qmax, axis, mask); the
    gradient of x is the clipped straight-through estimator. The op reads x twice (min/max, then
    quantize) and writes y once.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _ObservedFakeQuant.apply(x, running_min, running_max, momentum, qmin, qmax,
                                        symmetric, axis, mask)
    return _lib().fake_quant_observe(x, running_min, running_max, momentum, qmin, qmax, symmetric,
                                     axis, mask)


def _register_fake_quant_autograd() -> None:
    def setup_context(ctx, inputs, output):
        x, scale, zero_point, qmin, qmax, axis, mask, grad_factor = inputs
        ctx.save_for_backward(x, scale, zero_point, mask)
        ctx.qparams = (qmin, qmax, axis, grad_factor)

    def backward(ctx, grad):
        x, scale, zero_point, mask = ctx.saved_tensors
        qmin, qmax, axis, grad_factor = ctx.qparams
        need_x, need_scale, need_zero_point = ctx.needs_input_grad[:3]
        grad_x, grad_scale, grad_zero_point = torch.ops.compress_kernels.fake_quant_backward(
            grad, x, scale, zero_point, qmin, qmax, axis, mask, grad_factor, need_scale,
            need_zero_point)
        return (grad_x if need_x else None, grad_scale if need_scale else None,
                grad_zero_point if need_zero_point else None, None, None, None, None, None)

    torch.library.register_autograd("compress_kernels::fake_quant", backward,
                                    setup_context=setup_context)


# ---------------------------------------------------------------- CPU ISA control


def cpu_isa() -> str:
    """The CPU instruction-set path the kernels use now: "amx", "avx512vbmi", "avx512vnni", "avx2",
    "portable", or "amx_emulated" (the AMX kernels on a scalar model of the tile instructions, every
    other family on the best non-AMX path; for tests)."""
    return _lib()._cpu_isa("")


def cpu_isa_report() -> str:
    """One line: the CPU path detected and active, and when AMX is not used, why (CPU, OS or the
    Linux tile-data permission)."""
    return _lib()._cpu_isa_report()


def cpu_bf16_path() -> str:
    """The kernel bf16 ops (sparse24_linear with bf16 x) run now: "avx512bf16" (vdpbf16ps, path
    avx512vbmi on a CPU with AVX512_BF16: Zen 4, Sapphire Rapids), "avx2" (fp32 FMAs under FTZ/DAZ,
    any AVX2 CPU) or "portable"; all give the same bits."""
    return _lib()._cpu_bf16_path()


def amx_peak(kind: str = "int8", seconds: float = 0.2) -> float:
    """The AMX limit of this machine now, in operations per second on all torch threads: a
    register-only loop of tdpbssd ("int8") or tdpbf16ps ("bf16") on four accumulator tiles. Raises
    where the CPU path has no AMX. Benchmarks report kernels as a share of it."""
    return _lib()._amx_peak(kind, seconds)


@contextlib.contextmanager
def force_cpu_isa(isa: str):
    """Run the body on one CPU path ("portable", "avx2", "avx512vnni", "avx512vbmi", "amx",
    "amx_emulated" or "auto"); every path computes bit-identical results, so this is for tests and
    benchmarks."""
    previous = cpu_isa()
    _lib()._cpu_isa(isa)
    try:
        yield
    finally:
        _lib()._cpu_isa(previous)


# ---------------------------------------------------------------- fake kernels


if NATIVE_ERROR is None:

    @torch.library.register_fake("compress_kernels::quantize_multiplier")
    def _(real):
        return real.new_empty(real.shape, dtype=torch.int32), real.new_empty(real.shape, dtype=torch.int32)

    @torch.library.register_fake("compress_kernels::int8_add")
    def _(a, a_zero_point, a_m0, a_shift, b, b_zero_point, b_m0, b_shift, out_m0, out_shift, out_zero_point, qmin,
          qmax, out_dtype, left_shift=20):
        for name, t in (("a", a), ("b", b)):
            torch._check(t.dtype in (torch.int8, torch.uint8),
                         lambda: f"int8_add: {name} must be int8 or uint8, got {t.dtype}")
        torch._check(a.shape == b.shape, lambda: f"int8_add: a and b must have the same shape, got {tuple(a.shape)} "
                                                 f"and {tuple(b.shape)}")
        torch._check(0 <= left_shift <= 22, lambda: f"int8_add: left_shift must be in [0, 22], got {left_shift}")
        if a.stride() == b.stride():
            return torch.empty_like(a, dtype=out_dtype)
        return a.new_empty(a.shape, dtype=out_dtype)

    @torch.library.register_fake("compress_kernels::requantize")
    def _(acc, m0, shift, zero_point, qmin, qmax, out_dtype, rounding="double"):
        torch._check(acc.dtype == torch.int32, lambda: f"requantize: acc must be int32, got {acc.dtype}")
        return acc.new_empty(acc.shape, dtype=out_dtype)

    @torch.library.register_fake("compress_kernels::int8_pack_weight")
    def _(w):
        return w.new_empty(packed_shape("int8_pack_weight", w.shape[0], w.shape[1]), dtype=torch.int32)

    @torch.library.register_fake("compress_kernels::int8_gemm")
    def _(a, b):
        return a.new_empty((a.shape[0], _packed_rows(b, "int8_pack_weight")), dtype=torch.int32)

    @torch.library.register_fake("compress_kernels::int8_linear")
    def _(x, x_zero_point, w, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype,
          rounding="double"):
        return x.new_empty((x.shape[0], _packed_rows(w, "int8_pack_weight")), dtype=out_dtype)

    @torch.library.register_fake("compress_kernels::int8_linear_float")
    def _(x, x_zero_point, w, x_scale, w_scale, bias):
        return x.new_empty((x.shape[0], _packed_rows(w, "int8_pack_weight")), dtype=torch.float32)

    @torch.library.register_fake("compress_kernels::quantize_rows")
    def _(x, qmax=127):
        return x.new_empty(x.shape, dtype=torch.int8), x.new_empty((x.shape[0],), dtype=torch.float32)

    # ---- fake kernels: int8 conv2d (issue 3)

    @torch.library.register_fake("compress_kernels::int8_conv2d_pack_weight")
    def _(w, groups=1):
        depth = w.shape[1] * w.shape[2] * w.shape[3]
        return w.new_empty(packed_shape("int8_conv2d_pack_weight", w.shape[0], depth, groups), dtype=torch.int32)

    @torch.library.register_fake("compress_kernels::int8_conv2d")
    def _(x, x_zero_point, w, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype, stride=(1, 1),
          padding=(0, 0), dilation=(1, 1), groups=1, rounding="double", w_packed=None):
        oh = (x.shape[2] + 2 * padding[0] - dilation[0] * (w.shape[2] - 1) - 1) // stride[0] + 1
        ow = (x.shape[3] + 2 * padding[1] - dilation[1] * (w.shape[3] - 1) - 1) // stride[1] + 1
        return torch.empty((x.shape[0], w.shape[0], oh, ow), dtype=out_dtype, device=x.device,
                           memory_format=torch.channels_last)

    @torch.library.register_fake("compress_kernels::sparse24_conv2d")
    def _(x, values, meta, bias, kernel_size, stride, padding, dilation):
        oh = (x.shape[2] + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1) - 1) // stride[0] + 1
        ow = (x.shape[3] + 2 * padding[1] - dilation[1] * (kernel_size[1] - 1) - 1) // stride[1] + 1
        return torch.empty((x.shape[0], meta.shape[0], oh, ow), dtype=x.dtype, device=x.device,
                           memory_format=torch.channels_last)

    @torch.library.register_fake("compress_kernels::sparse24_int8_conv2d")
    def _(x, x_zero_point, values, meta, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype, kernel_size,
          stride, padding, dilation, rounding="double"):
        oh = (x.shape[2] + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1) - 1) // stride[0] + 1
        ow = (x.shape[3] + 2 * padding[1] - dilation[1] * (kernel_size[1] - 1) - 1) // stride[1] + 1
        return torch.empty((x.shape[0], meta.shape[0], oh, ow), dtype=out_dtype, device=x.device,
                           memory_format=torch.channels_last)

    # ---- fake kernels: codebook (issue 4)

    @torch.library.register_fake("compress_kernels::codebook_pack")
    def _(idx, bits):
        torch._check(1 <= bits <= 8, lambda: f"codebook_pack: bits must be in [1, 8], got {bits}")
        return idx.new_empty(packed_shape("codebook_pack", idx.shape[0], idx.shape[1], bits), dtype=torch.int32)

    @torch.library.register_fake("compress_kernels::codebook_unpack")
    def _(packed_idx, bits, k):
        return packed_idx.new_empty((_packed_rows(packed_idx, "codebook_pack"), k), dtype=torch.uint8)

    @torch.library.register_fake("compress_kernels::codebook_linear")
    def _(x, packed_idx, codebook, bits, bias):
        torch._check(x.dim() == 2, lambda: f"codebook_linear: x must be 2-D, got {x.dim()}-D")
        return x.new_empty((x.shape[0], _packed_rows(packed_idx, "codebook_pack")))

    @torch.library.register_fake("compress_kernels::codebook_conv2d")
    def _(x, packed_idx, codebook, bits, bias, kernel_size, stride=(1, 1), padding=(0, 0),
          dilation=(1, 1), groups=1):
        torch._check(x.dim() == 4, lambda: f"codebook_conv2d: x must be 4-D, got {x.dim()}-D")
        ho = (x.shape[2] + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1) - 1) // stride[0] + 1
        wo = (x.shape[3] + 2 * padding[1] - dilation[1] * (kernel_size[1] - 1) - 1) // stride[1] + 1
        return x.new_empty((x.shape[0], _packed_rows(packed_idx, "codebook_pack"), ho, wo))

    _register_codebook_autograd()

    # ---- fake kernels: 2:4 sparse (issue 5)

    @torch.library.register_fake("compress_kernels::sparse24_compress")
    def _(w):
        torch._check(w.dim() == 2, lambda: f"sparse24_compress: w must be 2-D, got {w.dim()}-D")
        n, k = w.shape
        return w.new_empty((n, k // 2)), w.new_empty((n, (k + 7) // 8), dtype=torch.uint8)

    @torch.library.register_fake("compress_kernels::sparse24_decompress")
    def _(values, meta):
        return values.new_empty((values.shape[0], 2 * values.shape[1]))

    @torch.library.register_fake("compress_kernels::sparse24_f32_pack")
    def _(values, meta):
        return values.new_empty(packed_shape("sparse24_f32_pack", values.shape[0], 2 * values.shape[1]))

    @torch.library.register_fake("compress_kernels::sparse24_bf16_pack")
    def _(values, meta):
        return values.new_empty(packed_shape("sparse24_bf16_pack", values.shape[0], 2 * values.shape[1]))

    @torch.library.register_fake("compress_kernels::sparse24_linear")
    def _(x, values, meta, bias):
        return x.new_empty((x.shape[0], meta.shape[0]))

    @torch.library.register_fake("compress_kernels::sparse24_int8_pack")
    def _(values, meta):
        return values.new_empty(packed_shape("sparse24_int8_pack", values.shape[0], 2 * values.shape[1]),
                                dtype=torch.int32)

    @torch.library.register_fake("compress_kernels::sparse24_int8_linear")
    def _(x, x_zero_point, values, meta, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype,
          rounding="double"):
        return x.new_empty((x.shape[0], meta.shape[0]), dtype=out_dtype)

    # ---- fake kernels: fake-quant (issue 6)

    def _zero_point_grad_dtype(zero_point):
        return zero_point.dtype if zero_point.dtype.is_floating_point else torch.float32

    @torch.library.register_fake("compress_kernels::fake_quant")
    def _(x, scale, zero_point, qmin, qmax, axis=None, mask=None, grad_factor=None):
        return x.new_empty(x.shape)

    @torch.library.register_fake("compress_kernels::fake_quant_backward")
    def _(grad, x, scale, zero_point, qmin, qmax, axis, mask, grad_factor, scale_grad, zero_point_grad):
        return (x.new_empty(x.shape), scale.new_empty(scale.shape),
                zero_point.new_empty(zero_point.shape, dtype=_zero_point_grad_dtype(zero_point)))

    @torch.library.register_fake("compress_kernels::fake_quant_observe")
    def _(x, running_min, running_max, momentum, qmin, qmax, symmetric=False, axis=None, mask=None):
        return (x.new_empty(x.shape), running_min.new_empty(running_min.shape),
                running_min.new_empty(running_min.shape, dtype=torch.int32))

    _register_fake_quant_autograd()
    if torch.cuda.is_available():  # the GPU path of the fake-quant ops is Triton
        from .. import triton_kernels as _triton_kernels

        _triton_kernels.register_cuda_kernels()
