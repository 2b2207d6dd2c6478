"""QuantLinearFloatIO: a static (integer-only) QuantLinear behind a float interface.

Module-level static int8 for models torch.fx cannot trace: each nn.Linear is replaced on its own,
with the input and output qparams its calibration hooks observed, so the layer takes and returns
float tensors like the nn.Linear it replaces.
"""

from __future__ import annotations

import torch
from torch import nn

from .integer import DeQuantize, Quantize
from .linear import QuantLinear


class QuantLinearFloatIO(nn.Module):
    """float x -> ``quantize`` (Quantize: clamp(round_half_even(x / s_in) + zp_in), the calibrated
    input qparams) -> ``linear`` (static QuantLinear: the int8 kernel, int32 accumulation, fixed-point
    requantization to the calibrated output qparams) -> ``dequantize`` ((y_q - zp_out) * s_out, fp32)
    -> the input's floating dtype. The integers are exactly those of the QuantLinear given the
    quantized input; the float result differs from nn.Linear by the input, weight and output rounding.
    The three parts are ordinary checked modules, so the state dict is checked by each of them."""

    def __init__(self, quantize: Quantize, linear: QuantLinear, dequantize: DeQuantize):
        super().__init__()
        if linear.mode != "static":
            raise ValueError(f'QuantLinearFloatIO: linear must be a static QuantLinear, got mode={linear.mode!r}')
        self.quantize, self.linear, self.dequantize = quantize, linear, dequantize

    @classmethod
    def from_float(cls, linear: nn.Linear, input_qparams: tuple[float, int], output_qparams: tuple[float, int],
                   *, dtype: torch.dtype = torch.uint8, per_channel: bool = True,
                   rounding: str = "double") -> QuantLinearFloatIO:
        """Quantize `linear` with calibrated (scale, zero_point) of its input and output, both of
        `dtype` (torch.uint8 or torch.int8). The checks are QuantLinear.from_float's (finite weight and
        bias, scales finite and > 0, zero points in range)."""
        q = QuantLinear.from_float(linear, input_scale=input_qparams[0], input_zero_point=input_qparams[1],
                                   output_scale=output_qparams[0], output_zero_point=output_qparams[1],
                                   per_channel=per_channel, input_dtype=dtype, output_dtype=dtype, rounding=rounding)
        return cls(Quantize(input_qparams[0], input_qparams[1], dtype), q,
                   DeQuantize(output_qparams[0], output_qparams[1], dtype))

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dequantize(self.linear(self.quantize(x)))
        return y.to(x.dtype) if x.is_floating_point() else y
