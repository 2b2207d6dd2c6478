"""Model conversion: a config dataclass per compression method and a registry of handlers.

``convert_(model, config, filter_fn=None)`` walks the model, offers every module to the handler
registered for ``type(config)``, swaps the modules the handler converts, and returns a
:class:`ConversionReport` saying what was converted, what was skipped and why (the shape of
torchao's ``quantize_``). Families register their configs here with :func:`register_handler`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


class Skip(Exception):
    """Raised by a handler to decline a module; the message becomes the reason in the report."""


@dataclass
class ConversionReport:
    converted: list[tuple[str, str, str]] = field(default_factory=list)  # (name, from, to)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)    # (name, type, reason)
    # (path, first path): a module reached by several paths is converted once, at its first path; the
    # converted module is set at every other path too (the tie kept), and those paths are listed here.
    aliases: list[tuple[str, str]] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)  # the converted model
    # whole-model handlers: how each converted layer was captured ("fx": traced graph, integer between
    # layers; "hooks": module by module, float between layers), and notes such as why fx was not used
    modes: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"converted {len(self.converted)} module(s), skipped {len(self.skipped)}"]
        lines += [f"  + {name}: {src} -> {dst}" + (f" [{self.modes[name]}]" if name in self.modes else "")
                  for name, src, dst in self.converted]
        lines += [f"  = {name}: the same module as {first} (converted once, still shared)"
                  for name, first in self.aliases]
        lines += [f"  - {name} ({kind}): {why}" for name, kind, why in self.skipped]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


# handler(module, config, name) -> replacement module; raises Skip to decline with a reason.
Handler = Callable[[nn.Module, object, str], nn.Module]
_HANDLERS: dict[type, tuple[tuple[type, ...], Handler]] = {}


def register_handler(config_type: type, module_types: tuple[type, ...]):
    """Register the handler that converts modules of `module_types` under `config_type`."""

    def wrap(fn: Handler) -> Handler:
        _HANDLERS[config_type] = (module_types, fn)
        return fn

    return wrap


# Whole-model handlers (configs that must see the graph, e.g. static quantization with residual
# additions): handler(model, config, filter_fn) -> (new model, converted, skipped[, modes, notes]).
_MODEL_HANDLERS: dict[type, Callable] = {}


def register_model_handler(config_type: type):
    def wrap(fn):
        _MODEL_HANDLERS[config_type] = fn
        return fn

    return wrap


# Model preparers (module handlers that need the whole model first, e.g. 2:4 pruning scored on calibration
# activations): preparer(model, config, filter_fn) -> keyword arguments passed to every handler call.
_MODEL_PREPARERS: dict[type, Callable] = {}


def convert_(model: nn.Module, config=None, filter_fn: Callable[[nn.Module, str], bool] | None = None,
             inplace: bool = True) -> ConversionReport:
    """Swap every module the config's handler accepts (and `filter_fn(module, name)` allows).
    With ``inplace=False`` the model is deep-copied first. The converted model is ``report.model``
    (for whole-model configs such as Int8StaticConfig it is a new torch.fx.GraphModule and the
    original model is left as it was). A model prepared by ``prepare_qat_`` converts with no config
    (its QATConfig) into the integer-only model.

    Module handlers (Int8DynamicConfig, CodebookConfig, Sparse24Config) visit every path to every
    module: a module reached by several paths (``Sequential(lin, ReLU(), lin)``, ``self.dec = self.enc``)
    is converted once, at its first path (where filter_fn decides for all of them), and the same
    converted module is set at every path, so the tie is kept; ``report.aliases`` lists the other paths.
    Each replacement takes the train / eval mode of the module it replaces.
    Every module of a handled type that is not converted is in ``report.skipped`` with the reason:
    excluded by filter_fn, declined by the handler, a subclass (its forward may differ, so only exact
    types convert), or a projection of nn.MultiheadAttention (which reads the weights directly).

    `config` may also be a mapping {layer name or fnmatch pattern: config or None}: a different method
    per layer in one model (compress_kernels.mixed; the report is a MixedConversionReport)."""
    if isinstance(config, dict):  # a {layer name or pattern: config} mapping: one method per layer
        from .mixed import convert_mixed

        return convert_mixed(model, config, filter_fn=filter_fn, inplace=inplace)
    if config is None:
        from .qat import qat_config

        config = qat_config(model)
        if config is None:
            raise TypeError("convert_: a config is needed (only a model prepared by prepare_qat_ converts without one)")
    if type(config) in _MODEL_HANDLERS:
        new_model, converted, skipped, *extra = _MODEL_HANDLERS[type(config)](model, config, filter_fn)
        modes, notes = extra if extra else ({}, [])
        return ConversionReport(converted=converted, skipped=skipped, model=new_model, modes=modes, notes=notes)
    if type(config) not in _HANDLERS and type(config) not in _MODEL_HANDLERS:
        raise TypeError(f"convert_: no handler for {type(config).__name__}; known configs: "
                        f"{sorted(t.__name__ for t in list(_HANDLERS) + list(_MODEL_HANDLERS))}")
    if not inplace:
        model = copy.deepcopy(model)
    module_types, handler = _HANDLERS[type(config)]
    prepared = _MODEL_PREPARERS[type(config)](model, config, filter_fn) if type(config) in _MODEL_PREPARERS else {}
    report = ConversionReport()
    # Every path to every module (remove_duplicate=False): a module reached twice (Sequential(lin,
    # ReLU(), lin), or self.dec = self.enc) is converted once, at its first path, and the same converted
    # module is set at every other path, so the tie survives; the report lists the other paths as aliases.
    done: dict[int, tuple[str, nn.Module | None]] = {}  # id(module) -> (first path, converted or None)
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if not name or not isinstance(module, module_types):
            continue
        if id(module) in done:
            first, new = done[id(module)]
            if new is not None:
                _set_submodule(model, name, new)
                report.aliases.append((name, first))
            else:
                report.skipped.append((name, type(module).__name__, f"the same module as {first!r}, which was skipped"))
            continue
        done[id(module)] = (name, None)
        parent_name = name.rpartition(".")[0]
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, nn.MultiheadAttention):
            report.skipped.append((name, type(module).__name__,
                                   "MultiheadAttention reads its projection weights directly (F.multi_head_attention_"
                                   "forward), not through this module's forward: a swapped module would be bypassed"))
            continue
        if type(module) not in module_types:
            base = next(t for t in module_types if isinstance(module, t))
            report.skipped.append((name, type(module).__name__,
                                   f"a subclass of {base.__module__}.{base.__name__}: its forward may differ from "
                                   f"{base.__name__}'s, so it is not converted (convert an exact {base.__name__})"))
            continue
        if filter_fn is not None and not filter_fn(module, name):
            report.skipped.append((name, type(module).__name__, "excluded by filter_fn"))
            continue
        try:
            new = handler(module, config, name, **prepared)
        except Skip as why:
            report.skipped.append((name, type(module).__name__, str(why)))
            continue
        # The replacement takes the replaced module's train / eval mode (a new module is built in training
        # mode): CodebookConv2d computes a training forward with grad enabled in float on the dense
        # reconstruction, which an evaluated or exported (torch.export traces with grad on) model must not run.
        new.train(module.training)
        _set_submodule(model, name, new)
        done[id(module)] = (name, new)
        report.converted.append((name, type(module).__name__, type(new).__name__))
    report.model = model
    return report


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


# ---------------------------------------------------------------- int8 static, integer-only

from .hooks_quant import convert_static_any  # noqa: E402
from .static_quant import Int8StaticConfig  # noqa: E402

register_model_handler(Int8StaticConfig)(convert_static_any)  # traced (fx) or module-level (hooks)


# ---------------------------------------------------------------- quantization-aware training

from .qat import QATConfig, convert_qat  # noqa: E402

register_model_handler(QATConfig)(convert_qat)


# ---------------------------------------------------------------- int8 dynamic (QuantLinear)


@dataclass
class Int8DynamicConfig:
    """nn.Linear -> QuantLinear(mode="dynamic"): int8 weights (per channel by default), activations
    quantized per row at run time, float in and out."""

    per_channel: bool = True

    def __post_init__(self):
        from ._config_checks import check_bool

        check_bool(self, "per_channel")


@register_handler(Int8DynamicConfig, (nn.Linear,))
def _int8_dynamic(module: nn.Module, config: Int8DynamicConfig, name: str) -> nn.Module:
    from .nn import QuantLinear

    return QuantLinear.from_float(module, dynamic=True, per_channel=config.per_channel)


# ---------------------------------------------------------------- group-wise int4 weights (Int4Linear)


@dataclass
class Int4WeightConfig:
    """nn.Linear -> Int4Linear: 4-bit weights with one fp32 scale (and, symmetric=False, one zero
    point) per group of `group_size` input features (32, 64, 128 or 256), packed two per byte.
    activation: "int8" (w4a8: activations quantized per row to int8 at run time, exact int32 group
    sums), "bf16" or "fp32" (w4a16, weight-only). A layer whose in_features group_size does not
    divide is left in float (listed as skipped).

    conv2d: also convert ungrouped, zero-padded nn.Conv2d layers into Int4Conv2d (im2col +
    int4_linear, depth zero-padded to a multiple of group_size; see nn/int4_conv.py); False leaves
    them as they are (listed as skipped).

    rounding_weights: "nearest" (each weight to its nearest level) or "adaround" (symmetric only:
    compress_kernels.adaround on each converted layer's inputs over `calibration`, a non-empty list or
    tuple of batches (tensors or (input, label) pairs), collected once from the float model, with the
    scales of "nearest"); ``adaround`` sets the optimization (an AdaRoundConfig with bits=4, this
    group_size and symmetric=True; default AdaRoundConfig(bits=4, group_size=group_size))."""

    group_size: int = 32
    activation: str = "int8"
    symmetric: bool = True
    conv2d: bool = False
    rounding_weights: str = "nearest"
    calibration: list | tuple | None = field(default=None, repr=False)
    adaround: object = None  # AdaRoundConfig | None

    def __post_init__(self):
        from ._config_checks import check_bool, check_choice
        from .numerics import INT4_GROUP_SIZES

        check_choice(self, "group_size", INT4_GROUP_SIZES)
        check_choice(self, "activation", ("int8", "bf16", "fp32"))
        check_bool(self, "symmetric")
        check_bool(self, "conv2d")
        check_choice(self, "rounding_weights", ("nearest", "adaround"))
        from .adaround import check_int4_adaround_settings

        check_int4_adaround_settings(self)


def _int4_prepare(model: nn.Module, config: Int4WeightConfig, filter_fn) -> dict:
    """rounding_weights="adaround": {id(nn.Linear): (q, scales)} of every layer the handler converts."""
    if config.rounding_weights != "adaround":
        return {}
    from .adaround import int4_adaround_weights

    return {"rounded": int4_adaround_weights(model, config, filter_fn)}


@register_handler(Int4WeightConfig, (nn.Linear, nn.Conv2d))
def _int4_weight(module: nn.Module, config: Int4WeightConfig, name: str, rounded: dict | None = None) -> nn.Module:
    from .nn.int4 import Int4Linear

    if isinstance(module, nn.Conv2d):
        from .nn.int4_conv import Int4Conv2d, check_int4_conv

        if not config.conv2d:
            raise Skip("conv2d=False (pass Int4WeightConfig(conv2d=True) for Int4Conv2d)")
        try:
            check_int4_conv("Int4Conv2d", module)
        except ValueError as why:
            raise Skip(str(why)) from None
        return Int4Conv2d.from_float(module, config.group_size, config.activation, config.symmetric,
                                     rounded=(rounded or {}).get(id(module)))
    if module.in_features % config.group_size:
        raise Skip(f"in_features={module.in_features} is not a multiple of group_size={config.group_size}")
    return Int4Linear.from_float(module, config.group_size, config.activation, config.symmetric,
                                 rounded=(rounded or {}).get(id(module)))


_MODEL_PREPARERS[Int4WeightConfig] = _int4_prepare


# ---------------------------------------------------------------- k-means codebooks


@dataclass
class CodebookConfig:
    """nn.Linear / nn.Conv2d -> CodebookLinear / CodebookConv2d: k-means weight sharing with 2^bits
    shared fp32 values per layer (granularity="layer") or per `group_size` output channels
    ("group"), b-bit packed indices, the lookup fused into the kernels. zero_centroid: reserve an
    exact-zero entry for pruned weights (None: when >= 1% of a layer's weights are exactly zero).
    Layers with fewer than `min_weights` weights are left in fp32."""

    bits: int = 4
    granularity: str = "layer"
    group_size: int | None = None
    init: str = "best"
    seed: int = 0
    zero_centroid: bool | None = None
    min_weights: int = 0

    def __post_init__(self):
        from ._config_checks import check_bool, check_choice, check_int

        check_int(self, "bits", 1, 8)
        check_choice(self, "granularity", ("layer", "group"))
        if self.granularity == "group":
            check_int(self, "group_size", 1)
        elif self.group_size is not None:
            raise ValueError(f'CodebookConfig: group_size must be None with granularity="layer" (one codebook '
                             f'per layer), got {self.group_size!r}; pass granularity="group" to use it')
        check_choice(self, "init", ("linear", "kmeans++", "best"))
        check_int(self, "seed", 0)
        if self.zero_centroid is not None:
            check_bool(self, "zero_centroid")
        check_int(self, "min_weights", 0)


@register_handler(CodebookConfig, (nn.Linear, nn.Conv2d))
def _codebook(module: nn.Module, config: CodebookConfig, name: str) -> nn.Module:
    from .nn.codebook import CodebookConv2d, CodebookLinear

    if module.weight.numel() < config.min_weights:
        raise Skip(f"{module.weight.numel()} weights < min_weights={config.min_weights}")
    cls = CodebookLinear if isinstance(module, nn.Linear) else CodebookConv2d
    try:
        return cls.from_float(module, config.bits, config.granularity, config.group_size, init=config.init,
                              seed=config.seed, zero_centroid=config.zero_centroid)
    except ValueError as why:
        raise Skip(str(why)) from None



# ---------------------------------------------------------------- 2:4 sparsity


@dataclass
class Sparse24Config:
    """nn.Linear / nn.Conv2d -> SparseLinear / SparseConv2d on the 2:4 kernels, fp32 or int8
    (int8=True: per-channel symmetric int8 weights, dynamic per-tensor int8 activations).
    prune=True makes weights that are not 2:4 yet 2:4 by `method`; prune=False skips them:

    * "magnitude": the best of the six patterns per group of four by |w| (no data);
    * "wanda" / "sparsegpt" (compress_kernels.calibrated_prune): scored on the inputs each nn.Linear
      sees on `calibration` (a non-empty list or tuple of batches, each a tensor, a tuple of positional
      inputs or a dict of keyword inputs); SparseGPT also updates the kept weights (`damp`: fraction of
      the mean Hessian diagonal added to it; `block_size`: columns updated together, a multiple of 4).
      `sequential`: prune layer after layer on the inputs of the already pruned model (one pass of the
      batches per layer) or all layers on the dense model's inputs (one pass). Only nn.Linear layers
      are scored; a Conv2d that is not 2:4 yet is skipped with the reason.

    Layers whose K (in_features, or kh * kw * in_channels) is not a multiple of 4, such as a 3-channel
    3x3 stem (K = 27), and grouped convolutions are skipped with the reason in the report."""

    int8: bool = False
    prune: bool = False
    method: str = "magnitude"
    calibration: list | tuple | None = field(default=None, repr=False)
    sequential: bool = True
    damp: float = 0.01
    block_size: int = 128

    def __post_init__(self):
        from collections.abc import Mapping

        import torch

        from ._config_checks import check_bool, check_choice, check_float, check_int
        from .calibrated_prune import METHODS

        check_bool(self, "int8")
        check_bool(self, "prune")
        check_choice(self, "method", METHODS)
        check_bool(self, "sequential")
        check_float(self, "damp", "in [0, 1]", lambda v: 0 <= v <= 1)
        check_int(self, "block_size", 4)
        if self.block_size % 4:
            raise ValueError(f"Sparse24Config: block_size must be a multiple of 4 (whole groups of four), got "
                             f"{self.block_size}")
        if self.method == "magnitude":
            if self.calibration is not None:
                raise ValueError('Sparse24Config: calibration is read only by method="wanda" or "sparsegpt"; '
                                 'method="magnitude" needs no data (pass calibration=None)')
            return
        if not self.prune:
            raise ValueError(f'Sparse24Config: method={self.method!r} is a pruning criterion: it needs prune=True')
        if not isinstance(self.calibration, (list, tuple)) or not self.calibration:
            raise TypeError(f"Sparse24Config: method={self.method!r} needs calibration, a non-empty list or tuple of "
                            f"batches (it is run once per layer with sequential=True), got "
                            f"{type(self.calibration).__name__}")
        for index, batch in enumerate(self.calibration):
            if not isinstance(batch, (torch.Tensor, tuple, list, Mapping)):
                raise TypeError(f"Sparse24Config: calibration[{index}] is a {type(batch).__name__}: expected a "
                                "tensor, a tuple / list of positional inputs or a dict of keyword inputs")


def _sparse24_prepare(model: nn.Module, config: Sparse24Config, filter_fn) -> dict:
    """Wanda / SparseGPT: the 2:4 weights of every nn.Linear the handler would prune, by id(module)."""
    if config.method == "magnitude" or not config.prune:
        return {}
    from .calibrated_prune import calibrated_24_weights
    from .nn.sparse import is_24_sparse

    layers: dict[str, nn.Linear] = {}
    for name, module in model.named_modules():
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        if (type(module) is nn.Linear and module.in_features % 4 == 0 and not is_24_sparse(module.weight)
                and not isinstance(parent, nn.MultiheadAttention)
                and (filter_fn is None or filter_fn(module, name))):
            layers[name] = module
    weights = calibrated_24_weights(model, layers, config)
    return {"pruned": {id(layers[name]): w for name, w in weights.items()}}


@register_handler(Sparse24Config, (nn.Linear, nn.Conv2d))
def _sparse24(module: nn.Module, config: Sparse24Config, name: str, pruned: dict | None = None) -> nn.Module:
    import torch

    from .nn.sparse import SparseConv2d, SparseLinear, is_24_sparse
    from .prune import mask_2to4

    k = module.weight[0].numel()
    if k % 4:
        what = "in_features" if isinstance(module, nn.Linear) else "kh * kw * in_channels"
        raise Skip(f"K = {what} = {k} is not a multiple of 4 (2:4 needs groups of four)")
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        raise Skip(f"groups={module.groups}: only groups=1 convolutions are supported")
    if isinstance(module, nn.Conv2d) and (module.padding_mode != "zeros" or isinstance(module.padding, str)):
        raise Skip("only numeric zero padding is supported")
    if not is_24_sparse(module.weight):
        if not config.prune:
            raise Skip("weight is not 2:4 sparse (prune it first, or pass prune=True)")
        if config.method != "magnitude" and id(module) not in (pruned or {}):
            raise Skip(f"method={config.method!r} scores nn.Linear inputs only; this {type(module).__name__} is "
                       "not 2:4 (prune it first, or convert it with method=\"magnitude\")")
        weight_24 = mask_2to4(module.weight) * module.weight if config.method == "magnitude" else pruned[id(module)]
        module = copy.deepcopy(module)
        with torch.no_grad():  # groups along K of sparse24_layout.weight_rows
            module.weight.copy_(weight_24)
    cls = SparseLinear if isinstance(module, nn.Linear) else SparseConv2d
    return cls.from_float(module, int8=config.int8)


_MODEL_PREPARERS[Sparse24Config] = _sparse24_prepare


# ---------------------------------------------------------------- weight-only fp8


@dataclass
class Fp8WeightConfig:
    """nn.Linear / nn.Conv2d -> Fp8WeightLinear / Fp8WeightConv2d: weights stored as one byte each
    (FP8 codes, format "e4m3" = E4M3FN or "e5m2") with a fp32 scale per output channel, decoded by a
    table lookup into bf16 at every call; activations stay floating point. Layers with fewer than
    `min_weights` weights and convolutions without numeric zero padding are left as they are (the
    report says why)."""

    format: str = "e4m3"
    min_weights: int = 0

    def __post_init__(self):
        from ._config_checks import check_choice, check_int

        check_choice(self, "format", ("e4m3", "e5m2"))
        check_int(self, "min_weights", 0)


@register_handler(Fp8WeightConfig, (nn.Linear, nn.Conv2d))
def _fp8_weight(module: nn.Module, config: Fp8WeightConfig, name: str) -> nn.Module:
    from .nn.fp8 import Fp8WeightConv2d, Fp8WeightLinear

    if module.weight.numel() < config.min_weights:
        raise Skip(f"{module.weight.numel()} weights < min_weights={config.min_weights}")
    if isinstance(module, nn.Linear):
        return Fp8WeightLinear.from_float(module, config.format)
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise Skip("only numeric zero padding is supported")
    return Fp8WeightConv2d.from_float(module, config.format)
