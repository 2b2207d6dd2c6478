"""Quantization parameters and the float <-> integer conversions every module agrees on.

Float -> int is q = clamp(round_half_even(r / scale) + zero_point, qmin, qmax) (as torch.round).
Weights are symmetric (zero point 0) over the narrow range [-127, 127] by default, so -w is
representable and pruned (zero) weights stay exactly zero.
"""

from __future__ import annotations

import math
import numbers
import operator

import torch

DTYPE_RANGES = {torch.int8: (-128, 127), torch.uint8: (0, 255), torch.int32: (-(2**31), 2**31 - 1)}


def dtype_range(dtype: torch.dtype) -> tuple[int, int]:
    if dtype not in DTYPE_RANGES:
        raise ValueError(f"dtype must be one of {list(DTYPE_RANGES)}, got {dtype}")
    return DTYPE_RANGES[dtype]


# ---------------------------------------------------------------- argument checks
#
# Scales, zero points and float weights are checked where they enter a quantized layer: a zero,
# negative, NaN or infinite scale, or a NaN weight, would otherwise build a layer that silently
# outputs a constant (a scale of 0 or inf makes every multiplier 0) or zeroes an output row.


def check_scale(scale, name: str, where: str) -> float:
    """A quantization scale as a Python float: a real number (Python / NumPy number or one-element
    float tensor) that is finite and > 0. TypeError for bools and non-numbers, ValueError otherwise."""
    if isinstance(scale, torch.Tensor):
        is_real = scale.numel() == 1 and (scale.is_floating_point() or scale.dtype in DTYPE_RANGES)
    else:
        is_real = isinstance(scale, numbers.Real) and not isinstance(scale, bool)
    if not is_real:
        raise TypeError(f"{where}: {name} must be a finite positive float, got {type(scale).__name__} {scale!r}")
    value = float(scale)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: {name} must be a finite positive float, got {value}")
    return value


def check_scales(scales: torch.Tensor, name: str, where: str) -> None:
    """Every element of a scale tensor (e.g. per-channel weight scales) finite and > 0."""
    bad = ~(torch.isfinite(scales) & (scales > 0))
    if bool(bad.any()):
        idx = first_index(bad)
        raise ValueError(f"{where}: {name} must hold finite positive scales, got {scales[idx].item()} at index "
                         f"{list(idx)}")


def check_zero_point(zero_point, dtype: torch.dtype, name: str, where: str) -> int:
    """A zero point as a Python int in dtype's range (int8 [-128, 127], uint8 [0, 255], int32).
    TypeError for floats (even integral ones), float tensors and bools; ValueError out of range."""
    lo, hi = dtype_range(dtype)
    if isinstance(zero_point, bool) or (isinstance(zero_point, torch.Tensor) and zero_point.dtype == torch.bool):
        raise TypeError(f"{where}: {name} must be an integer in [{lo}, {hi}] for {dtype}, got {zero_point!r}")
    try:
        value = operator.index(zero_point)
    except TypeError:
        raise TypeError(f"{where}: {name} must be an integer in [{lo}, {hi}] for {dtype}, got "
                        f"{type(zero_point).__name__} {zero_point!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{where}: {name} must be in [{lo}, {hi}] for {dtype}, got {value}")
    return value


def first_index(mask: torch.Tensor) -> tuple[int, ...]:
    """The index (row-major order) of the first True element of a boolean tensor that has one."""
    flat = int(torch.nonzero(mask.reshape(-1))[0, 0])
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), mask.shape)) if mask.dim() else ()


def check_layer_qparams(where: str, input_scale, input_zero_point, input_dtype: torch.dtype, output_scale,
                        output_zero_point, output_dtype: torch.dtype,
                        weight_scale=None) -> tuple[float, int, float, int]:
    """The activation qparams of an integer layer's from_float, checked (check_scale /
    check_zero_point / check_scales, in that order): (input_scale, input_zero_point, output_scale,
    output_zero_point) as Python numbers."""
    input_scale = check_scale(input_scale, "input_scale", where)
    output_scale = check_scale(output_scale, "output_scale", where)
    input_zero_point = check_zero_point(input_zero_point, input_dtype, "input_zero_point", where)
    output_zero_point = check_zero_point(output_zero_point, output_dtype, "output_zero_point", where)
    if weight_scale is not None:
        check_scales(weight_scale.detach().float(), "weight_scale", where)
    return input_scale, input_zero_point, output_scale, output_zero_point


