"""Module-level static int8 (no tracing): calibration by forward hooks, one layer at a time.

Where torch.fx cannot trace a model (every Hugging Face transformer: keyword inputs with None
defaults, data-dependent control flow, item assignment on proxies), ``calibrate(model, batches)``
falls back to hooks (``capture="auto"``, or ``capture="hooks"`` asked for directly): a forward pre-hook
and a forward hook on every nn.Linear feed a TensorStats probe with the layer's input and one with
its output (all observers at once, as the traced path does), while the model runs the calibration
batches as it is, in evaluation mode. ``convert_(model, Int8StaticConfig())`` then replaces each
calibrated nn.Linear of a copy of the model by a QuantLinearFloatIO (quantize with the input's
qparams, the static int8 kernel requantizing to the output's qparams, dequantize): the same integer
kernel as the traced path, with a float tensor between layers instead of an integer one.

Every path to a module is visited: a Linear reached by several paths is converted once and the
converted module set at every path (its calls share the one set of observers). Layers that are not
converted are in the report with the reason: excluded by filter_fn, a subclass of nn.Linear, a
projection of nn.MultiheadAttention (which reads the weights directly), or never called while
calibrating.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .batches import forward_signature, run_calibration
from .nn.float_io import QuantLinearFloatIO

HOOK_STATS_ATTR = "_compress_kernels_hook_stats"
CAPTURES = ("auto", "fx", "hooks")


class HookCalibration:
    """Per-module input / output TensorStats of every exact nn.Linear, recorded by forward hooks.
    `stats` maps the module's first path (named_modules order, so it survives a deepcopy of the model)
    -> (input stats, output stats, [calls], per-input-channel {"min", "max"}); `fallback_reason` says
    why the traced path was not used (None when hooks were asked for)."""

    def __init__(self, fallback_reason: str | None = None):
        self.stats: dict[str, tuple] = {}
        self.fallback_reason = fallback_reason

    def calls(self, path: str) -> int:
        return self.stats[path][2][0] if path in self.stats else 0


def _linear_input(args, kwargs):
    return args[0] if args else kwargs.get("input")


@torch.no_grad()
def calibrate_hooks(model: nn.Module, batches, progress: bool = False,
                    fallback_reason: str | None = None) -> HookCalibration:
    """Run `batches` (see compress_kernels.batches) through `model` in evaluation mode with hooks on
    every exact nn.Linear; attach and return the HookCalibration. The model's training flag and
    modules are restored; its weights are untouched."""
    from .static_quant import TensorStats

    calibration = HookCalibration(fallback_reason)
    handles = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        if type(module) is not nn.Linear or id(module) in seen:
            continue
        seen.add(id(module))
        # (input stats, output stats, [calls], {"min", "max"}: per-input-channel range, for smoothing)
        entry = (TensorStats(node=f"input of module {name!r}"), TensorStats(node=f"output of module {name!r}"), [0],
                 {})
        calibration.stats[name] = entry

        def pre_hook(mod, args, kwargs, entry=entry):
            x = _linear_input(args, kwargs)
            entry[0](x)
            entry[2][0] += 1
            rows = x.detach().reshape(-1, x.shape[-1]).float()
            lo, hi = rows.amin(0), rows.amax(0)
            channels = entry[3]
            channels["min"] = lo if "min" not in channels else torch.minimum(channels["min"], lo)
            channels["max"] = hi if "max" not in channels else torch.maximum(channels["max"], hi)

        def post_hook(mod, args, kwargs, output, entry=entry):
            entry[1](output)

        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
    signature = forward_signature(model)
    was_training = model.training
    model.eval()
    try:
        run_calibration(model, batches, signature, type(model).__name__, "calibrate (hooks)", progress)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    object.__setattr__(model, HOOK_STATS_ATTR, calibration)
    return calibration


def convert_hooks(model: nn.Module, config, filter_fn=None, calibration: HookCalibration | None = None):
    """Int8StaticConfig on a hook-calibrated model: (converted copy, converted, skipped, modes)."""
    from .convert import _set_submodule

    calibration = calibration if calibration is not None else getattr(model, HOOK_STATS_ATTR)
    if config.observer == "qat":
        raise ValueError('convert_: Int8StaticConfig(observer="qat") reads a QAT graph\'s fake quantizers; a model '
                         "calibrated with hooks has observers: pick one of the calibration observers")
    new_model = copy.deepcopy(model, memo={id(calibration): None})  # the copy does not carry the observers
    originals = dict(model.named_modules(remove_duplicate=False))
    first_path = {id(m): path for path, m in model.named_modules()}
    dtype = config.activation_dtype
    converted, skipped, modes = [], [], {}
    done: dict[int, tuple[str, nn.Module | None]] = {}
    for name, module in list(new_model.named_modules(remove_duplicate=False)):
        if not name or not isinstance(module, nn.Linear):
            continue
        original = originals[name]
        if id(module) in done:
            first, new = done[id(module)]
            if new is not None:
                _set_submodule(new_model, name, new)
                converted.append((name, "Linear", f"{type(new).__name__} (the same module as {first!r})"))
                modes[name] = "hooks"
            else:
                skipped.append((name, type(module).__name__, f"the same module as {first!r}, which was skipped"))
            continue
        done[id(module)] = (name, None)
        parent_name = name.rpartition(".")[0]
        if isinstance(new_model.get_submodule(parent_name) if parent_name else new_model, nn.MultiheadAttention):
            skipped.append((name, type(module).__name__, "MultiheadAttention reads its projection weights directly, "
                            "not through this module's forward: a swapped module would be bypassed"))
            continue
        if type(module) is not nn.Linear:
            skipped.append((name, type(module).__name__, "a subclass of torch.nn.Linear: its forward may differ, so "
                                                         "it is not converted"))
            continue
        if filter_fn is not None and not filter_fn(original, name):
            skipped.append((name, "Linear", "excluded by filter_fn"))
            continue
        if calibration.calls(first_path[id(original)]) == 0:
            skipped.append((name, "Linear", "never called while calibrating: no activation statistics"))
            continue
        in_stats, out_stats, _, channels = calibration.stats[first_path[id(original)]]
        out_qparams = out_stats.qparams(config.observer, dtype)
        kind = "QuantLinearFloatIO"
        if config.smooth_alpha is None:
            q = QuantLinearFloatIO.from_float(module, in_stats.qparams(config.observer, dtype), out_qparams,
                                              dtype=dtype, per_channel=config.per_channel, rounding=config.rounding)
        else:
            q = _smoothed_layer(module, channels, out_qparams, config)
            kind += f" (smoothed, alpha={config.smooth_alpha})"
        if config.sparse24:
            reason = q.linear.sparse24_reason()
            if reason is None:
                q.linear.sparse24_()
                kind += " (2:4)"
            else:
                kind += f" (dense: {reason})"
        _set_submodule(new_model, name, q)
        done[id(module)] = (name, q)
        converted.append((name, "Linear", kind))
        modes[name] = "hooks"
    return new_model, converted, skipped, modes


def smoothing_factors(input_min: torch.Tensor, input_max: torch.Tensor, weight: torch.Tensor,
                      alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel factors s_k = max|X_k|^alpha / max_n |W[n, k]|^(1 - alpha)
    (1 where either maximum is 0: nothing to migrate)."""
    act = torch.maximum(input_min.abs(), input_max.abs()).double()
    wmax = weight.detach().abs().amax(0).double()
    s = act.pow(alpha) / wmax.pow(1 - alpha)
    return torch.where((act > 0) & (wmax > 0), s, torch.ones_like(s)).float()


