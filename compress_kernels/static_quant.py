"""Post-training static quantization of a float network into integer-only modules.

    ck.calibrate(model, batches)                                   # observe activations
    report = ck.convert_(model, ck.Int8StaticConfig(observer="mse", per_channel=True))
    int_model = report.model                                       # a torch.fx.GraphModule

The model is traced with torch.fx, so residual additions written in ``forward`` (``out += identity``)
become QuantAdd without editing the model. Conv2d + BatchNorm2d are folded (evaluation statistics),
ReLU / ReLU6 after a conv, linear or add become that op's output clamp, pooling / flatten / dropout
run on the integers with unchanged qparams, the model input is quantized once and the outputs are
dequantized. Anything else runs in float between a DeQuantize and a Quantize, and the report says so.
Calibration records every observer at once (min-max, EMA, percentile, MSE, KL), so one calibration
serves conversions with any observer.
"""

from __future__ import annotations

import copy
import inspect
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from tqdm.auto import tqdm

from . import numerics
from .batches import run_calibration
from .nn._common import fold_batchnorm
from .nn.conv import QuantConv2d
from .nn.integer import DeQuantize, QuantAdd, QuantAvgPool2d, Quantize, QuantMaxPool2d, QuantReLU
from .nn.linear import QuantLinear
from .nn.qat import ActFakeQuant, QATAdd, QATAvgPool2d, QATConv2d, QATLinear

_OBSERVED_ATTR = "_compress_kernels_observed"
CALIBRATION_SAMPLES = 1024  # calibration samples calibrate() keeps for AdaRound


@dataclass
class Int8StaticConfig:
    """Integer-only int8 post-training quantization. observer: "minmax", "ema", "percentile", "mse"
    or "kl" (activations, per tensor); per_channel: weight scales per output channel (else per
    tensor); activation_dtype: torch.uint8 (asymmetric, the default) or torch.int8; rounding:
    "double" (gemmlowp / TFLite) or "single"; sparse24: layers whose int8 weight is 2:4 along K
    (e.g. pruned with PruneConfig(granularity="2:4")) store the compressed weight and run the int8
    2:4 kernel (same integers as the dense kernel); the others stay dense and the report says why.
    observer="qat" is the QAT graph's own fake quantizers (QATConfig.static_config builds it; a
    calibrated float model has no such probes). capture: "auto" converts the way calibrate() recorded
    the model (through torch.fx when it could trace it, else with module hooks); "fx" or "hooks" insist
    on one (convert_ refuses a model calibrated the other way). smooth_alpha (module-level conversion
    only, with observer="minmax"): SmoothQuant's per-input-channel migration of activation outliers into
    the weight (Xiao et al. 2023), s_k = max|X_k|^alpha / max|W[:, k]|^(1 - alpha), W' = W * s, and the
    layer multiplies its float input by 1 / s before quantizing it. rounding_weights: "nearest" (round
    each weight to its nearest int8 level) or "adaround" (compress_kernels.adaround on the layer inputs
    of the calibration batches, with the same scales; ``adaround`` sets its optimization, default AdaRoundConfig(bits=8)
    with this config's per_channel). Every field is checked when the config is built."""

    observer: str = "mse"
    per_channel: bool = True
    activation_dtype: torch.dtype = torch.uint8
    rounding: str = "double"
    sparse24: bool = False
    capture: str = "auto"
    smooth_alpha: float | None = None
    rounding_weights: str = "nearest"
    adaround: object = None  # AdaRoundConfig | None

    def __post_init__(self):
        from ._config_checks import check_bool, check_choice, check_float

        check_choice(self, "observer", (*numerics.OBSERVERS, "qat"))
        check_bool(self, "per_channel")
        check_choice(self, "activation_dtype", (torch.uint8, torch.int8))
        check_choice(self, "rounding", ("double", "single"))
        check_bool(self, "sparse24")
        check_choice(self, "capture", ("auto", "fx", "hooks"))
        if self.smooth_alpha is not None:
            check_float(self, "smooth_alpha", "in [0, 1] (or None: no smoothing)", lambda v: 0 <= v <= 1)
            if self.observer != "minmax":
                raise ValueError(f'Int8StaticConfig: smooth_alpha needs observer="minmax" (the smoothed input\'s range '
                                 f"is computed exactly from per-channel ranges; the {self.observer!r} observer saw "
                                 "the input before smoothing), got observer=" + repr(self.observer))
        check_choice(self, "rounding_weights", ("nearest", "adaround"))
        if self.adaround is not None:
            _check_adaround_setting(self)


