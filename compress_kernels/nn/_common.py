"""Shared pieces of the integer-only modules: weight / bias / multiplier quantization, dtype names
and the reference mode switch."""

from __future__ import annotations

import contextlib

import torch

from .. import numerics, ops
from ..sparse24_layout import groups_over_two, weight_from_rows, weight_rows

DTYPES = {"int8": torch.int8, "uint8": torch.uint8, "int32": torch.int32}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

_REFERENCE_MODE = [False]


@contextlib.contextmanager
def reference_mode():
    """Inside this context the integer modules compute with compress_kernels.reference (the slow,
    obvious int64 specification) instead of the kernels. Tests run a converted model both ways and
    require identical integers."""
    _REFERENCE_MODE.append(True)
    try:
        yield
    finally:
        _REFERENCE_MODE.pop()


def in_reference_mode() -> bool:
    return _REFERENCE_MODE[-1]


def run_exact(exact: tuple, x: torch.Tensor) -> torch.Tensor:
    """The forward of a QAT module in qat_exact_mode: exact = (the integer module its conversion builds,
    use_kernels), run on the kernels or in reference_mode."""
    module, use_kernels = exact
    if use_kernels:
        return module(x)
    with reference_mode():
        return module(x)


def quantize_layer(weight: torch.Tensor, bias: torch.Tensor | None, input_scale: float, output_scale: float,
                   per_channel: bool, weight_bits: int = 8, weight_scale: torch.Tensor | None = None):
    """Symmetric weights of `weight_bits` bits (narrow range [-(2^(b-1) - 1), 2^(b-1) - 1], stored as
    int8), int32 bias at scale s_x * s_w[n] (round half to even, saturated), and the fixed-point
    multipliers s_x * s_w[n] / s_y as (m0, shift). `weight_scale` (one per output channel, or one)
    replaces the max|w| / qmax scale, e.g. a scale learned by quantization-aware training.
    Returns (w_q, w_scale, bias_q or None, m0, shift)."""
    if not 2 <= weight_bits <= 8:
        raise ValueError(f"weight_bits must be in [2, 8], got {weight_bits}")
    if weight_scale is None:
        w_q, w_scale = numerics.quantize_weight(weight, per_channel=per_channel, bits=weight_bits)
    else:
        qmax = 2 ** (weight_bits - 1) - 1
        w_scale = weight_scale.detach().float().reshape(-1)
        shape = [-1] + [1] * (weight.dim() - 1)
        w_q = torch.round(weight.detach().float() / w_scale.reshape(shape)).clamp(-qmax, qmax).to(torch.int8)
    acc_scale = torch.tensor(float(input_scale), dtype=torch.float64) * w_scale.double()
    m0, shift = ops.quantize_multiplier(acc_scale / float(output_scale))
    bias_q = None
    if bias is not None:
        b = torch.round(bias.detach().double() / acc_scale.expand(weight.shape[0]))
        bias_q = b.clamp(-(2**31), 2**31 - 1).to(torch.int32)
    return w_q, w_scale, bias_q, m0.reshape(-1), shift.reshape(-1)


