"""Fp8WeightLinear / Fp8WeightConv2d: weight-only FP8 layers. The weight is stored as one byte per
weight (the uint8 codes of E4M3FN or E5M2, compress_kernels.formats) with one fp32 scale per output
channel; activations stay floating point.

Storage: ``weight_codes`` uint8 (the layer's weight shape), ``weight_scale`` fp32 [out_channels],
``bias`` fp32 or None; the format is extra state. The weight is W = decode(code) * scale[n] with
scale[n] = max|W_float[n]| / max_finite (448 for e4m3, 57344 for e5m2; 1 for an all-zero channel)
and code = formats.encode(W_float / scale[n]) (round to nearest even).

Forward (plain PyTorch; no C++ kernel): the codes are decoded by a 256-entry bfloat16 table lookup
(every FP8 value is exact in bf16) into a transient bf16 weight, the input is rounded to bf16, the
matmul / convolution runs in bf16 (fp32 accumulation in oneDNN, bf16 result), then the per-channel
scale and the bias are applied in fp32 and the output takes the input's dtype. Against the fp32
layer on the decoded weight (``reference.fp8_weight_linear``) the error is that of bf16 inputs and
a bf16 result: about 2^-8 relative per output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from .. import formats, numerics
from ._common import ExtraStateChecker, Float32State, check_state_tensors

FP8_FORMATS = ("e4m3", "e5m2")


def encode_weight(weight: torch.Tensor, fmt: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes uint8, scale fp32 [out_channels]) of a float weight (per output channel, dim 0)."""
    numerics.check_finite(weight, "weight", where)
    w = weight.detach().float()
    amax = w.abs().reshape(w.shape[0], -1).amax(1)
    scale = amax / formats.FORMATS[fmt].max_finite
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = formats.encode(w / scale.reshape([-1] + [1] * (w.dim() - 1)), fmt)
    return codes, scale


