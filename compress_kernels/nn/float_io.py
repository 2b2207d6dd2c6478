"""QuantLinearFloatIO: a static (integer-only) QuantLinear behind a float interface.

Module-level static int8 for models torch.fx cannot trace: each nn.Linear is replaced on its own,
with the input and output qparams its calibration hooks observed, so the layer takes and returns
float tensors like the nn.Linear it replaces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import numerics, ops
from ._common import WrapsLinear, in_reference_mode, run_exact
from .integer import DeQuantize, Quantize
from .linear import QuantLinear, float_rows_where


class QuantLinearFloatIO(WrapsLinear, nn.Module):
    """float x -> ``quantize`` (Quantize: clamp(round_half_even(x / s_in) + zp_in), the calibrated
    input qparams) -> ``linear`` (static QuantLinear: the int8 kernel, int32 accumulation, fixed-point
    requantization to the calibrated output qparams) -> ``dequantize`` ((y_q - zp_out) * s_out, fp32)
    -> the input's floating dtype; with SmoothQuant the input is first multiplied (fp32) by
    ``input_multiplier`` (1 / s per input feature; the weight holds W * s). The integers are exactly
    those of the QuantLinear given the quantized input; the float result differs from nn.Linear by the
    input, weight and output rounding. Run as two kernels (``ops.quantize_per_tensor``, then
    ``ops.int8_linear_dequant`` with the requantization and the dequantization fused), bit for bit the
    three modules' result. A row of x holding NaN or +-Inf is computed in float instead: its outputs
    are exactly that row of ``F.linear(x, linear.dequantized_weight(), linear.bias)`` (non-finite as
    nn.Linear's would be); the other rows are unaffected. The three parts are ordinary checked
    modules, so the state dict is checked by each of them."""

    def __init__(self, quantize: Quantize, linear: QuantLinear, dequantize: DeQuantize,
                 input_multiplier: torch.Tensor | None = None):
        super().__init__()
        if linear.mode != "static":
            raise ValueError(f'QuantLinearFloatIO: linear must be a static QuantLinear, got mode={linear.mode!r}')
        if input_multiplier is not None and (input_multiplier.shape != (linear.in_features,)
                                             or not bool(torch.isfinite(input_multiplier).all())):
            raise ValueError(f"QuantLinearFloatIO: input_multiplier must hold {linear.in_features} finite values (one "
                             f"per input feature), got shape {tuple(input_multiplier.shape)}")
        self.quantize, self.linear, self.dequantize = quantize, linear, dequantize
        # SmoothQuant (hooks_quant): x * input_multiplier (fp32) before quantize; None: no smoothing
        self.register_buffer("input_multiplier", None if input_multiplier is None else input_multiplier.float())

    @classmethod
    def from_float(cls, linear: nn.Linear, input_qparams: tuple[float, int], output_qparams: tuple[float, int],
                   *, dtype: torch.dtype = torch.uint8, per_channel: bool = True,
                   rounding: str = "double", input_multiplier: torch.Tensor | None = None) -> QuantLinearFloatIO:
        """Quantize `linear` with calibrated (scale, zero_point) of its input and output, both of
        `dtype` (torch.uint8 or torch.int8). The checks are QuantLinear.from_float's (finite weight and
        bias, scales finite and > 0, zero points in range)."""
        q = QuantLinear.from_float(linear, input_scale=input_qparams[0], input_zero_point=input_qparams[1],
                                   output_scale=output_qparams[0], output_zero_point=output_qparams[1],
                                   per_channel=per_channel, input_dtype=dtype, output_dtype=dtype, rounding=rounding)
        return cls(Quantize(input_qparams[0], input_qparams[1], dtype), q,
                   DeQuantize(output_qparams[0], output_qparams[1], dtype), input_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = x.float() if self.input_multiplier is None else x.float() * self.input_multiplier
        lead = x_in.shape[:-1]
        x2 = x_in.reshape(-1, self.in_features)
        if self._fused():
            # the same integers and floats as the three modules, in two passes: quantize_per_tensor,
            # then the int8 kernel with the requantization and the dequantization in its epilogue
            q, nonfinite_rows = ops.quantize_per_tensor(x2.contiguous(), self.quantize.scale,
                                                        self.quantize.zero_point, *numerics.dtype_range(
                                                            self.quantize.dtype), self.quantize.dtype)
            lin = self.linear
            y = ops.int8_linear_dequant(q, lin.input_zero_point, lin.packed_weight, lin.bias_q, lin.m0, lin.shift,
                                        lin.output_zero_point, lin.qmin, lin.qmax, lin.output_dtype,
                                        self.dequantize.scale, lin.rounding)
        else:
            nonfinite_rows = ~torch.isfinite(x2).all(dim=1)
            y = self.dequantize(self.linear(self.quantize(x2)))
        # A row holding NaN / +-Inf has no quantized form: it is computed in float instead, exactly row m of
        # F.linear(x, dequantized weight, bias) (the dynamic QuantLinear's rule), so it stays non-finite.
        y = float_rows_where(nonfinite_rows, y,
                             lambda: F.linear(x2, self.linear.dequantized_weight(), self.linear.bias))
        y = y.reshape(*lead, self.out_features)
        return y.to(x.dtype) if x.is_floating_point() else y

    def _fused(self) -> bool:
        """The fused kernels serve this layer: not in reference mode, a dense (not 2:4) linear, and the
        DeQuantize reading the zero point the linear requantizes to."""
        return (not in_reference_mode() and not self.linear.sparse24
                and self.dequantize.zero_point == self.linear.output_zero_point)


class QATLinearFloatIO(nn.Module):
    """Module-level quantization-aware training of one nn.Linear (for models torch.fx cannot trace):
    ``input_quant`` (ActFakeQuant of the input) -> ``layer`` (QATLinear: fake-quantized weight) ->
    ``output_quant`` (ActFakeQuant of the output). The conversion builds a QuantLinearFloatIO from the
    layer and the two quantizers' qparams (`to_integer`); in exact mode (``_exact`` set by
    qat.qat_exact_mode to (that module, use_kernels)) this module computes with it, so its output equals
    the converted layer's bit for bit. `config` is the QATConfig it was prepared with."""

    def __init__(self, linear: nn.Linear, config):
        from .qat import ActFakeQuant, QATLinear

        super().__init__()
        observer = "lsq" if config.learnable_scale else "ema"
        self.input_quant = ActFakeQuant(config.activation_dtype, observer, config.momentum)
        self.layer = QATLinear(linear, weight_bits=config.weight_bits, per_channel=config.per_channel,
                               learnable_scale=config.learnable_scale)
        self.output_quant = ActFakeQuant(config.activation_dtype, observer, config.momentum)
        self.config = config
        self._exact = None

    def to_integer(self) -> QuantLinearFloatIO:
        in_scale, in_zp = self.input_quant.qparams()
        out_scale, out_zp = self.output_quant.qparams()
        dtype = self.config.activation_dtype
        q = self.layer.to_integer(input_scale=in_scale, input_zero_point=in_zp, output_scale=out_scale,
                                  output_zero_point=out_zp, input_dtype=dtype, output_dtype=dtype,
                                  rounding=self.config.rounding)
        return QuantLinearFloatIO(Quantize(in_scale, in_zp, dtype), q, DeQuantize(out_scale, out_zp, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._exact is not None:
            return run_exact(self._exact, x)
        return self.output_quant(self.layer(self.input_quant(x)))
