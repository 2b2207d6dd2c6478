"""Quantization-aware training that converts exactly to the integer-only model.

    qat = ck.prepare_qat_(model, ck.QATConfig(weight_bits=8))  # a torch.fx GraphModule; train it as the model
    ...training...
    ck.freeze_qat_(qat)                                         # end of QAT: observers and BN statistics frozen
    int_model = ck.convert_(qat).model                          # QuantConv2d / QuantLinear / QuantAdd / ...
    with ck.qat_exact_mode(qat):                                # the QAT model predicting the integers
        logits = qat(x)                                         # == int_model(x), bit for bit

Fake quantizers go where the post-training path (static_quant.py) quantizes: the model input, the output
of every Conv2d (+BatchNorm2d) / Linear and of every residual addition (after the ReLU / ReLU6 that
follows it, which the integer model fuses into its clamp), and the output of any op without an integer
kernel that feeds a quantized one. Max pooling, flatten and dropout keep their input's grid; average
pooling is rounded back to its input's grid. The conversion is the post-training converter run on the
QAT graph, with the fake quantizers as its probes, so both paths quantize the same points the same way.

Two simulations, and how they differ: training and ordinary evaluation compute in float (fake-quantized
weights and activations, float accumulation, float rescale); the exact mode computes every layer with the
integer module the conversion builds (int32 accumulation, fixed-point multiplier, integer ADD and
pooling), dequantizing between layers. `qat_mismatch_report` measures how often the fast simulation lands
one step away from the integers.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import fx, nn

from .nn.int4 import QATInt4Linear
from .nn.qat import WEIGHT_FORMATS, ActFakeQuant, QATAdd, QATAvgPool2d, QATConv2d, QATLinear
from .static_quant import (
    _ADD_FUNCTIONS,
    _PASS_FUNCTIONS,
    _PASS_METHODS,
    _PASS_MODULES,
    Int8StaticConfig,
    _relu_kind,
    convert_static,
)

_CONFIG_ATTR = "_compress_kernels_qat_config"
_QAT_LAYERS = (QATConv2d, QATLinear, QATAdd)


@dataclass
class QATConfig:
    """weight_bits: 2..8 (symmetric, narrow range, stored as int8; 4 gives [-7, 7]); activation_bits:
    8 (the integer kernels carry 8-bit activations); per_channel: weight scales per output channel;
    observer: how activation ranges are set, "ema" (moving-average min / max, ``momentum``) — with
    learnable_scale=True the activation and weight scales are LSQ parameters initialized from the
    first batch instead; activation_dtype: torch.uint8 (asymmetric) or torch.int8; rounding of the
    converted model's requantization: "double" or "single"; sparse24: convert layers whose weight is
    2:4 (pruned with PruneConfig(granularity="2:4") before QAT; the masks keep it so) to the int8
    2:4 kernel (Int8StaticConfig.sparse24); weight_format: "int" (the integer weights above) or a float
    format, "e4m3", "e5m2" or "e2m1", whose weights are fake-quantized with compress_kernels.lowbit
    (scales max|w| / max finite, per output channel or per tensor; weight_bits does not apply):
    such a model trains, but does not convert to the integer-only model (convert_ refuses it;
    convert its trained float layers with Fp8WeightConfig instead).

    group_size (None, or 32, 64, 128, 256; needs weight_bits=4): 4-bit group-wise QAT for Int4Linear
    (w4a8) instead of the integer-only model. Module level, no tracing: every exact nn.Linear whose
    in_features group_size divides becomes a QATInt4Linear (weights fake-quantized per group of
    group_size input features, symmetric [-7, 7]; inputs fake-quantized per row to int8 at run time, as
    w4a8 does); no activation observers, every other layer stays float. convert_ gives Int4Linear
    (activation="int8"), equal bit for bit to qat_exact_mode."""

    weight_bits: int = 8
    activation_bits: int = 8
    per_channel: bool = True
    observer: str = "ema"
    learnable_scale: bool = False
    activation_dtype: torch.dtype = torch.uint8
    rounding: str = "double"
    momentum: float = 0.01
    sparse24: bool = False
    weight_format: str = "int"
    group_size: int | None = None

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check every field (also called by prepare_qat_, in case a field was changed after construction)."""
        from ._config_checks import check_bool, check_choice, check_float

        if isinstance(self.weight_bits, bool) or not isinstance(self.weight_bits, int):
            raise TypeError(f"QATConfig: weight_bits must be an int, got {self.weight_bits!r}")
        if not 2 <= self.weight_bits <= 8:
            raise ValueError(f"QATConfig: weight_bits must be in [2, 8], got {self.weight_bits}")
        if isinstance(self.activation_bits, bool) or self.activation_bits != 8:
            raise ValueError(f"QATConfig: activation_bits must be 8 (the integer kernels carry 8-bit "
                             f"activations), got {self.activation_bits!r}")
        check_bool(self, "per_channel")
        if self.observer != "ema":
            raise ValueError(f'QATConfig: observer must be "ema" (use learnable_scale=True for LSQ), '
                             f"got {self.observer!r}")
        check_bool(self, "learnable_scale")
        if self.activation_dtype not in (torch.uint8, torch.int8):
            raise ValueError(f"QATConfig: activation_dtype must be torch.uint8 or torch.int8, got "
                             f"{self.activation_dtype!r}")
        if self.rounding not in ("double", "single"):
            raise ValueError(f'QATConfig: rounding must be "double" or "single", got {self.rounding!r}')
        check_float(self, "momentum", "in (0, 1]", lambda v: 0 < v <= 1)
        check_bool(self, "sparse24")
        check_choice(self, "weight_format", WEIGHT_FORMATS)
        if self.weight_format != "int" and self.learnable_scale:
            raise ValueError(f"QATConfig: learnable_scale=True (LSQ) is for integer weights, got "
                             f"weight_format={self.weight_format!r}")
        if self.group_size is not None:
            from .numerics import INT4_GROUP_SIZES

            check_choice(self, "group_size", INT4_GROUP_SIZES)
            int4_conflicts = {"weight_bits": (self.weight_bits, 4), "weight_format": (self.weight_format, "int"),
                              "learnable_scale": (self.learnable_scale, False), "sparse24": (self.sparse24, False)}
            for field_name, (value, needed) in int4_conflicts.items():
                if value != needed:
                    raise ValueError(f"QATConfig: group_size={self.group_size} (group-wise int4 QAT for Int4Linear) "
                                     f"needs {field_name}={needed!r}, got {value!r}")

    def static_config(self) -> Int8StaticConfig:
        return Int8StaticConfig(observer="qat", per_channel=self.per_channel,
                                activation_dtype=self.activation_dtype, rounding=self.rounding,
                                sparse24=self.sparse24)


