"""Int4Linear: nn.Linear with group-wise int4 weights on the int4_linear kernels.

The stored model is what the kernels read: the int4_pack of the weight (buffer ``weight_packed``,
header included: two 4-bit weights per byte plus one fp32 scale, and for asymmetric weights one
zero point, per group of ``group_size`` input features) and the fp32 bias. The settings
(``group_size``, ``activation``, ``symmetric``) are saved as extra state and must match the module
at load_state_dict, so a pack can never be read with the wrong layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import numerics, ops, reference
from ._common import (
    ExtraStateChecker,
    Float32State,
    WrapsLinear,
    check_state_tensors,
    in_reference_mode,
    module_label,
    run_exact,
)
from .linear import float_rows_where

INT4_ACTIVATIONS = ("int8", "bf16", "fp32")


def check_int4_settings(where: str, in_features: int, group_size: int, activation: str, symmetric: bool) -> None:
    """The settings Int4Linear and Int4WeightConfig share: group_size 32, 64, 128 or 256 dividing
    in_features (when given), activation "int8" (w4a8), "bf16" or "fp32" (w4a16), symmetric a bool."""
    if isinstance(group_size, bool) or group_size not in numerics.INT4_GROUP_SIZES:
        raise ValueError(f"{where}: group_size must be one of {list(numerics.INT4_GROUP_SIZES)}, got {group_size!r}")
    if activation not in INT4_ACTIVATIONS:
        raise ValueError(f"{where}: activation must be one of {list(INT4_ACTIVATIONS)}, got {activation!r}")
    if not isinstance(symmetric, bool):
        raise TypeError(f"{where}: symmetric must be a bool, got {symmetric!r}")
    if in_features is not None and in_features % group_size:
        raise ValueError(f"{where}: in_features={in_features} must be a multiple of group_size={group_size}")


class Int4Linear(Float32State):
    """y = x @ W.T + bias with W[n, k] = scale[n, g] * (q[n, k] - zero_point[n, g]), q and zero_point in
    [-8, 7], g = k // group_size (zero_point 0 when symmetric).

    activation="int8" (w4a8): each row of x is quantized to int8 at run time (quantize_rows), the
    products are exact int32 group sums (bit-exact to reference.int4_linear_w4a8); a row holding NaN
    or +-Inf gives instead the row F.linear(x, dequantized_weight(), bias) gives.
    activation="bf16" / "fp32" (w4a16, weight-only): x is cast to that dtype and multiplied with the
    decoded weight, fp32 accumulation (see ops.int4_linear). The output has x's dtype; any leading
    dimensions. Inference only."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, group_size: int = 32,
                 activation: str = "int8", symmetric: bool = True):
        super().__init__()
        check_int4_settings("Int4Linear", in_features, group_size, activation, symmetric)
        self.in_features, self.out_features = in_features, out_features
        self.group_size, self.activation, self.symmetric = group_size, activation, symmetric
        # Zeros until from_float or load_state_dict fills it: no pack header, so int4_linear refuses
        # the layer until then instead of computing with made-up weights.
        shape = ops.packed_shape("int4_pack", out_features, in_features,
                                 ops.int4_pack_param(group_size, not symmetric))
        self.register_buffer("weight_packed", torch.zeros(shape, dtype=torch.int32))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(cls, linear: nn.Linear, group_size: int = 32, activation: str = "int8",
                   symmetric: bool = True, rounded: tuple[torch.Tensor, torch.Tensor] | None = None) -> Int4Linear:
        """Quantize a float nn.Linear's weight group-wise (numerics.quantize_weight_groupwise, 4 bits)
        and pack it. A NaN or infinite weight or bias is refused (ValueError naming the index).
        rounded: (q int8 [N, K] in [-7, 7], scales fp32 [N, K / group_size]) to pack instead of the
        nearest rounding (AdaRound's weights; symmetric only)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Int4Linear.from_float: expected nn.Linear, got {type(linear).__name__}")
        where = f"Int4Linear.from_float({linear!r})"
        check_int4_settings(where, linear.in_features, group_size, activation, symmetric)
        numerics.check_finite(linear.weight, "weight", where)
        if linear.bias is not None:
            numerics.check_finite(linear.bias, "bias", where)
        q, scales, zero_points = numerics.quantize_weight_groupwise(linear.weight.detach().cpu(), group_size,
                                                                    symmetric=symmetric)
        if rounded is not None:
            if not symmetric:
                raise ValueError(f"{where}: rounded weights need symmetric=True, got symmetric=False")
            q_rounded, scales_rounded = rounded
            if tuple(q_rounded.shape) != tuple(q.shape) or tuple(scales_rounded.shape) != tuple(scales.shape):
                raise ValueError(f"{where}: rounded has shapes {list(q_rounded.shape)} and "
                                 f"{list(scales_rounded.shape)}, expected {list(q.shape)} and {list(scales.shape)}")
            q, scales = q_rounded.to(torch.int8).cpu(), scales_rounded.float().cpu()
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size=group_size,
                    activation=activation, symmetric=symmetric)
        with torch.no_grad():
            layer.weight_packed.copy_(ops.int4_pack(q, scales, group_size, zero_points))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach().float())
        return layer.to(linear.weight.device)

    def int4_weight(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(q int8 [N, K], scales fp32 [N, K / group_size], zero_points int8 or None when symmetric)."""
        q, scales, zero_points = ops.int4_unpack(self.weight_packed, self.in_features, self.group_size)
        return q, scales, (None if self.symmetric else zero_points)

    def dequantized_weight(self) -> torch.Tensor:
        """The fp32 weight the layer stands for (reference.int4_dequantize)."""
        return reference.int4_dequantize(*self.int4_weight(), self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if self.activation == "int8":
            x2 = x2.float().contiguous()
            if in_reference_mode():
                y = reference.int4_linear_w4a8(x2, *self.int4_weight(), self.group_size, self.bias)
            else:
                y = ops.int4_linear(x2, self.weight_packed, self.bias, "int8")
            # quantize_rows gives a row holding NaN / +-Inf the scale NaN, so all its outputs are NaN:
            # recompute those rows in float for nn.Linear's non-finite pattern. Read from the output
            # ([M] values instead of the [M, K] input); a finite row gives a NaN first output only when
            # the int4 sums overflow fp32 (Inf - Inf), and is then recomputed in float as well.
            nonfinite = torch.isnan(y[:, 0]) if y.shape[1] else y.new_zeros(y.shape[0], dtype=torch.bool)
            y = float_rows_where(nonfinite, y, lambda: F.linear(x2, self.dequantized_weight(), self.bias))
        else:
            dtype = torch.bfloat16 if self.activation == "bf16" else torch.float32
            xa = x2.to(dtype).contiguous()
            if in_reference_mode():
                y = reference.int4_linear_w4a16(xa, *self.int4_weight(), self.group_size, self.bias)
            else:
                y = ops.int4_linear(xa, self.weight_packed, self.bias, self.activation)
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def stored_bytes(self) -> int:
        """Bytes stored: the pack (header, nibbles, scales, zero points) and the bias."""
        return self.weight_packed.numel() * 4 + (self.bias.numel() * 4 if self.bias is not None else 0)

    def fp32_bytes(self) -> int:
        """Bytes of the fp32 layer this replaces (weight + bias)."""
        return 4 * (self.out_features * self.in_features + (self.out_features if self.bias is not None else 0))

    def get_extra_state(self):
        return {"group_size": self.group_size, "activation": self.activation, "symmetric": self.symmetric}

    def set_extra_state(self, state):
        self.activation = state["activation"]  # checked by _load_from_state_dict

    def _load_from_state_dict(self, state_dict, prefix, *args):
        key = prefix + "_extra_state"
        if key in state_dict:
            check = ExtraStateChecker(self, prefix, state_dict[key], {"group_size", "activation", "symmetric"})
            check.int("group_size", 1)
            check.equal("group_size", self.group_size, "build it with group_size=...; the pack's layout depends on it")
            check.bool("symmetric")
            check.equal("symmetric", self.symmetric, "build it with symmetric=...; the pack's layout depends on it")
            check.choice("activation", INT4_ACTIVATIONS)
        packed = state_dict.get(prefix + "weight_packed")
        if isinstance(packed, torch.Tensor) and tuple(packed.shape) != tuple(self.weight_packed.shape):
            raise RuntimeError(
                f"{module_label(self, prefix)}: load_state_dict: {prefix}weight_packed has shape "
                f"{list(packed.shape)}, expected {list(self.weight_packed.shape)} (int4_pack of a "
                f"{self.out_features} x {self.in_features} weight, group_size={self.group_size}, "
                f"{'symmetric' if self.symmetric else 'asymmetric'}): it does not belong to this layer")
        check_state_tensors(self, prefix, state_dict, exact={"weight_packed": torch.int32})
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"group_size={self.group_size}, activation={self.activation!r}, symmetric={self.symmetric}")


