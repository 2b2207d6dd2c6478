"""The modules of a quantization-aware-training graph (built by compress_kernels.qat.prepare_qat_).

Each compute module has two forwards:

* the training simulation (the default): fake-quantized weights (and BatchNorm folded the standard way,
  Jacob et al. / torch.ao's ConvBn: the weight is scaled by gamma / sqrt(running_var + eps) before
  fake-quantization, the conv output is scaled back and BatchNorm runs with batch statistics while
  training), float accumulation, fake-quantized activations (ActFakeQuant);
* the exact mode (``qat.qat_exact_mode``): the module recovers the integers of its on-grid input,
  runs the integer module the conversion builds for it (``_exact`` holds it) and dequantizes the result,
  so the QAT model predicts the integer-only model bit for bit.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .. import lowbit, numerics, ops
from ._common import ExtraStateChecker, fold_batchnorm, reference_mode
from .conv import QuantConv2d
from .fake_quant import FakeQuantize
from .integer import QuantAdd
from .linear import QuantLinear


class _ExactMode:
    """`_exact` is None (training simulation) or (integer module, [input qparams], activation dtype,
    use_kernels) set by qat_exact_mode; the integer module computes, on the reference (int64) unless
    use_kernels."""

    _exact = None
    _mismatch = None  # qat_mismatch_report: [elements, differing, max steps] of this layer

    def _run_exact(self, *inputs: torch.Tensor) -> torch.Tensor:
        module, in_qparams, dtype, use_kernels = self._exact
        ints = [numerics.quantize(x, s, z, dtype) for x, (s, z) in zip(inputs, in_qparams)]
        with contextlib.nullcontext() if use_kernels else reference_mode():
            y = module(*ints)
        scale, zero_point = self._exact_output_qparams(module, in_qparams)
        if self._mismatch is not None:
            self._count_mismatch(inputs, y, module, float(scale), int(zero_point), dtype)
        return numerics.dequantize(y, scale, zero_point)

    def _count_mismatch(self, inputs, y_int, module, scale: float, zero_point: int, dtype) -> None:
        """Compare with the training simulation of this layer on the same input: its float output put on
        the output grid (rounded half to even, clamped to the integer layer's range, which holds a fused
        ReLU) against the integer layer's result."""
        exact, self._exact = self._exact, None
        try:
            y_fast = self(*inputs)
        finally:
            self._exact = exact
        lo, hi = numerics.dtype_range(dtype)
        lo, hi = getattr(module, "qmin", lo), getattr(module, "qmax", hi)
        level = torch.clamp(torch.round(y_fast / scale) + zero_point, lo, hi).to(torch.int64)
        diff = (level - y_int.to(torch.int64)).abs()
        self._mismatch[0] += diff.numel()
        self._mismatch[1] += int((diff > 0).sum())
        self._mismatch[2] = max(self._mismatch[2], int(diff.max()) if diff.numel() else 0)

    def _exact_output_qparams(self, module, in_qparams):
        return module.output_scale, module.output_zero_point


class ActFakeQuant(FakeQuantize):
    """Fake quantization of an activation tensor (per tensor, asymmetric by default), and the probe
    that gives the conversion its qparams. In evaluation mode the observer is not updated; in exact
    mode the output is dequantize(quantize(x)) with the integer model's formulas (x / s, not x * (1/s)),
    which is the identity on values already on the grid."""

    def __init__(self, dtype: torch.dtype = torch.uint8, observer: str = "ema", momentum: float = 0.01):
        qmin, qmax = numerics.dtype_range(dtype)
        super().__init__(qmin, qmax, observer=observer, momentum=momentum)
        self.dtype = dtype
        self._exact = False

    def get_extra_state(self):
        return {**super().get_extra_state(), "dtype": _act_dtype_name(self.dtype)}

    def set_extra_state(self, state):
        super().set_extra_state(state)
        self.dtype = _ACT_DTYPES[state["dtype"]]

    def _check_extra_state(self, check) -> None:
        super()._check_extra_state(check)
        dtype = _ACT_DTYPES[check.choice("dtype", tuple(_ACT_DTYPES))]
        if (check.state["qmin"], check.state["qmax"]) != numerics.dtype_range(dtype):
            check.fail("qmin", f"qmin, qmax = {numerics.dtype_range(dtype)}, the range of dtype "
                               f"{check.state['dtype']!r}")

    def qparams(self, observer: str | None = None, dtype: torch.dtype | None = None) -> tuple[float, int]:
        """(scale, zero_point) as the integer model will use them (the `observer` argument of the
        calibration probes is ignored: QAT learned or observed its own)."""
        if dtype is not None and dtype != self.dtype:
            raise ValueError(f"ActFakeQuant: the QAT model fake-quantizes {self.dtype}, conversion asked for {dtype}")
        scale, zero_point = self.calculate_qparams()
        return float(scale[0]), int(zero_point[0])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self._exact:
            s, z = self.qparams()
            return numerics.dequantize(numerics.quantize(x, s, z, self.dtype), s, z)
        if (not self.training and self.observer == "ema" and self.observer_enabled
                and bool(torch.isfinite(self.running_min).all())):
            # evaluation uses the qparams training settled on; it does not move them
            if not self.fake_quant_enabled:
                return x
            return ops.fake_quant(x, self.scale, self.zero_point, self.qmin, self.qmax, None, mask)
        return super().forward(x, mask)


