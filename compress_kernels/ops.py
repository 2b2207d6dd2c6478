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

    # ---- fake kernels: 2:4 sparse (issue 5)

    # ---- fake kernels: fake-quant (issue 6)
