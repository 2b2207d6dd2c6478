"""Exact encode / decode of the low-bit floating-point formats FP8 E4M3FN, FP8 E5M2 and FP4 E2M1,
written with integer arithmetic on the float32 bit pattern (no float casts), so the rounding,
overflow and special-value rules are spelled out here rather than inherited from a cast.

A code is the format's bit pattern in the low bits of a uint8: sign, exponent field, mantissa
field. ``encode(x, fmt)`` maps float32 (other floating dtypes are first widened to float32 exactly)
to codes, ``decode(codes, fmt)`` maps codes to float32 (every value of these formats is exact in
float32 and in bfloat16).

Rounding, all formats: to nearest, ties to even (on the exact value of the float32 input, with
one rounding: no double rounding through an intermediate type). A magnitude below half the
smallest subnormal becomes a zero of the input's sign; -0 encodes as the negative zero code.

E4M3FN (``"e4m3"``; ``torch.float8_e4m3fn``): 1 sign, 4 exponent (bias 7), 3 mantissa bits.
  Finite everywhere except S.1111.111 (0x7F / 0xFF), which is NaN; no infinities. Largest finite
  448 (S.1111.110), smallest normal 2^-6, smallest subnormal 2^-9. Overflow saturates, as torch's
  cast does: finite magnitudes above 448 and +-Inf encode to +-448 (0x7E / 0xFE); NaN encodes to
  NaN with the input's sign bit (0x7F / 0xFF). ``saturate=False`` gives the non-saturating rule
  of the OCP FP8 specification instead: a magnitude that rounds above 448 (|x| > 464; 464 itself
  is a tie and goes to 448, the even mantissa) and +-Inf become NaN. Decoding NaN gives the
  float32 pattern sign | 0x7FF00000 (torch's).

E5M2 (``"e5m2"``; ``torch.float8_e5m2``): 1 sign, 5 exponent (bias 15), 2 mantissa bits, IEEE-like:
  exponent field 31 with mantissa 0 is +-Inf, with mantissa 1..3 NaN. Largest finite 57344,
  smallest normal 2^-14, smallest subnormal 2^-16. Overflow does not saturate, as torch's cast:
  magnitudes that round above 57344 (|x| >= 61440: the tie 61440 goes up, 57344's mantissa being
  odd) and +-Inf encode to +-Inf (0x7C / 0xFC); NaN encodes to 0x7F with the input's sign bit.
  ``saturate=True`` clamps finite inputs and infinities to +-57344 instead. Decoding NaN gives
  what torch gives (the code as an IEEE half, widened to float32 as a quiet NaN):
  sign | 0x7FC00000 | mantissa << 21.

E2M1 (``"e2m1"``; the element of ``torch.float4_e2m1fn_x2``, which packs two codes per byte; torch
  has no casts to it): 1 sign, 2 exponent (bias 1), 1 mantissa bit in the low 4 bits of the code.
  Magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}; no Inf, no NaN. Overflow saturates (the rule of the OCP
  Microscaling formats; ``saturate=False`` is refused): finite magnitudes above 6 and +-Inf encode
  to +-6 (|x| = 5 is a tie between 4 and 6 and goes to 4, the even mantissa). NaN has no code:
  ``encode`` refuses it (ValueError with its index); fake quantization passes NaN through instead.
  ``pack_e2m1`` puts element 2i in the low nibble and 2i + 1 in the high nibble of byte i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FloatFormat:
    """A sign / exponent / mantissa format: name, field widths, exponent bias and its value limits."""

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    max_finite: float
    has_inf: bool
    nan_code: int | None       # the positive NaN code encode produces (None: the format has no NaN)
    torch_dtype: torch.dtype | None

    @property
    def max_code(self) -> int:
        """The largest finite positive code."""
        return {"e4m3": 0x7E, "e5m2": 0x7B, "e2m1": 0x7}[self.name]

    @property
    def sign_bit(self) -> int:
        return 1 << (self.exponent_bits + self.mantissa_bits)

    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits


FORMATS: dict[str, FloatFormat] = {
    "e4m3": FloatFormat("e4m3", 4, 3, 7, 448.0, False, 0x7F, torch.float8_e4m3fn),
    "e5m2": FloatFormat("e5m2", 5, 2, 15, 57344.0, True, 0x7F, torch.float8_e5m2),
    "e2m1": FloatFormat("e2m1", 2, 1, 1, 6.0, False, None, getattr(torch, "float4_e2m1fn_x2", None)),
}


def get_format(fmt: str | FloatFormat, where: str = "format") -> FloatFormat:
    """The FloatFormat named `fmt` ("e4m3", "e5m2", "e2m1"); a FloatFormat passes through."""
    if isinstance(fmt, FloatFormat):
        return fmt
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ValueError(f"{where}: format must be one of {sorted(FORMATS)}, got {fmt!r}")
    return FORMATS[fmt]


def default_saturate(fmt: str | FloatFormat) -> bool:
    """torch's overflow rule for the format: True (saturate) for E4M3FN and E2M1, False for E5M2."""
    return not get_format(fmt).has_inf


