"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"):
choose, per weight, whether to round down or up so that the layer's output on calibration data
stays close to the float layer's, instead of rounding each weight to its nearest level.

For a layer with float weight W, scales s (per tensor, per output channel or per (row, group), from
compress_kernels.lowbit.compute_scales) and integer range [qmin, qmax], AdaRound learns V (one real
per weight) in

    W~(V) = s * (clamp(floor(W / s) + h(V) + z, qmin, qmax) - z),
    h(V)  = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1),  zeta = 1.1, gamma = -0.1

(the rectified sigmoid), minimizing

    mean_batch ||f(x; W) - f(x; W~(V))||^2  +  lambda * sum_i (1 - |2 h(V_i) - 1|^beta)

where f is the layer (linear or conv2d, bias excluded: it cancels) and x are the layer's inputs on
the calibration batches (cached with forward hooks, float model). The regularizer pushes every h
to 0 or 1; beta decays linearly from beta_start = 20 to beta_end = 2 after a warm-up (the first
``warmup`` fraction of the iterations, with lambda = 0 there), as in the paper. V starts where
h(V) equals the fractional part of W / s (so W~ starts at W, clamped to the range) and is trained with
Adam. The result rounds up exactly where h(V) >= 0.5 (V >= 0): q = clamp(floor(W / s) + [V >= 0] + z,
qmin, qmax).

Determinism: the mini-batches are drawn from a ``torch.Generator`` seeded with ``seed``; V's
initialization is deterministic; the optimization runs on ``threads`` intra-op threads (default 1),
so with the same inputs and settings two runs give the same integers whatever the caller's thread
count (the float reductions of a convolution's gradient depend on it). One thread also avoids the
synchronization cost of many small operations on a busy machine; ``threads=None`` keeps torch's
setting (faster for large layers on an idle machine, deterministic for a fixed thread count).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import lowbit

ZETA, GAMMA = 1.1, -0.1


@dataclass
class AdaRoundConfig:
    """bits: 2..8 (integer weights, symmetric narrow range [-(2^(b-1) - 1), 2^(b-1) - 1], or
    [-2^(b-1), 2^(b-1) - 1] with zero points when symmetric=False); per_channel: scales per output
    channel (else per tensor); group_size: scales per (row, group of group_size weights along K)
    (overrides per_channel); iterations: Adam steps per layer; batch_size: calibration samples per
    step; lr: Adam's learning rate; reg_weight: lambda; beta_start / beta_end / warmup: the
    annealing of the regularizer; max_samples: calibration samples cached per layer; seed; threads:
    intra-op threads of the optimization (None: torch's current setting); sequential (round_weights_):
    optimize each layer on its inputs in the model whose earlier layers are already rounded, against
    the float layer on the float model's inputs (corrects the error the earlier layers pass on; one
    more pass of the batches per layer), instead of on the float model's inputs."""

    bits: int = 4
    per_channel: bool = True
    group_size: int | None = None
    symmetric: bool = True
    iterations: int = 1000
    batch_size: int = 64
    lr: float = 1e-2
    reg_weight: float = 0.01
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    max_samples: int = 256
    seed: int = 0
    threads: int | None = 1
    sequential: bool = False

    def __post_init__(self):
        from ._config_checks import check_bool, check_float, check_int

        check_int(self, "bits", 2, 8)
        check_bool(self, "per_channel")
        if self.group_size is not None:
            check_int(self, "group_size", 1)
        check_bool(self, "symmetric")
        check_int(self, "iterations", 1)
        check_int(self, "batch_size", 1)
        check_float(self, "lr", "> 0", lambda v: v > 0)
        check_float(self, "reg_weight", ">= 0", lambda v: v >= 0)
        check_float(self, "beta_start", "> 0", lambda v: v > 0)
        check_float(self, "beta_end", "in (0, beta_start]", lambda v: 0 < v <= self.beta_start)
        check_float(self, "warmup", "in [0, 1)", lambda v: 0 <= v < 1)
        check_int(self, "max_samples", 1)
        check_int(self, "seed", 0)
        if self.threads is not None:
            check_int(self, "threads", 1)
        check_bool(self, "sequential")

    @property
    def format(self) -> str:
        return f"int{self.bits}"

    @property
    def axis(self) -> int | None:
        return 0 if self.per_channel and self.group_size is None else None


@dataclass
class RoundedWeight:
    """AdaRound's result for one layer: integer weights q (int8, the weight's shape), the scales and
    zero points (lowbit.compute_scales' shapes) and the reconstruction errors on the cached inputs
    (sum of squared output differences per sample, mean over samples) of round-to-nearest and of
    AdaRound."""

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    error_nearest: float
    error_adaround: float
    config: AdaRoundConfig

    def dequantize(self) -> torch.Tensor:
        """s * (q - z) in float32, the weight's shape."""
        c = self.config
        q = self.q.float()
        s = lowbit.expand_scales(self.scale, q, c.axis, c.group_size)
        z = lowbit.expand_scales(self.zero_point, q, c.axis, c.group_size)
        return (q - z) * s


@contextlib.contextmanager
def _intra_op_threads(threads: int | None):
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)


