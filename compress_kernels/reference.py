"""The pure-PyTorch reference of every op: the specification the kernels are tested against.

Short, obvious and slow on purpose. Integer arithmetic is done in int64 so that nothing here can
overflow; the int32 behaviour of the kernels (wrapping accumulator, saturating multiplies) is written
out explicitly. Float results follow the exact operation order the kernels use.
"""

from __future__ import annotations

import math

import torch

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def wrap_int32(x: torch.Tensor) -> torch.Tensor:
    """int64 -> the int32 value with the same low 32 bits (two's complement wrap-around)."""
    return torch.remainder(x + 2**31, 2**32) - 2**31


# ---------------------------------------------------------------- fixed-point (gemmlowp / TFLite)


def quantize_multiplier(real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TFLite QuantizeMultiplier: real ~= m0 * 2^(shift - 31), m0 in [2^30, 2^31).

    q, e = frexp(real) (q in [0.5, 1)); m0 = round_half_away(q * 2^31); m0 == 2^31 becomes
    (2^30, e + 1); e < -31 flushes to (0, 0); zero is (0, 0). Negative, non-finite and >= 2^30
    multipliers are errors.
    """
    m0s, shifts = [], []
    for r in real.double().flatten().tolist():
        if r == 0.0:
            m0s.append(0)
            shifts.append(0)
            continue
        if not (math.isfinite(r) and r > 0):
            raise ValueError(f"real multipliers must be finite, >= 0 and < 2^30, got {r}")
        q, e = math.frexp(r)
        m0 = math.floor(q * 2**31 + 0.5)  # q > 0: round half away from zero
        if m0 == 2**31:
            m0, e = m0 // 2, e + 1
        if e < -31:
            m0, e = 0, 0
        if e > 30:
            raise ValueError(f"real multipliers must be finite, >= 0 and < 2^30, got {r}")
        m0s.append(m0)
        shifts.append(e)
    shape = real.shape
    return (torch.tensor(m0s, dtype=torch.int32).reshape(shape),
            torch.tensor(shifts, dtype=torch.int32).reshape(shape))


def saturating_rounding_doubling_high_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """gemmlowp SaturatingRoundingDoublingHighMul on int64 tensors holding int32 values:
    (a * b + nudge) / 2^31 truncated toward zero, nudge = 2^30 if a*b >= 0 else 1 - 2^30;
    a == b == INT32_MIN saturates to INT32_MAX."""
    ab = a * b
    nudge = torch.where(ab >= 0, 2**30, 1 - 2**30)
    result = torch.div(ab + nudge, 2**31, rounding_mode="trunc")
    return torch.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, result)


def rounding_divide_by_pot(x: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero."""
    mask = (torch.ones_like(exponent) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).long()
    return (x >> exponent) + (remainder > threshold).long()


def multiply_by_quantized_multiplier(x: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor,
                                     rounding: str = "double") -> torch.Tensor:
    """TFLite MultiplyByQuantizedMultiplier on int64 tensors holding int32 values.

    double: RoundingDivideByPOT(SRDHM(sat(x << max(shift, 0)), m0), max(-shift, 0));
    single: (x * m0 + 2^(30 - shift)) >> (31 - shift), saturated to int32.
    """
    x, m0, shift = x.long(), m0.long(), shift.long()
    if rounding == "double":
        left = shift.clamp(min=0)
        right = (-shift).clamp(min=0)
        shifted = (x << left).clamp(INT32_MIN, INT32_MAX)
        return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m0), right)
    if rounding == "single":
        total = 31 - shift
        rounded = (x * m0 + (torch.ones_like(total) << (total - 1))) >> total
        return rounded.clamp(INT32_MIN, INT32_MAX)
    raise ValueError(f'rounding must be "double" or "single", got {rounding!r}')


def requantize(acc: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor, zero_point: int,
               qmin: int, qmax: int, out_dtype: torch.dtype, rounding: str = "double") -> torch.Tensor:
    """clamp(MultiplyByQuantizedMultiplier(acc, m0, shift) + zero_point, qmin, qmax) as out_dtype;
    m0 / shift per tensor (one element) or per channel (the last dimension of acc)."""
    m0 = torch.as_tensor(m0).reshape(-1)
    shift = torch.as_tensor(shift).reshape(-1)
    v = multiply_by_quantized_multiplier(acc, m0, shift, rounding) + zero_point
    return v.clamp(qmin, qmax).to(out_dtype)


