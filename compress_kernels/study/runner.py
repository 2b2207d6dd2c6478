"""The study runner: compress one trained ResNet every way and compare accuracy, speed and size.

    python -m compress_kernels study                 # digits, no download, a few minutes
    python -m compress_kernels study --quick         # smoke configuration (well under a minute)
    python -m compress_kernels study --data cifar10 --data-dir ~/data/cifar-10-batches-py

Library part: a registry of *variants* (``VARIANTS``; add one with :func:`register_variant`). A
variant is a function ``fn(fp32_model, data, ctx) -> (model, finetune_steps)``: it receives the
trained fp32 model (it must not modify it; deep-copy first), the :class:`StudyData` and the
:class:`StudyContext` (settings, the teacher for distillation, a cache shared between variants),
and returns the compressed model and the number of optimizer steps it spent fine-tuning (0 for a
post-training method). :func:`run_study` evaluates every variant on the held-out split, times all
of them in the same run (round-robin over the variants inside each repetition, median per variant,
so a load change on a shared machine hits every variant alike), counts the bytes each converted
model really stores (:func:`stored_bytes`), and writes ``report.md``, ``report.json`` and
``study.png`` (accuracy vs latency, size per variant).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from . import data as data_mod
from . import models, training

# ---------------------------------------------------------------- data and settings


@dataclass
class StudyData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str = "digits"


@dataclass
class StudySettings:
    """Everything that decides the numbers of a study run (saved in report.json)."""

    data: str = "digits"
    data_dir: str | None = None
    model: str = "resnet18_cifar"
    width: int = 8
    epochs: int = 6
    lr: float = 0.1
    batch_size: int = 64
    seed: int = 0
    finetune_epochs: float = 1.0     # fine-tuning budget per variant, in passes over the training set
    calibration_batches: int = 2     # batches of 64 training images for int8 static calibration
    train_limit: int | None = None   # keep the first N training images (None: all)
    eval_limit: int | None = None    # evaluate on the first N test images (None: all)
    timing_reps_b1: int = 21         # timed repetitions at batch 1 (median reported)
    timing_reps_b32: int = 7         # timed repetitions at batch 32
    variants: list[str] | None = None
    out: str = "study_out"
    cache_dir: str | None = None     # fp32 checkpoint cache (None: ~/.cache/compress_kernels)
    progress: bool = True


QUICK = dict(width=4, epochs=1, finetune_epochs=0.1, calibration_batches=1, train_limit=256, eval_limit=64,
             timing_reps_b1=3, timing_reps_b32=2,
             variants=["fp32", "int8_static", "int8_dynamic", "int8_qat", "kmeans4", "sparse24", "sparse24_int8",
                       "sparse24_int8_static", "channels50_kd"])


@dataclass
class StudyContext:
    settings: StudySettings
    teacher: nn.Module                                    # the fp32 model (for distillation)
    cache: dict = field(default_factory=dict)             # shared between variants (e.g. a fine-tuned 2:4 model)

    def finetune_set(self, data: StudyData) -> tuple[torch.Tensor, torch.Tensor]:
        """The fine-tuning subset: the first finetune_epochs * N training images when the budget is
        under one pass (load_data shuffles the digits training split once and CIFAR-10's files are
        in random order, so a prefix holds every class), else the whole training set."""
        n = len(data.x_train)
        keep = max(self.settings.batch_size, int(round(min(self.settings.finetune_epochs, 1.0) * n)))
        return data.x_train[:keep], data.y_train[:keep]

    def finetune_epochs(self) -> int:
        return max(1, int(round(self.settings.finetune_epochs))) if self.settings.finetune_epochs >= 1 else 1


def load_data(settings: StudySettings) -> StudyData:
    if settings.data == "digits":
        x_train, y_train, x_test, y_test = data_mod.load_digits(size=32, seed=settings.seed)
        # load_digits returns each split ordered by class; shuffle the training split once (seeded)
        # so any prefix (train_limit, the fine-tuning subset) holds every class.
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(settings.seed))
        x_train, y_train = x_train[order], y_train[order]
    elif settings.data == "cifar10":
        if not settings.data_dir:
            raise ValueError("--data cifar10 needs --data-dir PATH (the folder with data_batch_1..5 and test_batch)")
        x_train, y_train, x_test, y_test = data_mod.load_cifar10(settings.data_dir)
    else:
        raise ValueError(f'data must be "digits" or "cifar10", got {settings.data!r}')
    if settings.train_limit:
        x_train, y_train = x_train[:settings.train_limit], y_train[:settings.train_limit]
    if settings.eval_limit:
        x_test, y_test = x_test[:settings.eval_limit], y_test[:settings.eval_limit]
    return StudyData(x_train, y_train, x_test, y_test, name=settings.data)


# ---------------------------------------------------------------- the fp32 model (cached)

MODELS: dict[str, Callable[..., nn.Module]] = {"resnet18_cifar": models.resnet18_cifar}


def steps_for(n: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps of training.train / finetune_codebooks over n samples."""
    return epochs * math.ceil(n / batch_size)