def _check_adaround_setting(config: Int8StaticConfig) -> None:
    from .adaround import AdaRoundConfig

    ada = config.adaround
    if not isinstance(ada, AdaRoundConfig):
        raise TypeError(f"Int8StaticConfig: adaround must be None or an AdaRoundConfig, got {ada!r}")
    if config.rounding_weights != "adaround":
        raise ValueError(f'Int8StaticConfig: adaround is set but rounding_weights={config.rounding_weights!r}; pass '
                         'rounding_weights="adaround"')
    if (ada.bits, ada.per_channel, ada.group_size, ada.symmetric) != (8, config.per_channel, None, True):
        raise ValueError(f"Int8StaticConfig: adaround must round to the integer layers' weights (bits=8, "
                         f"per_channel={config.per_channel}, group_size=None, symmetric=True), got bits={ada.bits}, "
                         f"per_channel={ada.per_channel}, group_size={ada.group_size}, symmetric={ada.symmetric}")


class CalibrationError(ValueError):
    """Calibration data the observers cannot use (NaN or infinite values)."""


class TensorStats(nn.Module):
    """Calibration probe inserted after every tensor of the traced model: feeds all observers.
    `node` says which tensor it observes, e.g. "output of module 'layer1.0.conv1'" (for error messages).
    Non-finite values are refused: a NaN or infinite range would turn into garbage qparams at convert_."""

    def __init__(self, sample_size: int = 1 << 16, node: str = "observed tensor"):
        super().__init__()
        self.node = node
        self.observers = {name: (cls(sample_size=sample_size) if issubclass(cls, numerics._SampleObserver) else cls())
                          for name, cls in numerics.OBSERVERS.items()}
        self.cache: dict = {}
        self.observing = True  # off while AdaRound replays the calibration samples

    def forward(self, x):
        if self.observing and isinstance(x, torch.Tensor) and x.is_floating_point():
            finite = torch.isfinite(x.detach())
            if not bool(finite.all()):
                bad = x.detach()[~finite]
                raise CalibrationError(
                    f"calibrate: the {self.node} holds {bad.numel()} non-finite value(s) "
                    f"(first {bad[0].item()}): activation ranges cannot be observed from NaN / inf; check the "
                    "calibration batches (and the layers up to this node) for NaN / inf")
            for obs in self.observers.values():
                obs.observe(x)
        return x

    def qparams(self, observer: str, dtype: torch.dtype) -> tuple[float, int]:
        if observer not in self.observers:
            raise ValueError(f"observer must be one of {sorted(self.observers)}, got {observer!r}")
        key = (observer, dtype)
        if key not in self.cache:  # KL / MSE searches are worth computing once per conversion setting
            self.cache[key] = self.observers[observer].qparams(dtype)
        return self.cache[key]


_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_RELU_FUNCTIONS = (F.relu, torch.relu, F.relu6)
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_PASS_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)
_PASS_FUNCTIONS = (torch.flatten,)
_PASS_METHODS = ("flatten", "view", "reshape", "contiguous")


def _relu_kind(node: fx.Node, modules: dict) -> str | None:
    if node.op == "call_module" and isinstance(modules[node.target], _RELU_MODULES):
        return "relu6" if isinstance(modules[node.target], nn.ReLU6) else "relu"
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        return "relu6" if node.target is F.relu6 else "relu"
    if node.op == "call_method" and node.target == "relu":
        return "relu"
    return None