def _set_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def prepare_qat_(model: nn.Module, config: QATConfig | None = None, inplace: bool = True,
                 capture: str = "auto") -> nn.Module:
    """Trace `model` with torch.fx and return its quantization-aware-training graph (train it like the
    model). In place (the default), the graph uses the model's own Conv2d / BatchNorm2d / Linear modules,
    so their parameters, BatchNorm statistics and pruning masks are shared; ``inplace=False`` works on a
    deep copy. The returned model is in the training mode of `model`.

    capture="auto" (the default): where torch.fx cannot trace the model (Hugging Face transformers), fall
    back to module-level QAT (hooks_quant.prepare_qat_hooks): every nn.Linear becomes a QATLinearFloatIO
    (fake-quantized input, weight and output) in the model itself, which is returned; convert_ then gives
    QuantLinearFloatIO layers, equal to qat_exact_mode bit for bit. capture="fx" or "hooks" insist on one."""
    from .hooks_quant import CAPTURES, prepare_qat_hooks
    from .static_quant import refuse_prepared_model, trace

    config = config or QATConfig()
    if not isinstance(config, QATConfig):
        raise TypeError(f"prepare_qat_: config must be a QATConfig, got {type(config).__name__}")
    config.validate()
    if capture not in CAPTURES:
        raise ValueError(f"prepare_qat_: capture must be one of {list(CAPTURES)}, got {capture!r}")
    refuse_prepared_model(model, "prepare_qat_")
    if config.group_size is not None:  # group-wise int4 (Int4Linear): module level whatever the capture
        return prepare_qat_int4(model if inplace else copy.deepcopy(model), config)
    if capture == "hooks":
        return prepare_qat_hooks(model if inplace else copy.deepcopy(model), config)
    try:
        gm = trace(model if inplace else copy.deepcopy(model), "prepare_qat_")
    except (RuntimeError, TypeError):
        if capture == "fx":
            raise
        return prepare_qat_hooks(model if inplace else copy.deepcopy(model), config)
    gm.train(model.training)
    modules = dict(gm.named_modules())
    layer = dict(weight_bits=config.weight_bits, per_channel=config.per_channel,
                 learnable_scale=config.learnable_scale, weight_format=config.weight_format)

    def new_act_quant(after: fx.Node) -> fx.Node:
        name = f"act_quant_{after.name}"
        quant = ActFakeQuant(config.activation_dtype, "lsq" if config.learnable_scale else "ema", config.momentum)
        gm.add_submodule(name, quant)
        modules[name] = quant
        with gm.graph.inserting_after(after):
            probe = gm.graph.call_module(name, (after,))
        after.replace_all_uses_with(probe, delete_user_cb=lambda user: user is not probe)
        return probe

    # 1. Conv2d (+ BatchNorm2d), Linear, residual additions -> QAT modules
    for node in list(gm.graph.nodes):
        mod = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(mod, nn.Conv2d) and mod.padding_mode == "zeros" and not isinstance(mod.padding, str):
            users = list(node.users)
            bn_node = users[0] if len(users) == 1 and isinstance(modules.get(users[0].target), nn.BatchNorm2d) else None
            bn = modules[bn_node.target] if bn_node is not None else None
            _set_module(gm, node.target, QATConv2d(mod, bn, **layer))
            if bn_node is not None:
                bn_node.replace_all_uses_with(node)
                gm.graph.erase_node(bn_node)
                gm.delete_submodule(bn_node.target)
        elif isinstance(mod, nn.Linear):
            _set_module(gm, node.target, QATLinear(mod, **layer))
        elif (node.op == "call_function" and node.target in _ADD_FUNCTIONS and len(node.args) == 2
              and all(isinstance(a, fx.Node) for a in node.args) and not node.kwargs):
            name = f"add_{node.name}"
            gm.add_submodule(name, QATAdd())
            with gm.graph.inserting_after(node):
                add = gm.graph.call_module(name, node.args)
            node.replace_all_uses_with(add)
            gm.graph.erase_node(node)
    modules = dict(gm.named_modules())

    # 2. fake quantizers: after every QAT layer (or the ReLU fused into it), and in front of every
    # quantized consumer whose input is not on a grid yet (the model input, ops without integer kernels)
    quantized: dict[fx.Node, fx.Node] = {}  # node -> the ActFakeQuant node whose grid it is on

    def grid_of(node) -> fx.Node | None:
        return quantized.get(node) if isinstance(node, fx.Node) else None

    def quantize_output(node: fx.Node) -> fx.Node:
        probe = new_act_quant(node)
        quantized[node] = quantized[probe] = probe
        return probe

    for node in list(gm.graph.nodes):
        if node in quantized or (node.op == "call_module" and isinstance(modules.get(node.target), ActFakeQuant)):
            continue
        mod = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(mod, _QAT_LAYERS):
            for arg in node.args:
                if isinstance(arg, fx.Node) and grid_of(arg) is None:
                    quantize_output(arg)
            users = list(node.users)
            out = users[0] if len(users) == 1 and _relu_kind(users[0], modules) is not None else node
            quantized[node] = quantize_output(out)
        elif node.op == "call_module" and (isinstance(mod, nn.AdaptiveAvgPool2d) and mod.output_size in (1, (1, 1))
                                           or isinstance(mod, nn.AvgPool2d) and mod.padding in (0, (0, 0))
                                           and not mod.ceil_mode):
            src = node.args[0]
            if grid_of(src) is None:
                quantize_output(src)
            quant_node = grid_of(src)
            _set_module(gm, node.target, QATAvgPool2d(mod, modules[quant_node.target]))
            quantized[node] = quant_node
        elif grid_of(node.args[0] if node.args else None) is not None and (
                isinstance(mod, (*_PASS_MODULES, nn.MaxPool2d)) or _relu_kind(node, modules) is not None
                or (node.op == "call_function" and node.target in _PASS_FUNCTIONS)
                or (node.op == "call_method" and node.target in _PASS_METHODS)):
            quantized[node] = grid_of(node.args[0])  # on its input's grid
        if node.op == "placeholder":
            quantize_output(node)
    gm.graph.lint()
    gm.recompile()
    gm.meta[_CONFIG_ATTR] = config  # GraphModule.meta survives deepcopy (plain attributes do not)
    return gm