def _smoothed_layer(linear: nn.Linear, channels: dict, out_qparams, config) -> QuantLinearFloatIO:
    """The QuantLinearFloatIO of `linear` with SmoothQuant migration: weight W * s, input x / s,
    whose per-tensor min-max range is exactly [min_k min(X_k) / s_k, max_k max(X_k) / s_k]."""
    from .numerics import choose_qparams

    s = smoothing_factors(channels["min"], channels["max"], linear.weight, config.smooth_alpha)
    smoothed = copy.deepcopy(linear)
    with torch.no_grad():
        smoothed.weight.mul_(s.to(smoothed.weight.dtype))
    scale, zero_point = choose_qparams((channels["min"] / s).min(), (channels["max"] / s).max(),
                                       config.activation_dtype)
    return QuantLinearFloatIO.from_float(smoothed, (float(scale), int(zero_point)), out_qparams,
                                         dtype=config.activation_dtype, per_channel=config.per_channel,
                                         rounding=config.rounding, input_multiplier=1.0 / s)


def convert_static_any(model: nn.Module, config, filter_fn=None):
    """The Int8StaticConfig handler of convert_: the traced (fx) conversion of a model calibrated
    through torch.fx, the module-level conversion of one calibrated with hooks; config.capture
    ("auto": whichever calibrate recorded) must agree with it."""
    from .static_quant import _OBSERVED_ATTR, convert_static

    hooks = getattr(model, HOOK_STATS_ATTR, None)
    traced = getattr(model, _OBSERVED_ATTR, None)
    capture = config.capture
    if capture == "hooks" and hooks is None:
        raise ValueError('convert_: Int8StaticConfig(capture="hooks") needs a model calibrated with hooks: run '
                         'compress_kernels.calibrate(model, batches, capture="hooks") first'
                         + (" (this model was calibrated through torch.fx)" if traced is not None else ""))
    if capture == "fx" and traced is None and hooks is not None:
        raise ValueError('convert_: Int8StaticConfig(capture="fx") needs a model calibrated through torch.fx, but '
                         "this one was calibrated with hooks"
                         + (f" ({hooks.fallback_reason})" if hooks.fallback_reason else "")
                         + '; use capture="hooks" or "auto"')
    if hooks is not None and (capture == "hooks" or traced is None):
        new_model, converted, skipped, modes = convert_hooks(model, config, filter_fn, hooks)
        notes = ([f"module-level static int8 (hooks): {hooks.fallback_reason}"] if hooks.fallback_reason else [])
        return new_model, converted, skipped, modes, notes
    if config.smooth_alpha is not None:
        raise ValueError("convert_: Int8StaticConfig(smooth_alpha=...) is applied by the module-level conversion "
                         "(it scales each Linear's float input): calibrate with capture=\"hooks\"; this model was "
                         "calibrated through torch.fx")
    new_model, converted, skipped = convert_static(model, config, filter_fn)
    modes = {label: "fx" for label, _, _ in converted}
    return new_model, converted, skipped, modes, []