def _round_shift_right_even(value: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """round_half_even(value / 2^shift) for int64 value >= 0, shift >= 1 (elementwise; shift <= 62)."""
    half_minus_one = (torch.ones_like(value) << (shift - 1)) - 1
    odd = (value >> shift) & 1
    return (value + half_minus_one + odd) >> shift


def encode(x: torch.Tensor, fmt: str | FloatFormat, saturate: bool | None = None) -> torch.Tensor:
    """Codes (uint8) of `x` in format `fmt` with the rules of the module docstring. x: any floating
    dtype (widened to float32 exactly; float64 is refused: its extra bits would round twice).
    ``saturate``: None is torch's rule for the format (E4M3FN and E2M1 saturate, E5M2 overflows to
    Inf); True clamps overflow to the largest finite magnitude; False overflows to Inf (E5M2) or
    NaN (E4M3FN) and is refused for E2M1, which has neither."""
    f = get_format(fmt, "encode")
    saturate = default_saturate(f) if saturate is None else saturate
    if not isinstance(saturate, bool):
        raise TypeError(f"encode: saturate must be None or a bool, got {saturate!r}")
    if not saturate and not f.has_inf and f.nan_code is None:
        raise ValueError(f"encode: format {f.name!r} has no Inf and no NaN, so overflow can only saturate; "
                         "pass saturate=None or True")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"encode: x must be a floating-point tensor, got "
                        f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dtype == torch.float64:
        raise TypeError("encode: x has dtype torch.float64; convert it to float32 first (the codes are defined on "
                        "float32 inputs, a float64 value would be rounded twice)")
    bits = x.float().contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    sign = (bits >> 31).to(torch.int64)
    magnitude = bits & 0x7FFFFFFF
    exponent32 = magnitude >> 23                      # biased float32 exponent, 0..255
    significand = (magnitude & 0x7FFFFF) | torch.where(exponent32 > 0, 1 << 23, 0)
    effective_exponent = exponent32.clamp(min=1)      # a float32 subnormal has the exponent of 1
    m = f.mantissa_bits
    min_normal_exponent = 1 - f.bias                  # unbiased exponent of the smallest normal
    # value = significand * 2^(effective_exponent - 150); in units of the format's smallest subnormal
    # 2^(min_normal_exponent - m) that is significand >> shift (exact integer arithmetic, RNE).
    shift_subnormal = (150 + min_normal_exponent - m) - effective_exponent
    # Normal range: keep m mantissa bits of the float32 pattern, rebias; the carry of the rounding
    # moves into the exponent field, which is the next larger value (the code line is monotone).
    shift_normal = torch.full_like(magnitude, 23 - m)
    is_normal = (effective_exponent - 127) >= min_normal_exponent
    code_normal = _round_shift_right_even(magnitude, shift_normal) - ((127 - f.bias) << m)
    code_subnormal = _round_shift_right_even(significand, shift_subnormal.clamp(1, 62))
    code = torch.where(is_normal, code_normal, code_subnormal)

    is_nan = exponent32.eq(255) & (magnitude & 0x7FFFFF).ne(0)
    is_inf = exponent32.eq(255) & ~is_nan
    overflow = (code > f.max_code) | is_inf
    if saturate:
        code = torch.where(overflow, f.max_code, code)
    elif f.has_inf:
        code = torch.where(overflow, f.max_code + 1, code)   # the Inf code
    else:
        code = torch.where(overflow, f.nan_code, code)
    if f.nan_code is None:
        if bool(is_nan.any()):
            index = tuple(int(i) for i in is_nan.nonzero()[0])
            raise ValueError(f"encode: x holds NaN at index {index}; format {f.name!r} has no NaN code")
    else:
        code = torch.where(is_nan, f.nan_code, code)
    code = code | (sign * f.sign_bit)
    return code.to(torch.uint8)


def _decode_table(f: FloatFormat) -> torch.Tensor:
    """float32 bit patterns (int64) of all 2^bits codes, built field by field."""
    m = f.mantissa_bits
    codes = torch.arange(1 << f.bits, dtype=torch.int64)
    sign = (codes >> (f.bits - 1)) & 1
    exponent = (codes >> m) & ((1 << f.exponent_bits) - 1)
    mantissa = codes & ((1 << m) - 1)
    # normal: rebias the exponent, put the mantissa at the top of float32's 23 bits
    normal = ((exponent - f.bias + 127) << 23) | (mantissa << (23 - m))
    # subnormal: mantissa * 2^(1 - bias - m); normalize by the position of its leading one
    lead = torch.zeros_like(mantissa)
    for bit in range(m):
        lead = torch.where(mantissa >= (1 << bit), bit, lead)
    sub_exponent = (1 - f.bias - m) + lead + 127
    sub_mantissa = (mantissa - (1 << lead)) << (23 - lead)
    subnormal = torch.where(mantissa > 0, (sub_exponent << 23) | sub_mantissa, 0)
    magnitude = torch.where(exponent > 0, normal, subnormal)
    top = (1 << f.exponent_bits) - 1
    if f.name == "e4m3":
        magnitude = torch.where((exponent == top) & (mantissa == (1 << m) - 1), 0x7FF00000, magnitude)
    elif f.name == "e5m2":
        special = torch.where(mantissa > 0, 0x7FC00000 | (mantissa << 21), 0x7F800000)
        magnitude = torch.where(exponent == top, special, magnitude)
    return (sign << 31) | magnitude


_TABLES: dict[str, torch.Tensor] = {}


def decode_table(fmt: str | FloatFormat) -> torch.Tensor:
    """The float32 value of every code (2^bits entries, indexed by the code)."""
    f = get_format(fmt, "decode_table")
    if f.name not in _TABLES:
        patterns = _decode_table(f)
        patterns = torch.where(patterns >= 1 << 31, patterns - (1 << 32), patterns)  # as signed int32
        _TABLES[f.name] = patterns.to(torch.int32).view(torch.float32)
    return _TABLES[f.name]


def decode(codes: torch.Tensor, fmt: str | FloatFormat) -> torch.Tensor:
    """float32 values of uint8 `codes` (E2M1: codes 0..15, one per byte; see unpack_e2m1)."""
    f = get_format(fmt, "decode")
    if not isinstance(codes, torch.Tensor) or codes.dtype != torch.uint8:
        raise TypeError(f"decode: codes must be a torch.uint8 tensor, got "
                        f"{codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__}")
    if f.bits < 8 and codes.numel() and int(codes.max()) >= 1 << f.bits:
        raise ValueError(f"decode: format {f.name!r} has {1 << f.bits} codes, got code {int(codes.max())}")
    table = decode_table(f).to(codes.device)
    return table[codes.long()]


def pack_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """Two E2M1 codes per byte along the last dimension (even length): element 2i in the low nibble,
    2i + 1 in the high nibble. The result can be viewed as torch.float4_e2m1fn_x2 (same bytes)."""
    if codes.dtype != torch.uint8 or codes.shape[-1] % 2 or (codes.numel() and int(codes.max()) > 15):
        raise ValueError(f"pack_e2m1: codes must be uint8 values 0..15 with an even last dimension, got "
                         f"dtype {codes.dtype}, shape {tuple(codes.shape)}")
    pairs = codes.reshape(*codes.shape[:-1], -1, 2)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def unpack_e2m1(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of pack_e2m1: uint8 [..., n] -> codes [..., 2n]."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_e2m1: packed must be torch.uint8, got {packed.dtype}")
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(*packed.shape[:-1], -1)