def _layer_fn(layer: nn.Module):
    if isinstance(layer, nn.Linear):
        return lambda x, w: F.linear(x, w)
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise ValueError(f"adaround: only zero-padded convolutions are supported, got "
                             f"padding_mode={layer.padding_mode!r}")
        return lambda x, w: F.conv2d(x, w, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    raise TypeError(f"adaround: layer must be nn.Linear or nn.Conv2d, got {type(layer).__name__}")


def _reconstruction_error(fn, inputs: torch.Tensor, w: torch.Tensor, w_hat: torch.Tensor, chunk: int = 256,
                          float_inputs: torch.Tensor | None = None) -> float:
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(inputs), chunk):
            if float_inputs is None:
                diff = fn(inputs[i:i + chunk], w - w_hat)
            else:
                diff = fn(inputs[i:i + chunk], w_hat) - fn(float_inputs[i:i + chunk], w)
            total += float(diff.pow(2).flatten(1).sum(1).sum())
    return total / len(inputs)


def adaround_weight(layer: nn.Module, inputs: torch.Tensor, config: AdaRoundConfig | None = None,
                    scale: torch.Tensor | None = None, progress: bool = False, desc: str = "adaround",
                    float_inputs: torch.Tensor | None = None) -> RoundedWeight:
    """AdaRound one nn.Linear / nn.Conv2d on `inputs` (the layer's inputs, [samples, ...]): returns the
    RoundedWeight (the layer is not changed). `scale` replaces the scales computed from the weight
    (shape as lowbit.compute_scales returns it; symmetric only). `float_inputs` (same shape as inputs):
    the targets are the float layer on these (the float model's inputs) instead of on `inputs` (then
    the inputs of the model whose earlier layers are already rounded: sequential AdaRound, which also
    corrects the error those layers pass on). NaN / Inf weights or inputs are refused."""

    config = config or AdaRoundConfig()
    if not isinstance(config, AdaRoundConfig):
        raise TypeError(f"adaround_weight: config must be an AdaRoundConfig, got {type(config).__name__}")
    with _intra_op_threads(config.threads):
        return _adaround_weight(layer, inputs, config, scale, progress, desc, float_inputs)