def checkpoint_path(settings: StudySettings, data: StudyData) -> str:
    """The cache key covers everything the trained weights depend on: data (name, sizes, and for
    CIFAR-10 the folder), model, width, epochs, lr, batch size, seed and the torch version."""
    key = json.dumps([settings.data, os.path.abspath(settings.data_dir) if settings.data_dir else None,
                      len(data.x_train), settings.model, settings.width, settings.epochs, settings.lr,
                      settings.batch_size, settings.seed, torch.__version__])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    folder = settings.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "compress_kernels")
    return os.path.join(folder, f"{settings.data}_{settings.model}_w{settings.width}_e{settings.epochs}_{digest}.pt")


def train_fp32(settings: StudySettings, data: StudyData) -> tuple[nn.Module, bool]:
    """The trained fp32 model, from the checkpoint cache when it is there. Returns (model, cached)."""
    if settings.model not in MODELS:
        raise ValueError(f"unknown model {settings.model!r}; known: {sorted(MODELS)}")
    torch.manual_seed(settings.seed)
    model = MODELS[settings.model](num_classes=10, width=settings.width, in_channels=data.x_train.shape[1])
    path = checkpoint_path(settings, data)
    if os.path.exists(path):
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), True
    training.train(model, data.x_train, data.y_train, epochs=settings.epochs, lr=settings.lr,
                   batch_size=settings.batch_size, seed=settings.seed, progress=settings.progress,
                   desc=f"train fp32 (w{settings.width})")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + f".tmp{os.getpid()}"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)  # atomic: a concurrent run never reads a half-written checkpoint
    return model.eval(), False


# ---------------------------------------------------------------- bytes actually stored


def _module_stored_bytes(mod: nn.Module) -> int:
    """Bytes a module itself (not its children) needs to run: its parameters and persistent buffers,
    minus what a converted module keeps only for inspection or training. Non-persistent buffers
    (the kernels' packed copies, rebuilt from the stored tensors at load time) are not counted."""
    from ..nn.linear import QuantLinear

    skip = {"weight_mask"}  # pruning masks: training-time only
    if isinstance(mod, QuantLinear):
        # static (integer-only) runs on bias_q + (m0, shift); dynamic on the float bias
        skip |= {"bias"} if mod.mode == "static" else {"bias_q", "m0", "shift", "input_scale", "output_scale"}
    total = 0
    for name, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
        if t is None or name in skip or name in getattr(mod, "_non_persistent_buffers_set", ()):
            continue
        total += t.numel() * t.element_size()
    return total


def stored_bytes(model: nn.Module) -> int:
    """Bytes the model needs to run: int8 weights and their scales / multipliers, packed indices +
    codebooks (+ zero flags), compressed 2:4 values + metadata (+ scales), biases, BatchNorm
    parameters and statistics that were not folded, and fp32 weights of layers left in fp32."""
    return sum(_module_stored_bytes(m) for m in model.modules())


# ---------------------------------------------------------------- the variants