def int8_add(a: torch.Tensor, a_zero_point: int, a_m0, a_shift, b: torch.Tensor, b_zero_point: int, b_m0, b_shift,
             out_m0, out_shift, out_zero_point: int, qmin: int, qmax: int, out_dtype: torch.dtype,
             left_shift: int = 20, requant=None) -> torch.Tensor:
    """TFLite's quantized ADD: each input's (x - zero_point) << left_shift rescaled by its multiplier
    to int32, the int32 sum rescaled by out's multiplier, plus the zero point, clamped. `requant`: the
    requantize to compose (this module's by default; ops.int8_add passes its kernels on devices
    without an int8_add kernel)."""
    requantize_ = requant or requantize
    sa = requantize_((a.to(torch.int32) - a_zero_point) << left_shift, a_m0, a_shift, 0, INT32_MIN, INT32_MAX,
                    torch.int32)
    sb = requantize_((b.to(torch.int32) - b_zero_point) << left_shift, b_m0, b_shift, 0, INT32_MIN, INT32_MAX,
                    torch.int32)
    return requantize_(wrap_int32(sa.long() + sb.long()).int(), out_m0, out_shift, out_zero_point, qmin, qmax,
                       out_dtype)


# ---------------------------------------------------------------- int8 GEMM / linear


def int8_gemm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int32 a @ b.T for int8/uint8 a [M, K] and int8 b [N, K]."""
    return wrap_int32(a.long() @ b.long().T).int()


def int8_accumulate(x: torch.Tensor, x_zero_point: int, w: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """sum_k w[n, k] * (x[m, k] - x_zero_point) + bias[n], wrapped to int32 like the hardware."""
    acc = (x.long() - x_zero_point) @ w.long().T
    if bias is not None:
        acc = acc + bias.long()
    return wrap_int32(acc)


def int8_linear(x, x_zero_point, w, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype,
                rounding="double"):
    """Integer-only linear: requantize(int8_accumulate(x, x_zero_point, w, bias), ...)."""
    acc = int8_accumulate(x, x_zero_point, w, bias)
    return requantize(acc, m0, shift, out_zero_point, qmin, qmax, out_dtype, rounding)


def int8_linear_dequant(x, x_zero_point, w, bias, m0, shift, out_zero_point, qmin, qmax, int_dtype, out_scale,
                        rounding="double"):
    """int8_linear's integer output q (of int_dtype) dequantized: float(q - out_zero_point) * out_scale,
    one fp32 rounding (q - out_zero_point is exact)."""
    q = int8_linear(x, x_zero_point, w, bias, m0, shift, out_zero_point, qmin, qmax, int_dtype, rounding)
    return (q.to(torch.int32) - out_zero_point).float() * out_scale.float().reshape(())


def quantize_per_tensor(x: torch.Tensor, scale: torch.Tensor, zero_point: int, qmin: int, qmax: int,
                        out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax) as out_dtype (fp32 division,
    numerics.quantize's bits), with NaN / +-Inf elements set to zero_point; and the flag per row (along
    the last dimension) of the rows that hold a NaN or +-Inf."""
    finite = torch.isfinite(x)
    q = torch.round(x / scale.float().reshape(())).add(zero_point).clamp(qmin, qmax)
    q = torch.where(finite, q, torch.full_like(q, float(zero_point))).to(out_dtype)
    return q, ~finite.reshape(-1, x.shape[-1]).all(dim=1) if x.shape[-1] > 0 else torch.zeros(0, dtype=torch.bool)


def int8_linear_float(x, x_zero_point, w, x_scale, w_scale, bias):
    """Float epilogue for dynamic quantization: ((float(acc) * x_scale[m]) * w_scale[n]) + bias[n],
    each step rounded to fp32 (no fused multiply-add)."""
    acc = int8_accumulate(x, x_zero_point, w, None).float()
    xs = x_scale.reshape(-1, 1) if x_scale.numel() > 1 else x_scale.reshape(1, 1)
    y = (acc * xs) * w_scale.reshape(1, -1)
    if bias is not None:
        y = y + bias
    return y