def check_finite(t: torch.Tensor, name: str, where: str) -> None:
    """ValueError naming `where`, `name` and the first non-finite element (index and value) of t."""
    bad = ~torch.isfinite(t.detach())
    if bool(bad.any()):
        idx = first_index(bad)
        raise ValueError(f"{where}: {name} must be finite to be quantized, got {t.detach()[idx].item()} at index "
                         f"{list(idx)}")


def quantize(x: torch.Tensor, scale, zero_point, dtype: torch.dtype = torch.int8, qmin=None,
             qmax=None, axis: int | None = None) -> torch.Tensor:
    """clamp(round_half_even(x / scale) + zero_point, qmin, qmax) as dtype; per-channel along
    `axis` when scale has one element per channel."""
    lo, hi = dtype_range(dtype)
    qmin = lo if qmin is None else qmin
    qmax = hi if qmax is None else qmax
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point)
    if axis is not None and scale.numel() > 1:
        shape = [1] * x.dim()
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero_point = zero_point.reshape(shape) if zero_point.numel() > 1 else zero_point
    # the same operations in place on one temporary (each extra large temporary costs page faults);
    # no_grad: the integer result has no gradient, and autograd must not record the in-place ops
    with torch.no_grad():
        return (x.float() / scale).round_().add_(zero_point).clamp_(qmin, qmax).to(dtype)


def dequantize(q: torch.Tensor, scale, zero_point, axis: int | None = None) -> torch.Tensor:
    """(q - zero_point) * scale in fp32."""
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point)
    if axis is not None and scale.numel() > 1:
        shape = [1] * q.dim()
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero_point = zero_point.reshape(shape) if zero_point.numel() > 1 else zero_point
    return q.to(torch.float32, copy=True).sub_(zero_point).mul_(scale)  # (q - zp) * scale on one temporary


