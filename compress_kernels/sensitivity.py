"""Which layer to compress how: per-layer sensitivity, a mixed assignment under a budget, the Pareto front.

    table = ck.sensitivity(model, (x_search, y_search))      # every layer x every method, one at a time
    table.to_markdown(); table.to_json("sensitivity.json"); table.heatmap("sensitivity.png")
    result = ck.assign(model, (x_val, y_val), budget="kmeans4", kind="bytes", table=table)
    result.mapping            # {layer: config}: convert_(model, result.mapping) builds the mixed model
    result.measured           # the chosen candidate, measured for real (effects of layers do not add exactly)
    result.candidates         # every model measured: float, each uniform method, the mixed candidates
    result.plot("pareto.png")

A *cell* of the table is one layer compressed by one method, every other layer float. It records
the task metric of the whole model (top-1 % by default) and its drop from the float model, the
SQNR and the mean KL divergence (``kl_divergence``) of the model output against the float output
(continuous: they move where the metric, counted in whole samples, does not), the layer's measured
latency with the real
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


def default_methods(seed: int = 0) -> dict[str, object]:
    """The methods swept by default: every compression the package converts a single layer with, the
    k-means codebooks at 5, 4, 3 and 2 bits (their k-means++ starts seeded with `seed`)."""
    return {"int8_static": Int8StaticConfig(), "kmeans5": CodebookConfig(bits=5, seed=seed),
            "kmeans4": CodebookConfig(bits=4, seed=seed), "kmeans3": CodebookConfig(bits=3, seed=seed),
            "kmeans2": CodebookConfig(bits=2, seed=seed), "sparse24": Sparse24Config(prune=True),
            "sparse24_int8": Sparse24Config(prune=True, int8=True), "int8_dynamic": Int8DynamicConfig(),
            "channels50": ChannelPruneConfig(0.5)}


def _method_dict(methods, seed: int = 0) -> dict[str, object]:
    if methods is None:
        return default_methods(seed)
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


def kl_divergence(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Mean over rows of KL(softmax(reference) || softmax(test)) in nats, softmax over the last
    dimension (the outputs read as logits), in float64: 0 when test equals reference, and a
    continuous measure of how far a compressed classifier's predictions moved even where no top-1
    label changed."""
    ref = reference.detach().double().reshape(-1, reference.shape[-1]).log_softmax(-1)
    out = test.detach().double().reshape(-1, test.shape[-1]).log_softmax(-1)
    return float((ref.exp() * (ref - out)).sum(-1).mean().clamp_min(0.0))


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
    kl: float | None = None              # mean KL(float output || output) in nats (kl_divergence)
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
    seconds: float = 0.0                 # wall-clock seconds of the sweep
    cpu_seconds: float = 0.0             # CPU seconds of this process (all its threads) during the sweep
    seed: int = 0
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
                 f"float {self.metric_name} - {self.metric_name}; SQNR of the model output vs float; KL = mean "
                 "KL(softmax(float output) || softmax(output)) in nats; latency of the "
                 f"layer alone on its real input (batch {self.latency_batch}, fastest of the timed calls), against "
                 "the float layer; stored bytes of the layer.", "",
                 f"| layer | method | {self.metric_name} | drop | output SQNR dB | KL | us (float us) | "
                 "bytes (float) |",
                 "|---|---|---|---|---|---|---|---|"]
        for c in self.cells:
            if c.status != "ok":
                lines.append(f"| {c.layer} | {c.method} | n/a | | | | | {c.reason} |")
                continue
            lines.append(f"| {c.layer} | {c.method} | {c.metric:.2f} | {c.drop:+.2f} | {c.sqnr_db:.1f} | {c.kl:.2e} | "
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


def _check_seed(seed, what: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{what}: seed must be an int >= 0, got {seed!r}")


def sensitivity(model: nn.Module, data, methods=None, metric: str | Callable = "top1", *,
                calibration: Iterable[torch.Tensor] | None = None, calibrated: nn.Module | None = None,
                layers: list[str] | None = None, batch_size: int = 256, latency_batch: int = 32,
                timing_reps: int = 15, seed: int = 0, progress: bool = True) -> SensitivityTable:
    """Compress every eligible layer (nn.Conv2d / nn.Linear of the traced model) by every method,
    one at a time, and measure each cell (see the module docstring). `data` is (inputs, labels);
    `methods` a dict {name: config} or a list of configs (default: default_methods(seed)); `metric`
    "top1" or fn(logits, labels) -> float, higher is better; `layers` restricts the sweep;
    `calibrated`: a copy of the model already calibrated (ck.calibrate) to reuse for the static cells.
    The sweep runs under torch.manual_seed(seed) (the global generator is restored afterwards): the
    same model, data, methods and seed give the same table, every column but the latencies."""
    _check_seed(seed, "sensitivity")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        return _sensitivity(model, data, methods, metric, calibration, calibrated, layers, batch_size,
                            latency_batch, timing_reps, seed, progress)


def _sensitivity(model, data, methods, metric, calibration, calibrated, layers, batch_size, latency_batch,
                 timing_reps, seed, progress) -> SensitivityTable:
    from .static_quant import calibrate, trace

    start_time, start_cpu = time.perf_counter(), time.process_time()
    x, y = _check_data(data, "sensitivity")
    methods = _method_dict(methods, seed)
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
        cell.kl = kl_divergence(float_out, out)
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
                            seconds=time.perf_counter() - start_time,
                            cpu_seconds=time.process_time() - start_cpu, seed=seed, notes=notes)


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
PROXIES = ("kl", "noise", "drop")
# Targets of the search per budget, as fractions of the budget's predicted cost. The search adds the
# layers' costs; the real model's cost is not that sum (bytes: every BatchNorm folds once a static
# layer exists, Quantize / DeQuantize store qparams; latency: integer chains, the boundaries, the
# layers outside the table), so tighter targets give candidates that still meet the budget when the
# sum was optimistic. Every candidate is measured; only measured costs decide what meets the budget.
# Bytes also get a target above 1: once a mapping holds a static layer every BatchNorm folds away,
# which the per-layer sum does not see, so a real model at the budget can take more than it predicts.
TARGET_FRACTIONS = {"bytes": (1.08, 1.0, 0.95), "latency_us": (1.0, 0.85, 0.7)}
# Candidates refined from a budget's reference (uniform) mapping: up to this many steps, each the
# one or two layer changes that lower the predicted loss most while the predicted cost stays within
# the budget. They stay close to the reference, whose measured behaviour they mostly share.
LOCAL_STEPS = 3


def _local_moves(start: dict[str, str], options: dict[str, list[tuple[str | None, float, float]]], limit: float,
                 cost: float, steps: int) -> list[tuple[dict[str, str], float, float]]:
    """From the mapping `start` (layer -> method, at predicted cost `cost`), `steps` greedy steps:
    each applies the single change or the pair of changes (on two layers) with the largest fall of
    the predicted loss among those keeping cost <= limit. options[layer]: (method or None for float,
    cost, loss) of every choice of the layer. Returns (mapping, cost, loss change) after each step
    that found an improving change."""
    current = dict(start)
    out, total = [], 0.0

    def now(layer):
        m = current.get(layer)
        return next(o for o in options[layer] if o[0] == m)

    for _ in range(steps):
        moves = []
        for layer, opts in options.items():
            _, c0, l0 = now(layer)
            moves += [(layer, m, c - c0, loss - l0) for m, c, loss in opts if m != current.get(layer)]
        best = None
        for i, a in enumerate(moves):
            if a[3] < 0 and cost + a[2] <= limit and (best is None or a[3] < best[0]):
                best = (a[3], a[2], (a,))
            for b in moves[i + 1:]:
                dl = a[3] + b[3]
                if b[0] != a[0] and dl < 0 and cost + a[2] + b[2] <= limit and (best is None or dl < best[0]):
                    best = (dl, a[2] + b[2], (a, b))
        if best is None:
            break
        for layer, m, _, _ in best[2]:
            if m is None:
                current.pop(layer, None)
            else:
                current[layer] = m
        cost += best[1]
        total += best[0]
        out.append((dict(current), cost, total))
    return out


def interleaved_times(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of every function in each of `rounds` rounds. A round calls every function once, and
    round r starts at function r (mod the count), so no function always runs first or right after
    the same one; a load change during a round hits all functions alike. Returns the samples per
    function, round by round (per-round ratios between two functions are then meaningful)."""
    names = list(fns)
    with torch.no_grad():
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        samples: dict[str, list[float]] = {name: [0.0] * rounds for name in names}
        for r in range(rounds):
            for k in range(len(names)):
                name = names[(r + k) % len(names)]
                t = time.perf_counter()
                fns[name]()
                samples[name][r] = time.perf_counter() - t
    return samples


def _median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def _median_ratio(samples: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over rounds of name's time / reference's time in the same round (1.0 for the reference)."""
    if name == reference:
        return 1.0
    return _median([a / b for a, b in zip(samples[name], samples[reference])])


@dataclass
class Candidate:
    """A model built and measured for real on assign's data: float, a uniform method, or a mixed mapping."""

    name: str
    kind: str                              # "float", "uniform" or "mixed"
    metric: float
    kl: float                              # mean KL(float output || output), nats (kl_divergence)
    sqnr_db: float
    bytes: int
    latency_us: float                      # median of the interleaved rounds, at the table's latency_batch
    latency_ratio: float                   # median over rounds of latency / the float model's latency
    methods: dict[str, str] = field(default_factory=dict)   # layer -> method name ("float" omitted)
    proxy: str | None = None               # the search proxy a mixed candidate was chosen under
    predicted_loss: float | None = None    # sum of that proxy over its cells (the search's objective)
    predicted_cost: float | None = None    # sum of the cells' costs (bytes or us) on the float model's
    pareto_size: bool = False              # no other candidate is as small and as accurate (one strictly)
    pareto_latency: bool = False           # the same with latency_ratio


@dataclass
class BudgetResult:
    """One budget of assign(): its spec, the limit it resolved to in this run, what each candidate
    measured against it (`values`: bytes, microseconds, or the median per-round latency ratio to
    the reference), the candidates that meet it and the chosen one (None: no candidate meets it)."""

    spec: str                              # "108632", "kmeans4" or "int8_static x 0.9"
    kind: str
    reference: str | None                  # the uniform candidate the budget is relative to, if any
    factor: float
    limit: float                           # compared with values (bytes, us, or a latency ratio)
    predicted_target: float                # the search's cost target at fraction 1.0
    values: dict[str, float] = field(default_factory=dict)
    feasible: list[str] = field(default_factory=list)
    chosen: str | None = None


@dataclass
class Assignment:
    """The result of assign(): the chosen mapping (the best measured candidate within the budget),
    every candidate measured, and the main budget (budgets[0]) with any extra budgets."""

    mapping: dict[str, object]             # {layer: config}, ready for convert_ ({} for the float model)
    methods: dict[str, str]                # {layer: method name}
    kind: str
    proxy: str
    measured: Candidate                    # the chosen candidate
    candidates: list[Candidate]
    budgets: list[BudgetResult]
    predicted_front: dict[str, list[tuple[float, float]]]   # per proxy: (predicted cost, predicted loss) front
    table: SensitivityTable = field(repr=False)
    model: nn.Module | None = field(default=None, repr=False)
    report: object = field(default=None, repr=False)

    @property
    def budget(self) -> BudgetResult:
        return self.budgets[0]

    def candidate(self, name: str) -> Candidate:
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(f"Assignment.candidate: no candidate {name!r}; candidates {[c.name for c in self.candidates]}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "proxy": self.proxy, "methods": self.methods,
                "mapping": {k: repr(v) for k, v in self.mapping.items()},
                "measured": {k: _json_number(v) for k, v in asdict(self.measured).items()},
                "budgets": [asdict(b) for b in self.budgets],
                "candidates": [{k: _json_number(v) for k, v in asdict(c).items()} for c in self.candidates],
                "predicted_front": {p: [list(pt) for pt in f] for p, f in self.predicted_front.items()}}

    def to_json(self, path: str | None = None) -> str:
        return _json_text(self.to_dict(), path)

    def to_markdown(self) -> str:
        m = self.table.metric_name
        lines = []
        for b in self.budgets:
            unit = {"bytes": "bytes", "latency_us": "us" if b.reference is None else "x its latency"}[b.kind]
            what = (f"{b.limit:,.0f} {unit}" if b.reference is None or b.kind == "bytes" else f"{b.limit:g} {unit}")
            ref = f" (uniform {b.reference} x {b.factor:g})" if b.reference else ""
            lines.append(f"- budget {b.spec} ({b.kind}{ref}): {what}; {len(b.feasible)} of {len(self.candidates)} "
                         f"candidates meet it; chosen: {b.chosen or 'none'}")
        c = self.measured
        lines += ["", f"Chosen: {c.name} ({len(self.methods)} of {len(self.table.layers)} layers compressed): "
                      f"{m} {c.metric:.2f}, KL {c.kl:.2e}, {c.bytes:,} bytes, {c.latency_us:.0f} us "
                      f"({c.latency_ratio:.3f}x float).", ""]
        if self.methods:
            lines += ["| layer | method |", "|---|---|"]
            lines += [f"| {layer} | {method} |" for layer, method in self.methods.items()]
            lines.append("")
        main = self.budgets[0]
        value_head = {"bytes": "bytes", "latency_us": "us"}[main.kind] if main.reference is None else (
            f"vs {main.reference}")
        lines += [f"| candidate | kind | {m} | KL | output SQNR dB | bytes | latency us | vs float | budget value "
                  f"({value_head}) | meets | Pareto size / latency |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in self.candidates:
            v = main.values.get(c.name)
            vtext = "" if v is None else (f"{v:,.0f}" if main.reference is None or main.kind == "bytes" else f"{v:.3f}")
            chosen = " (chosen)" if c.name == main.chosen else ""
            lines.append(f"| {c.name}{chosen} | {c.kind} | {c.metric:.2f} | {c.kl:.2e} | {c.sqnr_db:.1f} | "
                         f"{c.bytes:,} | {c.latency_us:.0f} | {c.latency_ratio:.3f} | {vtext} | "
                         f"{'yes' if c.name in main.feasible else ''} | "
                         f"{'S' if c.pareto_size else ''}{'L' if c.pareto_latency else ''} |")
        return "\n".join(lines) + "\n"

    def plot(self, path: str) -> str:
        """Size vs metric and latency (ratio to float) vs metric of every measured candidate; the
        Pareto front of each panel drawn as a line, the chosen candidate circled, the main budget dashed."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(13, 5))
        style = {"float": ("k", "s"), "uniform": ("tab:blue", "o"), "mixed": ("tab:red", "*")}
        main = self.budgets[0]
        for ax, attr, flag, label in ((axes[0], "bytes", "pareto_size", "stored bytes"),
                                      (axes[1], "latency_ratio", "pareto_latency",
                                       f"latency / float latency (batch {self.table.latency_batch}, median)")):
            for c in self.candidates:
                color, marker = style[c.kind]
                ax.scatter(getattr(c, attr), c.metric, c=color, marker=marker, s=80 if c.kind == "mixed" else 40,
                           edgecolors="k" if getattr(c, flag) else "none", zorder=3)
                ax.annotate(c.name, (getattr(c, attr), c.metric), textcoords="offset points", xytext=(4, 4),
                            fontsize=6)
                if c.name == main.chosen:
                    ax.scatter(getattr(c, attr), c.metric, s=260, facecolors="none", edgecolors="tab:green", zorder=4)
            front = sorted((c for c in self.candidates if getattr(c, flag)), key=lambda c: getattr(c, attr))
            ax.step([getattr(c, attr) for c in front], [c.metric for c in front], where="post", c="tab:green",
                    label="Pareto front (measured)")
            ax.set_xlabel(label)
            ax.set_ylabel(self.table.metric_name)
            ax.grid(alpha=0.3)
        if main.reference is not None:
            ref = self.candidate(f"all {main.reference}")
            x_budget = ref.bytes * main.factor if main.kind == "bytes" else ref.latency_ratio * main.factor
        else:
            x_budget = main.limit if main.kind == "bytes" else main.limit / self.candidate("float").latency_us
        (axes[0] if main.kind == "bytes" else axes[1]).axvline(x_budget, c="tab:red", ls="--", lw=0.8,
                                                                label=f"budget {main.spec}")
        for ax in axes:
            ax.legend(fontsize=8)
        axes[0].set_title(f"size vs {self.table.metric_name}")
        axes[1].set_title(f"latency vs {self.table.metric_name}")
        fig.suptitle(f"assign: candidates measured (chosen circled: {main.chosen})", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _loss(cell: Cell, proxy: str) -> float:
    """The search's loss of one cell under `proxy`: "kl", the mean KL of the model output from the
    float output (nats); "noise", the output noise power relative to the signal (10^(-SQNR/10));
    "drop", the metric drop (not below 0) plus 10 x the noise power (the noise as a tie-break where
    the metric does not move). kl and noise are continuous, so they rank cells the metric cannot
    tell apart on small data, and they add up across layers for small, independent errors."""
    noise = 0.0 if math.isinf(cell.sqnr_db) else 10.0 ** (-cell.sqnr_db / 10.0)
    if proxy == "kl":
        return cell.kl
    if proxy == "noise":
        return noise
    return max(cell.drop, 0.0) + 10.0 * noise


def _search(options: list[tuple[str, list[tuple[str | None, float, float]]]], max_states: int = 4000):
    """Multiple-choice knapsack by Pareto sets: states (cost, loss, picks) kept when no state costs
    less and loses less; more than max_states are thinned to the best per cost bucket."""
    states = [(0.0, 0.0, ())]
    for layer, opts in options:
        merged = sorted(((c + dc, loss + dl, picks + ((layer, m),)) if m is not None else (c, loss, picks)
                         for c, loss, picks in states for m, dc, dl in opts), key=lambda s: (s[0], s[1], s[2]))
        kept, best = [], math.inf
        for s in merged:
            if s[1] < best - 1e-15:
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


def _mark_pareto(cands: list[Candidate]) -> None:
    for attr, flag in (("bytes", "pareto_size"), ("latency_ratio", "pareto_latency")):
        for c in cands:
            setattr(c, flag, not any(getattr(o, attr) <= getattr(c, attr) and o.metric >= c.metric
                                     and (getattr(o, attr) < getattr(c, attr) or o.metric > c.metric) for o in cands))


def _parse_budget(budget, kind: str, methods: dict, what: str) -> tuple[str | None, float, str]:
    """(reference method or None, factor or absolute limit, spec text) of a budget."""
    unit = "bytes" if kind == "bytes" else "microseconds"
    number = (int, float)
    if isinstance(budget, str):
        reference, factor = budget, 1.0
    elif (isinstance(budget, tuple) and len(budget) == 2 and isinstance(budget[0], str)
          and isinstance(budget[1], number) and not isinstance(budget[1], bool) and budget[1] > 0):
        reference, factor = budget[0], float(budget[1])
    elif isinstance(budget, number) and not isinstance(budget, bool) and budget > 0 and math.isfinite(budget):
        return None, float(budget), f"{budget:,.0f}"
    else:
        raise ValueError(f"assign: {what} must be a positive number ({unit}), a method name (the uniform model of "
                         f"that method, measured in the same run) or (method name, factor > 0), got {budget!r}")
    if reference not in methods:
        raise ValueError(f"assign: {what} {budget!r} names method {reference!r}, not one of the methods "
                         f"{list(methods)}")
    return reference, factor, reference if factor == 1.0 else f"{reference} x {factor:g}"


def assign(model: nn.Module, data, methods=None, budget: float | str | tuple[str, float] | None = None,
           kind: str = "bytes", *, table: SensitivityTable | None = None, search_data=None,
           calibration: Iterable[torch.Tensor] | None = None, calibrated: nn.Module | None = None,
           proxy: str = "kl", extra_budgets: Iterable = (), uniform: bool = True,
           metric: str | Callable = "top1", batch_size: int = 256, latency_batch: int = 32, timing_reps: int = 15,
           seed: int = 0, progress: bool = True) -> Assignment:
    """Choose one method per layer (or float) so the model meets `budget` at the best measured metric.

    `budget`, in stored bytes (kind="bytes") or latency (kind="latency_us"): a number (bytes, or
    microseconds at the table's latency_batch), a method name (the uniform model of that method —
    every layer it converts — built and measured in this run: its exact bytes, or its latency, the
    comparison then being the median over interleaved rounds of the candidate's time / the
    reference's time in the same round, at most 1), or (method name, factor): factor x that.

    The search: per proxy (`proxy`, and "noise" as a second opinion; see _loss) an exact
    multiple-choice knapsack over the sensitivity table (computed here on `search_data`, default
    `data`, unless `table` is given) gives the lowest predicted loss under each target of
    TARGET_FRACTIONS x the budget's predicted cost. Every distinct mapping found, the float model and
    every uniform method (with `uniform`; the reference of a budget always) are then converted and
    measured for real on `data`: metric, KL and SQNR against the float output, exact stored bytes,
    and latency, all models timed together in `timing_reps` interleaved rounds (median). The chosen
    candidate is the one meeting the budget with the best measured metric, then the lowest KL, then
    the lowest cost; a budget relative to a uniform model is therefore never answered with a model
    less accurate than that uniform model. `extra_budgets` (same forms and kind) get their own
    choice among the same candidates (Assignment.budgets). A mapping cannot hold static int8 and
    channel pruning together (see ChannelPruneConfig): the search runs without each in turn."""
    from .study.runner import stored_bytes

    x, y = _check_data(data, "assign")
    if kind not in BUDGET_KINDS:
        raise ValueError(f"assign: kind must be one of {list(BUDGET_KINDS)}, got {kind!r}")
    if proxy not in PROXIES:
        raise ValueError(f"assign: proxy must be one of {list(PROXIES)}, got {proxy!r}")
    _check_seed(seed, "assign")
    method_configs = _method_dict(methods, seed)
    specs = [_parse_budget(budget, kind, method_configs, "budget")]
    specs += [_parse_budget(b, kind, method_configs, f"extra_budgets[{i}]") for i, b in enumerate(extra_budgets)]
    _check_calibrated(calibrated, "assign")
    if table is None:
        table = sensitivity(model, data if search_data is None else search_data, method_configs, metric,
                            calibration=calibration, calibrated=calibrated, batch_size=batch_size,
                            latency_batch=latency_batch, timing_reps=timing_reps, seed=seed, progress=progress)
    else:
        missing = [m for m in table.methods if m not in method_configs]
        if missing:
            raise ValueError(f"assign: the table has methods {missing} that `methods` does not define; pass the "
                             "methods the table was computed with")
    for reference, _, spec in specs:
        if reference is not None and reference not in table.methods:
            raise ValueError(f"assign: budget {spec!r} names method {reference!r}, which the table does not hold "
                             f"(its methods: {list(table.methods)})")
        if reference is not None and not any(c.method == reference and c.status == "ok" for c in table.cells):
            raise ValueError(f"assign: budget {spec!r}: method {reference!r} converts no layer of the table, so "
                             "there is no uniform model to measure")
    metric_fn = top1 if metric == "top1" else metric
    model.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        return _assign(model, x, y, method_configs, specs, kind, table, calibration, calibrated, proxy, uniform,
                       metric_fn, batch_size, timing_reps, progress, stored_bytes)


def _assign(model, x, y, method_configs, specs, kind, table, calibration, calibrated, proxy, uniform, metric_fn,
            batch_size, timing_reps, progress, stored_bytes) -> Assignment:
    xb_lat = x[:table.latency_batch]
    float_latency = best_times_us({"f": lambda: model(xb_lat)}, max(3, timing_reps // 3))["f"]
    base_cost = float(stored_bytes(model)) if kind == "bytes" else float_latency

    def delta(cell: Cell) -> float:
        return cell.bytes - cell.bytes_float if kind == "bytes" else cell.latency_us - cell.latency_float_us

    def uniform_methods(m: str) -> dict[str, str]:
        return {c.layer: m for c in table.cells if c.method == m and c.status == "ok"}

    # The search's fronts, one per proxy (static int8 and channel pruning never in one mapping).
    static = {m for m, c in method_configs.items() if isinstance(c, Int8StaticConfig)}
    prune = {m for m, c in method_configs.items() if isinstance(c, ChannelPruneConfig)}
    exclusions = [static, prune] if static and prune else [set()]
    proxies = [proxy] + [p for p in ("noise",) if p != proxy]
    fronts: dict[str, list[tuple[float, float, tuple]]] = {}
    for p in proxies:
        states = []
        for excluded in exclusions:
            options = []
            for layer in table.layers:
                opts = [(None, 0.0, 0.0)]
                opts += [(c.method, delta(c), _loss(c, p)) for c in table.cells
                         if c.layer == layer and c.status == "ok" and c.method in table.methods
                         and c.method not in excluded]
                options.append((layer, opts))
            states += _search(options)
        front, best = [], math.inf  # the states no cheaper state beats, over both exclusions
        for s in sorted(states, key=lambda s: (s[0], s[1], s[2])):
            if s[1] < best - 1e-15:
                front.append(s)
                best = s[1]
        fronts[p] = front

    def predicted_cost(methods_of: dict[str, str]) -> float:
        return base_cost + sum(delta(table.cell(layer, m)) for layer, m in methods_of.items())

    targets = [factor * predicted_cost(uniform_methods(reference)) if reference is not None else factor
               for reference, factor, _ in specs]
    if specs[0][0] is None:  # an absolute budget below everything the table predicts: refuse before building
        cheapest = min(base_cost + f[0][0] for f in fronts.values())
        if cheapest > targets[0]:
            raise ValueError(f"assign: no assignment meets the budget {targets[0]:,.0f} ({kind}); the smallest the "
                             f"table predicts is {cheapest:,.0f} (the float model: {base_cost:,.0f})")

    # The candidates: float, the uniform models, then every distinct mapping the search finds.
    jobs: list[tuple[str, str, dict[str, str], str | None, float | None, float | None]] = [
        ("float", "float", {}, None, None, None)]
    wanted_uniform = list(table.methods) if uniform else []
    wanted_uniform += [r for r, _, _ in specs if r is not None and r not in wanted_uniform]
    for m in wanted_uniform:
        methods_of = uniform_methods(m)
        if methods_of:
            jobs.append((f"all {m}", "uniform", methods_of, None, None, predicted_cost(methods_of)))
    seen = {tuple(sorted(j[2].items())) for j in jobs}
    found: dict[tuple[str, str], str] = {}  # (budget spec, proxy) -> the job found at the largest target

    def add_found(target: float, p: str, name: str) -> str | None:
        feasible = [s for s in fronts[p] if base_cost + s[0] <= target]
        if not feasible:
            return None
        s = min(feasible, key=lambda s: (s[1], s[0]))
        key = tuple(sorted(s[2]))
        if key in seen:
            return next((j[0] for j in jobs if tuple(sorted(j[2].items())) == key), None)
        seen.add(key)
        jobs.append((name, "mixed", dict(s[2]), p, s[1], base_cost + s[0]))
        return name

    for (_, _, spec), target in zip(specs, targets):
        for fraction in TARGET_FRACTIONS[kind]:
            for p in proxies:
                name = add_found(fraction * target, p, f"mixed {p} {fraction:g} x {spec}")
                if name is not None:
                    found.setdefault((spec, p), name)

    # Local refinements of the main budget's reference mapping (the reference's own predicted cost
    # is the limit, so the refinements are predicted to fit wherever the reference fits).
    reference, _, spec = specs[0]
    if reference is not None:
        options = {layer: [(None, 0.0, 0.0)] + [(c.method, delta(c), _loss(c, proxy)) for c in table.cells
                                                if c.layer == layer and c.status == "ok" and c.method in table.methods
                                                and not (c.method in prune and static)]
                   for layer in table.layers}
        start = uniform_methods(reference)
        for step, (methods_of, cost, _change) in enumerate(
                _local_moves(start, options, targets[0], predicted_cost(start), LOCAL_STEPS), 1):
            key = tuple(sorted(methods_of.items()))
            if key not in seen:
                seen.add(key)
                jobs.append((f"mixed {proxy} {spec} +{step}", "mixed", methods_of, proxy,
                             sum(_loss(table.cell(la, m), proxy) for la, m in methods_of.items()), cost))

    calibration_batches = list(calibration) if calibration is not None else (
        [x[:64], x[64:128]] if len(x) > 64 else [x])
    calibrated_box = {} if calibrated is None else {"model": calibrated}

    def build(methods_of: dict[str, str]):
        mapping = {layer: method_configs[m] for layer, m in methods_of.items()}
        if not mapping:
            return model, None
        if any(isinstance(c, Int8StaticConfig) for c in mapping.values()):
            if "model" not in calibrated_box:  # once: every static conversion reads the same statistics
                from .static_quant import calibrate

                calibrated_box["model"] = copy.deepcopy(model)
                calibrate(calibrated_box["model"], calibration_batches)
            report = convert_(calibrated_box["model"], mapping)
        else:
            report = convert_(model, mapping, inplace=False)
        report.model.eval()
        return report.model, report

    float_out = torch.cat([model(xb) for xb in _batches(x, batch_size)])
    built: dict[str, tuple[nn.Module, object]] = {}
    partial: dict[str, dict] = {}

    def evaluate(todo) -> None:
        for name, kind_, methods_of, p, loss, cost in tqdm(todo, desc="assign: build and evaluate candidates",
                                                          disable=not progress):
            net, report = build(methods_of)
            out = float_out if net is model else torch.cat([net(xb) for xb in _batches(x, batch_size)])
            built[name] = (net, report)
            partial[name] = dict(name=name, kind=kind_, metric=float(metric_fn(out, y)),
                                 kl=kl_divergence(float_out, out), sqnr_db=sqnr_db(float_out, out),
                                 bytes=int(stored_bytes(net)), methods=dict(methods_of), proxy=p, predicted_loss=loss,
                                 predicted_cost=cost)

    evaluate(jobs)
    # Bytes are exact but do not add up (a static layer anywhere folds every BatchNorm; Quantize /
    # DeQuantize store qparams): per budget and proxy, the mapping found at the largest target
    # measures the error of the sum; search once more under the real limit less that error.
    if kind == "bytes":
        first = len(jobs)
        for reference, factor, spec in specs:
            limit = factor * partial[f"all {reference}"]["bytes"] if reference is not None else factor
            for p in proxies:
                probe = partial.get(found.get((spec, p)))
                if probe is not None and probe["predicted_cost"] is not None:
                    error = probe["bytes"] - probe["predicted_cost"]
                    add_found(limit - error, p, f"mixed {p} corrected x {spec}")
        evaluate(jobs[first:])
    samples = interleaved_times({name: (lambda net=net: net(xb_lat)) for name, (net, _) in built.items()},
                                timing_reps)
    candidates = [Candidate(**partial[name], latency_us=_median(samples[name]) * 1e6,
                            latency_ratio=_median_ratio(samples, name, "float")) for name in built]
    _mark_pareto(candidates)

    results = []
    for (reference, factor, spec), target in zip(specs, targets):
        ref_name = f"all {reference}" if reference is not None else None
        if kind == "bytes":
            values = {c.name: float(c.bytes) for c in candidates}
            limit = factor * values[ref_name] if ref_name else factor
        elif ref_name:
            values = {c.name: _median_ratio(samples, c.name, ref_name) for c in candidates}
            limit = factor
        else:
            values = {c.name: c.latency_us for c in candidates}
            limit = factor
        feasible = [c for c in candidates if values[c.name] <= limit]
        chosen = max(feasible, key=lambda c: (c.metric, -c.kl, -values[c.name]), default=None)
        results.append(BudgetResult(spec=spec, kind=kind, reference=reference, factor=factor, limit=limit,
                                    predicted_target=target, values=values, feasible=[c.name for c in feasible],
                                    chosen=chosen.name if chosen else None))
    main = results[0]
    if main.chosen is None:
        best = min(candidates, key=lambda c: main.values[c.name])
        raise ValueError(f"assign: no assignment meets the budget {main.spec} ({kind}): the cheapest of the "
                         f"{len(candidates)} measured candidates is {best.name}, {main.values[best.name]:,.0f}")
    chosen = next(c for c in candidates if c.name == main.chosen)
    net, report = built[chosen.name]
    return Assignment(mapping={layer: method_configs[m] for layer, m in chosen.methods.items()},
                      methods=dict(chosen.methods), kind=kind, proxy=proxy, measured=chosen, candidates=candidates,
                      budgets=results, predicted_front={p: [(base_cost + s[0], s[1]) for s in f]
                                                        for p, f in fronts.items()},
                      table=table, model=net, report=report)