def int8_conv2d(x, x_zero_point, w, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype, stride=1,
                padding=0, dilation=1, groups=1, rounding="double"):
    """Integer-only conv2d: the int8_linear output stage on
    acc = conv2d(x - x_zero_point, w) + bias, padding contributing zero (x_zero_point in the
    x domain). Computed in float64, which is exact: every partial sum is an integer below 2^53."""
    import torch.nn.functional as F

    acc = F.conv2d(x.double() - x_zero_point, w.double(), None, stride, padding, dilation, groups)
    acc = acc.round().long()
    if bias is not None:
        acc = acc + bias.long().reshape(1, -1, 1, 1)
    acc = wrap_int32(acc)
    m0 = torch.as_tensor(m0).reshape(-1)
    shift = torch.as_tensor(shift).reshape(-1)
    if m0.numel() > 1:
        m0, shift = m0.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1)
    v = multiply_by_quantized_multiplier(acc, m0, shift, rounding) + out_zero_point
    return v.clamp(qmin, qmax).to(out_dtype)


def quantize_rows(x: torch.Tensor, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row quantization: scale = max|x[r]| / qmax (1 for an all-zero row),
    q = clamp(round_half_even(x / scale), -qmax, qmax) as int8. A row holding any NaN or +-Inf
    gets scale NaN and q = 0 (so acc * scale is NaN for every output of that row); the other rows
    are untouched by it."""
    amax = x.abs().amax(dim=1)  # NaN when the row holds a NaN, Inf when it holds an Inf
    finite_row = torch.isfinite(amax)
    scale = amax / qmax
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    scale = torch.where(finite_row, scale, torch.full_like(scale, float("nan")))
    q = torch.round(x / scale[:, None]).clamp(-qmax, qmax)
    q = torch.where(finite_row[:, None], q, torch.zeros_like(q)).to(torch.int8)
    return q, scale


# ---------------------------------------------------------------- codebook


def codebook_pack(idx: torch.Tensor, bits: int) -> torch.Tensor:
    """The packed layout of csrc/include/ck/bitpack.h: c = 32 // bits indices per int32 word (index
    j at bits [j*bits, (j+1)*bits)), ceil(K / c) words per row, rows interleaved in blocks of 16
    (word g of row 16*b + i at offset 16*b*kw + g*rows_in_block + i). Returns int32 [N, kw]."""
    n, k = idx.shape
    c = 32 // bits
    kw = (k + c - 1) // c
    padded = torch.zeros(n, kw * c, dtype=torch.int64)
    padded[:, :k] = idx.long()
    shifts = torch.arange(c, dtype=torch.int64) * bits
    words = (padded.view(n, kw, c) << shifts).sum(-1)  # [n, kw], disjoint bit fields
    flat = torch.empty(n * kw, dtype=torch.int64)
    for start in range(0, n, 16):
        rows = min(16, n - start)
        flat[start * kw:(start + rows) * kw] = words[start:start + rows].T.reshape(-1)
    return wrap_int32(flat).to(torch.int32).view(n, kw)


def codebook_unpack(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of codebook_pack: uint8 [N, k]."""
    n, kw = packed.shape
    c = 32 // bits
    flat = packed.reshape(-1).long() & 0xFFFFFFFF
    words = torch.empty(n, kw, dtype=torch.int64)
    for start in range(0, n, 16):
        rows = min(16, n - start)
        words[start:start + rows] = flat[start * kw:(start + rows) * kw].view(kw, rows).T
    shifts = torch.arange(c, dtype=torch.int64) * bits
    idx = (words[:, :, None] >> shifts) & ((1 << bits) - 1)
    return idx.reshape(n, kw * c)[:, :k].to(torch.uint8)