def _adaround_weight(layer, inputs, config, scale, progress, desc, float_inputs=None) -> RoundedWeight:
    from .numerics import check_finite

    fn = _layer_fn(layer)
    w = layer.weight.detach().float()
    check_finite(w, "the weight", "adaround_weight")
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point() or len(inputs) == 0:
        raise ValueError("adaround_weight: inputs must be a non-empty floating-point tensor [samples, ...] (the "
                         "layer's cached inputs)")
    check_finite(inputs, "the cached inputs", "adaround_weight")
    inputs = inputs.detach().float()
    if float_inputs is not None:
        if not isinstance(float_inputs, torch.Tensor) or float_inputs.shape != inputs.shape:
            raise ValueError(f"adaround_weight: float_inputs must have the inputs' shape {list(inputs.shape)}, got "
                             f"{list(float_inputs.shape) if isinstance(float_inputs, torch.Tensor) else float_inputs}")
        check_finite(float_inputs, "the float inputs", "adaround_weight")
        float_inputs = float_inputs.detach().float()
    sources = inputs if float_inputs is None else float_inputs  # what the float layer's targets are computed on
    axis, group_size = config.axis, config.group_size
    computed_scale, zero_point = lowbit.compute_scales(w, config.format, axis, group_size, config.symmetric)
    if scale is None:
        scale = computed_scale
    else:
        scale = torch.as_tensor(scale, dtype=torch.float32).reshape(computed_scale.shape)
        if not config.symmetric:
            raise ValueError("adaround_weight: a given scale needs symmetric=True (its zero point would be unknown)")
    qmax = 2 ** (config.bits - 1) - 1
    qmin = -qmax if config.symmetric else -qmax - 1
    s = lowbit.expand_scales(scale, w, axis, group_size)
    z = lowbit.expand_scales(zero_point, w, axis, group_size).float()
    w_floor = torch.floor(w / s)
    frac = (w / s - w_floor).clamp(0, 1)
    # h(V0) = frac: sigmoid(V0) = (frac - gamma) / (zeta - gamma), strictly inside (0, 1)
    v = torch.logit((frac - GAMMA) / (ZETA - GAMMA)).requires_grad_()

    def soft_weight(h):
        return s * (torch.clamp(w_floor + h + z, qmin, qmax) - z)

    nearest = s * (torch.clamp(torch.round(w / s) + z, qmin, qmax) - z)
    error_nearest = _reconstruction_error(fn, inputs, w, nearest, float_inputs=float_inputs)

    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam([v], lr=config.lr)
    warmup_steps = int(config.warmup * config.iterations)
    n = len(inputs)
    with torch.no_grad():
        targets = None if n > 4 * config.batch_size else fn(sources, w)
    for step in tqdm(range(config.iterations), desc=desc, disable=not progress, leave=False):
        index = torch.randint(0, n, (min(config.batch_size, n),), generator=generator)
        x = inputs[index]
        with torch.no_grad():
            target = targets[index] if targets is not None else fn(sources[index], w)
        h = _rectified_sigmoid(v)
        reconstruction = (fn(x, soft_weight(h)) - target).pow(2).flatten(1).sum(1).mean()
        if step < warmup_steps:
            loss = reconstruction
        else:
            progress_fraction = (step - warmup_steps) / max(config.iterations - warmup_steps, 1)
            beta = config.beta_end + (config.beta_start - config.beta_end) * (1 - progress_fraction)
            regularizer = (1 - (2 * h - 1).abs().pow(beta)).sum()
            loss = reconstruction + config.reg_weight * regularizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        up = (v >= 0).float()
        q = torch.clamp(w_floor + up + z, qmin, qmax)
        w_hat = s * (q - z)
        error_adaround = _reconstruction_error(fn, inputs, w, w_hat, float_inputs=float_inputs)
    return RoundedWeight(q.to(torch.int8), scale.clone(), zero_point.clone(), error_nearest, error_adaround, config)


# ---------------------------------------------------------------- whole models


