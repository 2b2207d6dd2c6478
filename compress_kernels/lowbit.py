"""Low-bit weight quantization in plain PyTorch: fake quantization in the floating-point formats of
compress_kernels.formats (FP8 E4M3FN / E5M2, FP4 E2M1) and in integer formats of 2..8 bits, with
per-tensor, per-channel or per-group scales, and straight-through gradients.

Formats: ``"e4m3"``, ``"e5m2"``, ``"e2m1"`` and ``"int2"`` .. ``"int8"``.

Granularity (the same for every format):

* per tensor: ``axis=None, group_size=None``: one scale;
* per channel: ``axis=a``: one scale per index of dimension ``a`` (``axis=0``: per output channel
  of a linear / conv weight);
* per group: ``group_size=g``: the tensor is seen as ``[rows, K] = x.reshape(x.shape[0], -1)`` (a
  linear weight [N, K]; a conv weight [N, C * kh * kw] in memory order) and each row is cut into
  groups of ``g`` consecutive elements along K, one scale per (row, group): ``scale`` has shape
  ``[rows, K / g]``. K must be a multiple of g. ``axis`` must be None or 0 with groups.

Scales computed from the data (``compute_scales``), per scale block:

* float formats and symmetric integers: ``s = amax / qmax`` with amax the largest |x| of the block
  and qmax the format's largest finite value (448, 57344, 6) or ``2^(b-1) - 1`` (narrow integer
  range [-qmax, qmax], zero point 0); a block of zeros gets s = 1;
* asymmetric integers (``symmetric=False``, integer formats only): the block's [min, max] widened
  to include 0, ``s = (max - min) / (2^b - 1)`` (at least float32 eps), integer zero point
  ``z = clamp(-2^(b-1) - round(min / s), -2^(b-1), 2^(b-1) - 1)``, range [-2^(b-1), 2^(b-1) - 1].

Fake quantization, evaluated in float32 (bf16 / fp16 / fp64 inputs are converted to float32 and the
result back to the input's dtype):

* integer: ``y = (clamp(round_half_even(x / s) + z, qmin, qmax) - z) * s`` (a true division x / s;
  ``ops.fake_quant`` instead multiplies by the float32 reciprocal, as torch's fake-quant ops do);
* float formats: ``y = decode(encode(x / s)) * s`` with encode / decode of compress_kernels.formats
  (rounding to nearest even, overflow as torch's cast unless ``saturate`` says otherwise; E2M1 has
  no NaN code, so a NaN input is passed through as NaN).

Gradient (straight-through estimator, clipped): ``grad_x = grad_y`` where x / s lies in the range
the format represents (integers: ``qmin <= round(x / s) + z <= qmax``; float formats: |x / s| <= the
largest finite value), else 0. Scales and zero points get no gradient.
"""

from __future__ import annotations

import torch

from . import formats

INT_FORMATS = tuple(f"int{b}" for b in range(2, 9))
FLOAT_FORMATS = tuple(formats.FORMATS)
ALL_FORMATS = FLOAT_FORMATS + INT_FORMATS


def check_format(fmt, where: str) -> str:
    if not isinstance(fmt, str) or fmt not in ALL_FORMATS:
        raise ValueError(f"{where}: format must be one of {list(ALL_FORMATS)}, got {fmt!r}")
    return fmt


def int_bits(fmt: str) -> int | None:
    """Bit width of an integer format ("int4" -> 4), None for a float format."""
    return int(fmt[3:]) if fmt.startswith("int") else None


def format_qmax(fmt: str) -> float:
    """The largest magnitude of the format's symmetric grid (448 for e4m3, 7 for int4, ...)."""
    bits = int_bits(fmt)
    return float(2 ** (bits - 1) - 1) if bits is not None else formats.FORMATS[fmt].max_finite


