"""The integer-only glue of a converted network: Quantize / DeQuantize at the edges, residual
addition of two int8 tensors with their own scales, ReLU as a clamp, and int8 pooling."""

from __future__ import annotations

import torch
from torch import nn

from .. import numerics, ops, reference
from ._common import DTYPE_NAMES, DTYPES, ExtraStateChecker, Float32State, check_state_tensors, in_reference_mode

_INT8_ADD = torch.ops.compress_kernels.int8_add.default


class _QParams(Float32State):
    """Holds one tensor's qparams: scale as a buffer (kept fp32 by dtype conversions), zero point /
    dtype as extra state, both checked at load_state_dict."""

    def __init__(self, scale: float = 1.0, zero_point: int = 0, dtype: torch.dtype = torch.uint8):
        """scale: finite and > 0; zero_point: an integer in dtype's range (ValueError / TypeError
        naming the argument otherwise)."""
        super().__init__()
        where = type(self).__name__
        self.register_buffer("scale", torch.tensor(numerics.check_scale(scale, "scale", where)))
        self.zero_point, self.dtype = numerics.check_zero_point(zero_point, dtype, "zero_point", where), dtype

    def get_extra_state(self):
        return {"zero_point": self.zero_point, "dtype": DTYPE_NAMES[self.dtype]}

    def set_extra_state(self, state):
        self.zero_point, self.dtype = state["zero_point"], DTYPES[state["dtype"]]

    def _load_from_state_dict(self, state_dict, prefix, *args):
        if prefix + "_extra_state" in state_dict:
            check = ExtraStateChecker(self, prefix, state_dict[prefix + "_extra_state"], {"zero_point", "dtype"})
            check.int("zero_point", *numerics.dtype_range(DTYPES[check.choice("dtype", tuple(DTYPES))]))
        check_state_tensors(self, prefix, state_dict, positive_float=("scale",))
        super()._load_from_state_dict(state_dict, prefix, *args)


class Quantize(_QParams):
    """float -> integer: clamp(round_half_even(x / scale) + zero_point) as dtype (the model input)."""

    def forward(self, x):
        return numerics.quantize(x, self.scale, self.zero_point, self.dtype)

    def extra_repr(self):
        return f"{DTYPE_NAMES[self.dtype]}(scale={self.scale.item():.4g}, zp={self.zero_point})"


class DeQuantize(_QParams):
    """integer -> float: (q - zero_point) * scale (the model output)."""

    def forward(self, q):
        return numerics.dequantize(q, self.scale, self.zero_point)

    def extra_repr(self):
        return f"scale={self.scale.item():.4g}, zp={self.zero_point}"


class QuantReLU(nn.Module):
    """ReLU on an integer tensor: max(q, zero_point) (same qparams in and out)."""

    def __init__(self, zero_point: int = 0):
        """zero_point: an integer in [-2^31, 2^31 - 1] (the clamp applies to any integer dtype)."""
        super().__init__()
        self.zero_point = numerics.check_zero_point(zero_point, torch.int32, "zero_point", "QuantReLU")

    def get_extra_state(self):
        return {"zero_point": self.zero_point}

    def set_extra_state(self, state):
        self.zero_point = state["zero_point"]

    def _load_from_state_dict(self, state_dict, prefix, *args):
        if prefix + "_extra_state" in state_dict:  # int8 or uint8 activations
            ExtraStateChecker(self, prefix, state_dict[prefix + "_extra_state"], {"zero_point"}).int("zero_point",
                                                                                                   -128, 255)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, q):
        return q.clamp(min=self.zero_point)


class QuantMaxPool2d(nn.MaxPool2d):
    """Max pooling on the integers (exact; same qparams in and out; padding never wins). Runs on an
    int32 copy: torch's int8 / uint8 max_pool2d checks C * H * W against the element type's range
    (255 for uint8) and refuses every realistic feature map."""

    def forward(self, q):
        return super().forward(q.to(torch.int32)).to(q.dtype)