@dataclass
class Variant:
    name: str
    fn: Callable | None              # fn(fp32_model, data, ctx) -> (model, finetune_steps); None: not available
    description: str
    unavailable_reason: str = ""


VARIANTS: dict[str, Variant] = {}


def register_variant(name: str, description: str, fn: Callable | None = None, unavailable_reason: str = ""):
    """Add a variant (usable as a decorator when fn is omitted)."""

    def add(f):
        VARIANTS[name] = Variant(name, f, description, unavailable_reason)
        return f

    if fn is not None or unavailable_reason:
        add(fn)
        return fn
    return add


def _finetune(model: nn.Module, data: StudyData, ctx: StudyContext, kd: bool = False, after_step=None,
              lr: float = 0.01) -> int:
    """SGD recovery fine-tuning (cross-entropy, or distillation from the fp32 teacher when kd)."""
    x, y = ctx.finetune_set(data)
    epochs = ctx.finetune_epochs()
    loss_fn = training.distillation_loss(ctx.teacher) if kd else None
    training.train(model, x, y, epochs=epochs, lr=lr, batch_size=ctx.settings.batch_size, seed=ctx.settings.seed,
                   loss_fn=loss_fn, after_step=after_step, progress=ctx.settings.progress,
                   desc="  fine-tune" + (" (KD)" if kd else ""))
    return steps_for(len(x), ctx.settings.batch_size, epochs)


def _finetune_codebooks(model: nn.Module, data: StudyData, ctx: StudyContext) -> int:
    from ..nn.codebook import finetune_codebooks

    x, y = ctx.finetune_set(data)
    epochs = ctx.finetune_epochs()
    finetune_codebooks(model, x, y, epochs=epochs, batch_size=ctx.settings.batch_size, seed=ctx.settings.seed)
    return steps_for(len(x), ctx.settings.batch_size, epochs)


@register_variant("fp32", "the trained float model")
def _fp32(model, data, ctx):
    return model, 0


def _calibrate(model: nn.Module, data: StudyData, ctx: StudyContext) -> None:
    """Record int8 static calibration statistics on the first calibration_batches batches of 64."""
    import compress_kernels as ck

    n = ctx.settings.calibration_batches
    ck.calibrate(model, [data.x_train[i * 64:(i + 1) * 64] for i in range(n) if i * 64 < len(data.x_train)])


@register_variant("int8_static", "int8 post-training, static, per-channel, integer-only (MSE observer, BN folded)")
def _int8_static(model, data, ctx):
    import compress_kernels as ck

    m = copy.deepcopy(model).eval()
    _calibrate(m, data, ctx)
    return ck.convert_(m, ck.Int8StaticConfig(observer="mse", per_channel=True)).model, 0


@register_variant("int8_dynamic", "int8 dynamic (QuantLinear; Linear layers only, the convs stay fp32)")
def _int8_dynamic(model, data, ctx):
    import compress_kernels as ck

    return ck.convert_(model, ck.Int8DynamicConfig(), inplace=False).model, 0


@register_variant("int8_qat", "int8 quantization-aware training (EMA observers, BN folded, per-channel) + "
                             "conversion to the integer-only model")
def _int8_qat(model, data, ctx):
    import compress_kernels as ck

    qat = ck.prepare_qat_(model, ck.QATConfig(), inplace=False)
    steps = _finetune(qat, data, ctx)
    ck.freeze_qat_(qat)
    return ck.convert_(qat).model, steps


def _kmeans(bits: int, fold: bool):
    """k-means codebooks per layer + centroid fine-tune; fold: clustered on the BatchNorm-folded model (the weights
    a deployment runs: one conv per layer instead of conv + BatchNorm). At 4 bits folding first keeps the accuracy
    (digits, width 8: 97.78 both ways) and makes the network 1.2x / 1.07x faster at batch 1 / 32; at 2 bits the
    per-channel BatchNorm scales spread the weights over the 4 shared values and cost 6 points (94.00 -> 87.56),
    so the 2-bit variant keeps its BatchNorm."""

    def fn(model, data, ctx):
        import compress_kernels as ck

        from ..adaround import folded_copy

        m = ck.convert_(folded_copy(model) if fold else model, ck.CodebookConfig(bits=bits), inplace=False).model
        return m, _finetune_codebooks(m, data, ctx)

    return fn