class _StraightThrough(torch.autograd.Function):
    """Forward: the quantized tensor exactly (no `x + (q - x).detach()`, whose float rounding could
    move it off the grid); backward: the gradient passes to x unchanged (STE)."""

    @staticmethod
    def forward(ctx, x, quantized):
        return quantized

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def fake_quantize_rows_int8(x: torch.Tensor) -> torch.Tensor:
    """w4a8's activation quantization as a float tensor: each finite row of the 2-D x becomes
    reference.quantize_rows' q * scale (symmetric, max|x_row| / 127, round half to even); a row holding
    NaN or +-Inf stays as it is (Int4Linear computes such a row in float). STE gradient."""
    with torch.no_grad():
        xf = x.detach().float()
        q, scale = reference.quantize_rows(xf)
        finite = torch.isfinite(scale)[:, None]
        quantized = torch.where(finite, q.float() * torch.where(finite, scale[:, None], 1.0), xf).to(x.dtype)
    return _StraightThrough.apply(x, quantized)


class QATInt4Linear(WrapsLinear, nn.Module):
    """Quantization-aware training of one nn.Linear for Int4Linear (w4a8), made by
    ``prepare_qat_(model, QATConfig(weight_bits=4, group_size=g))``. The wrapped ``linear`` (the
    model's own nn.Linear: its parameters train) is used as

        y = F.linear(fake_quantize_rows_int8(x), fake_quantized_weight(), bias)

    with the weight on its group-wise symmetric int4 grid (numerics.quantize_weight_groupwise: scale
    max|w_group| / 7, levels [-7, 7], recomputed from the weight at every call) and each input row on
    its dynamic int8 grid (reference.quantize_rows), both with straight-through gradients. The layer
    has no observers or learned scales: the conversion (``to_int4``, Int4Linear.from_float of the
    trained nn.Linear) builds an Int4Linear whose dequantized_weight() equals
    fake_quantized_weight() bit for bit.

    The exact mode (``_exact`` set by qat.qat_exact_mode to (Int4Linear, use_kernels)) computes with
    that Int4Linear, so its outputs equal the converted layer's bit for bit: the same integers, and
    the float steps of reference.int4_linear_w4a8 (per group the exact int32 sum times the group
    scale, then times the row scale, + bias) instead of the fast mode's one fp32 dot product of
    dequantized values, which differs from it only by float rounding order."""

    def __init__(self, linear: nn.Linear, group_size: int = 32):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"QATInt4Linear: expected nn.Linear, got {type(linear).__name__}")
        check_int4_settings("QATInt4Linear", linear.in_features, group_size, "int8", True)
        self.linear, self.group_size = linear, group_size
        self.config = None  # the QATConfig, set by prepare_qat_
        self._exact = None

    def fake_quantized_weight(self) -> torch.Tensor:
        """The weight on its int4 grid (fp32), with a straight-through gradient to the float weight."""
        w = self.linear.weight
        with torch.no_grad():
            q, scales, _ = numerics.quantize_weight_groupwise(w.detach().float(), self.group_size)
            quantized = reference.int4_dequantize(q, scales, None, self.group_size).to(w.dtype)
        return _StraightThrough.apply(w, quantized)

    def to_int4(self) -> Int4Linear:
        """The Int4Linear (activation="int8", symmetric) of the current weight, in this module's mode."""
        return Int4Linear.from_float(self.linear, self.group_size, "int8", True).train(self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._exact is not None:
            return run_exact(self._exact, x)
        lead = x.shape[:-1]
        x2 = fake_quantize_rows_int8(x.reshape(-1, self.in_features))
        y = F.linear(x2, self.fake_quantized_weight(), self.linear.bias)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"