def fold_batchnorm(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of conv followed by bn in evaluation mode:
    w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta."""
    factor = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight.detach() * factor.reshape(-1, 1, 1, 1)
    b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return w, (b - bn.running_mean) * factor + bn.bias.detach()


# ---------------------------------------------------------------- state checks
#
# load_state_dict refuses tampered or unknown state before it touches the module: every module that
# keeps modes or switches as extra state checks that dict (unknown or missing keys, wrong types,
# out-of-range values) and the dtypes / values of its integer buffers, raising with the module's
# class and path, the key, the value and what is expected. Shape mismatches of buffers are reported
# by torch itself ("size mismatch for ...").


def module_label(module: torch.nn.Module, prefix: str) -> str:
    """'QuantLinear at "fc"' (the module's path in the state dict being loaded)."""
    return f"{type(module).__name__} at {(prefix[:-1] if prefix else '<root>')!r}"


class WrapsLinear:
    """in_features / out_features of a module that computes through an inner `self.linear` (a wrapper that
    quantizes around it, or a QAT form of it)."""

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features


class ExtraStateChecker:
    """Checks one module's `_extra_state` dict at load time; every failure names the module, the
    key, the value and the rule. `checked` collects the validated values."""

    def __init__(self, module: torch.nn.Module, prefix: str, state, expected_keys):
        self.label = f"{module_label(module, prefix)}: load_state_dict"
        self.key = prefix + "_extra_state"
        if not isinstance(state, dict):
            raise TypeError(f"{self.label}: {self.key} must be a dict, got {type(state).__name__} {state!r}")
        unknown = sorted(set(state) - set(expected_keys), key=str)
        if unknown:
            raise ValueError(f"{self.label}: {self.key} has unknown key(s) {unknown}; expected exactly "
                             f"{sorted(expected_keys)}")
        missing = sorted(set(expected_keys) - set(state))
        if missing:
            raise ValueError(f"{self.label}: {self.key} lacks key(s) {missing}; expected exactly "
                             f"{sorted(expected_keys)}")
        self.state = state

    def fail(self, name: str, rule: str, error: type = ValueError):
        raise error(f"{self.label}: {self.key}[{name!r}] = {self.state[name]!r}: expected {rule}")

    def bool(self, name: str) -> bool:
        if not isinstance(self.state[name], bool):
            self.fail(name, "a bool", TypeError)
        return self.state[name]

    def int(self, name: str, lo: int | None = None, hi: int | None = None) -> int:
        v = self.state[name]
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(name, "an int", TypeError)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.fail(name, f"an int in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]")
        return v

    def choice(self, name: str, choices):
        v = self.state[name]
        if not any(type(v) is type(c) and v == c for c in choices):
            self.fail(name, f"one of {list(choices)}")
        return v

    def number(self, name: str, rule: str, ok) -> float:
        v = self.state[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(name, f"a number {rule}", TypeError)
        if v != v or not ok(v):
            self.fail(name, f"a number {rule}")
        return float(v)

    def int_pair(self, name: str, lo: int) -> tuple[int, int]:
        v = self.state[name]
        if (not isinstance(v, (tuple, list)) or len(v) != 2
                or any(isinstance(e, bool) or not isinstance(e, int) or e < lo for e in v)):
            self.fail(name, f"a pair of ints >= {lo}")
        return tuple(v)

    def equal(self, name: str, current, hint: str):
        if self.state[name] != current:
            self.fail(name, f"{current!r} as this module was built ({hint})")
        return current


def check_state_tensors(module: torch.nn.Module, prefix: str, state_dict: dict, *, exact: dict | None = None,
                        positive_float: tuple = (), int_ranges: dict | None = None) -> None:
    """Before loading: tensors of `exact` {name: dtype} must have that dtype (an int8 weight loaded
    from a float tensor would be silently truncated by copy_); `positive_float` names must be
    floating point, finite and > 0 (scales); `int_ranges` {name: (lo, hi)} bound integer values."""
    label = f"{module_label(module, prefix)}: load_state_dict"
    for name, dtype in (exact or {}).items():
        t = state_dict.get(prefix + name)
        if isinstance(t, torch.Tensor) and t.dtype != dtype:
            raise TypeError(f"{label}: {prefix + name} has dtype {t.dtype}, expected {dtype}")
    for name in positive_float:
        t = state_dict.get(prefix + name)
        if not isinstance(t, torch.Tensor):
            continue
        if not t.is_floating_point():
            raise TypeError(f"{label}: {prefix + name} has dtype {t.dtype}, expected a floating-point scale")
        bad = ~(torch.isfinite(t) & (t > 0))
        if bool(bad.any()):
            raise ValueError(f"{label}: {prefix + name} holds {t[bad].flatten()[0].item()!r}, expected finite "
                             "scales > 0")
    for name, (lo, hi) in (int_ranges or {}).items():
        t = state_dict.get(prefix + name)
        if isinstance(t, torch.Tensor) and t.numel():
            bad = (t < lo) | (t > hi)
            if bool(bad.any()):
                raise ValueError(f"{label}: {prefix + name} holds {int(t[bad].flatten()[0])}, expected values in "
                                 f"[{lo}, {hi}]")


class Float32State(torch.nn.Module):
    """Floating-point dtype conversions (.double(), .half(), .bfloat16(), .to(dtype)) keep this
    module's own floating-point parameters and buffers in float32: they are quantization parameters
    (scales, ranges) that the kernels read as fp32, not activations. Device moves apply as usual.
    Float outputs follow the input's dtype where the module's forward says so."""

    def _apply(self, fn, recurse=True):
        if recurse:
            for child in self.children():
                child._apply(fn)

        def same_dtype(t: torch.Tensor) -> torch.Tensor:
            # the conversion's device move without its dtype change (converting and converting back
            # would round the scales through the narrower type)
            out = fn(t)
            if t.is_floating_point() and out.dtype != t.dtype:
                return t.to(device=out.device)
            return out

        return super()._apply(same_dtype, recurse=False)


class IntegerLayer(Float32State):
    """State shared by the integer-only layers (QuantLinear, QuantConv2d): the int8 weight and its
    scales, the int32 bias, the fixed-point multipliers, the input / output qparams and the output
    clamp, plus the packed weight, rebuilt after load_state_dict. Subclasses say how to pack a dense
    weight (`_pack_dense`) and add their own extra state (`_layer_extra_state` / `_set_layer_extra_state`).

    2:4 mode (`sparse24_()`): the weight, seen as [out_channels, K] by sparse24_layout.weight_rows
    (K = in_features, or kh x kw x in_channels: groups of four input channels at one kernel tap),
    has at most two non-zeros in every group of four along K; the layer then stores only the compressed
    int8 values and the metadata
    (`weight_values` [N, K/2], `weight_meta` [N, ceil(K/8)]; `weight_q` is rebuilt from them and not
    saved) and runs the int8 2:4 kernel, which computes the same integers as the dense one."""

    def _init_integer_state(self, weight_shape, out_channels: int, bias: bool, per_channel: bool,
                            input_dtype: torch.dtype, output_dtype: torch.dtype, rounding: str,
                            sparse24: bool = False) -> None:
        from .. import numerics

        self.per_channel, self.rounding = per_channel, rounding
        self.input_dtype, self.output_dtype = input_dtype, output_dtype
        self.sparse24 = sparse24
        channels = out_channels if per_channel else 1
        self.register_buffer("weight_q", torch.zeros(*weight_shape, dtype=torch.int8), persistent=not sparse24)
        if sparse24:
            values, meta = ops.sparse24_compress(weight_rows(self.weight_q))
            self.register_buffer("weight_values", values)
            self.register_buffer("weight_meta", meta)
        self.register_buffer("weight_scale", torch.ones(channels))
        self.register_buffer("bias_q", torch.zeros(out_channels, dtype=torch.int32) if bias else None)
        self.register_buffer("m0", torch.zeros(channels, dtype=torch.int32))
        self.register_buffer("shift", torch.zeros(channels, dtype=torch.int32))
        self.register_buffer("input_scale", torch.ones(()))
        self.register_buffer("output_scale", torch.ones(()))
        self.input_zero_point = 0
        self.output_zero_point = 0
        self.qmin, self.qmax = numerics.dtype_range(output_dtype)
        self.register_buffer("packed_weight", self._pack(self.weight_q), persistent=False)

    def _pack(self, weight_q: torch.Tensor) -> torch.Tensor:
        if self.sparse24:
            return ops.sparse24_int8_pack(self.weight_values.cpu(), self.weight_meta.cpu())
        return self._pack_dense(weight_q)

    def _pack_dense(self, weight_q: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _repack(self) -> None:
        if self.sparse24:  # weight_q -> compressed values + metadata (refuses a weight that is not 2:4)
            values, meta = ops.sparse24_compress(weight_rows(self.weight_q.cpu()).contiguous())
            self.weight_values.copy_(values)
            self.weight_meta.copy_(meta)
        self.packed_weight = self._pack(self.weight_q.cpu()).to(self.weight_q.device)

    def sparse24_reason(self) -> str | None:
        """Why this layer cannot run the int8 2:4 kernel (None when it can)."""
        w = weight_rows(self.weight_q)
        if getattr(self, "groups", 1) != 1:
            return f"grouped convolution (groups={self.groups})"
        if w.shape[1] % 4 != 0:
            return f"K = {w.shape[1]} is not a multiple of 4"
        dense_groups = groups_over_two(self.weight_q)
        if dense_groups:
            return f"the weight is not 2:4 along K ({dense_groups} groups of four with more than two non-zeros)"
        return None

    def sparse24_(self) -> IntegerLayer:
        """Switch to 2:4 mode (see the class docstring); raises ValueError with sparse24_reason()
        when the weight does not allow it."""
        if self.sparse24:
            return self
        reason = self.sparse24_reason()
        if reason is not None:
            raise ValueError(f"{type(self).__name__}.sparse24_: {reason}")
        w = weight_rows(self.weight_q)
        n, k = w.shape
        self.sparse24 = True
        self._non_persistent_buffers_set.add("weight_q")
        # filled by _repack, which compresses weight_q
        self.register_buffer("weight_values", w.new_empty((n, k // 2)))
        self.register_buffer("weight_meta", w.new_empty((n, (k + 7) // 8), dtype=torch.uint8))
        self._repack()
        return self

    def _integer_matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """[M, K] integer input -> [M, N] integer output through the (dense or 2:4) int8 linear kernel
        with this layer's requantization."""
        args = (self.input_zero_point, self.packed_weight)
        tail = (self.bias_q, self.m0, self.shift, self.output_zero_point, self.qmin, self.qmax, self.output_dtype,
                self.rounding)
        if self.sparse24:
            return ops.sparse24_int8_linear(x2, *args, self.weight_meta, *tail)
        if x2.device.type == "cpu":  # the op itself: the state was checked at build / load (see QuantConv2d.forward)
            return torch.ops.compress_kernels.int8_linear.default(x2, *args, *tail)
        return ops.int8_linear(x2, *args, *tail)

    def _set_static_qparams(self, input_scale: float, input_zero_point: int, output_scale: float,
                            output_zero_point: int, activation: str | None, m0, shift, bias_q) -> None:
        """The static (integer-only) part of from_float: qparams, fused-activation clamp, multipliers."""
        from .. import numerics

        self.input_scale.fill_(float(input_scale))
        self.output_scale.fill_(float(output_scale))
        self.input_zero_point, self.output_zero_point = int(input_zero_point), int(output_zero_point)
        self.qmin, self.qmax = numerics.activation_clamp(activation, float(output_scale), int(output_zero_point),
                                                         self.output_dtype)
        self.m0.copy_(m0)
        self.shift.copy_(shift)
        if bias_q is not None:
            self.bias_q.copy_(bias_q)

    def _layer_extra_state(self) -> dict:
        return {}

    def _set_layer_extra_state(self, state: dict) -> None:
        pass

    def get_extra_state(self):
        return {"per_channel": self.per_channel, "rounding": self.rounding, "sparse24": self.sparse24,
                "input_dtype": DTYPE_NAMES[self.input_dtype], "output_dtype": DTYPE_NAMES[self.output_dtype],
                "input_zero_point": self.input_zero_point, "output_zero_point": self.output_zero_point,
                "qmin": self.qmin, "qmax": self.qmax, **self._layer_extra_state()}

    def _layer_extra_state_check(self, check: ExtraStateChecker) -> None:
        """Subclasses check their own extra-state keys (those of _layer_extra_state)."""

    def _check_extra_state(self, state, prefix: str) -> None:
        from .. import numerics

        keys = {"per_channel", "rounding", "sparse24", "input_dtype", "output_dtype", "input_zero_point",
                "output_zero_point", "qmin", "qmax", *self._layer_extra_state()}
        check = ExtraStateChecker(self, prefix, state, keys)
        check.bool("sparse24")
        check.equal("sparse24", self.sparse24, "build it with sparse24=...")
        check.bool("per_channel")
        check.equal("per_channel", self.per_channel, "build it with per_channel=...; the scales' shapes depend on it")
        check.choice("rounding", ("double", "single"))
        in_lo, in_hi = numerics.dtype_range(DTYPES[check.choice("input_dtype", ("int8", "uint8"))])
        out_lo, out_hi = numerics.dtype_range(DTYPES[check.choice("output_dtype", ("int8", "uint8", "int32"))])
        check.int("input_zero_point", in_lo, in_hi)
        check.int("output_zero_point", out_lo, out_hi)
        qmin = check.int("qmin", out_lo, out_hi)
        check.int("qmax", qmin, out_hi)
        self._layer_extra_state_check(check)

    def set_extra_state(self, state):
        # checked by _load_from_state_dict before any of the module is changed
        self.per_channel, self.rounding = state["per_channel"], state["rounding"]
        self.input_dtype, self.output_dtype = DTYPES[state["input_dtype"]], DTYPES[state["output_dtype"]]
        self.input_zero_point, self.output_zero_point = state["input_zero_point"], state["output_zero_point"]
        self.qmin, self.qmax = state["qmin"], state["qmax"]
        self._set_layer_extra_state(state)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if prefix + "_extra_state" in state_dict:
            self._check_extra_state(state_dict[prefix + "_extra_state"], prefix)
        check_state_tensors(self, prefix, state_dict,
                            exact={"weight_q": torch.int8, "weight_values": torch.int8, "weight_meta": torch.uint8,
                                   "bias_q": torch.int32, "m0": torch.int32, "shift": torch.int32},
                            positive_float=("weight_scale", "input_scale", "output_scale"),
                            int_ranges={"m0": (0, 2**31 - 1), "shift": (-31, 30)})
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if self.sparse24:  # weight_q is not saved in 2:4 mode: rebuild it from the compressed weight
            dense = ops.sparse24_decompress(self.weight_values.cpu(), self.weight_meta.cpu())
            self.weight_q.copy_(weight_from_rows(dense, self.weight_q.shape))
        self._repack()