_ACT_DTYPES = {"uint8": torch.uint8, "int8": torch.int8}


def _act_dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _ACT_DTYPES.items()}[dtype]


# "int": symmetric integer weights of weight_bits bits; the others: lowbit's float formats
WEIGHT_FORMATS = ("int", "e4m3", "e5m2", "e2m1")


class _QATWeightLayer(_ExactMode, nn.Module):
    """Weight fake-quantization shared by QATConv2d and QATLinear: symmetric, narrow range
    [-(2^(b-1) - 1), 2^(b-1) - 1], per output channel or per tensor. The scale is max|w| / qmax of the
    current (folded) weight at every step, as the conversion computes it, or an LSQ-learned scale
    (``learnable_scale``). A ``weight_mask`` buffer on the wrapped layer (the pruning tools') keeps pruned
    weights exactly zero through fake-quantization and its gradient."""

    def _init_weight_quant(self, out_channels: int, weight_bits: int, per_channel: bool,
                           learnable_scale: bool, weight_format: str = "int") -> None:
        if not 2 <= weight_bits <= 8:
            raise ValueError(f"QAT: weight_bits must be in [2, 8], got {weight_bits}")
        if weight_format not in WEIGHT_FORMATS:
            raise ValueError(f"QAT: weight_format must be one of {list(WEIGHT_FORMATS)}, got {weight_format!r}")
        if weight_format != "int" and learnable_scale:
            raise ValueError(f"QAT: learnable_scale=True is for integer weights, got weight_format={weight_format!r}")
        self.weight_bits, self.per_channel, self.weight_format = weight_bits, per_channel, weight_format
        self.weight_qmax = 2 ** (weight_bits - 1) - 1
        self.weight_quant = (FakeQuantize(-self.weight_qmax, self.weight_qmax, axis=0 if per_channel else None,
                                          channels=out_channels if per_channel else 1, observer="lsq",
                                          symmetric=True) if learnable_scale else None)

    # extra state: the weight quantizer's settings and (QATConv2d) whether BatchNorm is frozen, so a
    # frozen QAT model loads frozen; learnable_scale must match the module (it decides whether the
    # `weight_quant` submodule exists).
    def get_extra_state(self):
        state = {"weight_bits": self.weight_bits, "per_channel": self.per_channel,
                 "learnable_scale": self.weight_quant is not None}
        if self.weight_format != "int":  # only then, so integer QAT states keep their keys
            state["weight_format"] = self.weight_format
        if isinstance(self, QATConv2d):
            state["bn_frozen"] = self.bn_frozen
        return state

    def set_extra_state(self, state):
        self.weight_bits, self.per_channel = state["weight_bits"], state["per_channel"]
        self.weight_qmax = 2 ** (self.weight_bits - 1) - 1
        if isinstance(self, QATConv2d):
            self.bn_frozen = state["bn_frozen"]

    def _load_from_state_dict(self, state_dict, prefix, *args):
        key = prefix + "_extra_state"
        if key in state_dict:
            check = ExtraStateChecker(self, prefix, state_dict[key], set(self.get_extra_state()))
            check.int("weight_bits", 2, 8)
            check.bool("per_channel")
            check.bool("learnable_scale")
            check.equal("learnable_scale", self.weight_quant is not None,
                        "prepare the model with the same QATConfig.learnable_scale")
            if isinstance(self, QATConv2d):
                check.bool("bn_frozen")
            if self.weight_format != "int":
                check.equal("weight_format", self.weight_format, "prepare the model with the same "
                            "QATConfig.weight_format")
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _fake_quant_weight(self, w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.weight_quant is not None:
            return self.weight_quant(w, mask)
        if self.weight_format != "int":
            y = lowbit.fake_quantize(w, self.weight_format, axis=0 if self.per_channel else None)
            return y if mask is None else y * mask.to(y.dtype)
        scale = numerics.weight_scale(w.detach(), self.per_channel, self.weight_bits)
        return ops.fake_quant(w, scale, torch.zeros_like(scale, dtype=torch.int32), -self.weight_qmax,
                              self.weight_qmax, 0 if self.per_channel else None, mask)

    def integer_weight_scale(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight scale the conversion uses for this (evaluation-mode, folded) weight."""
        if self.weight_format != "int":
            raise ValueError(f"{type(self).__name__}: weight_format={self.weight_format!r} simulates float weights; "
                             "the integer-only conversion needs integer weights")
        if self.weight_quant is not None:
            return self.weight_quant.calculate_qparams()[0]
        return numerics.weight_scale(weight.detach(), self.per_channel, self.weight_bits)


class QATConv2d(_QATWeightLayer):
    """Conv2d (+ BatchNorm2d folded) with fake-quantized weights, for quantization-aware training."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, *, weight_bits: int = 8,
                 per_channel: bool = True, learnable_scale: bool = False, weight_format: str = "int"):
        super().__init__()
        self.conv, self.bn = conv, bn
        self.bn_frozen = False  # freeze_qat_: normalize with the running statistics, do not update them
        self._init_weight_quant(conv.out_channels, weight_bits, per_channel, learnable_scale, weight_format)

    def _bn_factor(self) -> torch.Tensor:
        # gamma / sqrt(running_var + eps), written as fold_batchnorm writes it so that the folded
        # weight of the evaluation-mode simulation is the one the conversion quantizes
        return self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._exact is not None:
            return self._run_exact(x)
        mask = getattr(self.conv, "weight_mask", None)
        if self.bn is None:
            return self.conv._conv_forward(x, self._fake_quant_weight(self.conv.weight, mask), self.conv.bias)
        # The factor is a constant to autograd here: its two uses (scaling the weight, unscaling the
        # output) cancel under the straight-through estimator, and gamma gets its gradient from the
        # BatchNorm itself. Dropping the path saves a full-size reduction per layer in the backward.
        factor = self._bn_factor().detach()
        w = self._fake_quant_weight(self.conv.weight * factor.reshape(-1, 1, 1, 1), mask)
        y = self.conv._conv_forward(x, w, None) / factor.reshape(1, -1, 1, 1)
        if self.conv.bias is not None:
            y = y + self.conv.bias.reshape(1, -1, 1, 1)
        if self.bn_frozen:
            bn = self.bn
            return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return self.bn(y)

    def to_integer(self, **qparams) -> QuantConv2d:
        """The integer-only QuantConv2d (BatchNorm folded with its running statistics); `qparams` are
        QuantConv2d.from_float's input / output / activation arguments."""
        weight = fold_batchnorm(self.conv, self.bn)[0] if self.bn is not None else self.conv.weight
        qparams.update(weight_bits=self.weight_bits, per_channel=self.per_channel,
                       weight_scale=self.integer_weight_scale(weight))
        return QuantConv2d.from_float(self.conv, self.bn, **qparams)

    def extra_repr(self) -> str:
        return (f"weight_bits={self.weight_bits}, per_channel={self.per_channel}, bn_folded={self.bn is not None}, "
                f"bn_frozen={self.bn_frozen}")


class QATLinear(_QATWeightLayer):
    """Linear with fake-quantized weights, for quantization-aware training."""

    def __init__(self, linear: nn.Linear, *, weight_bits: int = 8, per_channel: bool = True,
                 learnable_scale: bool = False, weight_format: str = "int"):
        super().__init__()
        self.linear = linear
        self._init_weight_quant(linear.out_features, weight_bits, per_channel, learnable_scale, weight_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._exact is not None:
            return self._run_exact(x)
        w = self._fake_quant_weight(self.linear.weight, getattr(self.linear, "weight_mask", None))
        return F.linear(x, w, self.linear.bias)

    def to_integer(self, **qparams) -> QuantLinear:
        qparams.update(weight_bits=self.weight_bits, per_channel=self.per_channel,
                       weight_scale=self.integer_weight_scale(self.linear.weight))
        return QuantLinear.from_float(self.linear, **qparams)

    def extra_repr(self) -> str:
        return f"weight_bits={self.weight_bits}, per_channel={self.per_channel}"


class QATAdd(_ExactMode, nn.Module):
    """A residual addition of two fake-quantized tensors (the output is fake-quantized by the
    ActFakeQuant after it); in exact mode, QuantAdd's TFLite ADD on the integers."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self._exact is not None:
            return self._run_exact(a, b)
        return a + b

    def _exact_output_qparams(self, module: QuantAdd, in_qparams):
        return module.scales[2], module.zero_points[2]


class QATAvgPool2d(_ExactMode, nn.Module):
    """Average pooling re-rounded to its input's grid, as QuantAvgPool2d computes it on the integers
    (same qparams in and out). ``input_quant`` is the ActFakeQuant that sets that grid: a plain
    attribute, not a submodule (it is registered once, where the graph computes it)."""

    def __init__(self, pool: nn.Module, input_quant: ActFakeQuant):
        super().__init__()
        self.pool = pool
        object.__setattr__(self, "input_quant", input_quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._exact is not None:
            return self._run_exact(x)
        s, z = self.input_quant.calculate_qparams()
        return ops.fake_quant(self.pool(x), s, z, self.input_quant.qmin, self.input_quant.qmax)

    def _exact_output_qparams(self, module, in_qparams):
        return in_qparams[0]