register_variant("kmeans4", "k-means 4-bit codebooks per layer on the BatchNorm-folded model + centroid fine-tune",
                 _kmeans(4, fold=True))
register_variant("kmeans2", "k-means 2-bit codebooks per layer (BatchNorm kept) + centroid fine-tune",
                 _kmeans(2, fold=False))


def _sparse24_finetuned(model, data, ctx, kd: bool):
    """The 2:4-pruned, fine-tuned float model (cached: the fp32 and int8 2:4 variants share it).
    Layers whose K is not a multiple of 4 (the 3-channel stem) are left dense."""
    from ..prune import PruneConfig, prune_

    key = ("sparse24", kd)
    if key not in ctx.cache:
        m = copy.deepcopy(model)
        pruner = prune_(m, PruneConfig(granularity="2:4"))
        steps = _finetune(m, data, ctx, kd=kd, after_step=lambda _: pruner.step())
        pruner.remove()
        ctx.cache[key] = (m, steps)
    m, steps = ctx.cache[key]
    return copy.deepcopy(m), steps


def _sparse24(int8: bool, kd: bool = False):
    def fn(model, data, ctx):
        import compress_kernels as ck

        m, steps = _sparse24_finetuned(model, data, ctx, kd)
        return ck.convert_(m, ck.Sparse24Config(int8=int8)).model, steps

    return fn


register_variant("sparse24", "2:4 semi-structured sparsity (magnitude) + knowledge-distillation fine-tune "
                             "(teacher = fp32), fp32 2:4 kernels", _sparse24(False, kd=True))
register_variant("sparse24_int8", "2:4 + int8 (the same distilled 2:4 weights, int8 2:4 kernels, activations "
                                  "quantized per call)", _sparse24(True, kd=True))


@register_variant("sparse24_int8_static", "2:4 + int8 integer-only (the same distilled 2:4 weights, calibrated "
                                         "static int8, int8 2:4 kernels with the fixed-point epilogue)")
def _sparse24_int8_static(model, data, ctx):
    import compress_kernels as ck

    m, steps = _sparse24_finetuned(model, data, ctx, kd=True)
    m.eval()
    _calibrate(m, data, ctx)
    return ck.convert_(m, ck.Int8StaticConfig(observer="mse", per_channel=True, sparse24=True)).model, steps
register_variant("sparse24_ce", "2:4 + cross-entropy fine-tune (the ablation of the distillation), fp32 2:4 kernels",
                 _sparse24(False, kd=False))


@register_variant("deep_compression", "80% unstructured magnitude pruning + fine-tune, then k-means 4-bit "
                                      "(zero centroid) on the BatchNorm-folded model + centroid fine-tune (Deep "
                                      "Compression)")
def _deep_compression(model, data, ctx):
    import compress_kernels as ck

    from ..prune import PruneConfig, prune_

    m = copy.deepcopy(model)
    pruner = prune_(m, PruneConfig(sparsity=0.8, granularity="element", scope="global"))
    steps = _finetune(m, data, ctx, kd=True, after_step=lambda _: pruner.step())
    pruner.remove()
    from ..adaround import folded_copy

    # clustered as deployed, BatchNorm folded (folding keeps the pruned zeros): 97.56% top-1 against 96.67% with
    # BatchNorm kept (digits, width 8), and 1.2x faster at batch 1
    m = ck.convert_(folded_copy(m.eval()), ck.CodebookConfig(bits=4)).model
    return m, steps + _finetune_codebooks(m, data, ctx)


def _channels(kd: bool):
    def fn(model, data, ctx):
        from ..prune import prune_channels_

        m = copy.deepcopy(model)
        prune_channels_(m, amount=0.5)
        return m, _finetune(m, data, ctx, kd=kd)

    return fn


register_variant("channels50", "channel pruning: 50% of every basic block's inner channels removed + "
                               "cross-entropy fine-tune (ordinary fp32 kernels)", _channels(False))