def collect_layer_inputs(model: nn.Module, batches, names: list[str], max_samples: int = 1024) -> dict:
    """{name: inputs [samples, ...]} of the named submodules over `batches` (an iterable of input
    tensors or (input, label) pairs), up to max_samples samples each, with forward hooks; the model
    runs in evaluation mode under no_grad (its mode is restored)."""
    cached: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    counts = dict.fromkeys(names, 0)
    hooks = []
    for name in names:
        def hook(module, args, name=name):
            if counts[name] < max_samples:
                x = args[0].detach()[:max_samples - counts[name]]
                cached[name].append(x)
                counts[name] += len(x)
        hooks.append(model.get_submodule(name).register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
                if all(c >= max_samples for c in counts.values()):
                    break
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    missing = [name for name, xs in cached.items() if not xs]
    if missing:
        raise ValueError(f"collect_layer_inputs: the calibration batches never reached module(s) {missing}")
    return {name: torch.cat(xs) for name, xs in cached.items()}


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the nn.Linear / zero-padded nn.Conv2d modules of the model, in module order."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.padding_mode == "zeros")]


def folded_copy(model: nn.Module) -> nn.Module:
    """An evaluation-mode copy of `model` with every Conv2d + BatchNorm2d pair folded into one Conv2d
    (torch.fx; the weights that a deployment quantizes)."""
    from .static_quant import _fold_batchnorms, trace

    gm = trace(copy.deepcopy(model).eval(), "folded_copy")
    _fold_batchnorms(gm)
    return gm


def round_weights_(model: nn.Module, config: AdaRoundConfig | None = None, batches=None, rounding: str = "adaround",
                   progress: bool = True) -> dict[str, RoundedWeight | None]:
    """Fake-quantize the weight of every nn.Linear / nn.Conv2d of `model` in place to `config`'s
    integer grid, rounding to nearest (``rounding="nearest"``, no data) or with AdaRound on the
    layers' inputs over `batches` (collected once, from the float model, before any weight changes).
    The weights become s * (q - z) in float (the model stays a float model). Returns {name:
    RoundedWeight (AdaRound) or None (nearest)}."""
    config = config or AdaRoundConfig()
    if rounding not in ("nearest", "adaround"):
        raise ValueError(f'round_weights_: rounding must be "nearest" or "adaround", got {rounding!r}')
    names = quantizable_layers(model)
    results: dict[str, RoundedWeight | None] = {}
    if rounding == "nearest":
        for name in names:
            layer = model.get_submodule(name)
            with torch.no_grad():
                layer.weight.copy_(lowbit.fake_quantize(layer.weight.detach().float(), config.format, axis=config.axis,
                                                        group_size=config.group_size, symmetric=config.symmetric))
            results[name] = None
        return results
    if batches is None:
        raise ValueError('round_weights_: rounding="adaround" needs calibration batches')
    with _intra_op_threads(config.threads):
        inputs = collect_layer_inputs(model, batches, names, config.max_samples)
    for name in tqdm(names, desc="adaround layers", disable=not progress, leave=False):
        layer = model.get_submodule(name)
        if config.sequential:  # this layer's inputs with the earlier layers rounded; targets from the float inputs
            with _intra_op_threads(config.threads):  # many small forward passes: threads cost more than they save
                current = collect_layer_inputs(model, batches, [name], config.max_samples)[name]
            result = adaround_weight(layer, current, config, progress=progress, desc=f"adaround {name}",
                                     float_inputs=inputs[name])
        else:
            result = adaround_weight(layer, inputs[name], config, progress=progress, desc=f"adaround {name}")
        with torch.no_grad():
            layer.weight.copy_(result.dequantize())
        results[name] = result
    return results


# ---------------------------------------------------------------- group-wise int4 (Int4WeightConfig)


def check_int4_adaround_settings(config) -> None:
    """Int4WeightConfig's rounding fields: rounding_weights="adaround" needs symmetric=True and
    calibration (a non-empty list or tuple of tensors or (input, label) pairs); ``adaround`` is None
    or an AdaRoundConfig with bits=4, the config's group_size and symmetric=True; with
    rounding_weights="nearest" neither calibration nor adaround may be set."""
    where = "Int4WeightConfig"
    if config.rounding_weights == "nearest":
        for name in ("calibration", "adaround"):
            if getattr(config, name) is not None:
                raise ValueError(f'{where}: {name} is read only by rounding_weights="adaround"; pass '
                                 f'rounding_weights="adaround" or {name}=None')
        return
    if not config.symmetric:
        raise ValueError(f'{where}: rounding_weights="adaround" needs symmetric=True (AdaRound keeps the '
                         "nearest rounding's scales, which have no zero points), got symmetric=False")
    batches = config.calibration
    if not isinstance(batches, (list, tuple)) or not batches:
        raise TypeError(f'{where}: rounding_weights="adaround" needs calibration, a non-empty list or tuple of '
                        f"batches, got {type(batches).__name__}")
    for index, batch in enumerate(batches):
        x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{where}: calibration[{index}] must be a floating-point tensor or an (input, label) "
                            f"pair, got {type(batch).__name__}")
    ada = config.adaround
    if ada is None:
        return
    if not isinstance(ada, AdaRoundConfig):
        raise TypeError(f"{where}: adaround must be None or an AdaRoundConfig, got {type(ada).__name__}")
    if (ada.bits, ada.group_size, ada.symmetric) != (4, config.group_size, True):
        raise ValueError(f"{where}: adaround must round to the layers' int4 grid (bits=4, group_size="
                         f"{config.group_size}, symmetric=True), got bits={ada.bits}, group_size={ada.group_size}, "
                         f"symmetric={ada.symmetric}")