def _fold_batchnorms(gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules[src.target], nn.Conv2d)
                and len(src.users) == 1):
            continue
        conv, bn = modules[src.target], modules[node.target]
        fused = copy.deepcopy(conv)
        w, b = fold_batchnorm(conv, bn)
        fused.weight = nn.Parameter(w)
        fused.bias = nn.Parameter(b)
        parent, _, name = src.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, name, fused)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()


_NO_TRACE_ADVICE = ("Int8DynamicConfig, CodebookConfig and Sparse24Config need no tracing (they swap "
                    "nn.Linear / nn.Conv2d modules in place), and calibrate(model, batches, capture=\"hooks\") "
                    "(or \"auto\") gives Int8StaticConfig a module-level conversion of every nn.Linear: use one "
                    "of them, or make the model traceable")


class _PathTracer(fx.Tracer):
    """fx.Tracer that remembers the innermost module whose forward was being traced when tracing failed."""

    def __init__(self):
        super().__init__()
        self.failed_in: str | None = None

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                try:
                    self.failed_in = self.path_of_module(m) or "<root>"
                except NameError:
                    self.failed_in = type(m).__name__
            raise


def refuse_prepared_model(model: nn.Module, what: str) -> None:
    """Refuse a model that was already converted to integers or prepared for QAT (tracing it again
    would fail inside torch.fx, or wrap fake quantizers in more fake quantizers)."""
    from .nn._common import IntegerLayer
    from .nn.codebook import _CodebookBase
    from .nn.fake_quant import FakeQuantize
    from .nn.integer import _QParams
    from .nn.sparse import _Sparse24Base
    from .qat import qat_config

    if qat_config(model) is not None:
        raise ValueError(f"{what}: the model is already a QAT graph (returned by prepare_qat_): train it and "
                         "convert it with convert_(qat_model), with no config; do not prepare or calibrate it again")
    for name, m in model.named_modules():
        if isinstance(m, (FakeQuantize, QATConv2d, QATLinear, QATAdd)):
            raise ValueError(f"{what}: module {name!r} is a {type(m).__name__}: the model was already prepared for "
                             "QAT; convert the QAT graph with convert_(qat_model) instead")
        if isinstance(m, (IntegerLayer, _QParams, QuantAdd, _CodebookBase, _Sparse24Base)):
            raise ValueError(f"{what}: module {name!r} is a {type(m).__name__}: the model was already converted; "
                             "start from the float model")


def trace(model: nn.Module, what: str) -> fx.GraphModule:
    """torch.fx.symbolic_trace(model) for the workflows that need the graph (calibrate / Int8StaticConfig,
    prepare_qat_), with errors that say what failed, where, and what to do instead."""
    import inspect

    refuse_prepared_model(model, what)
    for pname, param in inspect.signature(model.forward).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.KEYWORD_ONLY) or param.default is None:
            form = {param.VAR_POSITIONAL: f"*{pname}", param.VAR_KEYWORD: f"**{pname}"}.get(
                param.kind, f"{pname}={param.default!r}" if param.default is not param.empty else f"*, {pname}")
            raise TypeError(
                f"{what}: {type(model).__name__}.forward takes {form}: torch.fx traces every forward argument as a "
                "tensor (an `is None` test on it is fixed to the tensor case) and the workflow feeds the model "
                "positional tensors only; wrap the model in a module whose forward takes the tensors it needs "
                f"positionally, e.g. forward(self, x): return model({pname}=x). " + _NO_TRACE_ADVICE)
    tracer = _PathTracer()
    try:
        graph = tracer.trace(model)
    except Exception as err:
        where = (f"in the forward of module {tracer.failed_in!r}" if tracer.failed_in
                 else f"in {type(model).__name__}.forward")
        raise RuntimeError(
            f"{what}: torch.fx cannot trace {type(model).__name__} ({where}): {type(err).__name__}: {err}. Data-"
            "dependent control flow (if / for on tensor values) cannot be traced: move it out of forward, or "
            f"quantize the traceable part. {_NO_TRACE_ADVICE}") from err
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def prepare_static(model: nn.Module) -> fx.GraphModule:
    """Trace a copy of `model` (evaluation mode), fold Conv2d + BatchNorm2d, and insert a
    TensorStats probe after every node."""
    refuse_prepared_model(model, "calibrate")
    gm = trace(copy.deepcopy(model).eval(), "calibrate")
    _fold_batchnorms(gm)
    for node in list(gm.graph.nodes):
        if node.op in ("output", "get_attr"):
            continue
        name = f"stats_{node.name}"
        where = (f"model input {node.target!r}" if node.op == "placeholder" else
                 f"output of module {node.target!r}" if node.op == "call_module" else f"output of node {node.name!r}")
        gm.add_submodule(name, TensorStats(node=where))
        with gm.graph.inserting_after(node):
            probe = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(probe, delete_user_cb=lambda user: user is not probe)
    gm.graph.lint()
    gm.recompile()
    return gm