def _qat_graph(model: nn.Module) -> fx.GraphModule:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if qat_config(inner) is None:
        raise RuntimeError("expected a model prepared by compress_kernels.prepare_qat_ (or its DDP wrapper), "
                           f"got {type(inner).__name__}")
    return inner


def qat_config(model: nn.Module) -> QATConfig | None:
    """The QATConfig a model was prepared with, or None for a model that is not a QAT graph."""
    from .hooks_quant import qat_hooks_config

    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if isinstance(inner, fx.GraphModule) and _CONFIG_ATTR in inner.meta:
        return inner.meta[_CONFIG_ATTR]
    int4 = next((m.config for m in inner.modules() if isinstance(m, QATInt4Linear)), None)
    return int4 or qat_hooks_config(inner)  # module-level QAT (QATLinearFloatIO layers), or None


def freeze_qat_(model: nn.Module, observers: bool = True, batchnorm: bool = True) -> nn.Module:
    """The usual end of QAT: stop the activation observers (the qparams stay where they are) and / or
    BatchNorm's running statistics (BatchNorm then normalizes with them, also while training)."""
    for m in _qat_graph(model).modules():
        if observers and isinstance(m, ActFakeQuant):
            m.disable_observer()
        if batchnorm and isinstance(m, QATConv2d):
            m.bn_frozen = True
    return model


