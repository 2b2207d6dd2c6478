"""Which layer to compress how: per-layer sensitivity, a mixed assignment under a budget, the Pareto front.

    table = ck.sensitivity(model, (x_val, y_val))            # every layer x every method, one at a time
    table.to_markdown(); table.to_json("sensitivity.json"); table.heatmap("sensitivity.png")
    result = ck.assign(model, (x_val, y_val), budget=200_000, kind="bytes", table=table)
    result.mapping            # {layer: config}: convert_(model, result.mapping) builds the mixed model
    result.measured           # the real mixed model, measured (effects of layers do not add exactly)
    result.plot("pareto.png")

A *cell* of the table is one layer compressed by one method, every other layer float. It records
the task metric of the whole model (top-1 % by default) and its drop from the float model, the
SQNR of the model output against the float output, the layer's measured latency with the real
kernel (the converted module alone, on the layer's real input: the first ``latency_batch`` rows of
the input it receives on `data`, the fastest of ``timing_reps`` round-robin calls against the
float layer) and its stored bytes (parameters and persistent buffers of the converted module, as
``study.stored_bytes`` counts them, against the float layer).

What is cached, and what each cell runs. The float model is traced once with torch.fx; one float
pass over `data` stores, per batch, the value of every graph node that is still needed at some
layer (its *live* values: the layer's input, plus e.g. a residual block's identity branch). A
module-swap cell (codebook, 2:4, dynamic int8, channel pruning) then runs only the graph from the
layer on, seeded with those cached values and with the layer's node(s) calling the converted
module(s): the layers before it are not recomputed. A static int8 cell is the real mixed
conversion ``convert_(model, {layer: Int8StaticConfig()})`` (its integer chain can reach past the
layer: the BatchNorm folded in, the ReLU fused as the output clamp, a residual addition whose
input is integer runs as QuantAdd), so it runs its converted graph end to end. Calibration for the
static cells is done once, on a copy of the model (``calibration`` batches; by default the first
two batches of 64 of `data`).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch import fx, nn
from tqdm.auto import tqdm

from .convert import _HANDLERS, CodebookConfig, Int8DynamicConfig, Skip, Sparse24Config, convert_
from .mixed import ChannelPruneConfig, block_conv1_pairs
from .static_quant import Int8StaticConfig


def default_methods() -> dict[str, object]:
    """The methods swept by default: every compression the package converts a single layer with."""
    return {"int8_static": Int8StaticConfig(), "kmeans4": CodebookConfig(bits=4), "kmeans2": CodebookConfig(bits=2),
            "sparse24": Sparse24Config(prune=True), "sparse24_int8": Sparse24Config(prune=True, int8=True),
            "int8_dynamic": Int8DynamicConfig(), "channels50": ChannelPruneConfig(0.5)}


def _method_dict(methods) -> dict[str, object]:
    if methods is None:
        return default_methods()
    if isinstance(methods, dict):
        items = list(methods.items())
    elif isinstance(methods, (list, tuple)):
        items = [(repr(m), m) for m in methods]
    else:
        raise TypeError(f"sensitivity: methods must be a dict {{name: config}} or a list of configs, got {methods!r}")
    if not items:
        raise ValueError("sensitivity: methods is empty; pass at least one config")
    known = (Int8StaticConfig, ChannelPruneConfig, *_HANDLERS)
    for name, config in items:
        if not isinstance(name, str) or not isinstance(config, known):
            raise TypeError(f"sensitivity: method {name!r} is {config!r}; a method must be Int8StaticConfig, "
                            f"ChannelPruneConfig or a config with a module handler "
                            f"({sorted(t.__name__ for t in _HANDLERS)})")
    return dict(items)


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent (the default metric; higher is better)."""
    return 100.0 * (logits.argmax(1) == labels).float().mean().item()


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """10 log10(sum ref^2 / sum (ref - test)^2) in dB; inf when test equals reference exactly."""
    noise = (reference.double() - test.double()).square().sum().item()
    signal = reference.double().square().sum().item()
    return math.inf if noise == 0 else 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def _check_data(data, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        raise TypeError(f"{what}: data must be (inputs, labels) tensors, got {type(data).__name__}")
    x, y = data
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"{what}: data must hold as many labels as inputs (at least one), got {len(x)} inputs and "
                         f"{len(y)} labels")
    return x, y


# ---------------------------------------------------------------- timing and bytes