# ---------------------------------------------------------------- quantization-aware training by module swap


def _linear_paths(model: nn.Module, filter_fn=None):
    """(path, module, reason or None) for every path to an nn.Linear (the reason it is not converted)."""
    seen: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if not name or not isinstance(module, nn.Linear):
            continue
        parent_name = name.rpartition(".")[0]
        parent = model.get_submodule(parent_name) if parent_name else model
        if id(module) in seen:
            yield name, module, f"alias of {seen[id(module)]!r}"
            continue
        seen[id(module)] = name
        if isinstance(parent, nn.MultiheadAttention):
            yield name, module, "MultiheadAttention reads its projection weights directly"
        elif type(module) is not nn.Linear:
            yield name, module, "a subclass of torch.nn.Linear: its forward may differ"
        elif filter_fn is not None and not filter_fn(module, name):
            yield name, module, "excluded by filter_fn"
        else:
            yield name, module, None


def prepare_qat_hooks(model: nn.Module, config) -> nn.Module:
    """prepare_qat_ without tracing: every exact nn.Linear of `model` (in place) becomes a
    QATLinearFloatIO (fake-quantized input, weight and output); a Linear reached by several paths
    gets one QAT module, set at every path. Returns the model."""
    from .convert import _set_submodule
    from .nn.float_io import QATLinearFloatIO

    swapped: dict[int, nn.Module] = {}
    for name, module, reason in list(_linear_paths(model)):
        if reason is None:
            swapped[id(module)] = QATLinearFloatIO(module, config)
            _set_submodule(model, name, swapped[id(module)])
        elif id(module) in swapped:
            _set_submodule(model, name, swapped[id(module)])
    if not swapped:
        raise ValueError(f"prepare_qat_: {type(model).__name__} has no nn.Linear to prepare (torch.fx cannot trace "
                         "it, and module-level QAT converts exact nn.Linear layers only)")
    return model


def qat_hooks_config(model: nn.Module):
    """The QATConfig of a model prepared by prepare_qat_hooks (None if it has no QATLinearFloatIO)."""
    from .nn.float_io import QATLinearFloatIO

    return next((m.config for m in model.modules() if isinstance(m, QATLinearFloatIO)), None)


def convert_qat_hooks(model: nn.Module, record: dict | None = None):
    """convert_ of a module-level QAT model: a copy with every QATLinearFloatIO replaced by its
    QuantLinearFloatIO; (copy, converted, skipped, modes, notes). `record` receives {id(QAT module):
    integer module} (the exact mode runs those)."""
    from .convert import _set_submodule
    from .nn.float_io import QATLinearFloatIO

    new_model = copy.deepcopy(model)
    originals = dict(model.named_modules(remove_duplicate=False))
    converted, modes, done = [], {}, {}
    for name, module in list(new_model.named_modules(remove_duplicate=False)):
        if not isinstance(module, QATLinearFloatIO):
            continue
        if id(module) not in done:
            done[id(module)] = module.to_integer()
            if record is not None:
                record[id(originals[name])] = done[id(module)]
        _set_submodule(new_model, name, done[id(module)])
        converted.append((name, "QATLinearFloatIO", "QuantLinearFloatIO"))
        modes[name] = "hooks"
    return new_model, converted, [], modes, []