register_variant("channels50_kd", "channel pruning 50% + knowledge-distillation fine-tune (teacher = fp32)",
                 _channels(True))

@register_variant("fp8_e4m3", "weight-only FP8 E4M3FN (BN folded; 1-byte codes + per-channel scales, decoded by a "
                              "bf16 table lookup, bf16 matmul / conv; activations in float)")
def _fp8_e4m3(model, data, ctx):
    import compress_kernels as ck

    from ..adaround import folded_copy

    return ck.convert_(folded_copy(model), ck.Fp8WeightConfig(format="e4m3")).model, 0


# AdaRound settings of the study: a short optimization (the demo's time budget), a few hundred samples
ADAROUND_STUDY = dict(iterations=80, batch_size=32, max_samples=128, lr=2e-2)


@register_variant("int8_adaround", "int8_static with AdaRound weight rounding (same scales and activation qparams; "
                                   "the int8 integers chosen to reconstruct each layer's output)")
def _int8_adaround(model, data, ctx):
    import compress_kernels as ck

    from ..adaround import AdaRoundConfig

    m = copy.deepcopy(model).eval()
    _calibrate(m, data, ctx)
    config = ck.Int8StaticConfig(observer="mse", per_channel=True, rounding_weights="adaround",
                                 adaround=AdaRoundConfig(bits=8, **ADAROUND_STUDY, seed=ctx.settings.seed))
    return ck.convert_(m, config).model, 0


def _w4(rounding: str, bits: int = 4, sequential: bool = False):
    def fn(model, data, ctx):
        from ..adaround import AdaRoundConfig, folded_copy, round_weights_

        m = folded_copy(model)
        config = AdaRoundConfig(bits=bits, per_channel=True, **ADAROUND_STUDY, seed=ctx.settings.seed,
                                sequential=sequential)
        batches = [data.x_train[i:i + 64] for i in range(0, config.max_samples, 64)]
        round_weights_(m, config, batches if rounding == "adaround" else None, rounding=rounding, progress=False)
        return m, 0

    return fn


register_variant("w4_nearest", "4-bit per-channel weights rounded to nearest (BN folded; fake-quant: stored as fp32, "
                               "activations in float) - the baseline of w4_adaround", _w4("nearest"))
register_variant("w4_adaround", "4-bit per-channel weights rounded by AdaRound on 128 calibration images (BN "
                                "folded; fake-quant: stored as fp32, activations in float)", _w4("adaround"))
for _bits in (3, 2):
    register_variant(f"w{_bits}_nearest", f"{_bits}-bit per-channel weights rounded to nearest (BN folded; fake-quant: "
                                          f"stored as fp32, activations in float) - the baseline of w{_bits}_adaround",
                     _w4("nearest", _bits))
    register_variant(f"w{_bits}_adaround", f"{_bits}-bit per-channel weights rounded by sequential AdaRound (each "
                                           "layer on the inputs of the model rounded so far, float targets) on 128 "
                                           "calibration images (BN folded; fake-quant: stored as fp32, activations "
                                           "in float)", _w4("adaround", _bits, sequential=True))


def _int4(rounding: str):
    def fn(model, data, ctx):
        import compress_kernels as ck

        from ..adaround import AdaRoundConfig, folded_copy

        settings = dict(group_size=32, activation="int8", conv2d=True)
        if rounding == "adaround":
            ada = AdaRoundConfig(bits=4, group_size=32, **ADAROUND_STUDY, seed=ctx.settings.seed)
            settings.update(rounding_weights="adaround", adaround=ada,
                            calibration=[data.x_train[i:i + 64] for i in range(0, ada.max_samples, 64)])
        return ck.convert_(folded_copy(model), ck.Int4WeightConfig(**settings)).model, 0

    return fn


register_variant("int4_g32_w4a8", "group-wise int4 weights (g = 32, BN folded; packed two per byte + one fp32 scale "
                                  "per group; convs as im2col + int4_linear, depth zero-padded to a multiple of 32), "
                                  "activations int8 per row at run time", _int4("nearest"))