class QuantAvgPool2d(nn.Module):
    """Average pooling on the integers with the same qparams in and out: the window sum in int32,
    then division rounded half up, floor((2 * sum + count) / (2 * count)). Supports the global
    average (output 1x1, e.g. AdaptiveAvgPool2d(1)) and unpadded AvgPool2d windows."""

    def __init__(self, kernel_size=None, stride=None):
        super().__init__()
        self.kernel_size = kernel_size  # None: global average over H and W
        self.stride = stride if stride is not None else kernel_size

    def get_extra_state(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride}

    def set_extra_state(self, state):
        self.kernel_size, self.stride = state["kernel_size"], state["stride"]

    def _load_from_state_dict(self, state_dict, prefix, *args):
        if prefix + "_extra_state" in state_dict:
            check = ExtraStateChecker(self, prefix, state_dict[prefix + "_extra_state"], {"kernel_size", "stride"})
            for name in ("kernel_size", "stride"):
                v = check.state[name]
                if v is None and check.state["kernel_size"] is None:
                    continue  # global average
                ok = (isinstance(v, int) and not isinstance(v, bool) and v >= 1) or (
                    isinstance(v, (tuple, list)) and len(v) == 2
                    and all(isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in v))
                if not ok:
                    check.fail(name, "an int >= 1 or a pair of them (kernel_size None: the global average, "
                                     "stride None too)")
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, q):
        if self.kernel_size is None:
            total = q.to(torch.int32).sum(dim=(2, 3), keepdim=True)
            count = q.shape[2] * q.shape[3]
        else:
            kh, kw = (self.kernel_size, self.kernel_size) if isinstance(self.kernel_size, int) else self.kernel_size
            sh, sw = (self.stride, self.stride) if isinstance(self.stride, int) else self.stride
            total = q.to(torch.int32).unfold(2, kh, sh).unfold(3, kw, sw).sum(dim=(-1, -2))
            count = kh * kw
        return torch.div(2 * total + count, 2 * count, rounding_mode="floor").to(q.dtype)

    def extra_repr(self):
        return "global" if self.kernel_size is None else f"kernel_size={self.kernel_size}, stride={self.stride}"


def _input_zero_point(zero_point, name: str, where: str) -> int:
    """An integer zero point of an int8 or uint8 input: in [-128, 255]."""
    value = numerics.check_zero_point(zero_point, torch.int32, name, where)
    if not -128 <= value <= 255:
        raise ValueError(f"{where}: {name} must be an integer in [-128, 255] (int8 or uint8 input), got {value}")
    return value


