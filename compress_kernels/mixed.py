"""Mixed conversion: a different compression method per layer in one model.

    ck.calibrate(model, batches)                       # only needed when a layer gets Int8StaticConfig
    report = ck.convert_(model, {"conv1": None,                      # keep float
                                 "layer1.*": ck.Int8StaticConfig(),
                                 "layer2.*.conv1": ck.ChannelPruneConfig(0.5),   # not with static layers
                                 "layer[34].*": ck.CodebookConfig(bits=4),
                                 "fc": ck.Sparse24Config(prune=True)})
    mixed = report.model

The mapping's keys are layer names (``model.named_modules()`` paths of nn.Conv2d / nn.Linear) or
fnmatch patterns over them (``*`` also crosses dots). Every key must match at least one layer and
no layer may be matched by two keys; both mistakes are refused when ``convert_`` is called, naming
the keys and layers. A value is a config (any config with a module handler, Int8StaticConfig,
ChannelPruneConfig) or None (the layer stays float); layers no key matches stay float too.

Without Int8StaticConfig the model is converted module by module (in place unless inplace=False):
channel pruning first (it changes the next conv's input channels), then each module config on its
layers. With Int8StaticConfig the model must be calibrated (``calibrate``); the integer graph is
built from the calibrated copy (BatchNorm folded into every conv) with the static layers as
integer chains, and every other layer compressed in that graph by its own config, so a codebook,
2:4 or float layer between integer ones runs in float between a DeQuantize and a Quantize
(``report.boundaries`` lists each of them). Additions and average pools with only float inputs stay
float. The static layers' activation ranges are the ones calibration observed on the float model.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field

from torch import nn

from .convert import _HANDLERS, _MODEL_HANDLERS, ConversionReport, Skip, convert_


@dataclass
class ChannelPruneConfig:
    """Remove `amount` of a basic block's inner channels (the output channels of its conv1 and bn1,
    and the matching input channels of its conv2), the lowest l1 (or l2) scores first
    (``prune.prune_channels_`` on that one block); in a mixed mapping, for a block's conv1 only.
    multiple_of rounds the kept count (see prune_channels_). Not combinable with Int8StaticConfig in
    one mapping: calibration observed the unpruned activations; prune, calibrate, then convert."""

    amount: float = 0.5
    criterion: str = "l1"
    multiple_of: int = 1

    def __post_init__(self):
        from ._config_checks import check_choice, check_float, check_int

        check_float(self, "amount", "in (0, 1)", lambda v: 0 < v < 1)
        check_choice(self, "criterion", ("l1", "l2"))
        check_int(self, "multiple_of", 1)


@dataclass
class MixedConversionReport(ConversionReport):
    """ConversionReport of a mapping: plus `assignment` {layer: config repr, or "float"} and, for a
    model with static int8 layers, `boundaries`: (kind, producer, consumers) of every Quantize /
    DeQuantize between the integer chains and the float or otherwise compressed parts."""

    assignment: dict[str, str] = field(default_factory=dict)
    boundaries: list[tuple[str, str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [super().__str__()]
        lines += [f"  | {kind}: {src} -> {dst}" for kind, src, dst in self.boundaries]
        return "\n".join(lines)


_LAYER_TYPES = (nn.Conv2d, nn.Linear)


def eligible_layers(model: nn.Module) -> list[str]:
    """Names of the layers a mapping can address: every path to an nn.Conv2d / nn.Linear."""
    return [name for name, m in model.named_modules(remove_duplicate=False) if name and isinstance(m, _LAYER_TYPES)]


def _describe(config) -> str:
    return "float" if config is None else repr(config)


def block_conv1_pairs(model: nn.Module) -> dict[str, tuple[str, str | None, str]]:
    """{conv1 path: (conv1 path, bn1 path or None, conv2 path)} of every basic block (prune.block_pairs)."""
    from .prune import block_pairs

    out = {}
    for name, _, bn, _ in block_pairs(model):
        out[f"{name}.conv1"] = (f"{name}.conv1", f"{name}.bn1" if bn is not None else None, f"{name}.conv2")
    return out


def resolve_mapping(model: nn.Module, mapping: dict) -> dict[str, object]:
    """{layer path: config or None} for every layer a key of `mapping` matches; refuses keys that
    match nothing, layers matched by two keys, configs without a mixed-conversion path, and layers
    of a type the config cannot convert."""
    from .static_quant import Int8StaticConfig

    if not isinstance(mapping, dict) or not mapping:
        raise TypeError("convert_: a mapping must be a non-empty dict {layer name or pattern: config}, "
                        f"got {mapping!r}")
    layers = eligible_layers(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    pairs = None
    owner: dict[str, str] = {}
    resolved: dict[str, object] = {}
    for key, config in mapping.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"convert_: mapping keys must be layer names or fnmatch patterns (non-empty str), "
                            f"got {key!r}")
        ok_types = (type(None), Int8StaticConfig, ChannelPruneConfig, *_HANDLERS)
        whole_model_only = type(config) in _MODEL_HANDLERS and type(config) is not Int8StaticConfig
        if not isinstance(config, ok_types) or whole_model_only:
            raise TypeError(f"convert_: mapping[{key!r}] is {config!r}; a mapping value must be None (keep float), "
                            f"Int8StaticConfig, ChannelPruneConfig or a config with a module handler "
                            f"({sorted(t.__name__ for t in _HANDLERS)})")
        matched = [name for name in layers if name == key or fnmatch.fnmatchcase(name, key)]
        if not matched:
            shown = ", ".join(layers[:12]) + (", ..." if len(layers) > 12 else "")
            raise ValueError(f"convert_: mapping key {key!r} matches no layer (nn.Conv2d / nn.Linear) of "
                             f"{type(model).__name__}; its layers: {shown}")
        for name in matched:
            if name in owner:
                raise ValueError(f"convert_: layer {name!r} is matched by two mapping keys, {owner[name]!r} and "
                                 f"{key!r}; each layer takes one config: narrow one of the patterns")
            owner[name] = key
            module = modules[name]
            if type(config) in _HANDLERS and not isinstance(module, _HANDLERS[type(config)][0]):
                raise ValueError(f"convert_: mapping[{key!r}] = {type(config).__name__} cannot convert layer {name!r} "
                                 f"({type(module).__name__}); it converts "
                                 f"{[t.__name__ for t in _HANDLERS[type(config)][0]]}")
            if isinstance(config, ChannelPruneConfig):
                pairs = block_conv1_pairs(model) if pairs is None else pairs
                if name not in pairs:
                    raise ValueError(f"convert_: mapping[{key!r}] = ChannelPruneConfig needs the conv1 of a basic "
                                     f"block (conv1 -> bn1 -> conv2), got layer {name!r}; block conv1 layers: "
                                     f"{sorted(pairs)}")
            resolved[name] = config
    # A module reached by several paths is one layer: all its paths must agree.
    first_path: dict[int, str] = {}
    for name in layers:
        first = first_path.setdefault(id(modules[name]), name)
        if first != name and resolved.get(first) != resolved.get(name):
            raise ValueError(f"convert_: layers {first!r} and {name!r} are the same module (shared) but the mapping "
                             f"gives them {_describe(resolved.get(first))} and {_describe(resolved.get(name))}")
    statics = {repr(c) for c in resolved.values() if isinstance(c, Int8StaticConfig)}
    if len(statics) > 1:
        raise ValueError(f"convert_: a mapping takes one Int8StaticConfig (one integer graph), got {sorted(statics)}")
    if statics and any(isinstance(c, ChannelPruneConfig) for c in resolved.values()):
        raise ValueError("convert_: ChannelPruneConfig and Int8StaticConfig in one mapping: the calibration observed "
                         "the unpruned activations; convert the pruning mapping first, calibrate the pruned model, "
                         "then convert the static mapping")
    return resolved


def _groups(resolved: dict[str, object]) -> list[tuple[object, set[str]]]:
    """[(config, layer paths)] for every distinct module config (equal configs share a group)."""
    out: list[tuple[object, set[str]]] = []
    for name, config in resolved.items():
        if config is None or type(config) not in _HANDLERS:
            continue
        for c, names in out:
            if c == config and type(c) is type(config):
                names.add(name)
                break
        else:
            out.append((config, {name}))
    return out


def convert_mixed(model: nn.Module, mapping: dict, filter_fn=None, inplace: bool = True) -> MixedConversionReport:
    """convert_ with a {layer name or pattern: config} mapping (see the module docstring)."""
    from .static_quant import Int8StaticConfig

    if filter_fn is not None:
        raise TypeError("convert_: filter_fn cannot be combined with a mapping (the mapping already says which "
                        "layers convert; map a layer to None to keep it float)")
    resolved = resolve_mapping(model, mapping)
    assignment = {name: _describe(resolved.get(name)) for name in eligible_layers(model)}
    static = next((c for c in resolved.values() if isinstance(c, Int8StaticConfig)), None)
    if static is not None:
        report = _convert_with_static(model, resolved, static)
    else:
        if not inplace:
            model = copy.deepcopy(model)
        report = MixedConversionReport(model=model)
        _prune_channels(model, resolved, report)
        for config, names in _groups(resolved):
            modules = dict(model.named_modules(remove_duplicate=False))
            ids = {id(modules[n]) for n in names}
            part = convert_(model, config, filter_fn=lambda m, _name, ids=ids: id(m) in ids)
            report.converted += part.converted
            report.aliases += part.aliases
            report.skipped += [s for s in part.skipped if s[2] != "excluded by filter_fn"]
    report.assignment = assignment
    return report


def _prune_channels(model: nn.Module, resolved: dict[str, object], report: MixedConversionReport) -> None:
    from .prune import prune_channels_

    pairs = block_conv1_pairs(model)
    for name, config in resolved.items():
        if not isinstance(config, ChannelPruneConfig):
            continue
        conv_name, bn_name, next_name = pairs[name]
        conv, next_conv = model.get_submodule(conv_name), model.get_submodule(next_name)
        bn = model.get_submodule(bn_name) if bn_name else None
        before, after = prune_channels_(model, config.amount, config.criterion, pairs=[(name, conv, bn, next_conv)],
                                        multiple_of=config.multiple_of)[name]
        report.converted.append((name, "Conv2d", f"Conv2d ({before} -> {after} output channels; "
                                                 f"{next_name} {before} -> {after} inputs)"))


def _convert_with_static(model: nn.Module, resolved: dict[str, object], static) -> MixedConversionReport:
    """The integer graph of the static layers; every other compressed layer is converted by its own
    handler inside that graph (on the calibrated, BatchNorm-folded copy of the layer)."""
    from torch import fx

    from .nn.integer import DeQuantize, Quantize
    from .static_quant import _OBSERVED_ATTR, convert_static

    static_names = {name for name, c in resolved.items() if c is static or c == static}
    gm, converted, skipped = convert_static(model, static, filter_fn=lambda _m, name: name in static_names,
                                            keep_float_ops=True)
    observed: fx.GraphModule = getattr(model, _OBSERVED_ATTR)
    report = MixedConversionReport(model=gm)
    report.converted += converted
    others = {name: c for name, c in resolved.items() if name not in static_names}
    # The graph keeps the calibrated copy's float modules under new keys: find each by identity.
    key_of = {id(m): key for key, m in gm.named_children()}
    handled: set[str] = set()
    layer_names = set(eligible_layers(model))
    for what, kind, reason in skipped:
        if reason == "excluded by filter_fn":
            if what in others and others[what] is not None:
                continue  # converted by its own config below
            reason = ("kept float (no config in the mapping)" if what in layer_names
                      else "runs in float (its inputs are float)")
        report.skipped.append((what, kind, reason))
    for name, config in others.items():
        if config is None:
            continue
        module = observed.get_submodule(name)
        key = key_of.get(id(module))
        if key is None:
            report.skipped.append((name, type(module).__name__, "not called in the traced graph"))
            continue
        module_types, handler = _HANDLERS[type(config)]
        if type(module) not in module_types:
            report.skipped.append((name, type(module).__name__, f"not an exact {module_types}"))
            continue
        try:
            new = handler(module, config, name)
        except Skip as why:
            report.skipped.append((name, type(module).__name__, str(why)))
            continue
        setattr(gm, key, new)
        handled.add(key)
        report.converted.append((name, type(module).__name__, type(new).__name__))
    gm.recompile()
    # Where the integer chains meet the float (or otherwise compressed) parts.
    name_of = {key: key for key, _ in gm.named_children()}
    name_of.update({n.replace(".", "_"): n for n in layer_names if n.replace(".", "_") in name_of})
    for key, m in observed.named_modules():
        if id(m) in key_of:
            name_of[key_of[id(m)]] = key

    def label(node) -> str:
        if node.op == "call_module":
            return name_of.get(node.target, node.target)
        return "model input" if node.op == "placeholder" else ("model output" if node.op == "output" else node.name)

    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        if isinstance(mod, (Quantize, DeQuantize)):
            src = label(node.args[0])
            dst = ", ".join(label(u) for u in node.users)
            report.boundaries.append((type(mod).__name__, src, dst))
    return report