register_variant("int4_adaround", "int4_g32_w4a8 with AdaRound rounding on 128 calibration images (same scales)",
                 _int4("adaround"))

DEFAULT_VARIANTS = ["fp32", "int8_static", "int8_dynamic", "int8_qat", "kmeans4", "kmeans2", "sparse24",
                    "sparse24_int8", "sparse24_int8_static", "deep_compression", "channels50", "channels50_kd",
                    "fp8_e4m3", "w4_nearest", "w4_adaround", "w3_nearest", "w3_adaround", "w2_nearest",
                    "w2_adaround", "int4_g32_w4a8", "int4_adaround"]  # int8_adaround: --variants (it calibrates again)


# ---------------------------------------------------------------- timing


@torch.no_grad()
def time_models(models_: dict[str, nn.Module], x: torch.Tensor, reps: int, warmup: int = 2,
                progress: bool = False, desc: str = "time",
                spread: dict[str, float] | None = None) -> dict[str, float]:
    """Median seconds per forward of x for every model (spread, when given, receives the
    interquartile range of the samples: how noisy the machine was). Each repetition runs every model once, in
    turn, so all of them see the same machine load; warm-up calls first (packing caches, allocator)."""
    for m in models_.values():
        m.eval()
        for _ in range(warmup):
            m(x)
    samples: dict[str, list[float]] = {name: [] for name in models_}
    for _ in tqdm(range(reps), desc=desc, disable=not progress, leave=False):
        for name, m in models_.items():
            t = time.perf_counter()
            m(x)
            samples[name].append(time.perf_counter() - t)
    if spread is not None:
        for name, s in samples.items():
            q = statistics.quantiles(s, n=4) if len(s) > 1 else [s[0]] * 3
            spread[name] = q[2] - q[0]
    return {name: statistics.median(s) for name, s in samples.items()}


# ---------------------------------------------------------------- the study


@dataclass
class Row:
    name: str
    description: str
    available: bool
    top1: float | None = None
    latency_b1_ms: float | None = None
    latency_b32_ms: float | None = None
    latency_b1_iqr_ms: float | None = None   # interquartile range of the timed samples
    latency_b32_iqr_ms: float | None = None
    stored_bytes: int | None = None
    compression: float | None = None
    speedup_b1: float | None = None
    speedup_b32: float | None = None
    finetune_steps: int | None = None
    build_seconds: float | None = None
    note: str = ""