def int4_adaround_weights(model: nn.Module, config, filter_fn=None) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{id(nn.Linear): (q int8 [N, K] in [-7, 7], scales fp32 [N, K / group_size])} of AdaRound for every
    nn.Linear that Int4WeightConfig `config` converts, on the layers' inputs over config.calibration
    (collected once from the float model), with the scales of numerics.quantize_weight_groupwise (the
    nearest rounding's, max|w_group| / 7): only the rounding direction of each weight changes."""
    from .hooks_quant import _linear_paths
    from .nn.int4_conv import conv_as_linear, conv_patches
    from .numerics import quantize_weight_groupwise

    ada = config.adaround or AdaRoundConfig(bits=4, group_size=config.group_size)
    layers = {name: module for name, module, reason in _linear_paths(model, filter_fn)
              if reason is None and module.in_features % config.group_size == 0}
    if config.conv2d:  # convs as their im2col linear form (Int4Conv2d), on their patches
        seen = {id(m) for m in layers.values()}
        for name, module in model.named_modules():
            if (type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros"
                    and not isinstance(module.padding, str) and id(module) not in seen
                    and (filter_fn is None or filter_fn(module, name))):
                layers[name] = module
                seen.add(id(module))
    if not layers:
        return {}
    with _intra_op_threads(ada.threads):
        inputs = collect_layer_inputs(model, config.calibration, list(layers), ada.max_samples)
    rounded = {}
    for name, layer in tqdm(layers.items(), desc="adaround int4", leave=False):
        if isinstance(layer, nn.Conv2d):
            linear = conv_as_linear(layer, config.group_size)
            x = conv_patches(inputs[name].float(), layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                             linear.in_features)
            # a fixed, evenly spread subset of the patches (every output position of every image is a row)
            x = x[torch.linspace(0, len(x) - 1, min(len(x), CONV_PATCH_ROWS)).long()]
        else:
            linear, x = layer, inputs[name].reshape(-1, layer.in_features)[:ada.max_samples]
        _, scale, _ = quantize_weight_groupwise(linear.weight.detach().float(), config.group_size)
        result = adaround_weight(linear, x, ada, scale=scale, desc=f"adaround {name}")
        rounded[id(layer)] = (result.q, scale)
    return rounded


# patches (rows of the im2col form) on which a convolution's int4 rounding is optimized
CONV_PATCH_ROWS = 4096
