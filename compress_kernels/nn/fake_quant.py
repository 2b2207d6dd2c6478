"""FakeQuantize: the fake-quantization module that quantization-aware training inserts on weights
and activations, on the fused fake_quant / fake_quant_observe ops."""

from __future__ import annotations

import torch
from torch import nn

from .. import ops, reference
from ._common import ExtraStateChecker, Float32State, check_state_tensors

OBSERVERS = ("ema", "fixed", "lsq")


class FakeQuantize(Float32State):
    """y = (clamp(round_half_even(x / s) + z, qmin, qmax) - z) * s with a straight-through gradient.

    Granularity: per tensor (``axis=None``) or per channel along ``axis`` with ``channels``
    entries (e.g. ``axis=0`` for a conv / linear weight).

    ``observer`` chooses where (s, z) come from:

    * ``"ema"``: an exponential-moving-average min/max observer (``momentum``; the first batch
      initializes it), updated and applied in one fused op (``fake_quant_observe``); qparams as
      torch.ao's MinMaxObserver, asymmetric or ``symmetric``. ``disable_observer()`` freezes
      them (the usual end of QAT).
    * ``"fixed"``: ``scale`` / ``zero_point`` given, never changed.
    * ``"lsq"``: ``scale`` is a learnable ``nn.Parameter`` trained with the LSQ gradient (Esser et
      al.; gradient scale ``grad_factor``, default 1 / sqrt(elements per scale * qmax)); the
      zero point is learnable too with ``learnable_zero_point=True``. Unless ``scale`` is
      given, both are initialized from the first batch's min/max.

    ``forward(x, mask=None)``: ``mask`` (bool, x's shape) keeps pruned weights exactly zero, in
    the output and the gradient. ``enable_fake_quant(False)`` makes the module the identity
    (the observer still runs when enabled). Everything that defines the quantizer is in the state
    dict: the qparams and observer ranges as buffers / parameters, the settings and switches
    (``observer_enabled``, ``fake_quant_enabled``, qmin / qmax, symmetric, momentum, grad_factor)
    as extra state, so a frozen module loads frozen. ``load_state_dict`` refuses a state whose
    observer / axis / channels / learnable_zero_point differ from the module's (they fix its
    buffers), unknown keys and out-of-range values. Floating-point dtype conversions (``.half()``,
    ``.double()``, ...) keep the qparams and ranges in fp32 (nn._common.Float32State); the output
    has the input's dtype.
    """

    def __init__(self, qmin: int = -128, qmax: int = 127, *, axis: int | None = None, channels: int = 1,
                 observer: str = "ema", symmetric: bool = False, momentum: float = 0.01,
                 scale: float | torch.Tensor | None = None, zero_point: int | torch.Tensor | None = None,
                 learnable_zero_point: bool = False, grad_factor: float | None = None):
        super().__init__()
        if observer not in OBSERVERS:
            raise ValueError(f"FakeQuantize: observer must be one of {OBSERVERS}, got {observer!r}")
        if not qmin < qmax:
            raise ValueError(f"FakeQuantize: qmin must be < qmax, got qmin={qmin} qmax={qmax}")
        if axis is None and channels != 1:
            raise ValueError(f"FakeQuantize: channels={channels} needs a channel axis (axis=None is per tensor)")
        if channels < 1:
            raise ValueError(f"FakeQuantize: channels must be >= 1, got {channels}")
        if observer == "fixed" and scale is None:
            raise ValueError('FakeQuantize: observer="fixed" needs a scale')
        if not 0 < momentum <= 1:
            raise ValueError(f"FakeQuantize: momentum must be in (0, 1], got {momentum}")
        self.qmin, self.qmax, self.axis, self.channels = qmin, qmax, axis, channels
        self.observer, self.symmetric, self.momentum = observer, symmetric, momentum
        self.learnable_zero_point = learnable_zero_point and observer == "lsq"
        self.grad_factor = grad_factor
        self.fake_quant_enabled = True
        self.observer_enabled = observer == "ema"

        if symmetric:
            default_zp = 0 if qmin < 0 else (qmin + qmax + 1) // 2
        else:
            default_zp = min(max(0, qmin), qmax)
        s = (torch.ones(channels) if scale is None
             else torch.as_tensor(scale, dtype=torch.float32).expand(channels).clone())
        z = (torch.full((channels,), default_zp, dtype=torch.int32) if zero_point is None
             else torch.as_tensor(zero_point).expand(channels).to(torch.int32).clone())
        if observer == "lsq":
            self.scale = nn.Parameter(s)
            if self.learnable_zero_point:
                self.zero_point = nn.Parameter(z.float())
            else:
                self.register_buffer("zero_point", z)
            # 0 until the first batch set the qparams (when no scale was given).
            self.register_buffer("initialized", torch.tensor(int(scale is not None), dtype=torch.uint8))
        else:
            self.register_buffer("scale", s)
            self.register_buffer("zero_point", z)
        if observer == "ema":
            self.register_buffer("running_min", torch.full((channels,), float("inf")))
            self.register_buffer("running_max", torch.full((channels,), float("-inf")))

    # -------------------------------------------------------------- switches

    def enable_observer(self, enabled: bool = True) -> FakeQuantize:
        self.observer_enabled = bool(enabled) and self.observer == "ema"
        return self

    def disable_observer(self) -> FakeQuantize:
        return self.enable_observer(False)

    def enable_fake_quant(self, enabled: bool = True) -> FakeQuantize:
        self.fake_quant_enabled = bool(enabled)
        return self

    def disable_fake_quant(self) -> FakeQuantize:
        return self.enable_fake_quant(False)

    # -------------------------------------------------------------- qparams

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale fp32, zero_point int32) as the forward applies them (one entry per channel)."""
        scale, zero_point = self._qparams()
        return scale.detach().float().clone(), torch.round(zero_point.detach()).to(torch.int32)

    def _qparams(self):
        if self.observer != "lsq":
            return self.scale, self.zero_point
        # The LSQ scale stays positive whatever the optimizer does (|s|, at least fp32 eps); the
        # learnable zero point is kept in range. Both are identities (gradient 1) in the normal case.
        scale = self.scale.abs().clamp(min=torch.finfo(torch.float32).eps)
        zero_point = self.zero_point.clamp(self.qmin, self.qmax) if self.learnable_zero_point else self.zero_point
        return scale, zero_point

    @torch.no_grad()
    def _initialize_from(self, x: torch.Tensor) -> None:
        if self.axis is None:
            lo, hi = x.amin().reshape(1), x.amax().reshape(1)
        else:
            dims = [d for d in range(x.dim()) if d != self.axis % x.dim()]
            lo, hi = x.amin(dim=dims), x.amax(dim=dims)
        scale, zero_point = reference.observer_qparams(lo, hi, self.qmin, self.qmax, self.symmetric)
        self.scale.copy_(scale)
        self.zero_point.copy_(zero_point.to(self.zero_point.dtype))
        self.initialized.fill_(1)

    # -------------------------------------------------------------- forward

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.observer_enabled:
            if not self.fake_quant_enabled:
                with torch.no_grad():
                    _, scale, zero_point = ops.fake_quant_observe(
                        x.detach(), self.running_min, self.running_max, self.momentum, self.qmin, self.qmax,
                        self.symmetric, self.axis, mask)
                    self.scale.copy_(scale)
                    self.zero_point.copy_(zero_point)
                return x
            y, scale, zero_point = ops.fake_quant_observe(x, self.running_min, self.running_max, self.momentum,
                                                          self.qmin, self.qmax, self.symmetric, self.axis, mask)
            with torch.no_grad():
                self.scale.copy_(scale)
                self.zero_point.copy_(zero_point)
            return y
        if self.observer == "lsq" and not bool(self.initialized):
            self._initialize_from(x.detach())
        if not self.fake_quant_enabled:
            return x
        scale, zero_point = self._qparams()
        return ops.fake_quant(x, scale, zero_point, self.qmin, self.qmax, self.axis, mask, self.grad_factor)

    # -------------------------------------------------------------- state

    def get_extra_state(self):
        return {"observer": self.observer, "axis": self.axis, "channels": self.channels,
                "learnable_zero_point": self.learnable_zero_point, "qmin": self.qmin, "qmax": self.qmax,
                "symmetric": self.symmetric, "momentum": self.momentum, "grad_factor": self.grad_factor,
                "fake_quant_enabled": self.fake_quant_enabled, "observer_enabled": self.observer_enabled}

    def set_extra_state(self, state):
        # checked by _load_from_state_dict before any of the module is changed
        self.qmin, self.qmax, self.symmetric = state["qmin"], state["qmax"], state["symmetric"]
        self.momentum, self.grad_factor = state["momentum"], state["grad_factor"]
        self.fake_quant_enabled, self.observer_enabled = state["fake_quant_enabled"], state["observer_enabled"]

    def _check_extra_state(self, check: ExtraStateChecker) -> None:
        hint = "it fixes the module's buffers; build the module with the same value"
        check.equal("observer", self.observer, hint)
        check.equal("axis", self.axis, hint)
        check.equal("channels", self.channels, hint)
        check.equal("learnable_zero_point", self.learnable_zero_point, hint)
        check.int("qmax", check.int("qmin") + 1)
        check.bool("symmetric")
        check.number("momentum", "in (0, 1]", lambda v: 0 < v <= 1)
        if check.state["grad_factor"] is not None:
            check.number("grad_factor", "> 0 (or None: the LSQ default)", lambda v: v > 0)
        check.bool("fake_quant_enabled")
        if check.bool("observer_enabled") and self.observer != "ema":
            check.fail("observer_enabled",
                       f'False: observer={self.observer!r} has no observer to run (only "ema" does)')

    def _load_from_state_dict(self, state_dict, prefix, *args):
        key = prefix + "_extra_state"
        if key in state_dict:
            check = ExtraStateChecker(self, prefix, state_dict[key], set(self.get_extra_state()))
            self._check_extra_state(check)
            zero_point = state_dict.get(prefix + "zero_point")
            if isinstance(zero_point, torch.Tensor) and zero_point.numel() and bool(
                    ((zero_point < check.state["qmin"]) | (zero_point > check.state["qmax"])).any()):
                raise ValueError(f"{check.label}: {prefix}zero_point holds {zero_point.flatten().tolist()[:8]}, "
                                 f"expected values in [qmin, qmax] = [{check.state['qmin']}, {check.state['qmax']}]")
        check_state_tensors(self, prefix, state_dict,
                            exact={} if self.learnable_zero_point else {"zero_point": torch.int32},
                            positive_float=() if self.observer == "lsq" else ("scale",))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        granularity = "per_tensor" if self.axis is None else f"axis={self.axis}, channels={self.channels}"
        parts = [f"qmin={self.qmin}, qmax={self.qmax}", granularity, f"observer={self.observer}",
                 f"symmetric={self.symmetric}"]
        if self.observer == "ema":
            parts.append(f"momentum={self.momentum}")
        if self.learnable_zero_point:
            parts.append("learnable_zero_point=True")
        parts.append(f"fake_quant_enabled={self.fake_quant_enabled}, observer_enabled={self.observer_enabled}")
        return ", ".join(parts)


class WeightFakeQuantize(nn.Module):
    """Fake quantization of a weight in a low-bit format, with scales taken from the weight at every
    call (max |w| per block): ``format`` one of compress_kernels.lowbit.ALL_FORMATS ("e4m3", "e5m2",
    "e2m1", "int2" .. "int8"), per tensor (``axis=None``), per channel (``axis=0``) or per group of
    ``group_size`` consecutive weights along K (the flattened dimensions after the first), with zero
    points for asymmetric integer formats (``symmetric=False``) and torch's overflow rule for the
    float formats unless ``saturate`` is given. The exact semantics and the straight-through
    gradient are lowbit.fake_quantize's. ``forward(w, mask=None)``: ``mask`` (bool, w's shape) keeps
    pruned weights exactly zero in the output and the gradient.

    The state dict holds the settings as extra state (no tensors: the scales follow the weight);
    ``load_state_dict`` refuses a state of another format / granularity, unknown keys and wrong
    types, naming the module, the key and the value."""

    def __init__(self, format: str = "e4m3", *, axis: int | None = 0, group_size: int | None = None,
                 symmetric: bool = True, saturate: bool | None = None):
        from .. import lowbit

        super().__init__()
        lowbit.check_format(format, "WeightFakeQuantize")
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise TypeError(f"WeightFakeQuantize: axis must be None or an int, got {axis!r}")
        if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                       or group_size < 1):
            raise ValueError(f"WeightFakeQuantize: group_size must be None or an int >= 1, got {group_size!r}")
        if group_size is not None and axis not in (None, 0):
            raise ValueError(f"WeightFakeQuantize: group_size groups dimension 0's rows, axis must be None or 0, "
                             f"got {axis}")
        if not isinstance(symmetric, bool):
            raise TypeError(f"WeightFakeQuantize: symmetric must be a bool, got {symmetric!r}")
        if not symmetric and lowbit.int_bits(format) is None:
            raise ValueError(f"WeightFakeQuantize: symmetric=False (zero points) needs an integer format, got "
                             f"{format!r}")
        if saturate is not None and not isinstance(saturate, bool):
            raise TypeError(f"WeightFakeQuantize: saturate must be None or a bool, got {saturate!r}")
        self.format, self.axis, self.group_size = format, (None if group_size is not None else axis), group_size
        self.symmetric, self.saturate = symmetric, saturate
        self.fake_quant_enabled = True

    def forward(self, w: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        from .. import lowbit

        if not self.fake_quant_enabled:
            return w
        y = lowbit.fake_quantize(w, self.format, axis=self.axis, group_size=self.group_size,
                                 symmetric=self.symmetric, saturate=self.saturate)
        return y if mask is None else y * mask.to(y.dtype)

    def get_extra_state(self):
        return {"format": self.format, "axis": self.axis, "group_size": self.group_size,
                "symmetric": self.symmetric, "saturate": self.saturate,
                "fake_quant_enabled": self.fake_quant_enabled}

    def set_extra_state(self, state):
        self.fake_quant_enabled = state["fake_quant_enabled"]

    def _load_from_state_dict(self, state_dict, prefix, *args):
        key = prefix + "_extra_state"
        if key in state_dict:
            check = ExtraStateChecker(self, prefix, state_dict[key], set(self.get_extra_state()))
            hint = "it defines the quantizer; build the module with the same value"
            for name in ("format", "group_size", "axis", "symmetric", "saturate"):
                check.equal(name, getattr(self, name), hint)
            check.bool("fake_quant_enabled")
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        granularity = (f"group_size={self.group_size}" if self.group_size is not None
                       else "per_tensor" if self.axis is None else f"axis={self.axis}")
        parts = [f"format={self.format}", granularity]
        if not self.symmetric:
            parts.append("symmetric=False")
        if self.saturate is not None:
            parts.append(f"saturate={self.saturate}")
        return ", ".join(parts)