def check_granularity(x: torch.Tensor, axis: int | None, group_size: int | None, where: str) -> None:
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int) or not -x.dim() <= axis < x.dim()):
        raise ValueError(f"{where}: axis must be None or a dimension of the {x.dim()}-d input, got {axis!r}")
    if group_size is None:
        return
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"{where}: group_size must be None or an int >= 1, got {group_size!r}")
    if axis not in (None, 0):
        raise ValueError(f"{where}: group_size={group_size} groups the rows of dimension 0 along the flattened "
                         f"rest; axis must be None or 0, got {axis}")
    if x.dim() < 2:
        raise ValueError(f"{where}: group_size needs an input of at least 2 dimensions ([rows, K]), got shape "
                         f"{tuple(x.shape)}")
    k = x[0].numel()
    if k % group_size:
        raise ValueError(f"{where}: group_size={group_size} must divide K = {k} (the input of shape "
                         f"{tuple(x.shape)} seen as [{x.shape[0]}, {k}])")


def _blocks(x: torch.Tensor, axis: int | None, group_size: int | None) -> torch.Tensor:
    """x viewed so that each scale block is the last dimension: [blocks..., elements]."""
    if group_size is not None:
        return x.reshape(x.shape[0], -1, group_size)
    if axis is None:
        return x.reshape(1, -1)
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)


