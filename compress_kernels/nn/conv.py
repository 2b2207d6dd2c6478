"""QuantConv2d: integer-only conv2d on the int8 implicit-GEMM kernels."""

from __future__ import annotations

import torch
from torch import nn

from .. import numerics, ops, reference
from ._common import DTYPE_NAMES, IntegerLayer, fold_batchnorm, in_reference_mode, quantize_layer

_INT8_CONV2D = torch.ops.compress_kernels.int8_conv2d.default
_SPARSE24_INT8_CONV2D = torch.ops.compress_kernels.sparse24_int8_conv2d.default


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class QuantConv2d(IntegerLayer):
    """Integer-only conv2d: int8 / uint8 in (NCHW shape, channels_last memory preferred), int8 /
    uint8 out, symmetric int8 weights per output channel (or per tensor), int32 bias, fixed-point
    requantization, ReLU / ReLU6 fused as the output clamp. Padding is filled with the input zero
    point (the quantized zero), as in TFLite.

    ``y = clamp(zp_y + requant(sum w_q * (x - zp_x) + bias_q))``; no floating point at run time.
    Build with :meth:`from_float` from a Conv2d, or a Conv2d + BatchNorm2d (folded) (+ ReLU).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, per_channel: bool = True,
                 input_dtype: torch.dtype = torch.uint8, output_dtype: torch.dtype = torch.uint8,
                 rounding: str = "double", sparse24: bool = False):
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = ((kh, kw), _pair(stride), _pair(padding),
                                                                      _pair(dilation))
        if sparse24 and groups != 1:
            raise ValueError(f"QuantConv2d: sparse24=True needs groups=1, got groups={groups}")
        self._init_integer_state((out_channels, in_channels // groups, kh, kw), out_channels, bias, per_channel,
                                 input_dtype, output_dtype, rounding, sparse24)
        # 2:4 mode: the dense pack of weight_q (which that mode rebuilds and keeps, unsaved) for the shapes
        # where the dense int8 conv is the faster kernel of the same integers (sparse24_runs_dense)
        self.register_buffer("packed_dense", None, persistent=False)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, *, input_scale: float,
                   input_zero_point: int, output_scale: float, output_zero_point: int, per_channel: bool = True,
                   activation: str | None = None, input_dtype: torch.dtype = torch.uint8,
                   output_dtype: torch.dtype = torch.uint8, rounding: str = "double", weight_bits: int = 8,
                   weight_scale: torch.Tensor | None = None) -> QuantConv2d:
        """Quantize a float Conv2d (with an optional BatchNorm2d folded in, evaluation statistics)
        for the given input / output qparams; ``activation`` "relu" / "relu6" becomes the clamp.
        ``weight_bits`` / ``weight_scale``: see ``nn._common.quantize_layer``.

        Refused (ValueError naming the argument; TypeError for a non-number): a NaN or infinite
        weight or bias after BatchNorm folding (the message gives the layer and the first bad
        index), a scale that is not finite and > 0 (input_scale, output_scale, every weight_scale)
        and a zero point that is not an integer in its dtype's range."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"QuantConv2d.from_float: expected nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"QuantConv2d.from_float: only numeric zero padding is supported, got "
                             f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}")
        where = f"QuantConv2d.from_float({conv!r}" + (f", {bn!r})" if bn is not None else ")")
        input_scale, input_zero_point, output_scale, output_zero_point = numerics.check_layer_qparams(
            where, input_scale, input_zero_point, input_dtype, output_scale, output_zero_point, output_dtype,
            weight_scale)
        weight, bias = fold_batchnorm(conv, bn) if bn is not None else (conv.weight.detach(), conv.bias)
        folded = " (BatchNorm folded)" if bn is not None else ""
        numerics.check_finite(weight, "weight" + folded, where)
        if bias is not None:
            numerics.check_finite(bias, "bias" + folded, where)
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, bias is not None, per_channel=per_channel, input_dtype=input_dtype,
                output_dtype=output_dtype, rounding=rounding)
        w_q, w_scale, bias_q, m0, shift = quantize_layer(weight, bias, input_scale, output_scale, per_channel,
                                                         weight_bits, weight_scale)
        q.weight_q.copy_(w_q)
        q.weight_scale.copy_(w_scale)
        q._set_static_qparams(input_scale, input_zero_point, output_scale, output_zero_point, activation, m0, shift,
                              bias_q)
        q._repack()
        return q

    def _pack_dense(self, weight_q: torch.Tensor) -> torch.Tensor:
        return ops.int8_conv2d_pack_weight(weight_q, self.groups)

    def _repack(self) -> None:
        super()._repack()
        self.packed_dense = (self._pack_dense(self.weight_q.cpu()).to(self.weight_q.device) if self.sparse24
                             else None)

    # The largest weight (OC x C x KH x KW elements) that 2:4 mode runs on the dense int8 conv on every
    # CPU path. Measured (1 thread, CPU time, ResNet-18 3x3 layers): on the AVX-512 VNNI path the
    # dense conv is 1.03-1.27x faster than the int8 2:4 conv up to 32 -> 32 channels (9216 weights)
    # and 0.86x at 64 -> 64; on the AMX path the dense conv (direct tile loads from the padded image,
    # no gathered rows) is faster on every ResNet-18 shape at batch 32 (1.06-3.6x: 8 -> 8 at 32x32,
    # 430 against 1560 us; 256 -> 256 at 8x8, 1253 against 1350 us), so there it always runs dense.
    DENSE_24_MAX_WEIGHT = 9216

    def sparse24_runs_dense(self) -> bool:
        """Whether the 2:4 mode's forward runs the dense int8 conv on weight_q (the same integers as
        the int8 2:4 kernel): on the CPU, for a weight of at most DENSE_24_MAX_WEIGHT elements, or on
        the AMX path (ops.cpu_isa() == "amx"). Never while torch.export / torch.compile trace the module:
        the traced program keeps the 2:4 kernel and only the compressed weight."""
        if self.packed_dense is None or torch.compiler.is_compiling():
            return False
        return self.weight_q.numel() <= self.DENSE_24_MAX_WEIGHT or ops.cpu_isa() == "amx"

    def _layer_extra_state(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}

    def _layer_extra_state_check(self, check) -> None:
        check.int_pair("stride", 1)
        check.int_pair("padding", 0)
        check.int_pair("dilation", 1)

    def _set_layer_extra_state(self, state: dict) -> None:
        self.stride, self.padding, self.dilation = (tuple(state[k]) for k in ("stride", "padding", "dilation"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if in_reference_mode():
            return reference.int8_conv2d(x, self.input_zero_point, self.weight_q, self.bias_q, self.m0, self.shift,
                                         self.output_zero_point, self.qmin, self.qmax, self.output_dtype, self.stride,
                                         self.padding, self.dilation, self.groups, self.rounding)
        if self.sparse24:
            return self._sparse24_forward(x)
        # The op itself, not the ops.int8_conv2d wrapper: every argument but x is this module's state,
        # checked when it was built or loaded (and the op checks them all again in C++); the wrapper's
        # Python conversions cost more than a small conv at batch 1.
        return _INT8_CONV2D(x, self.input_zero_point, self.weight_q, self.bias_q, self.m0, self.shift,
                            self.output_zero_point, self.qmin, self.qmax, self.output_dtype, self.stride, self.padding,
                            self.dilation, self.groups, self.rounding, self.packed_weight)

    def _sparse24_forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return ops.sparse24_int8_conv2d(x, self.input_zero_point, self.packed_weight, self.weight_meta,
                                            self.bias_q, self.m0, self.shift, self.output_zero_point, self.qmin,
                                            self.qmax, self.output_dtype, self.kernel_size, self.stride, self.padding,
                                            self.dilation, self.rounding)
        if self.sparse24_runs_dense():
            return _INT8_CONV2D(x, self.input_zero_point, self.weight_q, self.bias_q, self.m0, self.shift,
                                self.output_zero_point, self.qmin, self.qmax, self.output_dtype, self.stride,
                                self.padding, self.dilation, self.groups, self.rounding, self.packed_dense)
        return _SPARSE24_INT8_CONV2D(x, self.input_zero_point, self.packed_weight, self.weight_meta, self.bias_q,
                                     self.m0, self.shift, self.output_zero_point, self.qmin, self.qmax,
                                     self.output_dtype, self.kernel_size, self.stride, self.padding, self.dilation,
                                     self.rounding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                + ("sparsity=2:4, " if self.sparse24 else "") +
                f"per_channel={self.per_channel}, input={DTYPE_NAMES[self.input_dtype]}(scale="
                f"{self.input_scale.item():.4g}, zp={self.input_zero_point}), output="
                f"{DTYPE_NAMES[self.output_dtype]}(scale={self.output_scale.item():.4g}, "
                f"zp={self.output_zero_point}, clamp=[{self.qmin}, {self.qmax}])")
