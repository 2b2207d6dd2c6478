"""Int4Conv2d: nn.Conv2d with group-wise int4 weights, computed as im2col + int4_linear.

    y[b, :, i, j] = Int4Linear(patch(x, b, i, j))

patch(x, b, i, j) is the receptive field of output position (i, j) as F.unfold lays it out (K = C_in
* kh * kw values in (channel, kernel row, kernel column) order, zero padding included), followed by
K_pad - K zeros, K_pad = K rounded up to a multiple of group_size; the weight is the conv's weight
reshaped to [C_out, K] and padded with the same zero columns, so the padded groups contribute exactly
0 and a 3-channel stem (K = 27) or a 1x1 conv over 8 channels is stored in int4 like every other
layer. Each output position is one row of the Int4Linear: with activation="int8" (w4a8) each patch
gets its own dynamic int8 scale (quantize_rows) and the result is bit-exact to
reference.int4_linear_w4a8 on the padded patches; with "fp32" / "bf16" (w4a16) it is the fp32 kernel.
A patch holding NaN or +-Inf gives that position the float layer's outputs on the dequantized weight.

The stored model is the Int4Linear child's (``linear``: the pack of the padded [C_out, K_pad] weight
and the fp32 bias) plus the geometry in the extra state; the padding costs K_pad - K nibbles per output
channel. The output is a channels-last view (no copy of the int4_linear result).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import ExtraStateChecker
from .int4 import Int4Linear, check_int4_settings


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def padded_depth(in_channels: int, kernel_size: tuple[int, int], group_size: int) -> int:
    """K_pad: in_channels * kh * kw rounded up to a multiple of group_size."""
    k = in_channels * kernel_size[0] * kernel_size[1]
    return -(-k // group_size) * group_size


def conv_as_linear(conv: nn.Conv2d, group_size: int) -> nn.Linear:
    """The nn.Linear [C_out, K_pad] of a zero-padded, ungrouped conv: its weight reshaped to [C_out, K]
    in F.unfold's order, then K_pad - K zero columns; the same bias."""
    n, k = conv.out_channels, conv.weight[0].numel()
    k_pad = padded_depth(conv.in_channels, _pair(conv.kernel_size), group_size)
    linear = nn.Linear(k_pad, n, bias=conv.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(F.pad(conv.weight.detach().float().reshape(n, k), (0, k_pad - k)))
        if conv.bias is not None:
            linear.bias.copy_(conv.bias.detach().float())
    return linear


def conv_patches(x: torch.Tensor, kernel_size, stride, padding, dilation, k_pad: int) -> torch.Tensor:
    """The padded patches [B * H_out * W_out, K_pad] of x [B, C, H, W] (see the module docstring)."""
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)  # [B, K, L]
    b, k, positions = cols.shape
    if k_pad == k:
        return cols.transpose(1, 2).reshape(b * positions, k)
    rows = cols.new_zeros(b, positions, k_pad)  # one copy: the patches into the zero-padded rows
    rows[:, :, :k].copy_(cols.transpose(1, 2))
    return rows.view(b * positions, k_pad)


def check_int4_conv(where: str, conv: nn.Conv2d) -> None:
    """The convolutions Int4Conv2d takes: ungrouped, with numeric zero padding."""
    if conv.groups != 1:
        raise ValueError(f"{where}: only groups=1 convolutions are supported, got groups={conv.groups}")
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"{where}: only numeric zero padding is supported, got padding={conv.padding!r}, "
                         f"padding_mode={conv.padding_mode!r}")


class Int4Conv2d(nn.Module):
    """Conv2d (groups=1, zero padding) with group-wise int4 weights: im2col + Int4Linear (see the
    module docstring for the exact semantics). Inference only; any float input dtype (the output has
    it)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, *, group_size: int = 32, activation: str = "int8", symmetric: bool = True):
        super().__init__()
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.in_channels, self.out_channels = in_channels, out_channels
        k_pad = padded_depth(in_channels, self.kernel_size, group_size)
        check_int4_settings("Int4Conv2d", k_pad, group_size, activation, symmetric)
        self.linear = Int4Linear(k_pad, out_channels, bias, group_size=group_size, activation=activation,
                                 symmetric=symmetric)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, group_size: int = 32, activation: str = "int8", symmetric: bool = True,
                   rounded: tuple[torch.Tensor, torch.Tensor] | None = None) -> Int4Conv2d:
        """Quantize a float nn.Conv2d's weight (reshaped and zero-padded to [C_out, K_pad]) group-wise to
        int4 and pack it; `rounded` as Int4Linear.from_float (for the padded weight)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"Int4Conv2d.from_float: expected nn.Conv2d, got {type(conv).__name__}")
        where = f"Int4Conv2d.from_float({conv!r})"
        check_int4_conv(where, conv)
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.bias is not None, group_size=group_size, activation=activation, symmetric=symmetric)
        layer.linear = Int4Linear.from_float(conv_as_linear(conv, group_size), group_size, activation, symmetric,
                                             rounded=rounded)
        return layer.to(conv.weight.device)

    @property
    def group_size(self) -> int:
        return self.linear.group_size

    @property
    def activation(self) -> str:
        return self.linear.activation

    def dequantized_weight(self) -> torch.Tensor:
        """The fp32 conv weight [C_out, C_in, kh, kw] the layer stands for (padding columns dropped)."""
        k = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return self.linear.dequantized_weight()[:, :k].reshape(self.out_channels, self.in_channels,
                                                                 *self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Int4Conv2d: x must be [B, {self.in_channels}, H, W], got shape {list(x.shape)}")
        b, _, h, w = x.shape
        kh, kw = self.kernel_size
        out_h = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        out_w = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        rows = conv_patches(x, self.kernel_size, self.stride, self.padding, self.dilation, self.linear.in_features)
        y = self.linear(rows)  # [B * out_h * out_w, C_out]
        return y.reshape(b, out_h, out_w, self.out_channels).permute(0, 3, 1, 2)

    def stored_bytes(self) -> int:
        return self.linear.stored_bytes()

    def fp32_bytes(self) -> int:
        k = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return 4 * (self.out_channels * k + (self.out_channels if self.linear.bias is not None else 0))

    def get_extra_state(self):
        return {"in_channels": self.in_channels, "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation)}

    def set_extra_state(self, state):
        pass  # checked by _load_from_state_dict: the geometry is fixed at construction

    def _load_from_state_dict(self, state_dict, prefix, *args):
        key = prefix + "_extra_state"
        if key in state_dict:
            state = state_dict[key]
            check = ExtraStateChecker(self, prefix, state,
                                      {"in_channels", "kernel_size", "stride", "padding", "dilation"})
            check.int("in_channels", 1)
            check.equal("in_channels", self.in_channels, "build it with the conv's in_channels")
            for name, lo in (("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1)):
                check.int_pair(name, lo)
                if tuple(state[name]) != getattr(self, name):
                    check.fail(name, f"{list(getattr(self, name))} as this module was built (build it with the "
                                     f"conv's {name})")
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}")