class _Fp8WeightBase(Float32State):
    """Shared storage, decode and state checks (see the module docstring)."""

    def _init_storage(self, weight_shape, bias: bool, fmt: str) -> None:
        if fmt not in FP8_FORMATS:
            raise ValueError(f"{type(self).__name__}: format must be one of {list(FP8_FORMATS)}, got {fmt!r}")
        self.format = fmt
        self.register_buffer("weight_codes", torch.zeros(weight_shape, dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(weight_shape[0]))
        self.register_buffer("bias", torch.zeros(weight_shape[0]) if bias else None)
        self.register_buffer("decode_table", formats.decode_table(fmt).to(torch.bfloat16), persistent=False)

    def _set_from_float(self, weight: torch.Tensor, bias: torch.Tensor | None, where: str) -> None:
        codes, scale = encode_weight(weight, self.format, where)
        if bias is not None:
            numerics.check_finite(bias, "bias", where)
            self.bias.copy_(bias.detach().float())
        self.weight_codes.copy_(codes)
        self.weight_scale.copy_(scale)

    def decoded_weight(self) -> torch.Tensor:
        """The bf16 weight before scaling: decode_table[weight_codes] (one table lookup per weight)."""
        return self.decode_table[self.weight_codes.to(torch.int32)]

    def dequantized_weight(self) -> torch.Tensor:
        """decode(code) * scale in fp32: the weight this layer represents."""
        w = formats.decode(self.weight_codes, self.format)
        return w * self.weight_scale.reshape([-1] + [1] * (w.dim() - 1))

    def _finish(self, y_bf16: torch.Tensor, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
        shape = [1] * y_bf16.dim()
        shape[channel_dim] = -1
        y = y_bf16.float() * self.weight_scale.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.reshape(shape)
        return y.to(x.dtype)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}: the input must be a floating-point tensor, got "
                            f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")

    # -------------------------------------------------------------- state

    def get_extra_state(self):
        return {"format": self.format, **self._layer_extra_state()}

    def set_extra_state(self, state):
        self._set_layer_extra_state(state)

    def _layer_extra_state(self) -> dict:
        return {}

    def _set_layer_extra_state(self, state: dict) -> None:
        pass

    def _layer_extra_state_check(self, check: ExtraStateChecker) -> None:
        pass

    def _load_from_state_dict(self, state_dict, prefix, *args):
        key = prefix + "_extra_state"
        if key in state_dict:
            check = ExtraStateChecker(self, prefix, state_dict[key], set(self.get_extra_state()))
            check.equal("format", self.format, "it fixes how weight_codes decode; build the module with the same "
                                               "format")
            self._layer_extra_state_check(check)
        check_state_tensors(self, prefix, state_dict, exact={"weight_codes": torch.uint8},
                            positive_float=("weight_scale",))
        codes = state_dict.get(prefix + "weight_codes")
        if isinstance(codes, torch.Tensor) and codes.dtype == torch.uint8 and codes.numel():
            finite = torch.isfinite(formats.decode_table(self.format)[codes.long()])
            if not bool(finite.all()):
                index = tuple(int(i) for i in (~finite).nonzero()[0])
                from ._common import module_label

                raise ValueError(f"{module_label(self, prefix)}: load_state_dict: {prefix}weight_codes holds code "
                                 f"{int(codes[index])} at index {index}, which is NaN / Inf in {self.format}; "
                                 "expected finite weights")
        super()._load_from_state_dict(state_dict, prefix, *args)


class Fp8WeightLinear(_Fp8WeightBase):
    """nn.Linear with FP8 weights (1 byte per weight) and float activations; see the module docstring."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, format: str = "e4m3"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_storage((out_features, in_features), bias, format)

    @classmethod
    def from_float(cls, linear: nn.Linear, format: str = "e4m3") -> Fp8WeightLinear:
        """Encode a float nn.Linear; a NaN or infinite weight or bias is refused (ValueError with the index)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Fp8WeightLinear.from_float: expected nn.Linear, got {type(linear).__name__}")
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, format=format)
        q._set_from_float(linear.weight, linear.bias, f"Fp8WeightLinear.from_float({linear!r})")
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Fp8WeightLinear: the input's last dimension is {x.shape[-1]}, expected in_features = "
                             f"{self.in_features}")
        y = F.linear(x.to(torch.bfloat16), self.decoded_weight())
        return self._finish(y, x, -1)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"format={self.format}")


class Fp8WeightConv2d(_Fp8WeightBase):
    """nn.Conv2d (zero padding) with FP8 weights (1 byte per weight) and float activations."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, format: str = "e4m3"):
        super().__init__()
        kh, kw = _pair(kernel_size)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"Fp8WeightConv2d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = ((kh, kw), _pair(stride), _pair(padding),
                                                                      _pair(dilation))
        self._init_storage((out_channels, in_channels // groups, kh, kw), bias, format)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, format: str = "e4m3") -> Fp8WeightConv2d:
        """Encode a float nn.Conv2d with numeric zero padding (other padding is refused)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"Fp8WeightConv2d.from_float: expected nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"Fp8WeightConv2d.from_float: only numeric zero padding is supported, got "
                             f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}")
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, format=format)
        q._set_from_float(conv.weight, conv.bias, f"Fp8WeightConv2d.from_float({conv!r})")
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        y = F.conv2d(x.to(torch.bfloat16), self.decoded_weight(), None, self.stride, self.padding, self.dilation,
                     self.groups)
        return self._finish(y, x, 1)

    def _layer_extra_state(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}

    def _layer_extra_state_check(self, check: ExtraStateChecker) -> None:
        check.int_pair("stride", 1)
        check.int_pair("padding", 0)
        check.int_pair("dilation", 1)

    def _set_layer_extra_state(self, state: dict) -> None:
        self.stride, self.padding, self.dilation = (tuple(state[k]) for k in ("stride", "padding", "dilation"))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, format={self.format}")