def broadcast_qat_state_(model: nn.Module, src: int = 0) -> nn.Module:
    """Under torch.distributed: copy every buffer (BatchNorm statistics, observer ranges, qparams) from
    rank `src` to all ranks, so that every rank converts to the same integer model. DDP only broadcasts
    buffers at the start of a forward, so after the last training step the ranks' observers differ by
    their last batch. A no-op without an initialized process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        for buf in _qat_graph(model).buffers():
            dist.broadcast(buf, src)
    return model


def convert_qat(model: nn.Module, config=None, filter_fn=None, record: dict | None = None):
    """The QATConfig handler of convert_ (also reached by ``convert_(qat_model)`` with no config):
    returns (integer GraphModule, converted, skipped). The QAT model is left unchanged."""
    from .hooks_quant import convert_qat_hooks

    gm = _qat_graph(model)
    if filter_fn is not None:
        raise ValueError("convert_: filter_fn is not supported for QAT models (choose the layers at prepare_qat_)")
    if qat_config(gm).group_size is not None:
        return convert_qat_int4(gm, record)
    if not isinstance(gm, fx.GraphModule):  # module-level QAT
        return convert_qat_hooks(gm, record)
    weight_format = qat_config(gm).weight_format
    if weight_format != "int":
        raise ValueError(f"convert_: the QAT model was prepared with weight_format={weight_format!r} (float weights); "
                         "the integer-only conversion needs integer weights. prepare_qat_ trained the float model's "
                         "layers in place: convert that model with Fp8WeightConfig (e4m3 / e5m2)")
    return convert_static(gm, qat_config(gm).static_config(), observed=gm, record=record)


@contextlib.contextmanager
def qat_exact_mode(model: nn.Module, use_kernels: bool = False):
    """Inside this context the QAT model (put in evaluation mode) computes every layer with the integer
    module the conversion builds for it: its outputs equal the converted model's, bit for bit. The
    integer layers run on the int64 reference (``use_kernels=False``, the specification) or on the
    kernels. The QAT parameters are read when the context is entered."""
    gm = _qat_graph(model)
    if qat_config(gm).group_size is not None:
        with _int4_exact_mode(gm, use_kernels):
            yield gm
        return
    if not isinstance(gm, fx.GraphModule):
        with _hooks_exact_mode(gm, use_kernels):
            yield gm
        return
    was_training = gm.training
    gm.eval()
    record: dict = {}
    convert_qat(gm, record=record)
    dtype = qat_config(gm).activation_dtype
    touched = []
    for target, (module, in_qparams) in record.items():
        layer = gm.get_submodule(target)
        if isinstance(layer, (*_QAT_LAYERS, QATAvgPool2d)):
            layer._exact = (module, in_qparams, dtype, use_kernels)
            touched.append(layer)
    quants = [m for m in gm.modules() if isinstance(m, ActFakeQuant)]
    for q in quants:
        q._exact = True
    try:
        yield gm
    finally:
        for layer in touched:
            layer._exact = None
        for q in quants:
            q._exact = False
        gm.train(was_training)


@contextlib.contextmanager
def _module_exact_mode(model: nn.Module, use_kernels: bool, convert, layer_type: type):
    """qat_exact_mode of the module-level QAT forms: `convert(model, record)` builds the integer module of
    each `layer_type` layer (recorded by the layer's id), and each such layer computes with it."""
    was_training = model.training
    model.eval()
    record: dict = {}
    convert(model, record)
    layers = [m for m in model.modules() if isinstance(m, layer_type)]
    for layer in layers:
        layer._exact = (record[id(layer)].eval(), use_kernels)
    try:
        yield model
    finally:
        for layer in layers:
            layer._exact = None
        model.train(was_training)


def _hooks_exact_mode(model: nn.Module, use_kernels: bool):
    """qat_exact_mode of module-level QAT: each QATLinearFloatIO computes with the QuantLinearFloatIO
    the conversion builds from it."""
    from .hooks_quant import convert_qat_hooks
    from .nn.float_io import QATLinearFloatIO

    return _module_exact_mode(model, use_kernels, convert_qat_hooks, QATLinearFloatIO)


def prepare_qat_int4(model: nn.Module, config: QATConfig) -> nn.Module:
    """prepare_qat_ with group_size set: every exact nn.Linear of `model` (in place) whose in_features
    config.group_size divides becomes a QATInt4Linear around it (a Linear reached by several paths gets
    one, set at every path); the other layers stay as they are. Returns the model."""
    from .convert import _set_submodule
    from .hooks_quant import _linear_paths

    swapped: dict[int, nn.Module] = {}
    for name, module, reason in list(_linear_paths(model)):
        if reason is None and module.in_features % config.group_size == 0:
            swapped[id(module)] = QATInt4Linear(module, config.group_size)
            swapped[id(module)].config = config
            _set_submodule(model, name, swapped[id(module)])
        elif id(module) in swapped:
            _set_submodule(model, name, swapped[id(module)])
    if not swapped:
        raise ValueError(f"prepare_qat_: {type(model).__name__} has no nn.Linear whose in_features is a multiple of "
                         f"group_size={config.group_size} (group-wise int4 QAT converts exact nn.Linear layers only)")
    return model


def convert_qat_int4(model: nn.Module, record: dict | None = None):
    """convert_ of a group-wise int4 QAT model: a copy with every QATInt4Linear replaced by its
    Int4Linear (to_int4); (copy, converted, skipped). `record` receives {id(QAT module): Int4Linear}
    (the exact mode runs those). The QAT model is left unchanged."""
    from .convert import _set_submodule

    new_model = copy.deepcopy(model)
    originals = dict(model.named_modules(remove_duplicate=False))
    converted, done = [], {}
    for name, module in list(new_model.named_modules(remove_duplicate=False)):
        if not isinstance(module, QATInt4Linear):
            continue
        if id(module) not in done:
            done[id(module)] = module.to_int4()
            if record is not None:
                record[id(originals[name])] = done[id(module)]
        _set_submodule(new_model, name, done[id(module)])
        converted.append((name, "QATInt4Linear", "Int4Linear"))
    return new_model, converted, []


def _int4_exact_mode(model: nn.Module, use_kernels: bool):
    """qat_exact_mode of group-wise int4 QAT: each QATInt4Linear computes with its Int4Linear."""
    return _module_exact_mode(model, use_kernels, convert_qat_int4, QATInt4Linear)


@torch.no_grad()
def qat_mismatch_report(model: nn.Module, batches) -> dict:
    """How often the fast float simulation differs from the integer model. Per layer, on the same (exact)
    input: the fraction of output activations whose integer level differs and the largest difference in
    steps (float accumulation and float rescale vs int32 accumulation and the fixed-point multiplier;
    almost all differences are one step, at rounding ties of the real-valued result). End to end: the
    fraction of predictions (argmax of a 2-D output) that differ between the fast evaluation and the
    exact mode. `batches`: an iterable of inputs or (input, label) pairs."""
    gm = _qat_graph(model)
    if not isinstance(gm, fx.GraphModule):
        raise ValueError("qat_mismatch_report: the model was prepared module by module (torch.fx could not trace "
                         "it, or group-wise int4 QAT); compare qat_exact_mode with the fast evaluation on your "
                         "batches instead")
    was_training = gm.training
    layers = {name: m for name, m in gm.named_modules() if isinstance(m, (*_QAT_LAYERS, QATAvgPool2d))}
    predictions = [0, 0]
    try:
        for m in layers.values():
            m._mismatch = [0, 0, 0]
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            gm.eval()
            fast = gm(x)
            with qat_exact_mode(gm, use_kernels=True):
                exact = gm(x)
            if fast.dim() == 2:
                predictions[0] += fast.shape[0]
                predictions[1] += int((fast.argmax(1) != exact.argmax(1)).sum())
        stats = {name: m._mismatch for name, m in layers.items()}
    finally:
        for m in layers.values():
            m._mismatch = None
        gm.train(was_training)
    elements, differ = sum(v[0] for v in stats.values()), sum(v[1] for v in stats.values())
    return {
        "elements": elements, "differ": differ, "rate": differ / max(elements, 1),
        "max_steps": max((v[2] for v in stats.values()), default=0),
        "per_layer": {k: {"elements": v[0], "rate": v[1] / max(v[0], 1), "max_steps": v[2]} for k, v in stats.items()},
        "predictions": predictions[0], "predictions_differ": predictions[1] / max(predictions[0], 1),
    }


__all__ = ["QATConfig", "prepare_qat_", "freeze_qat_", "broadcast_qat_state_", "convert_qat", "qat_exact_mode",
           "qat_mismatch_report", "qat_config"]