@torch.no_grad()
def calibrate(model: nn.Module, batches, progress: bool = False, capture: str = "auto"):
    """Observe the activations of `model` on calibration batches and attach the statistics to it for
    convert_(model, Int8StaticConfig(...)). A batch is a tensor, a tuple / list of positional inputs
    (an (input, label) pair feeds a one-input forward the input only) or a dict of keyword inputs
    (compress_kernels.batches).

    capture="fx": trace a copy of the model with torch.fx and probe every tensor (integer-only
    conversion: residual additions, ReLU, pooling stay integer); returns the probed GraphModule.
    capture="hooks": observe the input and output of every nn.Linear by forward hooks on the model
    itself (no tracing; module-level conversion, compress_kernels.hooks_quant); returns the
    HookCalibration. capture="auto" (the default): fx, or hooks when torch.fx cannot trace the model
    (the reason is kept and convert_'s report gives it)."""
    from .hooks_quant import CAPTURES, HOOK_STATS_ATTR, calibrate_hooks

    if capture not in CAPTURES:
        raise ValueError(f"calibrate: capture must be one of {list(CAPTURES)}, got {capture!r}")
    refuse_prepared_model(model, "calibrate")
    if isinstance(batches, (torch.Tensor, dict)):
        raise TypeError(f"calibrate: batches must be an iterable of batches (e.g. a list or a DataLoader), got one "
                        f"{type(batches).__name__}: wrap a single batch in a list, [batch]")
    object.__setattr__(model, _OBSERVED_ATTR, None)
    object.__setattr__(model, HOOK_STATS_ATTR, None)
    if capture == "hooks":
        return calibrate_hooks(model, batches, progress)
    try:
        observed = prepare_static(model)
    except (RuntimeError, TypeError) as err:
        if capture == "fx":
            raise
        return calibrate_hooks(model, batches, progress, fallback_reason=f"torch.fx cannot trace the model ({err})")
    kept = run_calibration(observed, batches, inspect.signature(observed.forward), type(model).__name__, "calibrate",
                           progress, keep_samples=CALIBRATION_SAMPLES)
    # the first CALIBRATION_SAMPLES samples (references to the inputs), for rounding_weights="adaround"
    observed.calibration_inputs = kept
    object.__setattr__(model, _OBSERVED_ATTR, observed)
    return observed