def _expand(t: torch.Tensor, x: torch.Tensor, axis: int | None, group_size: int | None) -> torch.Tensor:
    """A per-block tensor (scale or zero point) broadcast to x's shape."""
    if group_size is not None:
        return t.reshape(x.shape[0], -1, 1).expand(x.shape[0], t.numel() // x.shape[0], group_size).reshape(x.shape)
    if axis is None:
        return t.reshape([1] * x.dim())
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def compute_scales(x: torch.Tensor, fmt: str, axis: int | None = None, group_size: int | None = None,
                   symmetric: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale fp32, zero_point int32) from the data with the rules of the module docstring: shape [1]
    per tensor, [x.shape[axis]] per channel, [rows, K / group_size] per group."""
    check_format(fmt, "compute_scales")
    check_granularity(x, axis, group_size, "compute_scales")
    if not symmetric and int_bits(fmt) is None:
        raise ValueError(f"compute_scales: symmetric=False (zero points) needs an integer format, got {fmt!r}")
    b = _blocks(x.detach().float(), axis, group_size)
    if symmetric:
        scale = b.abs().amax(-1) / format_qmax(fmt)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale, torch.zeros_like(scale, dtype=torch.int32)
    bits = int_bits(fmt)
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    lo, hi = b.amin(-1).clamp(max=0), b.amax(-1).clamp(min=0)
    scale = ((hi - lo) / (qmax - qmin)).clamp(min=torch.finfo(torch.float32).eps)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def _int_range(fmt: str, symmetric: bool) -> tuple[int, int]:
    qmax = 2 ** (int_bits(fmt) - 1) - 1
    return (-qmax if symmetric else -qmax - 1), qmax


def _forward(x, scale, zero_point, fmt, axis, group_size, symmetric, saturate):
    """(y, in_range) in float32."""
    xf = x.float()
    s = _expand(scale.float(), xf, axis, group_size)
    r = xf / s
    bits = int_bits(fmt)
    if bits is not None:
        qmin, qmax = _int_range(fmt, symmetric)
        z = _expand(zero_point, xf, axis, group_size)
        level = torch.round(r) + z
        in_range = (level >= qmin) & (level <= qmax)
        return (level.clamp(qmin, qmax) - z) * s, in_range
    nan = torch.isnan(r)
    codes = formats.encode(torch.where(nan, 0.0, r) if fmt == "e2m1" else r, fmt, saturate)
    y = formats.decode(codes, fmt) * s
    if fmt == "e2m1":
        y = torch.where(nan, r, y)
    in_range = r.abs() <= formats.FORMATS[fmt].max_finite
    return y, in_range


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, fmt, axis, group_size, symmetric, saturate):
        y, in_range = _forward(x, scale, zero_point, fmt, axis, group_size, symmetric, saturate)
        ctx.save_for_backward(in_range)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (in_range,) = ctx.saved_tensors
        return grad * in_range.to(grad.dtype), None, None, None, None, None, None, None


def fake_quantize(x: torch.Tensor, fmt: str, scale: torch.Tensor | None = None,
                  zero_point: torch.Tensor | None = None, axis: int | None = None, group_size: int | None = None,
                  symmetric: bool = True, saturate: bool | None = None) -> torch.Tensor:
    """Fake quantization of `x` in format `fmt` (see the module docstring), with the given scale (and
    integer zero point; default 0), or with scales computed from x by compute_scales when scale is
    None. scale: finite and > 0, shaped as compute_scales returns it for this granularity.
    ``saturate``: the overflow rule of float formats (formats.encode); None is torch's."""
    check_format(fmt, "fake_quantize")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"fake_quantize: x must be a floating-point tensor, got "
                        f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    check_granularity(x, axis, group_size, "fake_quantize")
    if not isinstance(symmetric, bool):
        raise TypeError(f"fake_quantize: symmetric must be a bool, got {symmetric!r}")
    if scale is None:
        scale, computed_zero_point = compute_scales(x, fmt, axis, group_size, symmetric)
        zero_point = computed_zero_point if zero_point is None else zero_point
    else:
        scale = torch.as_tensor(scale, dtype=torch.float32, device=x.device)
        blocks = _blocks(x, axis, group_size).shape[:-1]
        if scale.numel() != blocks.numel():
            raise ValueError(f"fake_quantize: scale has {scale.numel()} element(s), expected {blocks.numel()} "
                             f"(shape {tuple(blocks)}) for axis={axis}, group_size={group_size} and x of shape "
                             f"{tuple(x.shape)}")
        bad = ~(torch.isfinite(scale) & (scale > 0))
        if bool(bad.any()):
            raise ValueError(f"fake_quantize: scale holds {scale[bad].flatten()[0].item()!r}, expected finite "
                             "scales > 0")
    if zero_point is None:
        zero_point = torch.zeros(scale.shape, dtype=torch.int32, device=x.device)
    zero_point = torch.as_tensor(zero_point, device=x.device)
    if int_bits(fmt) is None and bool((zero_point != 0).any()):
        raise ValueError(f"fake_quantize: float format {fmt!r} takes no zero point, got non-zero zero_point")
    return _FakeQuantSTE.apply(x, scale, zero_point, fmt, axis, group_size, symmetric, saturate)


def quantize_groups(w: torch.Tensor, bits: int, group_size: int, symmetric: bool = True):
    """Integer group-wise quantization of a weight [rows, ...] (K = the flattened rest):
    (q int8 of w's shape, scale fp32 [rows, K / g], zero_point int32 [rows, K / g]) with
    q = clamp(round_half_even(w / s) + z, qmin, qmax) and the scales of compute_scales; dequantize
    with ``dequantize_groups``. NaN / Inf weights are refused."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"quantize_groups: bits must be an int in [2, 8], got {bits!r}")
    from .numerics import check_finite

    check_finite(w, "the weight", "quantize_groups")
    fmt = f"int{bits}"
    scale, zero_point = compute_scales(w, fmt, 0, group_size, symmetric)
    qmin, qmax = _int_range(fmt, symmetric)
    wf = w.detach().float()
    level = torch.round(wf / _expand(scale, wf, 0, group_size)) + _expand(zero_point, wf, 0, group_size)
    return level.clamp(qmin, qmax).to(torch.int8), scale, zero_point


def dequantize_groups(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                      group_size: int) -> torch.Tensor:
    """(q - z) * s in float32, s / z per (row, group) as quantize_groups returns them."""
    qf = q.float()
    z = 0 if zero_point is None else _expand(zero_point, qf, 0, group_size)
    return (qf - z) * _expand(scale.float(), qf, 0, group_size)


def expand_scales(t: torch.Tensor, x: torch.Tensor, axis: int | None, group_size: int | None) -> torch.Tensor:
    """A per-block scale or zero point (compute_scales' shapes) broadcast against x."""
    return _expand(t, x, axis, group_size)
