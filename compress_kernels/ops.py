"""Typed Python entry points for every op in torch.ops.compress_kernels, their fake (meta) kernels
for torch.compile / torch.export, and their autograd registrations.

The schemas live in csrc/ops/registration.cpp; the spec of each op is the function of the same name
in compress_kernels.reference.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

try:
    from . import _C  # noqa: F401  (loading it registers the ops)

    NATIVE_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    NATIVE_ERROR = exc
    warnings.warn(
        f"compress_kernels: the native extension compress_kernels._C failed to load ({exc}). "
        "Ops that need it will raise; rebuild with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )

INT8_PACKED_EXTRA_WORDS = 2  # row sums and the unpadded K, after the packed weight bytes


def _lib():
    if NATIVE_ERROR is not None:
        raise RuntimeError(f"compress_kernels native ops are unavailable: {NATIVE_ERROR}")
    return torch.ops.compress_kernels


def _int32(v, device=None) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.int32, device=device)


# ---------------------------------------------------------------- fixed-point requantization


def quantize_multiplier(real) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode real multipliers as (m0, shift): real ~= m0 * 2^(shift - 31), m0 in [2^30, 2^31),
    shift in [-31, 30] (TFLite convention). Accepts a float or a tensor (per channel); zero and
    multipliers below 2^-32 map to (0, 0). Negative, non-finite or >= 2^30 values are errors."""
    real_t = torch.as_tensor(real, dtype=torch.float64)
    return _lib().quantize_multiplier(real_t.cpu())


def requantize(acc: torch.Tensor, m0, shift, zero_point: int = 0, qmin: int = -128,
               qmax: int = 127, out_dtype: torch.dtype = torch.int8,
               rounding: str = "double") -> torch.Tensor:
    """clamp(MultiplyByQuantizedMultiplier(acc, m0, shift) + zero_point, qmin, qmax) as out_dtype.

    acc: int32 accumulators of any shape. m0 / shift: int32, one element (per tensor) or one per
    element of acc's last dimension (per channel). rounding: "double" (gemmlowp / TFLite default)
    or "single" (TFLite single rounding). out_dtype: int8, uint8 or int32. Bit-exact.
    """
    return _lib().requantize(acc, _int32(m0), _int32(shift), zero_point, qmin, qmax, out_dtype,
                             rounding)


# ---------------------------------------------------------------- int8 GEMM / linear


def int8_pack_weight(w: torch.Tensor) -> torch.Tensor:
    """Pack an int8 weight [N, K] once into the kernel's blocked layout (an int32 tensor
    [N, ceil(K/4) + 2]: VNNI-ordered bytes, then the row sums and K; see csrc/cpu/int8_gemm.h).
    Every int8 GEMM op accepts the packed tensor in place of the raw weight."""
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
    return _lib().int8_linear(x, x_zero_point, w, bias, _int32(m0), _int32(shift), out_zero_point,
                              qmin, qmax, out_dtype, rounding)


