"""QuantLinear: a drop-in int8 linear layer on the fused int8 GEMM kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import numerics, ops, reference
from ._common import DTYPE_NAMES, IntegerLayer, in_reference_mode, quantize_layer


def float_rows_where(nonfinite_rows: torch.Tensor, y: torch.Tensor, float_path) -> torch.Tensor:
    """y with the rows (along dim 0) flagged in nonfinite_rows replaced by those of float_path(),
    a float computation of the whole batch, run only when some row is flagged: eagerly by a Python
    test, under torch.compile / export by torch.cond (the flag is data-dependent)."""
    def replace(mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.reshape(-1, *[1] * (y.dim() - 1)), float_path().to(y.dtype), y)

    if torch.compiler.is_compiling():
        return torch.cond(nonfinite_rows.any(), replace, lambda mask, y: y.clone(), (nonfinite_rows, y))
    return replace(nonfinite_rows, y) if bool(nonfinite_rows.any()) else y


class QuantLinear(IntegerLayer):
    """int8 linear layer with symmetric int8 weights (per output channel or per tensor).

    Two modes:

    * ``"static"`` (integer-only, the way an NPU / TFLite runs it): int8 or uint8 in, int8 / uint8 /
      int32 out. ``y = clamp(zp_y + requant(sum_k w_q[n,k] * (x[m,k] - zp_x) + bias_q[n]))`` with
      ``bias_q = round(bias / (s_x * s_w[n]))`` and the fixed-point multiplier
      ``s_x * s_w[n] / s_y`` encoded as ``(m0, shift)``. No floating point at run time.
    * ``"dynamic"``: float in, float out; each row of x is quantized symmetrically on the fly
      (``s_x[m] = max|x[m]| / 127``) and the GEMM ends in ``acc * s_x[m] * s_w[n] + bias``.
      A drop-in replacement for ``nn.Linear`` in any model. A row of x holding a NaN or +-Inf is
      computed in float instead: its outputs are exactly row m of ``F.linear(x, dequantized_weight(),
      bias)`` in fp32, so they are non-finite as nn.Linear's would be (every output NaN when the
      row holds a NaN; +-Inf with the sign of x * w for an infinite x; NaN where +Inf and -Inf
      meet or an infinite x meets a weight that is (or quantized to) zero). The other rows are
      computed exactly as in a batch without that row (per-row scales). The float pass runs only
      when some row is non-finite (under torch.compile / export: a torch.cond).

    Inputs may have any leading dimensions (``[*, in_features]``). The weight is packed once (at
    build and after ``load_state_dict``), never per call. The state dict holds the int8 weight, the
    scales, the integer bias and the multipliers; the mode, zero points and ranges are extra state,
    checked at ``load_state_dict``. Floating-point dtype conversions (``.double()``, ``.half()``,
    ``.to(dtype)``) keep the scales and the float bias in fp32 (nn._common.Float32State); the dynamic
    mode returns its input's dtype.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 mode: str = "static", per_channel: bool = True,
                 input_dtype: torch.dtype = torch.uint8, output_dtype: torch.dtype = torch.uint8,
                 rounding: str = "double", sparse24: bool = False):
        super().__init__()
        if mode not in ("static", "dynamic"):
            raise ValueError(f'QuantLinear: mode must be "static" or "dynamic", got {mode!r}')
        if sparse24 and mode != "static":
            raise ValueError("QuantLinear: sparse24=True needs mode=\"static\" (the 2:4 kernel has the integer "
                             "epilogue)")
        self.in_features, self.out_features, self.mode = in_features, out_features, mode
        self._init_integer_state((out_features, in_features), out_features, bias, per_channel, input_dtype,
                                 output_dtype, rounding, sparse24)
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    # -------------------------------------------------------------- construction

    @classmethod
    def from_float(cls, linear: nn.Linear, *, input_scale: float | None = None,
                   input_zero_point: int = 0, output_scale: float | None = None,
                   output_zero_point: int = 0, per_channel: bool = True, dynamic: bool = False,
                   input_dtype: torch.dtype = torch.uint8, output_dtype: torch.dtype = torch.uint8,
                   activation: str | None = None, rounding: str = "double", weight_bits: int = 8,
                   weight_scale: torch.Tensor | None = None) -> QuantLinear:
        """Quantize a float ``nn.Linear``. Static mode needs the input and output scales and zero
        points (from calibration); ``dynamic=True`` needs none. ``activation`` ("relu" or "relu6")
        is fused into the output clamp of the static mode. ``weight_bits`` / ``weight_scale`` (static
        mode): see ``nn._common.quantize_layer``.

        Refused (ValueError naming the argument; TypeError for a non-number): a NaN or infinite
        weight or bias (the message gives the layer and the first bad index), and in static mode a
        scale that is not finite and > 0 (input_scale, output_scale, every weight_scale) and a zero
        point that is not an integer in its dtype's range."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"QuantLinear.from_float: expected nn.Linear, got {type(linear).__name__}")
        mode = "dynamic" if dynamic else "static"
        if mode == "static" and (input_scale is None or output_scale is None):
            raise ValueError("QuantLinear.from_float: static mode needs input_scale and output_scale "
                             "(or pass dynamic=True)")
        where = f"QuantLinear.from_float({linear!r})"
        numerics.check_finite(linear.weight, "weight", where)
        if linear.bias is not None:
            numerics.check_finite(linear.bias, "bias", where)
        if mode == "static":
            input_scale, input_zero_point, output_scale, output_zero_point = numerics.check_layer_qparams(
                where, input_scale, input_zero_point, input_dtype, output_scale, output_zero_point, output_dtype,
                weight_scale)
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, mode=mode,
                per_channel=per_channel, input_dtype=input_dtype, output_dtype=output_dtype,
                rounding=rounding)
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach().float())
        if mode == "dynamic":
            w_q, w_scale = numerics.quantize_weight(linear.weight, per_channel=per_channel)
        else:
            w_q, w_scale, bias_q, m0, shift = quantize_layer(linear.weight, linear.bias, input_scale, output_scale,
                                                             per_channel, weight_bits, weight_scale)
            q._set_static_qparams(input_scale, input_zero_point, output_scale, output_zero_point, activation, m0,
                                  shift, bias_q)
        q.weight_q.copy_(w_q)
        q.weight_scale.copy_(w_scale)
        q._repack()
        return q

    def _pack_dense(self, weight_q: torch.Tensor) -> torch.Tensor:
        return ops.int8_pack_weight(weight_q)

    def _layer_extra_state(self) -> dict:
        return {"mode": self.mode}

    def _layer_extra_state_check(self, check) -> None:
        mode = check.choice("mode", ("static", "dynamic"))
        if mode != "static" and check.state["sparse24"]:
            check.fail("mode", '"static" (sparse24=True runs the integer-only 2:4 kernel)')

    def _set_layer_extra_state(self, state: dict) -> None:
        self.mode = state["mode"]

    # -------------------------------------------------------------- compute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if self.mode == "static" and in_reference_mode():
            y = reference.int8_linear(x2, self.input_zero_point, self.weight_q, self.bias_q, self.m0, self.shift,
                                      self.output_zero_point, self.qmin, self.qmax, self.output_dtype, self.rounding)
        elif self.mode == "static":
            y = self._integer_matmul(x2)
        else:
            if in_reference_mode():
                x_q, x_scale = reference.quantize_rows(x2.float())
                y = reference.int8_linear_float(x_q, 0, self.weight_q, x_scale, self.weight_scale, self.bias)
            else:
                x_q, x_scale = ops.quantize_rows(x2.float().contiguous())
                y = ops.int8_linear_float(x_q, 0, self.packed_weight, x_scale, self.weight_scale, self.bias)
            # quantize_rows marks a row holding NaN / +-Inf with scale NaN (its outputs are all NaN):
            # recompute those rows in float for nn.Linear's non-finite pattern (see the class docstring).
            y = float_rows_where(torch.isnan(x_scale), y,
                                 lambda: F.linear(x2.float(), self.dequantized_weight(), self.bias)).to(x.dtype)
        return y.reshape(*lead, self.out_features)

    def dequantized_weight(self) -> torch.Tensor:
        """weight_q * weight_scale (per output channel or per tensor) in fp32: the weight the
        integer GEMM stands for."""
        return self.weight_q.float() * self.weight_scale.reshape(-1, 1)

    def dequantize_output(self, y_q: torch.Tensor) -> torch.Tensor:
        """Static mode: the real values an integer output stands for."""
        return numerics.dequantize(y_q, self.output_scale, self.output_zero_point)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Static mode: the integer input for real x."""
        return numerics.quantize(x, self.input_scale, self.input_zero_point, self.input_dtype)

    def extra_repr(self) -> str:
        s = (f"in_features={self.in_features}, out_features={self.out_features}, "
             f"bias={self.bias is not None}, mode={self.mode}, per_channel={self.per_channel}")
        if self.mode == "static":
            s += (f", input={DTYPE_NAMES[self.input_dtype]}(scale={self.input_scale.item():.4g}, "
                  f"zp={self.input_zero_point}), output={DTYPE_NAMES[self.output_dtype]}("
                  f"scale={self.output_scale.item():.4g}, zp={self.output_zero_point}, "
                  f"clamp=[{self.qmin}, {self.qmax}]), rounding={self.rounding}")
        if self.sparse24:
            s += ", sparsity=2:4"
        return s