class QuantAdd(Float32State):
    """Residual addition of two integer tensors with their own qparams, TFLite's ADD exactly:
    each input is shifted left by 20 bits and rescaled by s_i / (2 max(s_a, s_b)), the int32 sum is
    rescaled by 2 max(s_a, s_b) / (2^20 s_y), then zero point and clamp (ReLU fused as the clamp).
    Every rescale is a fixed-point multiplier (double rounding); no floating point at run time."""

    LEFT_SHIFT = 20

    def __init__(self):
        super().__init__()
        for name in ("a", "b", "out"):
            self.register_buffer(f"m0_{name}", torch.zeros(1, dtype=torch.int32))
            self.register_buffer(f"shift_{name}", torch.zeros(1, dtype=torch.int32))
        self.register_buffer("scales", torch.ones(3))  # s_a, s_b, s_y (for reporting / dequantizing)
        self.zero_points = (0, 0, 0)
        self.qmin, self.qmax = 0, 255
        self.output_dtype = torch.uint8

    @classmethod
    def from_qparams(cls, a: tuple[float, int], b: tuple[float, int], out: tuple[float, int],
                     output_dtype: torch.dtype = torch.uint8, activation: str | None = None) -> QuantAdd:
        """a, b, out: (scale, zero_point) of each input and of the output. Scales must be finite and
        > 0; the input zero points integers in [-128, 255] (int8 or uint8 inputs; the kernel checks
        each against its tensor's dtype), the output one in output_dtype's range."""
        where = "QuantAdd.from_qparams"
        checked = []
        for name, (scale, zero_point) in (("a", a), ("b", b)):
            checked.append((numerics.check_scale(scale, f"{name} scale", where),
                            _input_zero_point(zero_point, f"{name} zero_point", where)))
        a, b = checked
        out = (numerics.check_scale(out[0], "out scale", where),
               numerics.check_zero_point(out[1], output_dtype, "out zero_point", where))
        q = cls()
        twice_max = 2 * max(a[0], b[0])
        for name, real in (("a", a[0] / twice_max), ("b", b[0] / twice_max),
                           ("out", twice_max / ((1 << cls.LEFT_SHIFT) * out[0]))):
            m0, shift = ops.quantize_multiplier(real)
            getattr(q, f"m0_{name}").copy_(m0.reshape(1))
            getattr(q, f"shift_{name}").copy_(shift.reshape(1))
        q.scales.copy_(torch.tensor([a[0], b[0], out[0]]))
        q.zero_points = (int(a[1]), int(b[1]), int(out[1]))
        q.output_dtype = output_dtype
        q.qmin, q.qmax = numerics.activation_clamp(activation, out[0], int(out[1]), output_dtype)
        return q

    def get_extra_state(self):
        return {"zero_points": list(self.zero_points), "qmin": self.qmin, "qmax": self.qmax,
                "output_dtype": DTYPE_NAMES[self.output_dtype]}

    def _load_from_state_dict(self, state_dict, prefix, *args):
        if prefix + "_extra_state" in state_dict:
            check = ExtraStateChecker(self, prefix, state_dict[prefix + "_extra_state"],
                                      {"zero_points", "qmin", "qmax", "output_dtype"})
            lo, hi = numerics.dtype_range(DTYPES[check.choice("output_dtype", ("int8", "uint8"))])
            zps = check.state["zero_points"]
            if (not isinstance(zps, (list, tuple)) or len(zps) != 3
                    or any(isinstance(z, bool) or not isinstance(z, int) or not -128 <= z <= 255 for z in zps)
                    or not lo <= zps[2] <= hi):
                check.fail("zero_points", f"three ints (a, b: int8 or uint8 zero points; out in [{lo}, {hi}])")
            check.int("qmax", check.int("qmin", lo, hi), hi)
        names = [f"{kind}_{x}" for kind in ("m0", "shift") for x in ("a", "b", "out")]
        check_state_tensors(self, prefix, state_dict, exact={n: torch.int32 for n in names},
                            positive_float=("scales",),
                            int_ranges={**{f"m0_{x}": (0, 2**31 - 1) for x in ("a", "b", "out")},
                                        **{f"shift_{x}": (-31, 30) for x in ("a", "b", "out")}})
        super()._load_from_state_dict(state_dict, prefix, *args)

    def set_extra_state(self, state):
        self.zero_points = tuple(state["zero_points"])
        self.qmin, self.qmax, self.output_dtype = state["qmin"], state["qmax"], DTYPES[state["output_dtype"]]

    def forward(self, a, b):
        # On the CPU the op itself, not the ops.int8_add wrapper: the module's state was checked when it
        # was built or loaded, and the op checks it again in C++ (the wrapper's conversions cost more
        # than the addition of a small feature map).
        add = (reference.int8_add if in_reference_mode() else
               _INT8_ADD if a.device.type == "cpu" else ops.int8_add)
        za, zb, zy = self.zero_points
        return add(a, za, self.m0_a, self.shift_a, b, zb, self.m0_b, self.shift_b, self.m0_out, self.shift_out, zy,
                   self.qmin, self.qmax, self.output_dtype, self.LEFT_SHIFT)

    def extra_repr(self):
        return (f"scales={[round(v, 5) for v in self.scales.tolist()]}, zero_points={list(self.zero_points)}, "
                f"clamp=[{self.qmin}, {self.qmax}]")