def codebook_dequantize(idx: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """W[n, ...] = codebook[n // (N // G), idx[n, ...]] for idx [N, ...] and codebook [G, 2^bits]."""
    n, groups = idx.shape[0], codebook.shape[0]
    group = (torch.arange(n) // (n // groups)).view(-1, *([1] * (idx.dim() - 1)))
    return codebook[group, idx.long()]


def codebook_linear(x: torch.Tensor, idx: torch.Tensor, codebook: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """Dequantize, then x @ W.T + bias, accumulated in float64 and rounded to fp32 once (the
    kernels' fp32 fmaf chain is within K * 2^-24 * sum_k |x w| of this)."""
    y = x.double() @ codebook_dequantize(idx, codebook).double().T
    if bias is not None:
        y = y + bias.double()
    return y.float()


def _bf16_daz(t: torch.Tensor) -> torch.Tensor:
    """t rounded to bf16 (nearest even), subnormals replaced by a zero of their sign, as fp32."""
    b = t.to(torch.bfloat16).float()
    return torch.where(b.abs() < 2.0 ** -126, torch.copysign(torch.zeros_like(b), b), b)


def codebook_linear_bf16(x: torch.Tensor, idx: torch.Tensor, codebook: torch.Tensor,
                         bias: torch.Tensor | None) -> torch.Tensor:
    """codebook_linear with bf16 x as the exact value before its final rounding, in float64: x and the
    codebook entries rounded to bf16 with subnormals read as zero, sum_k x W + bias. The kernels round
    their fp32 sum once to bf16 and are within codebook_linear_bf16_bound of this before that rounding."""
    w = codebook_dequantize(idx, _bf16_daz(codebook)).double()
    y = _bf16_daz(x).double() @ w.T
    return y + bias.double() if bias is not None else y


def codebook_linear_bf16_bound(x: torch.Tensor, idx: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The stated bound of the bf16 codebook_linear's fp32 sum: (K + 2) * 2^-24 * sum_k |x W| + K * 2^-126
    (each fp32 step rounds once, relative to a partial sum no larger than sum_k |x W|; flushed subnormal
    partial sums add at most 2^-126 each)."""
    k = x.shape[1]
    w = codebook_dequantize(idx, _bf16_daz(codebook)).double().abs()
    return (k + 2) * 2.0 ** -24 * (_bf16_daz(x).double().abs() @ w.T) + k * 2.0 ** -126


def codebook_conv2d(x: torch.Tensor, idx: torch.Tensor, codebook: torch.Tensor,
                    bias: torch.Tensor | None, stride=1, padding=0, dilation=1,
                    groups: int = 1) -> torch.Tensor:
    """Dequantize idx [C_out, C_in / groups, kh, kw], then F.conv2d in float64, rounded once."""
    w = codebook_dequantize(idx, codebook).double()
    y = torch.nn.functional.conv2d(x.double(), w, None if bias is None else bias.double(), stride,
                                   padding, dilation, groups)
    return y.float()



# ---------------------------------------------------------------- group-wise int4 weights
#
# w[n, k] = scales[n, g] * (w_int4[n, k] - zero_points[n, g]), g = k // group_size, w_int4 and
# zero_points in [-8, 7] (zero_points None: symmetric, 0). The kernels: csrc/cpu/int4.h.


def int4_pack_payload(w_int4: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor | None,
                      group_size: int) -> torch.Tensor:
    """The payload int4_pack writes after its header (csrc/cpu/int4.h), as int32 [N, W]: rows in
    blocks of 16 (the last block the remaining R rows); per block, group after group: group_size / 8
    chunks of R words (byte j of row r's word = u[k0 + j] | u[k0 + 4 + j] << 4, u = w_int4 + 8,
    k0 = 8 * chunk), then the R fp32 scales (their bits), then (asymmetric) the R zero points + 8."""
    n, k = w_int4.shape
    groups = k // group_size
    u = (w_int4.long() + 8).view(n, groups, group_size // 8, 2, 4)  # [..., low/high nibble, byte]
    words = ((u[..., 0, :] | (u[..., 1, :] << 4)) << (8 * torch.arange(4))).sum(-1)  # [n, groups, chunks]
    parts = [words, scales.float().contiguous().view(torch.int32).long()[..., None]]
    if zero_points is not None:
        parts.append(zero_points.long()[..., None] + 8)
    per_group = torch.cat(parts, dim=-1)  # [n, groups, words of one row's group]
    flat = []
    for start in range(0, n, 16):
        block = per_group[start:start + 16]  # [R, groups, G]
        flat.append(block.permute(1, 2, 0).reshape(-1))  # group-major, then word, then row
    return wrap_int32(torch.cat(flat)).to(torch.int32).view(n, -1)


def int4_dequantize(w_int4: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor | None,
                    group_size: int) -> torch.Tensor:
    """The fp32 weight [N, K] a group-wise int4 weight stands for (each element one fp32 product
    of the exact integer w_int4 - zero_point and its group's scale)."""
    n, k = w_int4.shape
    q = w_int4.long().view(n, k // group_size, group_size)
    if zero_points is not None:
        q = q - zero_points.long()[..., None]
    return (q.float() * scales.float()[..., None]).reshape(n, k)


def int4_linear_w4a8(x: torch.Tensor, w_int4: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor | None,
                     group_size: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """int4_linear(activation="int8"), exactly: x fp32 [M, K] quantized per row by quantize_rows
    (q_x, s_x); per group g the exact integer d[m, n, g] = sum_{k in g} (w_int4 - zero_point)[n, k] *
    q_x[m, k]; acc = 0.0 (fp32), then for g in order acc = acc + float(d) * scales[n, g] (product
    rounded to fp32, then the sum); y = acc * s_x[m], then + bias[n] (each step rounded to fp32).
    A row of x holding NaN or +-Inf gives NaN outputs (s_x is NaN)."""
    q_x, s_x = quantize_rows(x.float())
    m, k = q_x.shape
    n = w_int4.shape[0]
    groups = k // group_size
    w = w_int4.long().view(n, groups, group_size)
    if zero_points is not None:
        w = w - zero_points.long()[..., None]
    d = torch.einsum("mgk,ngk->mng", q_x.long().view(m, groups, group_size), w)  # exact int64
    acc = torch.zeros(m, n, dtype=torch.float32)
    for g in range(groups):
        acc = acc + d[:, :, g].float() * scales.float()[:, g]
    y = acc * s_x[:, None]
    if bias is not None:
        y = y + bias.float()
    return y


def int4_linear_w4a16(x: torch.Tensor, w_int4: torch.Tensor, scales: torch.Tensor,
                      zero_points: torch.Tensor | None, group_size: int,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """int4_linear(activation="fp32" | "bf16") as the exact value: x (fp32, or bf16 widened exactly)
    times int4_dequantize's weight, accumulated in float64, + bias, rounded once to fp32, then to x's
    dtype (bf16: nearest even). The kernels accumulate in fp32 per group and scale each group's sum:
    within (group_size + K / group_size + 2) * 2^-24 * sum_k |x[m, k] * w[n, k]| of the float64
    value before the final rounding."""
    n, k = w_int4.shape
    q = w_int4.double().view(n, k // group_size, group_size)
    if zero_points is not None:
        q = q - zero_points.double()[..., None]
    w = (q * scales.double()[..., None]).reshape(n, k)
    y = x.double() @ w.T
    if bias is not None:
        y = y + bias.double()
    return y.float().to(x.dtype)


def int4_linear_error_bound(x: torch.Tensor, w_int4: torch.Tensor, scales: torch.Tensor,
                            zero_points: torch.Tensor | None, group_size: int) -> torch.Tensor:
    """The w4a16 kernels' stated bound on |kernel - int4_linear_w4a16| before the output rounding:
    (group_size + K / group_size + 2) * 2^-24 * sum_k |x[m, k]| * |w[n, k]| (with |zero_point| * |x|
    added inside each group for asymmetric weights, whose correction is a separate fp32 product)."""
    n, k = w_int4.shape
    w = int4_dequantize(w_int4, scales, None, group_size).double().abs()
    if zero_points is not None:
        w = w + (zero_points.double().abs() * scales.double()).repeat_interleave(group_size, dim=1)
    terms = x.double().abs() @ w.T
    return (group_size + k // group_size + 2) * 2.0 ** -24 * terms


# ---------------------------------------------------------------- 2:4 semi-structured sparsity


def sparse24_decompress(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Dense [N, K] from values [N, K/2] and meta uint8 [N, ceil(K/8)]: group g's nibble is
    (meta[:, g // 2] >> 4 * (g % 2)) & 15 = i0 | i1 << 2, and values[:, 2g + s] sits at 4g + i_s."""
    n, half = values.shape
    groups = half // 2
    g = torch.arange(groups)
    nib = (meta.long()[:, g // 2] >> (4 * (g % 2))) & 15
    pos = torch.stack((nib & 3, nib >> 2), dim=-1).reshape(n, half) + 4 * (torch.arange(half) // 2)
    w = values.new_zeros((n, 2 * half))
    return w.scatter(1, pos, values)


def sparse24_compress(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, meta) of a 2:4 sparse w [N, K]: per group of four, the non-zeros in order, padded
    with the lowest unused positions (so an all-zero group keeps positions 0 and 1)."""
    n, k = w.shape
    nz = (w != 0).reshape(n, k // 4, 4)
    if (nz.sum(-1) > 2).any():
        raise ValueError("sparse24_compress: w is not 2:4 sparse")
    # Rank positions: non-zeros first, then zeros, each in increasing position; keep the first two.
    key = (~nz).long() * 4 + torch.arange(4)
    pos = key.argsort(-1)[..., :2].sort(-1).values
    values = w.reshape(n, k // 4, 4).gather(-1, pos).reshape(n, k // 2)
    nib = pos[..., 0] | (pos[..., 1] << 2)
    if nib.shape[1] % 2:
        nib = torch.cat((nib, torch.zeros(n, 1, dtype=nib.dtype)), dim=1)
    meta = (nib[:, 0::2] | (nib[:, 1::2] << 4)).to(torch.uint8)
    return values, meta


def sparse24_linear(x, values, meta, bias=None):
    """x @ W.T + bias in float64 (the kernels accumulate in fp32 with one FMA per stored value)."""
    y = x.double() @ sparse24_decompress(values, meta).double().T
    if bias is not None:
        y = y + bias.double()
    return y


_FLT_MIN = 2.0 ** -126


def _flush_denormals(t: torch.Tensor) -> torch.Tensor:
    """fp32 values below the smallest normal (2^-126) in magnitude -> zero of the same sign."""
    return torch.where(t.abs() < _FLT_MIN, torch.copysign(torch.zeros_like(t), t), t)


def _bf16_dot_step(acc: torch.Tensor, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One vdpbf16ps step on fp32 tensors (no denormals in): acc + v * x rounded once to fp32 (the
    product is exact in float64; TwoSum gives the exact sum s + err, s rounds to fp32 without a
    second rounding error that matters), then flushed to a zero of its sign when tiny: x86 FTZ
    detects tininess after rounding with an unbounded exponent, i.e. a result that gradual
    underflow makes denormal, or one that rounds to +-2^-126 from an exact sum below
    2^-126 - 2^-151 in magnitude (2^-126 - 2^-151 itself ties up to 2^-126)."""
    a = acc.double()
    p = v.double() * x.double()
    s = a + p
    t = s - a
    err = (a - (s - t)) + (p - t)
    r = s.float()
    below = s.abs() - _FLT_MIN
    half_step = 2.0 ** -151
    outward = torch.where(s > 0, err, -err)
    tiny = (r.abs() < _FLT_MIN) | ((r.abs() == _FLT_MIN)
                                   & ((below < -half_step) | ((below == -half_step) & (outward < 0))))
    return torch.where(tiny, torch.copysign(torch.zeros_like(r), r), r)


def sparse24_bf16_linear(x, values, meta, bias=None):
    """The exact bf16 2:4 product of the CPU kernels: per group of four, in order,
    acc = step(acc, v1, x[k1]), then acc = step(acc, v0, x[k0]) (bf16 inputs widened exactly,
    denormal inputs read as 0; step is one vdpbf16ps step, _bf16_dot_step), then acc + bias in
    fp32 and one rounding to bf16 (nearest even; every NaN becomes the quiet NaN 0x7FC0)."""
    n, half = values.shape
    k = 2 * half
    xs = _flush_denormals(x.float())
    vs = _flush_denormals(values.float())
    m = x.shape[0]
    acc = torch.zeros(m, n, dtype=torch.float32)
    for g in range(k // 4):
        nib = (meta[:, g // 2].long() >> (4 * (g % 2))) & 0xF
        k0, k1 = 4 * g + (nib & 3), 4 * g + ((nib >> 2) & 3)
        for slot, kk in ((1, k1), (0, k0)):
            acc = _bf16_dot_step(acc, vs[:, 2 * g + slot][None, :], xs[:, kk])  # [M, N]
    if bias is not None:
        acc = acc + bias.float()
    out = acc.to(torch.bfloat16)  # round to nearest even
    return torch.where(acc.isnan(), torch.tensor(0x7FC0, dtype=torch.int16).view(torch.bfloat16), out)


def sparse24_bf16_linear_exact(x, values, meta, bias=None):
    """The bf16 2:4 product's exact sum before its final rounding, in float64 (bf16 subnormals in x and the
    values read as 0): what the tile path (sparse24.h, "bf16 on tiles") is within sparse24_bf16_linear_bound of."""
    w = sparse24_decompress(_flush_denormals(values.float()), meta).double()
    y = _flush_denormals(x.float()).double() @ w.T
    return y + bias.double() if bias is not None else y


def sparse24_bf16_linear_bound(x, values, meta):
    """(K + 2) * 2^-24 * sum_k |x w| + K * 2^-126: the stated bound of every bf16 2:4 path's fp32 sum (the per-value
    steps of sparse24_bf16_linear and the tile path's tdpbf16ps chains) around sparse24_bf16_linear_exact."""
    k = x.shape[1]
    w = sparse24_decompress(_flush_denormals(values.float()), meta).double().abs()
    return (k + 2) * 2.0 ** -24 * (_flush_denormals(x.float()).double().abs() @ w.T) + k * 2.0 ** -126


def sparse24_int8_linear(x, x_zero_point, values, meta, bias, m0, shift, out_zero_point, qmin, qmax,
                         out_dtype, rounding="double"):
    """int8_linear with the weight sparse24_decompress(values, meta)."""
    return int8_linear(x, x_zero_point, sparse24_decompress(values, meta), bias, m0, shift,
                       out_zero_point, qmin, qmax, out_dtype, rounding)


def quantize_over_finite_rows(x: torch.Tensor, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The dynamic activation quantization of the int8 SparseLinear / SparseConv2d: one symmetric
    scale for the tensor, taken over its finite rows (rows along dim 0; a row is finite when it
    holds no NaN and no +-Inf): s = max|x[finite rows]| / qmax (1 when that max is 0 or no row is
    finite), q = clamp(round_half_even(x / s), -qmax, qmax) on the finite rows, 0 on the others.
    Returns (q int8, s fp32 0-D, nonfinite_rows bool [x.shape[0]])."""
    rows = x.reshape(x.shape[0], -1)
    finite_rows = torch.isfinite(rows).all(dim=1)
    amax = rows[finite_rows].abs().amax() if bool(finite_rows.any()) and rows.shape[1] else x.new_zeros(())
    s = (amax / qmax if amax > 0 else torch.ones_like(amax)).float()
    q = torch.round(x.float() / s).clamp(-qmax, qmax)
    q[~finite_rows] = 0
    return q.to(torch.int8), s, ~finite_rows


def sparse24_int8_dynamic_linear(x, values, meta, weight_scale, bias=None):
    """SparseLinear(int8=True).forward on x [M, K] (fp32): the exact int32 accumulator of the
    quantize_over_finite_rows input with the int8 weight, times (s_x * weight_scale[n]) in fp32,
    + bias; a non-finite row is instead row m of F.linear(x, W_q * weight_scale, bias) in fp32."""
    import torch.nn.functional as F

    x_q, s_x, nonfinite_rows = quantize_over_finite_rows(x)
    acc = sparse24_int8_linear(x_q, 0, values, meta, None, 1 << 30, 1, 0, INT32_MIN, INT32_MAX, torch.int32)
    y = acc.float() * (s_x * weight_scale)
    if bias is not None:
        y = y + bias
    w = sparse24_decompress(values, meta).float() * weight_scale[:, None]
    return torch.where(nonfinite_rows[:, None], F.linear(x.float(), w, bias), y)


# ---------------------------------------------------------------- fused fake-quant


def _fq_broadcast(t: torch.Tensor, x: torch.Tensor, axis: int | None, dtype: torch.dtype) -> torch.Tensor:
    t = t.detach().to(dtype).reshape(-1)
    if axis is None or t.numel() == 1:
        return t.reshape([])
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def _fq_parts(x, scale, zero_point, qmin, qmax, axis):
    """(v, r, q, c, s, z) of fake_quant in its compute dtype (fp64 for fp64 x, else fp32)."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    s = _fq_broadcast(scale, x, axis, compute)
    z = torch.round(_fq_broadcast(zero_point, x, axis, torch.float64)).to(compute)
    v = x.detach().to(compute) * (1 / s)  # x / s as x * (1 / s), 1 / s rounded to the compute dtype
    r = torch.round(v)
    q = r + z
    c = q.clamp(qmin, qmax)
    return v, r, q, c, s, z


def fake_quant(x, scale, zero_point, qmin, qmax, axis=None, mask=None):
    """y = (clamp(round_half_even(x * (1 / s)) + z, qmin, qmax) - z) * s, computed in fp32 (fp64
    for fp64 x) and rounded to x's dtype; y = 0 where mask is false."""
    _, _, _, c, s, z = _fq_parts(x, scale, zero_point, qmin, qmax, axis)
    y = (c - z) * s
    if mask is not None:
        y = torch.where(mask.bool(), y, torch.zeros_like(y))
    return y.to(x.dtype)


def fake_quant_grad_factor(numel: int, channels: int, qmin: int, qmax: int) -> float:
    """LSQ gradient scale 1 / sqrt(n * Qp): n elements share one scale, Qp = qmax (qmax - qmin
    when qmax <= 0)."""
    n = max(1.0, numel / channels)
    qp = qmax if qmax > 0 else qmax - qmin
    return 1.0 / math.sqrt(n * qp)


def fake_quant_backward(grad, x, scale, zero_point, qmin, qmax, axis=None, mask=None,
                        grad_factor=None):
    """(grad_x, grad_scale, grad_zero_point) of fake_quant: clipped straight-through estimator
    for x; LSQ for the qparams, summed in fp64 per channel (see compress_kernels.ops.fake_quant)."""
    v, r, q, _, s, z = _fq_parts(x, scale, zero_point, qmin, qmax, axis)
    kept = torch.ones_like(q, dtype=torch.bool) if mask is None else mask.bool()
    inside = (q >= qmin) & (q <= qmax)
    below = q < qmin
    g = grad.to(q.dtype)
    grad_x = torch.where(inside & kept, g, torch.zeros_like(g)).to(x.dtype)
    d = torch.where(inside, r - v, torch.where(below, qmin - z, qmax - z))
    contrib_s = torch.where(kept, d * g, torch.zeros_like(g)).double()
    contrib_z = torch.where(kept & ~inside, g, torch.zeros_like(g)).double()
    channels = scale.numel()
    if axis is None or channels == 1:
        sum_s, sum_z = contrib_s.sum().reshape(1), contrib_z.sum().reshape(1)
    else:
        dims = [d for d in range(x.dim()) if d != axis % x.dim()]
        sum_s, sum_z = contrib_s.sum(dim=dims), contrib_z.sum(dim=dims)
    factor = fake_quant_grad_factor(x.numel(), channels, qmin, qmax) if grad_factor is None else grad_factor
    grad_scale = (factor * sum_s).to(scale.dtype).reshape(scale.shape)
    zp_dtype = zero_point.dtype if zero_point.dtype.is_floating_point else torch.float32
    grad_zero_point = (-s.double().reshape(-1) * factor * sum_z).to(zp_dtype).reshape(zero_point.shape)
    return grad_x, grad_scale, grad_zero_point


def observer_qparams(min_val, max_val, qmin, qmax, symmetric=False):
    """fp32 qparams of an observed range, as torch.ao.quantization's MinMaxObserver: the range is
    widened to include 0; asymmetric scale = (max - min) / (qmax - qmin), zero_point =
    clamp(qmin - round(min / scale), qmin, qmax); symmetric scale = max(-min, max) / ((qmax - qmin) / 2),
    zero_point 0 (qmin < 0) or (qmin + qmax + 1) // 2; scale >= float32 eps."""
    eps = torch.finfo(torch.float32).eps
    min_neg = torch.clamp(min_val.float(), max=0)
    max_pos = torch.clamp(max_val.float(), min=0)
    if symmetric:
        scale = torch.maximum(-min_neg, max_pos) / float((qmax - qmin) / 2)
        scale = torch.clamp(scale, min=eps)
        zp = torch.full_like(scale, 0 if qmin < 0 else (qmin + qmax + 1) // 2, dtype=torch.int32)
        return scale, zp
    scale = torch.clamp((max_pos - min_neg) / float(qmax - qmin), min=eps)
    zp = (qmin - torch.round(min_neg / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zp


def fake_quant_observe(x, running_min, running_max, momentum, qmin, qmax, symmetric=False,
                       axis=None, mask=None):
    """EMA min/max update (in place; +inf / -inf entries take the batch range) and fake_quant with
    the updated qparams. Returns (y, scale, zero_point)."""
    if axis is None:
        bmin, bmax = x.detach().amin().float().reshape(1), x.detach().amax().float().reshape(1)
    else:
        dims = [d for d in range(x.dim()) if d != axis % x.dim()]
        bmin, bmax = x.detach().amin(dim=dims).float(), x.detach().amax(dim=dims).float()
    rmin, rmax = running_min.reshape(-1), running_max.reshape(-1)
    fresh = (rmin == math.inf) | (rmax == -math.inf)
    new_min = torch.where(fresh, bmin, rmin + momentum * (bmin - rmin))
    new_max = torch.where(fresh, bmax, rmax + momentum * (bmax - rmax))
    running_min.copy_(new_min.reshape(running_min.shape))
    running_max.copy_(new_max.reshape(running_max.shape))
    scale, zp = observer_qparams(new_min, new_max, qmin, qmax, symmetric)
    y = fake_quant(x, scale, zp, qmin, qmax, axis, mask)
    return y, scale.reshape(running_min.shape), zp.reshape(running_min.shape)


# ---------------------------------------------------------------- weight-only fp8


def fp8_weight_linear(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                      fmt: str) -> torch.Tensor:
    """fp32 F.linear on the weight decode(codes) * scale[n] (formats.decode, per output channel):
    what Fp8WeightLinear computes up to its bf16 activations and bf16 matmul result."""
    from . import formats

    w = formats.decode(codes, fmt) * scale.float().reshape(-1, 1)
    return torch.nn.functional.linear(x.float(), w, None if bias is None else bias.float())