def choose_qparams(min_val: torch.Tensor, max_val: torch.Tensor, dtype: torch.dtype = torch.uint8,
                   symmetric: bool = False, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine qparams covering [min_val, max_val] (the range is widened to include 0, so that zero
    is exactly representable). Symmetric: zero point 0 (int8) or 128 (uint8). A NaN or infinite
    bound is refused (ValueError): it has no finite scale."""
    qmin, qmax = dtype_range(dtype)
    min_val = torch.as_tensor(min_val, dtype=torch.float32)
    max_val = torch.as_tensor(max_val, dtype=torch.float32)
    check_finite(min_val, "min_val", "choose_qparams")
    check_finite(max_val, "max_val", "choose_qparams")
    min_val, max_val = min_val.clamp(max=0), max_val.clamp(min=0)
    if symmetric:
        amax = torch.maximum(-min_val, max_val)
        scale = (amax / ((qmax - qmin) / 2)).clamp(min=eps)
        zp = torch.full_like(scale, 0 if dtype == torch.int8 else 128, dtype=torch.int64)
        return scale, zp
    scale = ((max_val - min_val) / (qmax - qmin)).clamp(min=eps)
    zp = (qmin - torch.round(min_val / scale)).clamp(qmin, qmax).to(torch.int64)
    return scale, zp


def weight_scale(w: torch.Tensor, per_channel: bool = True, bits: int = 8,
                 narrow_range: bool = True) -> torch.Tensor:
    """Symmetric weight scale max|w| / qmax per output channel (dim 0) or per tensor; qmax is
    2^(bits-1) - 1. An all-zero channel gets scale 1 (its weights quantize to 0 either way).
    Unchecked (it runs per step in quantization-aware training): a NaN weight gives a NaN scale."""
    del narrow_range  # the symmetric scale uses qmax = 2^(bits-1) - 1 in both ranges
    qmax = 2 ** (bits - 1) - 1
    amax = w.detach().abs().flatten(1).amax(dim=1) if per_channel else w.detach().abs().amax().reshape(1)
    scale = amax.float() / qmax
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def quantize_weight(w: torch.Tensor, per_channel: bool = True, bits: int = 8,
                    narrow_range: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 weights: (w_q, scale) with w_q = clamp(round(w / scale), qmin, qmax),
    [qmin, qmax] = [-(2^(b-1) - 1), 2^(b-1) - 1] (narrow) or [-2^(b-1), 2^(b-1) - 1]. A NaN or
    infinite weight is refused (ValueError naming its index): one would zero its whole channel."""
    check_finite(w, "the weight", "quantize_weight")
    scale = weight_scale(w, per_channel, bits, narrow_range)
    qmax = 2 ** (bits - 1) - 1
    qmin = -qmax if narrow_range else -qmax - 1
    shape = [-1] + [1] * (w.dim() - 1)
    w_q = torch.round(w.detach().float() / scale.reshape(shape)).clamp(qmin, qmax).to(torch.int8)
    return w_q, scale


INT4_GROUP_SIZES = (32, 64, 128, 256)


def quantize_weight_groupwise(w: torch.Tensor, group_size: int = 32, symmetric: bool = True,
                              bits: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Group-wise weights along K: w [N, K] in groups of `group_size` consecutive columns, one fp32
    scale (and, asymmetric, one zero point) per (row, group), w ~= scale * (q - zero_point) with
    q in [qmin, qmax] = [-2^(b-1), 2^(b-1) - 1] (int8 tensors; [-8, 7] for 4 bits).

    symmetric: scale = max|w_group| / qmax (1 for an all-zero group), q = clamp(round_half_even(w /
    scale), -qmax, qmax) (narrow: -w is representable, zero stays zero); zero_point is None.
    asymmetric: the group's range [min(w, 0), max(w, 0)] (zero always representable) over the 2^b - 1
    steps: scale = (max - min) / (qmax - qmin) (1 when max == min == 0), zero_point =
    clamp(qmin - round_half_even(min / scale), qmin, qmax), q = clamp(round_half_even(w / scale) +
    zero_point, qmin, qmax). Returns (q [N, K], scale [N, K / group_size], zero_point or None).
    ValueError for a K that group_size does not divide and for a NaN or infinite weight."""
    where = "quantize_weight_groupwise"
    if w.dim() != 2:
        raise ValueError(f"{where}: w must be 2-D [N, K], got shape {tuple(w.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"{where}: group_size must be a positive int, got {group_size!r}")
    if w.shape[1] % group_size:
        raise ValueError(f"{where}: K={w.shape[1]} (w's columns) must be a multiple of group_size={group_size}")
    if not 2 <= bits <= 8:
        raise ValueError(f"{where}: bits must be in [2, 8], got {bits}")
    check_finite(w, "the weight", where)
    n, k = w.shape
    groups = w.detach().float().reshape(n, k // group_size, group_size)
    qmax = 2 ** (bits - 1) - 1
    qmin = -qmax - 1
    if symmetric:
        scale = groups.abs().amax(-1) / qmax
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        q = torch.round(groups / scale[..., None]).clamp(-qmax, qmax)
        return q.reshape(n, k).to(torch.int8), scale, None
    lo = groups.amin(-1).clamp(max=0)
    hi = groups.amax(-1).clamp(min=0)
    scale = (hi - lo) / (qmax - qmin)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    q = (torch.round(groups / scale[..., None]) + zero_point[..., None]).clamp(qmin, qmax)
    return q.reshape(n, k).to(torch.int8), scale, zero_point.to(torch.int8)


def activation_clamp(activation: str | None, scale: float, zero_point: int,
                     dtype: torch.dtype) -> tuple[int, int]:
    """[qmin, qmax] that fuses an activation into the output clamp: None, "relu" or "relu6"."""
    qmin, qmax = dtype_range(dtype)
    if activation is None:
        return qmin, qmax
    if activation == "relu":
        return max(qmin, zero_point), qmax
    if activation == "relu6":
        scale = check_scale(scale, "scale", "activation_clamp")
        return max(qmin, zero_point), min(qmax, zero_point + round(6.0 / scale))
    raise ValueError(f'activation must be None, "relu" or "relu6", got {activation!r}')


# ---------------------------------------------------------------- activation observers
#
# Each observer sees calibration batches through observe(x) and then answers qparams(dtype) ->
# (scale, zero_point) for per-tensor affine quantization. The classic set: min-max, EMA of min/max,
# percentile, MSE-optimal clipping and KL / entropy calibration (TensorRT). The last three work on a
# seeded random sample of the values seen (at most `sample_size`), plus the exact min and max.


class Observer:
    name = "base"

    def __init__(self):
        self.min_val = None
        self.max_val = None

    def _finite(self, x: torch.Tensor) -> torch.Tensor:
        """x as fp32; NaN / inf are refused (a non-finite range gives garbage qparams)."""
        x = x.detach().float()
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{type(self).__name__}.observe: the batch holds NaN or infinite values; an "
                             "activation range cannot be observed from them (check the calibration data)")
        return x

    def observe(self, x: torch.Tensor) -> None:
        x = self._finite(x)
        lo, hi = x.min(), x.max()
        self.min_val = lo if self.min_val is None else torch.minimum(self.min_val, lo)
        self.max_val = hi if self.max_val is None else torch.maximum(self.max_val, hi)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.min_val is None:
            raise RuntimeError(f"{type(self).__name__}: no data observed; run calibration batches first")
        return self.min_val, self.max_val

    def qparams(self, dtype: torch.dtype = torch.uint8) -> tuple[float, int]:
        lo, hi = self.range()
        scale, zp = choose_qparams(lo, hi, dtype)
        return float(scale), int(zp)


class MinMaxObserver(Observer):
    """The range of every value seen."""

    name = "minmax"


class EMAObserver(Observer):
    """Exponential moving average of each batch's min and max (momentum = weight of the new batch)."""

    name = "ema"

    def __init__(self, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum

    def observe(self, x: torch.Tensor) -> None:
        x = self._finite(x)
        lo, hi = x.min(), x.max()
        if self.min_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = self.min_val + self.momentum * (lo - self.min_val)
            self.max_val = self.max_val + self.momentum * (hi - self.max_val)


class _SampleObserver(Observer):
    def __init__(self, sample_size: int = 1 << 18, seed: int = 0):
        super().__init__()
        self.sample_size = sample_size
        self.generator = torch.Generator().manual_seed(seed)
        self.samples: list[torch.Tensor] = []
        self.count = 0

    def observe(self, x: torch.Tensor) -> None:
        super().observe(x)
        flat = x.detach().float().flatten()
        keep = min(flat.numel(), max(1, self.sample_size // 8))
        idx = torch.randint(0, flat.numel(), (keep,), generator=self.generator)
        self.samples.append(flat[idx])
        self.count += keep
        if self.count > 2 * self.sample_size:  # keep memory bounded: thin the sample uniformly
            all_s = torch.cat(self.samples)
            self.samples = [all_s[torch.randperm(all_s.numel(), generator=self.generator)[: self.sample_size]]]
            self.count = self.samples[0].numel()

    def sample(self) -> torch.Tensor:
        self.range()
        return torch.cat(self.samples)


class PercentileObserver(_SampleObserver):
    """Clips to the [100 - p, p] percentiles of the values (p = 99.99 by default)."""

    name = "percentile"

    def __init__(self, percentile: float = 99.99, **kw):
        super().__init__(**kw)
        self.percentile = percentile

    def qparams(self, dtype=torch.uint8):
        s = self.sample()
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
        lo, hi = torch.quantile(s, q).tolist()
        lo = lo if self.min_val.item() < 0 else 0.0
        scale, zp = choose_qparams(torch.tensor(lo), torch.tensor(hi), dtype)
        return float(scale), int(zp)


def _quantization_mse(s: torch.Tensor, lo: float, hi: float, dtype) -> float:
    scale, zp = choose_qparams(torch.tensor(lo), torch.tensor(hi), dtype)
    qmin, qmax = dtype_range(dtype)
    q = (torch.round(s / scale) + zp).clamp(qmin, qmax)
    return ((q - zp) * scale - s).pow(2).mean().item()


class MSEObserver(_SampleObserver):
    """Chooses the clipping range [a * min, a * max], a in (0, 1], that minimizes the mean squared
    quantization error on the observed values (grid of `steps` candidates)."""

    name = "mse"

    def __init__(self, steps: int = 100, **kw):
        super().__init__(**kw)
        self.steps = steps

    def qparams(self, dtype=torch.uint8):
        s = self.sample()
        lo, hi = min(self.min_val.item(), 0.0), max(self.max_val.item(), 0.0)
        best = min((_quantization_mse(s, lo * a, hi * a, dtype), a)
                   for a in torch.linspace(0.2, 1.0, self.steps).tolist())[1]
        scale, zp = choose_qparams(torch.tensor(lo * best), torch.tensor(hi * best), dtype)
        return float(scale), int(zp)


class KLObserver(_SampleObserver):
    """TensorRT entropy calibration: a 2048-bin histogram of |x| (of the nonzero x for a
    non-negative tensor); the threshold T minimizes
    KL(P || Q), P the histogram clipped at T (outliers folded into the last bin), Q it quantized
    to the number of levels the dtype has on that side. Negative ranges are clipped at -T."""

    name = "kl"

    def __init__(self, bins: int = 2048, **kw):
        super().__init__(**kw)
        self.bins = bins

    def qparams(self, dtype=torch.uint8):
        s = self.sample()
        amax = s.abs().max().item()
        if amax == 0:
            return 1.0, (0 if dtype == torch.int8
                         else int(choose_qparams(torch.tensor(0.0), torch.tensor(0.0), dtype)[1]))
        has_negative = self.min_val.item() < 0
        # Exact zeros (post-ReLU they are often most of the values) are representable at any
        # threshold and carry no error; left in, their spike drives the threshold far too low.
        values = s.abs() if has_negative else s[s > 0]
        hist = torch.histc(values, bins=self.bins, min=0, max=amax).double()
        levels = 128 if (dtype == torch.int8 or has_negative) else 256
        best_i, best_kl = self.bins, float("inf")
        nonzero_cum = torch.cat([torch.zeros(1, dtype=torch.float64), (hist > 0).double().cumsum(0)])
        hist_cum = torch.cat([torch.zeros(1, dtype=torch.float64), hist.cumsum(0)])
        for i in range(levels, self.bins + 1, 16):
            p = hist[:i].clone()
            p[-1] += hist[i:].sum()
            # Q: merge the first i bins into `levels` groups (bounds floor(j * i / levels)), then
            # spread each group's mass evenly over its nonzero bins. Cumulative sums do it for all
            # groups at once.
            bounds = torch.div(torch.arange(levels + 1) * i, levels, rounding_mode="floor")
            group_of_bin = torch.bucketize(torch.arange(i), bounds[1:], right=True)
            group_mass = hist_cum[bounds[1:]] - hist_cum[bounds[:-1]]
            group_nonzero = (nonzero_cum[bounds[1:]] - nonzero_cum[bounds[:-1]]).clamp(min=1)
            q = torch.where(hist[:i] > 0, (group_mass / group_nonzero)[group_of_bin],
                            torch.zeros(i, dtype=torch.float64))
            p, q = p / p.sum(), q / q.sum().clamp(min=1e-12)
            mask = p > 0
            kl = (p[mask] * torch.log(p[mask] / q[mask].clamp(min=1e-12))).sum().item()
            if kl < best_kl:
                best_i, best_kl = i, kl
        threshold = best_i * amax / self.bins
        lo = -threshold if has_negative else 0.0
        scale, zp = choose_qparams(torch.tensor(max(lo, self.min_val.item())), torch.tensor(threshold), dtype)
        return float(scale), int(zp)


OBSERVERS = {cls.name: cls for cls in (MinMaxObserver, EMAObserver, PercentileObserver, MSEObserver, KLObserver)}


def make_observer(name: str, **kwargs) -> Observer:
    if name not in OBSERVERS:
        raise ValueError(f"observer must be one of {sorted(OBSERVERS)}, got {name!r}")
    return OBSERVERS[name](**kwargs)