def run_study(model: nn.Module, data: StudyData, settings: StudySettings,
              variants: list[str] | None = None) -> list[Row]:
    """Build, evaluate, size and time every variant (fp32 first: it is the baseline of the ratios)."""
    names = list(variants or settings.variants or DEFAULT_VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    if "fp32" in names:
        names.remove("fp32")
    names.insert(0, "fp32")
    model = model.eval()
    teacher = copy.deepcopy(model).eval()
    ctx = StudyContext(settings=settings, teacher=teacher)
    rows: dict[str, Row] = {}
    built: dict[str, nn.Module] = {}
    bar = tqdm(names, desc="variants", disable=not settings.progress)
    for name in bar:
        v = VARIANTS[name]
        bar.set_postfix_str(name)
        if v.fn is None:
            rows[name] = Row(name, v.description, False, note=v.unavailable_reason)
            continue
        torch.manual_seed(settings.seed)
        t = time.perf_counter()
        m, steps = v.fn(model, data, ctx)
        m.eval()
        build = time.perf_counter() - t
        acc = training.evaluate(m, data.x_test, data.y_test)
        rows[name] = Row(name, v.description, True, top1=acc, stored_bytes=stored_bytes(m), finetune_steps=steps,
                         build_seconds=build)
        built[name] = m
    bar.close()

    for batch, reps, attr in ((1, settings.timing_reps_b1, "latency_b1_ms"),
                              (32, settings.timing_reps_b32, "latency_b32_ms")):
        x = data.x_test[:batch]
        if len(x) < batch:
            x = x.repeat(math.ceil(batch / len(x)), 1, 1, 1)[:batch]
        spread: dict[str, float] = {}
        for name, sec in time_models(built, x, reps, progress=settings.progress, desc=f"time batch {batch}",
                                     spread=spread).items():
            setattr(rows[name], attr, sec * 1e3)
            setattr(rows[name], attr.replace("_ms", "_iqr_ms"), spread[name] * 1e3)
    base = rows["fp32"]
    for r in rows.values():
        if r.available:
            r.compression = base.stored_bytes / r.stored_bytes
            r.speedup_b1 = base.latency_b1_ms / r.latency_b1_ms
            r.speedup_b32 = base.latency_b32_ms / r.latency_b32_ms
    return [rows[n] for n in names]


# ---------------------------------------------------------------- reports

COLUMNS = ["variant", "top-1 %", "ms b=1", "ms b=32", "KiB stored", "compression", "speed-up b=1", "speed-up b=32",
           "fine-tune steps"]


def _cells(r: Row) -> list[str]:
    if not r.available:
        return [r.name, "n/a", "", "", "", "", "", "", r.note]
    return [r.name, f"{r.top1:.2f}", f"{r.latency_b1_ms:.2f}", f"{r.latency_b32_ms:.2f}",
            f"{r.stored_bytes / 1024:.1f}", f"{r.compression:.2f}x", f"{r.speedup_b1:.2f}x", f"{r.speedup_b32:.2f}x",
            str(r.finetune_steps)]


def format_table(rows: list[Row]) -> str:
    cells = [COLUMNS] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells if i < len(c) and (c[1] != "n/a" or i < 2)) for i in range(len(COLUMNS))]
    lines = []
    for j, c in enumerate(cells):
        if j and c[1] == "n/a":
            lines.append(f"{c[0]:<{widths[0]}}  {c[1]:>{widths[1]}}  {c[-1]}")
            continue
        lines.append("  ".join(f"{v:<{w}}" if i == 0 else f"{v:>{w}}" for i, (v, w) in enumerate(zip(c, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_info() -> dict:
    from .. import ops

    try:
        isa = ops.cpu_isa()
    except Exception as why:  # noqa: BLE001  (the extension may be missing; the report still says so)
        isa = f"unavailable ({why})"
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "kernel_isa": isa, "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def write_reports(rows: list[Row], settings: StudySettings, fp32_cached: bool, out: str,
                  total_seconds: float | None = None, n_test: int | None = None) -> dict[str, str]:
    """report.md, report.json and study.png in `out`; returns their paths."""
    os.makedirs(out, exist_ok=True)
    info = machine_info()
    paths = {"md": os.path.join(out, "report.md"), "json": os.path.join(out, "report.json"),
             "png": os.path.join(out, "study.png")}
    with open(paths["json"], "w") as f:
        json.dump({"settings": asdict(settings), "machine": info, "fp32_checkpoint_reused": fp32_cached,
                   "test_images": n_test, "total_seconds": total_seconds, "variants": [asdict(r) for r in rows]},
                  f, indent=2)
    md = [f"# Compression study: {settings.model} (width {settings.width}) on {settings.data}", "",
          f"Machine: {info['processor']}, {info['cpu_count']} CPUs, {info['torch_threads']} torch threads, "
          f"torch {info['torch']}, kernel path {info['kernel_isa']}, 1-minute load average "
          f"{info['load_average_1min']} (latencies are only comparable within one run).", "",
          f"Top-1 on the held-out split ({n_test} images); latency is the median of repeated forwards at batch 1 "
          "and 32, every variant timed in the same run (round-robin); bytes are what the converted model stores "
          "(int8 weights + scales, packed indices + codebooks, 2:4 values + metadata, biases, unfolded "
          "BatchNorm, fp32 layers left as they were); ratios are against fp32.", "",
          "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        c = _cells(r)
        if not r.available:
            c = [r.name, "n/a"] + [""] * (len(COLUMNS) - 3) + [r.note]
        md.append("| " + " | ".join(c) + " |")
    md += ["", "Variants:", ""] + [f"- `{r.name}`: {r.description}" for r in rows]
    with open(paths["md"], "w") as f:
        f.write("\n".join(md) + "\n")
    try:
        _plot(rows, settings, paths["png"])
    except ImportError as why:  # matplotlib is in the demo / test extras; the table is still written
        print(f"study: no plot ({why})")
        del paths["png"]
    return paths


def _plot(rows: list[Row], settings: StudySettings, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    avail = [r for r in rows if r.available]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    for r in avail:
        a.scatter(r.latency_b32_ms, r.top1, s=40)
        a.annotate(r.name, (r.latency_b32_ms, r.top1), textcoords="offset points", xytext=(4, 4), fontsize=8)
    a.set_xlabel("latency at batch 32 (ms, median)")
    a.set_ylabel("top-1 accuracy (%)")
    a.set_title("accuracy vs latency")
    a.grid(alpha=0.3)
    b.barh([r.name for r in avail], [r.stored_bytes / 1024 for r in avail])
    for i, r in enumerate(avail):
        b.annotate(f"{r.compression:.1f}x", (r.stored_bytes / 1024, i), xytext=(3, -3), textcoords="offset points",
                   fontsize=8)
    b.invert_yaxis()
    b.set_xlabel("stored size (KiB)")
    b.set_title("size per variant")
    fig.suptitle(f"{settings.model} width {settings.width} on {settings.data}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def study(settings: StudySettings) -> tuple[list[Row], dict[str, str]]:
    """The whole study: data, the (cached) fp32 model, every variant, the reports."""
    start = time.perf_counter()
    data = load_data(settings)
    model, cached = train_fp32(settings, data)
    rows = run_study(model, data, settings)
    paths = write_reports(rows, settings, cached, settings.out, time.perf_counter() - start, len(data.x_test))
    return rows, paths


def add_arguments(parser) -> None:
    """The `study` subcommand's options (python -m compress_kernels study)."""
    d = StudySettings()
    parser.add_argument("--data", choices=["digits", "cifar10"], default=d.data)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 python-pickle folder (data_batch_1..5, test_batch)")
    parser.add_argument("--model", default=d.model, choices=sorted(MODELS))
    parser.add_argument("--width", type=int, default=None,
                        help=f"base width (default {d.width}; --quick: {QUICK['width']})")
    parser.add_argument("--epochs", type=int, default=None, help=f"fp32 training epochs (default {d.epochs})")
    parser.add_argument("--variants", default=None,
                        help=f"comma list (default: {','.join(DEFAULT_VARIANTS)}); known: {', '.join(VARIANTS)}")
    parser.add_argument("--finetune-epochs", type=float, default=None, help="fine-tuning passes per variant")
    parser.add_argument("--quick", action="store_true", help="smoke configuration: tiny model, 1 epoch, few variants")
    parser.add_argument("--out", default=d.out, help="output folder (report.md, report.json, study.png)")
    parser.add_argument("--cache-dir", default=None, help="fp32 checkpoint cache (default ~/.cache/compress_kernels)")
    parser.add_argument("--no-progress", action="store_true")


def settings_from_args(args) -> StudySettings:
    s = StudySettings(data=args.data, data_dir=args.data_dir, model=args.model, out=args.out,
                      cache_dir=args.cache_dir, progress=not args.no_progress)
    if args.quick:
        for k, v in QUICK.items():
            setattr(s, k, v)
    if args.data == "cifar10" and not args.quick:
        s.width, s.epochs, s.finetune_epochs = 16, 10, 1.0
    if args.width is not None:
        s.width = args.width
    if args.epochs is not None:
        s.epochs = args.epochs
    if args.finetune_epochs is not None:
        s.finetune_epochs = args.finetune_epochs
    if args.variants:
        s.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    return s


def main_study(args) -> int:
    settings = settings_from_args(args)
    rows, paths = study(settings)
    print(f"\nCompression study: {settings.model} width {settings.width} on {settings.data} (top-1 on the "
          "held-out split)\n")
    print(format_table(rows))
    print("\nwrote " + ", ".join(paths.values()))
    return 0