def convert_static(model: nn.Module, config: Int8StaticConfig, filter_fn=None, observed: fx.GraphModule | None = None,
                   record: dict | None = None, keep_float_ops: bool = False):
    """The Int8StaticConfig handler of convert_: returns (integer GraphModule, converted, skipped).

    `observed` is the probed graph to convert: by default the calibrated copy calibrate() attached to
    `model`; quantization-aware training passes its own graph, whose fake quantizers (ActFakeQuant) are
    the probes and whose QAT layers build their integer modules themselves (`to_integer`). `record`, if
    given, receives {layer target: (integer module, [input (scale, zero_point)...])} for every layer
    converted from a module call (QAT's exact mode runs those modules one by one). keep_float_ops: an
    addition or average pool whose inputs are all float stays float (mixed conversion, where layers
    excluded by filter_fn are compressed another way); by default they run on integers regardless."""
    if observed is None:
        observed = getattr(model, _OBSERVED_ATTR, None)
    if observed is None:
        from .qat import qat_config

        if qat_config(model) is not None:
            raise ValueError("convert_: the model is a QAT graph (prepare_qat_): convert it with convert_(qat_model), "
                             "with no config (its QATConfig), not with Int8StaticConfig")
        refuse_prepared_model(model, "convert_ with Int8StaticConfig")
        raise RuntimeError("convert_ with Int8StaticConfig needs calibration statistics: run "
                           "compress_kernels.calibrate(model, batches) first")
    modules = dict(observed.named_modules())
    dtype = config.activation_dtype
    probes = (TensorStats, ActFakeQuant)
    stats_of: dict[fx.Node, TensorStats | ActFakeQuant] = {}
    for node in observed.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], probes):
            stats_of[node.args[0]] = modules[node.target]
    record = {} if record is None else record
    rounded = _adaround_layers(observed, config, filter_fn) if config.rounding_weights == "adaround" else {}

    def unprobed(node):
        # the probe node stands for its input
        return node.args[0] if (isinstance(node, fx.Node) and node.op == "call_module"
                                and isinstance(modules[node.target], probes)) else node

    graph = fx.Graph()
    new_modules: dict[str, nn.Module] = {}
    env: dict[fx.Node, fx.Node] = {}
    qp: dict[fx.Node, tuple[float, int] | None] = {}
    cache: dict[tuple, fx.Node] = {}
    converted, skipped = [], []
    uses: dict[str, int] = {}
    done: set[fx.Node] = set()

    def add_module(name: str, module: nn.Module) -> str:
        key = name.replace(".", "_")
        while key in new_modules:
            key += "_"
        new_modules[key] = module
        return key

    def qparams(node) -> tuple[float, int]:
        return stats_of[node].qparams(config.observer, dtype)

    def as_quant(node):
        node = unprobed(node)
        if qp.get(node) is not None:
            return env[node], qp[node]
        if ("q", node) not in cache:
            p = qparams(node)
            name = add_module(f"{node.name}_quantize", Quantize(p[0], p[1], dtype))
            cache[("q", node)] = graph.call_module(name, (env[node],))
            cache[("qp", node)] = p
        return cache[("q", node)], cache[("qp", node)]

    def as_float(arg):
        def one(n):
            n = unprobed(n)
            if qp.get(n) is None:
                return env[n]
            if ("d", n) not in cache:
                s, z = qp[n]
                cache[("d", n)] = graph.call_module(add_module(f"{n.name}_dequantize", DeQuantize(s, z, dtype)),
                                                    (env[n],))
            return cache[("d", n)]

        return fx.node.map_arg(arg, one)

    def fused_relu(node):
        users = [u for u in node.users]
        if len(users) == 1 and isinstance(modules.get(users[0].target), probes):
            users = list(users[0].users)
        if len(users) == 1 and _relu_kind(users[0], modules) is not None:
            return users[0], _relu_kind(users[0], modules)
        return None, None

    for node in observed.graph.nodes:
        if node in done or (node.op == "call_module" and isinstance(modules[node.target], probes)):
            continue
        mod = modules.get(node.target) if node.op == "call_module" else None
        allowed = filter_fn is None or mod is None or filter_fn(mod, node.target)
        if node.op == "placeholder":
            env[node] = graph.placeholder(node.name)
            qp[node] = None
        elif node.op == "output":
            graph.output(as_float(node.args[0]))
        elif isinstance(mod, (nn.Conv2d, nn.Linear, QATConv2d, QATLinear)) and allowed and not (
                isinstance(mod, nn.Conv2d) and (mod.padding_mode != "zeros" or isinstance(mod.padding, str))):
            x, in_p = as_quant(node.args[0])
            relu_node, act = fused_relu(node)
            out_node = relu_node if relu_node is not None else node
            out_p = qparams(out_node)
            common = dict(input_scale=in_p[0], input_zero_point=in_p[1], output_scale=out_p[0],
                          output_zero_point=out_p[1], per_channel=config.per_channel, activation=act,
                          input_dtype=dtype, output_dtype=dtype, rounding=config.rounding)
            if isinstance(mod, (QATConv2d, QATLinear)):
                q = mod.to_integer(**common)
            elif node.target in rounded:  # AdaRound's integers, through the layer's own scales
                weight_q, weight_scale = rounded[node.target]
                layer = copy.deepcopy(mod)
                with torch.no_grad():
                    layer.weight.copy_(weight_q.float() * weight_scale.reshape([-1] + [1] * (weight_q.dim() - 1)))
                q = (QuantConv2d.from_float(layer, **common, weight_scale=weight_scale) if isinstance(mod, nn.Conv2d)
                     else QuantLinear.from_float(layer, **common, weight_scale=weight_scale))
            else:
                q = (QuantConv2d.from_float(mod, **common) if isinstance(mod, nn.Conv2d)
                     else QuantLinear.from_float(mod, **common))
            kind = type(q).__name__ + (f"+{act}" if act else "")
            if config.sparse24:
                reason = q.sparse24_reason()
                if reason is None:
                    q.sparse24_()
                    kind += " (2:4)"
                else:
                    kind += f" (dense: {reason})"
            env[node] = graph.call_module(add_module(node.target, q), (x,))
            qp[node] = out_p
            record[node.target] = (q, [in_p])
            # A module called at several places (shared, e.g. Sequential(lin, ReLU(), lin)) gets one integer
            # module per call: each call has its own activation qparams, so the integers cannot be shared.
            uses[node.target] = uses.get(node.target, 0) + 1
            label = node.target if uses[node.target] == 1 else f"{node.target} (call {uses[node.target]})"
            converted.append((label, type(mod).__name__, kind))
            if relu_node is not None:
                env[relu_node], qp[relu_node] = env[node], out_p
                done.add(relu_node)
        elif (isinstance(mod, QATAdd) or node.op == "call_function" and node.target in _ADD_FUNCTIONS) and len(
                node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args) and not node.kwargs and (
                not keep_float_ops or any(qp.get(unprobed(a)) is not None for a in node.args)):
            (a, pa), (b, pb) = as_quant(node.args[0]), as_quant(node.args[1])
            relu_node, act = fused_relu(node)
            out_node = relu_node if relu_node is not None else node
            out_p = qparams(out_node)
            q = QuantAdd.from_qparams(pa, pb, out_p, dtype, act)
            env[node] = graph.call_module(add_module(f"{node.name}_add", q), (a, b))
            qp[node] = out_p
            if mod is not None:
                record[node.target] = (q, [pa, pb])
            converted.append((node.name, "add", "QuantAdd" + (f"+{act}" if act else "")))
            if relu_node is not None:
                env[relu_node], qp[relu_node] = env[node], out_p
                done.add(relu_node)
        elif _relu_kind(node, modules) == "relu" and qp.get(unprobed(node.args[0])) is not None:
            x, p = as_quant(node.args[0])
            env[node] = graph.call_module(add_module(f"{node.name}_relu", QuantReLU(p[1])), (x,))
            qp[node] = p
        elif isinstance(mod, nn.MaxPool2d) and qp.get(unprobed(node.args[0])) is not None:
            x, p = as_quant(node.args[0])
            pool = QuantMaxPool2d(mod.kernel_size, mod.stride, mod.padding, mod.dilation, ceil_mode=mod.ceil_mode)
            env[node] = graph.call_module(add_module(node.target, pool), (x,))
            qp[node] = p
            converted.append((node.target, "MaxPool2d", "QuantMaxPool2d"))
        elif (isinstance(mod, QATAvgPool2d)
              or (isinstance(mod, nn.AdaptiveAvgPool2d) and mod.output_size in (1, (1, 1)))
              or (isinstance(mod, nn.AvgPool2d) and mod.padding in (0, (0, 0)) and not mod.ceil_mode)) and (
                not keep_float_ops or qp.get(unprobed(node.args[0])) is not None):
            x, p = as_quant(node.args[0])
            if isinstance(mod, QATAvgPool2d):
                mod = mod.pool
            pool = (QuantAvgPool2d() if isinstance(mod, nn.AdaptiveAvgPool2d)
                    else QuantAvgPool2d(mod.kernel_size, mod.stride))
            env[node] = graph.call_module(add_module(node.target, pool), (x,))
            qp[node] = p
            record[node.target] = (pool, [p])
            converted.append((node.target, type(mod).__name__, "QuantAvgPool2d"))
        elif ((isinstance(mod, _PASS_MODULES) or (node.op == "call_function" and node.target in _PASS_FUNCTIONS)
               or (node.op == "call_method" and node.target in _PASS_METHODS))
              and qp.get(unprobed(node.args[0])) is not None):
            # shape-only ops and dropout (identity in evaluation) run on the integers unchanged
            src = unprobed(node.args[0])
            if isinstance(mod, (nn.Dropout, nn.Identity)):
                env[node] = env[src]
            else:
                args = fx.node.map_arg(node.args, lambda n: env[unprobed(n)])
                if isinstance(mod, nn.Flatten):
                    env[node] = graph.call_function(torch.flatten, (args[0], mod.start_dim, mod.end_dim))
                else:
                    env[node] = graph.create_node(node.op, node.target, args, node.kwargs)
            qp[node] = qp[src]
        else:
            args = as_float(node.args)
            kwargs = as_float(node.kwargs)
            target = node.target
            if node.op == "call_module":
                target = add_module(node.target, mod)
                reason = "excluded by filter_fn" if not allowed else "no integer kernel; runs in float"
                skipped.append((node.target, type(mod).__name__, reason))
            elif node.op in ("call_function", "call_method"):
                skipped.append((node.name, str(getattr(node.target, "__name__", node.target)),
                                "no integer kernel; runs in float"))
            env[node] = graph.create_node(node.op, target, args, kwargs, node.name)
            qp[node] = None
    graph.lint()
    return fx.GraphModule(new_modules, graph, class_name="IntegerModel"), converted, skipped