def int8_linear_float(x: torch.Tensor, x_zero_point: int, w: torch.Tensor, x_scale: torch.Tensor,
                      w_scale: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """int8 GEMM with a float epilogue for dynamic quantization:
    y[m, n] = ((float(acc[m, n]) * x_scale[m]) * w_scale[n]) + bias[n] in fp32,
    acc = sum_k w[n, k] * (x[m, k] - x_zero_point). x_scale: [M] or [1]; w_scale: [N] or [1]."""
    return _lib().int8_linear_float(x, x_zero_point, w, x_scale, w_scale, bias)


def quantize_rows(x: torch.Tensor, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 quantization of fp32 x [M, K]: returns (q, scale[M]) with
    scale = max|x[m]| / qmax (1 for an all-zero row), q = clamp(round_half_even(x / scale), ±qmax)."""
    return _lib().quantize_rows(x, qmax)


# ---------------------------------------------------------------- int8 conv2d (issue 3)

# ---------------------------------------------------------------- codebook (issue 4)


def codebook_words_per_row(k: int, bits: int) -> int:
    """int32 words per packed row of k indices of `bits` bits: ceil(k / (32 // bits))."""
    per_word = 32 // bits
    return (k + per_word - 1) // per_word


def codebook_pack(idx: torch.Tensor, bits: int) -> torch.Tensor:
    """Bit-pack codebook indices idx [N, K] (integers in [0, 2^bits), bits in 1..8) into the kernel
    layout: an int32 tensor [N, ceil(K / (32 // bits))]. Each 32-bit word holds 32 // bits indices
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
    the kernel. x: fp32 [M, K]; packed_idx: from codebook_pack (N rows); codebook: fp32 [G, 2^bits]
    (G divides N: one codebook per group of N // G consecutive output rows); bias: fp32 [N] or None.
    Per output: acc = 0; acc = fmaf(x[m, k], W[n, k], acc) for k in order; y = acc + bias[n]
    (identical on every CPU path and thread count). Differentiable in x, codebook and bias; the
    codebook gradient is the sum of the weight gradients of each entry's members."""
    return _lib().codebook_linear(x, packed_idx, codebook, bits, bias)


def codebook_conv2d(x: torch.Tensor, packed_idx: torch.Tensor, codebook: torch.Tensor, bits: int,
                    bias: torch.Tensor | None, kernel_size, stride=1, padding=0, dilation=1,
                    groups: int = 1) -> torch.Tensor:
    """F.conv2d with a codebook weight: W [C_out, C_in / groups, kh, kw] flattened to
    [C_out, C_in / groups * kh * kw], its indices packed by codebook_pack. x: fp32 NCHW;
    kernel_size / stride / padding / dilation: int or pair (zero padding); groups: 1, or any
    divisor of both channel counts with C_out / groups a multiple of 16 (depthwise is refused).
    Computed as im2col + the codebook_linear kernel, so each output has the same fmaf order over
    (c, i, j). Differentiable in x, codebook and bias."""
    pair = (lambda v: [int(v), int(v)] if isinstance(v, int) else [int(e) for e in v])
    return _lib().codebook_conv2d(x, packed_idx, codebook, bits, bias, pair(kernel_size), pair(stride),
                                  pair(padding), pair(dilation), groups)


def _codebook_dense(packed_idx: torch.Tensor, codebook: torch.Tensor, bits: int, k: int) -> tuple[
        torch.Tensor, torch.Tensor]:
    """(W [N, k], flat index [N, k] into codebook.view(-1)) for the backward passes."""
    n, entries = packed_idx.shape[0], 1 << bits
    idx = codebook_unpack(packed_idx, bits, k).long()
    group = torch.arange(n, device=idx.device) // (n // codebook.shape[0])
    flat = group[:, None] * entries + idx
    return codebook.reshape(-1)[flat], flat


def _codebook_grad(grad_w: torch.Tensor, flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """d loss / d codebook[g, c] = sum of d loss / d W[n, k] over the members (n, k) of entry c of
    group g (Deep Compression's centroid gradient)."""
    out = torch.zeros(codebook.numel(), dtype=grad_w.dtype, device=grad_w.device)
    return out.index_add_(0, flat.reshape(-1), grad_w.reshape(-1)).view(codebook.shape)


def _register_codebook_autograd() -> None:
    def linear_setup(ctx, inputs, output):
        x, packed_idx, codebook, bits, bias = inputs
        ctx.save_for_backward(x, packed_idx, codebook)
        ctx.bits, ctx.has_bias = bits, bias is not None

    def linear_backward(ctx, grad):
        x, packed_idx, codebook = ctx.saved_tensors
        w, flat = _codebook_dense(packed_idx, codebook, ctx.bits, x.shape[1])
        grad_x = grad @ w if ctx.needs_input_grad[0] else None
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
        w4 = w.view(packed_idx.shape[0], c_in, kernel_size[0], kernel_size[1])
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.has_bias and ctx.needs_input_grad[4]]
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad.contiguous(), x, w4, [w4.shape[0]] if ctx.has_bias else None, stride, padding, dilation,
            False, [0, 0], groups, mask)
        grad_cb = _codebook_grad(grad_w, flat, codebook) if mask[1] else None
        return grad_x, None, grad_cb, None, grad_b, None, None, None, None, None

    torch.library.register_autograd("compress_kernels::codebook_conv2d", conv_backward,
                                    setup_context=conv_setup)


# ---------------------------------------------------------------- 2:4 sparse (issue 5)

# ---------------------------------------------------------------- fake-quant (issue 6)

# ---------------------------------------------------------------- CPU ISA control


def cpu_isa() -> str:
    """The CPU instruction-set path the kernels use now: "avx512vnni" or "portable"."""
    return _lib()._cpu_isa("")


@contextlib.contextmanager
def force_cpu_isa(isa: str):
    """Run the body on one CPU path ("portable", "avx512vnni" or "auto"); every path computes
    bit-identical results, so this is for tests and benchmarks."""
    previous = cpu_isa()
    _lib()._cpu_isa(isa)
    try:
        yield
    finally:
        _lib()._cpu_isa(previous)


# ---------------------------------------------------------------- fake kernels


def _packed_n(w: torch.Tensor) -> int:
    return w.shape[0]


if NATIVE_ERROR is None:

    @torch.library.register_fake("compress_kernels::quantize_multiplier")
    def _(real):
        return real.new_empty(real.shape, dtype=torch.int32), real.new_empty(real.shape, dtype=torch.int32)

    @torch.library.register_fake("compress_kernels::requantize")
    def _(acc, m0, shift, zero_point, qmin, qmax, out_dtype, rounding="double"):
        torch._check(acc.dtype == torch.int32, lambda: f"requantize: acc must be int32, got {acc.dtype}")
        return acc.new_empty(acc.shape, dtype=out_dtype)

    @torch.library.register_fake("compress_kernels::int8_pack_weight")
    def _(w):
        return w.new_empty((w.shape[0], (w.shape[1] + 3) // 4 + INT8_PACKED_EXTRA_WORDS),
                           dtype=torch.int32)

    @torch.library.register_fake("compress_kernels::int8_gemm")
    def _(a, b):
        return a.new_empty((a.shape[0], _packed_n(b)), dtype=torch.int32)

    @torch.library.register_fake("compress_kernels::int8_linear")
    def _(x, x_zero_point, w, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype,
          rounding="double"):
        return x.new_empty((x.shape[0], _packed_n(w)), dtype=out_dtype)

    @torch.library.register_fake("compress_kernels::int8_linear_float")
    def _(x, x_zero_point, w, x_scale, w_scale, bias):
        return x.new_empty((x.shape[0], _packed_n(w)), dtype=torch.float32)

    @torch.library.register_fake("compress_kernels::quantize_rows")
    def _(x, qmax=127):
        return x.new_empty(x.shape, dtype=torch.int8), x.new_empty((x.shape[0],), dtype=torch.float32)

    # ---- fake kernels: int8 conv2d (issue 3)

    # ---- fake kernels: codebook (issue 4)

    @torch.library.register_fake("compress_kernels::codebook_pack")
    def _(idx, bits):
        torch._check(1 <= bits <= 8, lambda: f"codebook_pack: bits must be in [1, 8], got {bits}")
        return idx.new_empty((idx.shape[0], codebook_words_per_row(idx.shape[1], bits)), dtype=torch.int32)

    @torch.library.register_fake("compress_kernels::codebook_unpack")
    def _(packed_idx, bits, k):
        return packed_idx.new_empty((packed_idx.shape[0], k), dtype=torch.uint8)

    @torch.library.register_fake("compress_kernels::codebook_linear")
    def _(x, packed_idx, codebook, bits, bias):
        torch._check(x.dim() == 2, lambda: f"codebook_linear: x must be 2-D, got {x.dim()}-D")
        return x.new_empty((x.shape[0], packed_idx.shape[0]))

    @torch.library.register_fake("compress_kernels::codebook_conv2d")
    def _(x, packed_idx, codebook, bits, bias, kernel_size, stride=(1, 1), padding=(0, 0),
          dilation=(1, 1), groups=1):
        torch._check(x.dim() == 4, lambda: f"codebook_conv2d: x must be 4-D, got {x.dim()}-D")
        ho = (x.shape[2] + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1) - 1) // stride[0] + 1
        wo = (x.shape[3] + 2 * padding[1] - dilation[1] * (kernel_size[1] - 1) - 1) // stride[1] + 1
        return x.new_empty((x.shape[0], packed_idx.shape[0], ho, wo))

    _register_codebook_autograd()

    # ---- fake kernels: 2:4 sparse (issue 5)

    # ---- fake kernels: fake-quant (issue 6)