@torch.no_grad()
def best_times_us(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 2) -> dict[str, float]:
    """Fastest microseconds per call of every function over `reps` calls made round-robin (each
    repetition calls every function once, so a load change hits all of them alike). The minimum,
    not the median: on a shared, loaded machine most calls wait for a core, the fastest one did not."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t)
    return {name: min(s) * 1e6 for name, s in samples.items()}


def module_bytes(*modules: nn.Module) -> int:
    """Stored bytes of the modules (parameters and persistent buffers, as study.stored_bytes counts them)."""
    from .study.runner import stored_bytes

    return sum(stored_bytes(m) for m in modules)


# ---------------------------------------------------------------- running the traced graph from a node


def _run_nodes(gm: fx.GraphModule, nodes: list[fx.Node], start: int, env: dict, overrides: dict) -> object:
    """Evaluate nodes[start:] of gm's graph with `env` holding every value they read from before
    `start`; overrides {node: callable} replaces the module a call_module node calls."""
    for node in nodes[start:]:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            return fx.node.map_arg(node.args[0], env.__getitem__)
        args = fx.node.map_arg(node.args, env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        if node.op == "call_module":
            fn = overrides[node] if node in overrides else gm.get_submodule(node.target)
            env[node] = fn(*args, **kwargs)
        elif node.op == "call_function":
            env[node] = node.target(*args, **kwargs)
        elif node.op == "call_method":
            env[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
        elif node.op == "get_attr":
            obj = gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            env[node] = obj
    raise RuntimeError("sensitivity: the traced graph has no output node")


# ---------------------------------------------------------------- the table


@dataclass
class Cell:
    """One layer compressed by one method, every other layer float. status "ok", or "n/a" with the reason."""

    layer: str
    method: str
    status: str
    reason: str = ""
    metric: float | None = None          # task metric of the whole model (top-1 % by default)
    drop: float | None = None            # float metric - metric (positive: worse)
    sqnr_db: float | None = None         # model output vs the float model output (inf: identical)
    latency_us: float | None = None      # the converted layer alone, on its real input (fastest call)
    latency_float_us: float | None = None
    bytes: int | None = None             # stored bytes of the converted layer
    bytes_float: int | None = None


def _json_text(d: dict, path: str | None) -> str:
    """d as indented JSON, also written to path when given."""
    text = json.dumps(d, indent=2)
    if path is not None:
        with open(path, "w") as f:
            f.write(text + "\n")
    return text


def _json_number(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return v


@dataclass
class SensitivityTable:
    layers: list[str]
    methods: dict[str, str]              # name -> config repr
    metric_name: str
    float_metric: float
    cells: list[Cell]
    input_shape: list[int]               # of the data
    latency_batch: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def cell(self, layer: str, method: str) -> Cell:
        for c in self.cells:
            if c.layer == layer and c.method == method:
                return c
        raise KeyError(f"SensitivityTable.cell: no cell ({layer!r}, {method!r}); layers {self.layers}, "
                       f"methods {list(self.methods)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cells"] = [{k: _json_number(v) for k, v in c.items()} for c in d["cells"]]
        return d

    def to_json(self, path: str | None = None) -> str:
        return _json_text(self.to_dict(), path)

    def to_markdown(self) -> str:
        lines = [f"Float model: {self.metric_name} = {self.float_metric:.2f}. One layer compressed at a time; drop = "
                 f"float {self.metric_name} - {self.metric_name}; SQNR of the model output vs float; latency of the "
                 f"layer alone on its real input (batch {self.latency_batch}, fastest of the timed calls), against "
                 "the float layer; stored bytes of the layer.", "",
                 f"| layer | method | {self.metric_name} | drop | output SQNR dB | us (float us) | bytes (float) |",
                 "|---|---|---|---|---|---|---|"]
        for c in self.cells:
            if c.status != "ok":
                lines.append(f"| {c.layer} | {c.method} | n/a | | | | {c.reason} |")
                continue
            lines.append(f"| {c.layer} | {c.method} | {c.metric:.2f} | {c.drop:+.2f} | {c.sqnr_db:.1f} | "
                         f"{c.latency_us:.1f} ({c.latency_float_us:.1f}) | {c.bytes:,} ({c.bytes_float:,}) |")
        lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def heatmap(self, path: str) -> str:
        """Two heat maps (layers x methods): metric drop and output SQNR; n/a cells grey."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        methods = list(self.methods)
        drop = np.full((len(self.layers), len(methods)), np.nan)
        sq = np.full_like(drop, np.nan)
        for c in self.cells:
            if c.status == "ok":
                i, j = self.layers.index(c.layer), methods.index(c.method)
                drop[i, j] = c.drop
                sq[i, j] = min(c.sqnr_db, 80.0)
        height = max(3.0, 0.32 * len(self.layers) + 1.5)
        fig, axes = plt.subplots(1, 2, figsize=(4 + 1.5 * len(methods), height))
        panels = ((drop, f"{self.metric_name} drop (points)", "Reds", "{:+.1f}"),
                  (sq, "output SQNR (dB, capped at 80)", "viridis", "{:.0f}"))
        for ax, (values, title, cmap, fmt) in zip(axes, panels):
            colors = plt.get_cmap(cmap).with_extremes(bad="lightgrey")
            im = ax.imshow(np.ma.masked_invalid(values), cmap=colors, aspect="auto")
            ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right", fontsize=8)
            ax.set_yticks(range(len(self.layers)), self.layers, fontsize=7)
            for i in range(values.shape[0]):
                for j in range(values.shape[1]):
                    text = "n/a" if np.isnan(values[i, j]) else fmt.format(values[i, j])
                    ax.text(j, i, text, ha="center", va="center", fontsize=6)
            ax.set_title(title, fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.04)
        fig.suptitle(f"per-layer sensitivity (float {self.metric_name} {self.float_metric:.2f})", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


# ---------------------------------------------------------------- the sweep


def _batches(x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [x[i:i + batch_size] for i in range(0, len(x), batch_size)]


@torch.no_grad()
def sensitivity(model: nn.Module, data, methods=None, metric: str | Callable = "top1", *,
                calibration: Iterable[torch.Tensor] | None = None, calibrated: nn.Module | None = None,
                layers: list[str] | None = None, batch_size: int = 256, latency_batch: int = 32,
                timing_reps: int = 15, progress: bool = True) -> SensitivityTable:
    """Compress every eligible layer (nn.Conv2d / nn.Linear of the traced model) by every method,
    one at a time, and measure each cell (see the module docstring). `data` is (inputs, labels);
    `methods` a dict {name: config} or a list of configs (default: default_methods()); `metric`
    "top1" or fn(logits, labels) -> float, higher is better; `layers` restricts the sweep;
    `calibrated`: a copy of the model already calibrated (ck.calibrate) to reuse for the static cells."""
    from .static_quant import calibrate, trace

    start_time = time.perf_counter()
    x, y = _check_data(data, "sensitivity")
    methods = _method_dict(methods)
    if metric == "top1":
        metric_fn, metric_name = top1, "top-1 %"
    elif callable(metric):
        metric_fn, metric_name = metric, getattr(metric, "__name__", "metric")
    else:
        raise ValueError('sensitivity: metric must be "top1" or a callable fn(logits, labels) -> float, '
                         f"got {metric!r}")
    for name, value in (("batch_size", batch_size), ("latency_batch", latency_batch), ("timing_reps", timing_reps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"sensitivity: {name} must be an int >= 1, got {value!r}")
    model.eval()
    gm = trace(model, "sensitivity")
    nodes = list(gm.graph.nodes)
    placeholders = [n.target for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise TypeError(f"sensitivity: {type(model).__name__}.forward takes {placeholders}; the sweep feeds one input "
                        "tensor: wrap the model in a module whose forward takes one")
    index = {n: i for i, n in enumerate(nodes)}
    modules = dict(gm.named_modules())
    calls: dict[str, list[fx.Node]] = {}
    for n in nodes:
        if n.op == "call_module" and isinstance(modules[n.target], (nn.Conv2d, nn.Linear)):
            calls.setdefault(n.target, []).append(n)
    all_layers = list(calls)
    if layers is not None:
        unknown = [name for name in layers if name not in calls]
        if unknown:
            raise ValueError(f"sensitivity: layers {unknown} are not nn.Conv2d / nn.Linear layers called by the model; "
                             f"its layers: {all_layers}")
        all_layers = [name for name in all_layers if name in set(layers)]
    pairs = block_conv1_pairs(model)
    # Liveness: the node values read at or after each layer's first call and computed before it.
    last_use = {n: max((index[u] for u in n.users), default=index[n]) for n in nodes}

    def live(start: int) -> list[fx.Node]:
        return [n for n in nodes[:start] if last_use[n] >= start]

    cached_nodes = set()
    for name in all_layers:
        cached_nodes.update(live(index[calls[name][0]]))
    batches = _batches(x, batch_size)
    cache: list[dict[fx.Node, torch.Tensor]] = []
    float_logits = []
    for xb in batches:
        env = {nodes[0]: xb}
        values = {}
        for n in nodes[1:]:
            if n.op == "output":
                float_logits.append(fx.node.map_arg(n.args[0], env.__getitem__))
                break
            env_n = _one(gm, n, env)
            env[n] = env_n
            if n in cached_nodes:
                values[n] = env_n.clone() if isinstance(env_n, torch.Tensor) else env_n
        values[nodes[0]] = xb
        cache.append(values)
    float_out = torch.cat(float_logits)
    float_metric = float(metric_fn(float_out, y))

    def resume(start: int, overrides: dict) -> torch.Tensor:
        outs = []
        for values in cache:
            env = {n: (v.clone() if isinstance(v, torch.Tensor) else v) for n, v in values.items()}
            outs.append(_run_nodes(gm, nodes, start, env, overrides))
        return torch.cat(outs)

    def layer_input(name: str) -> torch.Tensor:
        node = calls[name][0].args[0]
        return cache[0][node][:latency_batch]

    _check_calibrated(calibrated, "sensitivity")
    if calibrated is None and any(isinstance(c, Int8StaticConfig) for c in methods.values()):
        calibrated = copy.deepcopy(model)
        batches_cal = list(calibration) if calibration is not None else [x[:64], x[64:128]] if len(x) > 64 else [x]
        calibrate(calibrated, batches_cal)
    cells: list[Cell] = []
    todo = [(name, m) for name in all_layers for m in methods]
    for name, mname in tqdm(todo, desc="sensitivity", disable=not progress):
        config = methods[mname]
        module = modules[name]
        cell = Cell(name, mname, "n/a")
        cells.append(cell)
        try:
            if isinstance(config, Int8StaticConfig):
                out, timed, timed_float, stored, stored_float = _static_cell(calibrated, name, config, batches,
                                                                            layer_input(name), module)
            elif isinstance(config, ChannelPruneConfig):
                if name not in pairs:
                    raise Skip("channel pruning needs the conv1 of a basic block (conv1 -> bn1 -> conv2)")
                conv_name, bn_name, next_name = pairs[name]
                from .prune import prune_channels_

                conv, next_conv = copy.deepcopy(modules[conv_name]), copy.deepcopy(modules[next_name])
                bn = copy.deepcopy(modules[bn_name]) if bn_name else None
                # with explicit pairs prune_channels_ touches only the pair's (copied) modules, not the model
                prune_channels_(nn.Module(), config.amount, config.criterion, pairs=[(name, conv, bn, next_conv)],
                                multiple_of=config.multiple_of)
                overrides = {}
                for target, new in ((conv_name, conv), (bn_name, bn), (next_name, next_conv)):
                    for n in nodes:
                        if target is not None and n.op == "call_module" and n.target == target:
                            overrides[n] = new
                out = resume(min(index[n] for n in overrides), overrides)
                # Latency and bytes of the layer itself (conv1 and its BatchNorm). The next conv's cut
                # inputs are left out: that conv is a layer of its own, which another method may take,
                # and counting its saving here too would count it twice in assign's sum.
                parts_float = [modules[t] for t in (conv_name, bn_name) if t is not None]
                parts = [m for m in (conv, bn) if m is not None]
                timed, timed_float = nn.Sequential(*parts), nn.Sequential(*parts_float)
                stored, stored_float = module_bytes(*parts), module_bytes(*parts_float)
                cell.reason = (f"{conv.out_channels} of {modules[conv_name].out_channels} channels kept; latency and "
                               f"bytes of {conv_name} and {bn_name} ({next_name} loses the inputs too, not counted)")
            else:
                module_types, handler = _HANDLERS[type(config)]
                if type(module) not in module_types:
                    raise Skip(f"{type(config).__name__} converts {[t.__name__ for t in module_types]}, not "
                               f"{type(module).__name__}")
                new = handler(module, config, name)
                out = resume(index[calls[name][0]], {n: new for n in calls[name]})
                timed, timed_float = new, module
                stored, stored_float = module_bytes(new), module_bytes(module)
        except Skip as why:
            cell.reason = str(why)
            continue
        inp = layer_input(name)
        if isinstance(config, Int8StaticConfig):
            quantize, qlayer = timed
            q_inp = quantize(inp)
            times = best_times_us({"c": lambda: qlayer(q_inp), "f": lambda: timed_float(inp)}, timing_reps)
        else:
            times = best_times_us({"c": lambda: timed(inp), "f": lambda: timed_float(inp)}, timing_reps)
        cell.status = "ok"
        cell.metric = float(metric_fn(out, y))
        cell.drop = float_metric - cell.metric
        cell.sqnr_db = sqnr_db(float_out, out)
        cell.latency_us, cell.latency_float_us = times["c"], times["f"]
        cell.bytes, cell.bytes_float = int(stored), int(stored_float)
    notes = ["module-swap cells (codebook, 2:4, dynamic int8, channel pruning) run the graph from the layer on, "
             "seeded with the cached live values of the float pass; static int8 cells run the real mixed "
             "conversion convert_(model, {layer: Int8StaticConfig()}) end to end (BatchNorm folded, ReLU fused, "
             "an addition with an integer input runs as QuantAdd), latency of the integer layer on the quantized "
             "real input",
             f"data: {len(x)} inputs of shape {list(x.shape[1:])}; latency at batch {min(latency_batch, len(x))}, "
             f"fastest of {timing_reps} round-robin calls"]
    return SensitivityTable(layers=all_layers, methods={k: repr(v) for k, v in methods.items()},
                            metric_name=metric_name, float_metric=float_metric, cells=cells,
                            input_shape=list(x.shape[1:]), latency_batch=min(latency_batch, len(x)),
                            seconds=time.perf_counter() - start_time, notes=notes)


def _check_calibrated(calibrated, what: str) -> None:
    from .static_quant import _OBSERVED_ATTR

    if calibrated is not None and getattr(calibrated, _OBSERVED_ATTR, None) is None:
        raise ValueError(f"{what}: calibrated must be a copy of the model on which compress_kernels.calibrate "
                         f"has run, got a {type(calibrated).__name__} without calibration statistics")


def _one(gm: fx.GraphModule, node: fx.Node, env: dict):
    args = fx.node.map_arg(node.args, env.__getitem__)
    kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    obj = gm
    for part in node.target.split("."):
        obj = getattr(obj, part)
    return obj


def _static_cell(calibrated: nn.Module, name: str, config: Int8StaticConfig, batches, inp, float_module):
    """The real mixed conversion with only `name` static: its outputs on every batch, (Quantize,
    integer layer) for timing, the float layer, and the bytes of both."""
    from .nn._common import IntegerLayer
    from .nn.integer import Quantize

    report = convert_(calibrated, {name: config})
    gm = report.model
    # convert_static keys the integer layer by the layer's path with dots as underscores
    layer_node = next((n for n in gm.graph.nodes if n.op == "call_module" and n.target == name.replace(".", "_")
                       and isinstance(gm.get_submodule(n.target), IntegerLayer)), None)
    if layer_node is None:
        raise Skip("the static conversion left the layer in float: "
                   + "; ".join(why for what, _, why in report.skipped if what == name))
    qlayer = gm.get_submodule(layer_node.target)
    src = layer_node.args[0]
    quantize = gm.get_submodule(src.target) if src.op == "call_module" else None
    if not isinstance(quantize, Quantize):
        raise Skip(f"the integer layer's input is not a Quantize ({src.format_node()})")
    out = torch.cat([gm(xb) for xb in batches])
    return out, (quantize, qlayer), float_module, module_bytes(qlayer), module_bytes(float_module)


# ---------------------------------------------------------------- assignment under a budget

BUDGET_KINDS = ("bytes", "latency_us")


@dataclass
class Candidate:
    """A model that was built and measured for real: float, a uniform method, or a mixed assignment."""

    name: str
    kind: str                              # "float", "uniform" or "mixed"
    metric: float
    sqnr_db: float
    bytes: int
    latency_us: float                      # timed round-robin with the float model, on the float model's scale
    methods: dict[str, str] = field(default_factory=dict)   # layer -> method name ("float" omitted)
    predicted_metric: float | None = None
    predicted_cost: float | None = None
    pareto: bool = False


@dataclass
class Assignment:
    """The result of assign(): the chosen mapping, what the sensitivity table predicted for it, what
    the real mixed model measured, and every candidate measured with its place on the Pareto front."""

    mapping: dict[str, object]             # {layer: config}, ready for convert_
    methods: dict[str, str]                # {layer: method name}
    budget: float
    kind: str
    predicted: dict[str, float]
    measured: Candidate
    candidates: list[Candidate]
    predicted_front: list[tuple[float, float]]   # (predicted cost, predicted metric) of the search's front
    table: SensitivityTable = field(repr=False)
    model: nn.Module | None = field(default=None, repr=False)
    report: object = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"budget": self.budget, "kind": self.kind, "methods": self.methods,
                "mapping": {k: repr(v) for k, v in self.mapping.items()},
                "predicted": self.predicted,
                "measured": {k: _json_number(v) for k, v in asdict(self.measured).items()},
                "candidates": [{k: _json_number(v) for k, v in asdict(c).items()} for c in self.candidates],
                "predicted_front": [list(p) for p in self.predicted_front]}

    def to_json(self, path: str | None = None) -> str:
        return _json_text(self.to_dict(), path)

    def to_markdown(self) -> str:
        m, unit = self.table.metric_name, "bytes" if self.kind == "bytes" else "us"
        lines = [f"Budget: {self.budget:,.0f} {unit}. Chosen ({len(self.methods)} of {len(self.table.layers)} layers "
                 f"compressed): predicted {m} {self.predicted['metric']:.2f} at {self.predicted['cost']:,.0f} {unit}; "
                 f"measured {m} {self.measured.metric:.2f}, {self.measured.bytes:,} bytes, "
                 f"{self.measured.latency_us:.0f} us.", "",
                 "| layer | method |", "|---|---|"]
        lines += [f"| {layer} | {method} |" for layer, method in self.methods.items()]
        lines += ["", f"| candidate | kind | {m} | output SQNR dB | bytes | latency us | Pareto (size vs {m}) |",
                  "|---|---|---|---|---|---|---|"]
        for c in self.candidates:
            lines.append(f"| {c.name} | {c.kind} | {c.metric:.2f} | {c.sqnr_db:.1f} | {c.bytes:,} | "
                         f"{c.latency_us:.0f} | {'yes' if c.pareto else ''} |")
        return "\n".join(lines) + "\n"

    def plot(self, path: str) -> str:
        """Size vs metric and latency vs metric of every measured candidate; the Pareto front (size
        vs metric) drawn as a line, the search's predicted front dotted."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(13, 5))
        style = {"float": ("k", "s"), "uniform": ("tab:blue", "o"), "mixed": ("tab:red", "*")}
        for ax, attr, label in ((axes[0], "bytes", "stored bytes"), (axes[1], "latency_us", "latency (us)")):
            for c in self.candidates:
                color, marker = style[c.kind]
                ax.scatter(getattr(c, attr), c.metric, c=color, marker=marker, s=80 if c.kind == "mixed" else 40,
                           edgecolors="k" if c.pareto else "none", zorder=3)
                ax.annotate(c.name, (getattr(c, attr), c.metric), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
            ax.set_xlabel(label)
            ax.set_ylabel(self.table.metric_name)
            ax.grid(alpha=0.3)
        front = sorted((c for c in self.candidates if c.pareto), key=lambda c: c.bytes)
        axes[0].step([c.bytes for c in front], [c.metric for c in front], where="post", c="tab:green",
                     label="Pareto front (measured)")
        if self.kind == "bytes" and self.predicted_front:
            xs, ys = zip(*self.predicted_front)
            axes[0].step(xs, ys, ":", where="post", c="grey", label="predicted front (sensitivity table)")
        budget_axis = axes[0] if self.kind == "bytes" else axes[1]
        budget_axis.axvline(self.budget, c="tab:red", ls="--", lw=0.8, label="budget")
        axes[0].legend(fontsize=8)
        axes[0].set_title(f"size vs {self.table.metric_name}")
        axes[1].set_title(f"latency vs {self.table.metric_name} (batch {self.table.latency_batch})")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _loss(cell: Cell, noise_weight: float) -> float:
    """The search's loss of one cell: its metric drop (not below 0) plus noise_weight x the output
    noise power in percent of the signal (a tie-break where the metric does not move on small data)."""
    noise = 0.0 if math.isinf(cell.sqnr_db) else 100.0 * 10.0 ** (-cell.sqnr_db / 10.0)
    return max(cell.drop, 0.0) + noise_weight * noise


def _search(options: list[tuple[str, list[tuple[str | None, float, float, float]]]], max_states: int = 4000):
    """Multiple-choice knapsack by Pareto sets: states (cost, loss, drop, picks) kept when no state
    costs less and loses less; more than max_states are thinned to the best per cost bucket."""
    states = [(0.0, 0.0, 0.0, ())]
    for layer, opts in options:
        merged = sorted(((c + dc, loss + dl, drop + dd, picks + ((layer, m),)) if m is not None
                         else (c, loss, drop, picks)
                         for c, loss, drop, picks in states for m, dc, dl, dd in opts), key=lambda s: (s[0], s[1]))
        kept, best = [], math.inf
        for s in merged:
            if s[1] < best - 1e-12:
                kept.append(s)
                best = s[1]
        if len(kept) > max_states:
            lo, hi = kept[0][0], kept[-1][0]
            step = (hi - lo) / max_states or 1.0
            thinned, last = [], None
            for s in kept:
                bucket = int((s[0] - lo) / step)
                if bucket != last:
                    thinned.append(s)
                    last = bucket
            kept = thinned
        states = kept
    return states


def _pareto(cands: list[Candidate]) -> None:
    for c in cands:
        c.pareto = not any((o.bytes <= c.bytes and o.metric >= c.metric and (o.bytes < c.bytes or o.metric > c.metric))
                           for o in cands)


@torch.no_grad()
def assign(model: nn.Module, data, methods=None, budget: float | None = None, kind: str = "bytes", *,
           table: SensitivityTable | None = None, calibration: Iterable[torch.Tensor] | None = None,
           calibrated: nn.Module | None = None, noise_weight: float = 0.1, uniform: bool = True,
           extra_budgets: Iterable[float] = (),
           metric: str | Callable = "top1", batch_size: int = 256, latency_batch: int = 32, timing_reps: int = 15,
           progress: bool = True) -> Assignment:
    """Choose one method per layer (or float) so the model meets `budget` — stored bytes
    (kind="bytes") or the sum of the layers' measured latencies at latency_batch, in microseconds,
    added to the measured float model (kind="latency_us") — at the smallest predicted loss (see
    _loss), by an exact multiple-choice knapsack over the sensitivity table (computed here unless
    `table` is given). Then the real mixed model is converted with the chosen mapping and measured
    (metric, output SQNR, stored bytes, latency), since effects of layers do not add exactly. With
    `uniform`, every method applied to every layer it converts is measured too, and every budget in
    `extra_budgets` gets its own measured assignment; the Pareto front (size vs metric) is marked
    over all measured candidates. `calibrated`: as for sensitivity(). A mapping cannot hold static
    int8 and channel pruning together (see ChannelPruneConfig): the search is run without each in
    turn and keeps the better."""
    from .study.runner import stored_bytes

    x, y = _check_data(data, "assign")
    if kind not in BUDGET_KINDS:
        raise ValueError(f"assign: kind must be one of {list(BUDGET_KINDS)}, got {kind!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise ValueError(f"assign: budget must be a positive number ({'bytes' if kind == 'bytes' else 'microseconds'}),"
                         f" got {budget!r}")
    if isinstance(noise_weight, bool) or not isinstance(noise_weight, (int, float)) or not noise_weight >= 0:
        raise ValueError(f"assign: noise_weight must be a number >= 0, got {noise_weight!r}")
    method_configs = _method_dict(methods)
    if table is None:
        table = sensitivity(model, data, method_configs, metric, calibration=calibration, calibrated=calibrated,
                            batch_size=batch_size,
                            latency_batch=latency_batch, timing_reps=timing_reps, progress=progress)
    else:
        missing = [m for m in table.methods if m not in method_configs]
        if missing:
            raise ValueError(f"assign: the table has methods {missing} that `methods` does not define; pass the "
                             "methods the table was computed with")
    metric_fn = top1 if metric == "top1" else metric
    model.eval()
    xb_lat = x[:table.latency_batch]
    float_out = torch.cat([model(xb) for xb in _batches(x, batch_size)])
    float_bytes = stored_bytes(model)
    float_latency = best_times_us({"f": lambda: model(xb_lat)}, timing_reps)["f"]
    base_cost = float_bytes if kind == "bytes" else float_latency

    def delta(cell: Cell) -> float:
        return cell.bytes - cell.bytes_float if kind == "bytes" else cell.latency_us - cell.latency_float_us

    def solve(target: float) -> tuple[float, float, dict[str, str], list]:
        best = None
        static = [m for m, c in method_configs.items() if isinstance(c, Int8StaticConfig)]
        prune = [m for m, c in method_configs.items() if isinstance(c, ChannelPruneConfig)]
        exclusions = [set(static), set(prune)] if static and prune else [set()]
        fronts = []
        for excluded in exclusions:
            options = []
            for layer in table.layers:
                opts = [(None, 0.0, 0.0, 0.0)]
                for c in table.cells:
                    if c.layer == layer and c.status == "ok" and c.method in method_configs.keys() - excluded:
                        opts.append((c.method, delta(c), _loss(c, noise_weight), c.drop))
                options.append((layer, opts))
            states = _search(options)
            fronts.extend((base_cost + s[0], table.float_metric - s[2]) for s in states)
            feasible = [s for s in states if base_cost + s[0] <= target]
            if feasible:
                s = min(feasible, key=lambda s: (s[1], s[0]))
                if best is None or s[1] < best[1]:
                    best = s
        if best is None:
            cheapest = min(c for c, _ in fronts)
            raise ValueError(f"assign: no assignment meets the budget {target:,.0f} ({kind}); the smallest the "
                             f"table predicts is {cheapest:,.0f} (the float model: {base_cost:,.0f})")
        front, top = [], -math.inf  # the predicted (cost, metric) points no cheaper point beats
        for c, m in sorted(fronts, key=lambda p: (p[0], -p[1])):
            if m > top:
                front.append((c, m))
                top = m
        return base_cost + best[0], table.float_metric - best[2], dict(best[3]), front

    calibration_batches = list(calibration) if calibration is not None else (
        [x[:64], x[64:128]] if len(x) > 64 else [x])
    _check_calibrated(calibrated, "assign")
    calibrated = {} if calibrated is None else {"model": calibrated}

    def measure(name: str, kind_: str, methods_of: dict[str, str]) -> tuple[Candidate, nn.Module, object]:
        mapping = {layer: method_configs[m] for layer, m in methods_of.items()}
        report = None
        if not mapping:
            built = model
        elif any(isinstance(c, Int8StaticConfig) for c in mapping.values()):
            if "model" not in calibrated:  # once: every static conversion reads the same statistics
                from .static_quant import calibrate

                calibrated["model"] = copy.deepcopy(model)
                calibrate(calibrated["model"], calibration_batches)
            report = convert_(calibrated["model"], mapping)
            built = report.model
        else:
            report = convert_(model, mapping, inplace=False)
            built = report.model
        built.eval()
        out = torch.cat([built(xb) for xb in _batches(x, batch_size)])
        times = best_times_us({"f": lambda: model(xb_lat), "c": lambda: built(xb_lat)}, timing_reps)
        latency = times["c"] * float_latency / times["f"]  # on the float model's timing scale
        cand = Candidate(name, kind_, float(metric_fn(out, y)), sqnr_db(float_out, out), stored_bytes(built), latency,
                         dict(methods_of))
        return cand, built, report

    candidates = [Candidate("float", "float", table.float_metric, math.inf, float_bytes, float_latency)]
    jobs: list[tuple[str, str, dict[str, str], float | None, float | None]] = []
    if uniform:
        for m in table.methods:
            layers_ok = {c.layer: m for c in table.cells if c.method == m and c.status == "ok"}
            if layers_ok:
                jobs.append((f"all {m}", "uniform", layers_ok, None, None))
    cost, predicted_metric, chosen, front = solve(budget)
    for extra in extra_budgets:
        try:
            c_e, p_e, chosen_e, _ = solve(extra)
        except ValueError:
            continue
        jobs.append((f"mixed @ {extra:,.0f}", "mixed", chosen_e, p_e, c_e))
    main_cand, built, report = measure(f"mixed @ {budget:,.0f}", "mixed", chosen)
    # Bytes are exact but do not add exactly (a static layer anywhere folds every BatchNorm; Quantize /
    # DeQuantize boundaries store their qparams): when the real model overshoots, search again under
    # the budget less the overshoot, a few times.
    target = budget
    for _ in range(3):
        if kind != "bytes" or main_cand.bytes <= budget:
            break
        target -= main_cand.bytes - cost  # > 0: cost <= target <= budget < measured
        try:
            cost, predicted_metric, chosen, _ = solve(target)
        except ValueError:
            raise ValueError(f"assign: the real mixed model measures {main_cand.bytes:,} bytes, over the budget "
                             f"{budget:,.0f} the table predicted it meets, and no tighter assignment exists") from None
        main_cand, built, report = measure(f"mixed @ {budget:,.0f}", "mixed", chosen)
    main_cand.predicted_metric, main_cand.predicted_cost = predicted_metric, cost
    candidates.append(main_cand)
    for name, kind_, methods_of, p, c in tqdm(jobs, desc="assign: measure candidates", disable=not progress):
        cand, _, _ = measure(name, kind_, methods_of)
        cand.predicted_metric, cand.predicted_cost = p, c
        candidates.append(cand)
    _pareto(candidates)
    return Assignment(mapping={layer: method_configs[m] for layer, m in chosen.items()}, methods=chosen,
                      budget=float(budget), kind=kind,
                      predicted={"metric": predicted_metric, "cost": cost, "float_cost": base_cost},
                      measured=main_cand, candidates=candidates, predicted_front=front, table=table, model=built,
                      report=report)