def _adaround_layers(observed: fx.GraphModule, config: Int8StaticConfig, filter_fn) -> dict:
    """{layer target: (int8 weight, scale)} of AdaRound (int8, this config's per-channel setting and
    the converter's own scales max|w| / 127) for every Conv2d / Linear of the calibrated graph, on the
    layer inputs of the calibration samples calibrate() kept (the float model's)."""
    from .adaround import AdaRoundConfig, adaround_weight, collect_layer_inputs

    if config.observer == "qat":
        raise ValueError('convert_: rounding_weights="adaround" is for post-training quantization; a QAT model '
                         "learned its weights for round-to-nearest")
    batches = getattr(observed, "calibration_inputs", None)
    if not batches:
        raise RuntimeError('convert_ with rounding_weights="adaround" needs the calibration samples: run '
                           "compress_kernels.calibrate(model, batches) (this version keeps them) first")
    ada = config.adaround or AdaRoundConfig(bits=8, per_channel=config.per_channel)
    modules = dict(observed.named_modules())

    def converts(m: nn.Module, target: str) -> bool:  # the layers the conversion turns into integer layers
        if isinstance(m, nn.Conv2d) and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return False
        return isinstance(m, (nn.Conv2d, nn.Linear)) and (filter_fn is None or filter_fn(m, target))

    names = list(dict.fromkeys(node.target for node in observed.graph.nodes
                               if node.op == "call_module" and converts(modules[node.target], node.target)))
    probes = [m for m in modules.values() if isinstance(m, TensorStats)]
    for probe in probes:  # the activation statistics stay those of calibrate()
        probe.observing = False
    try:
        inputs = collect_layer_inputs(observed, batches, names, ada.max_samples)
    finally:
        for probe in probes:
            probe.observing = True
    rounded = {}
    for name in tqdm(names, desc="adaround", leave=False):
        layer = modules[name]
        scale = numerics.weight_scale(layer.weight.detach(), config.per_channel, 8)
        result = adaround_weight(layer, inputs[name], ada, scale=scale, desc=f"adaround {name}")
        rounded[name] = (result.q, scale)
    return rounded
