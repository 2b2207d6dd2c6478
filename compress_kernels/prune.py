"""Pruning: masks, criteria, schedules, and structured channel removal.

Masks are computed from scores:

* criteria: ``"l1"`` (|w|), ``"l2"`` (w^2, aggregated as a Euclidean norm over a structure),
  ``"gradient"`` (|w * dL/dw| accumulated over batches, first-order Taylor saliency), and the criteria
  that read calibration activations, ``"wanda"`` and ``"sparsegpt"`` (compress_kernels.calibrated_prune;
  nn.Linear layers, element or n:m granularity, one shot; SparseGPT also updates the kept weights);
* granularities: ``"element"``; ``"n:m"`` (``"2:4"`` by default: in every group of m consecutive
  input weights keep the n whose pattern retains the largest score, i.e. for 2:4 the best of the
  six patterns; for a conv the groups are m consecutive input channels at one kernel tap, NVIDIA's
  convention, see sparse24_layout.weight_rows); ``"vector"`` (``vector_size`` consecutive input
  weights); ``"kernel"`` (one kh x kw kernel of a conv); ``"channel"`` / ``"row"`` (a whole output channel / row);
* scope: ``"layer"`` (every layer reaches the target sparsity) or ``"global"`` (one threshold over
  the mean per-weight score of every structure in every layer); n:m is always per group.

:func:`prune_` attaches a :class:`Pruner` that keeps masks as ``weight_mask`` buffers, zeroes the
gradients of pruned weights, and re-applies the masks after every optimizer step it is attached
to, so pruned weights stay exactly zero during training; :meth:`Pruner.remove` detaches it all.
Iterative pruning follows the cubic schedule of Zhu & Gupta (2017); :func:`snapshot` and
:func:`rewind_` support lottery-ticket experiments. :func:`prune_channels_` physically removes
channels (conv output channels, their BatchNorm, the next conv's input channels), e.g. the inner
channels of ResNet basic blocks, so the smaller model runs faster with ordinary kernels.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

GRANULARITIES = ("element", "n:m", "2:4", "vector", "kernel", "channel", "row")
CRITERIA = ("l1", "l2", "gradient", "wanda", "sparsegpt")
CALIBRATED_GRANULARITIES = ("element", "n:m", "2:4")


# ---------------------------------------------------------------- scores and masks


def element_scores(w: torch.Tensor, criterion: str = "l1", grad_score: torch.Tensor | None = None) -> torch.Tensor:
    """Per-weight score: |w| (l1), w^2 (l2) or the accumulated |w * grad| (gradient)."""
    if criterion == "l1":
        return w.detach().abs()
    if criterion == "l2":
        return w.detach().square()
    if criterion == "gradient":
        if grad_score is None:
            raise ValueError("element_scores: the gradient criterion needs accumulated scores "
                             "(GradientScorer or prune_(..., data=...))")
        return grad_score
    if criterion in ("wanda", "sparsegpt"):
        raise ValueError(f"element_scores: criterion={criterion!r} reads calibration activations, not the weight "
                         "alone: prune with prune_(model, PruneConfig(criterion=..., calibration=batches)) or use "
                         "compress_kernels.calibrated_prune")
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")


def _aggregate(scores: torch.Tensor, criterion: str, dim: int | tuple[int, ...]) -> torch.Tensor:
    """Mean per-weight score of a structure (sqrt of the mean of w^2 for l2)."""
    s = scores.mean(dim=dim)
    return s.sqrt() if criterion == "l2" else s


def nm_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep, in every group of m consecutive weights along K of sparse24_layout.weight_rows (a
    Linear's inputs; a conv's input channels at each kernel tap), the n whose pattern has the
    largest total score; the best of the C(m, n) patterns (6 for 2:4), first pattern in
    lexicographic order on ties. scores: [out, in] or [out, in, kh, kw]; K % m == 0."""
    from .sparse24_layout import weight_from_rows, weight_rows

    flat = weight_rows(scores)
    if flat.shape[1] % m:
        raise ValueError(f"nm_mask: the input size {flat.shape[1]} is not a multiple of m={m}")
    groups = flat.reshape(flat.shape[0], -1, m)
    patterns = torch.tensor([[i in p for i in range(m)] for p in itertools.combinations(range(m), n)],
                            dtype=flat.dtype, device=flat.device)  # [P, m]
    best = (groups @ patterns.T).argmax(-1)  # [out, groups]: argmax returns the first maximum
    return weight_from_rows(patterns[best].bool().reshape(flat.shape), scores.shape).contiguous()


def mask_2to4(w: torch.Tensor, criterion: str = "l1") -> torch.Tensor:
    """The 2:4 magnitude mask of a weight (the best of the six patterns per group of four)."""
    return nm_mask(element_scores(w, criterion), 2, 4)


def _structure_view(scores: torch.Tensor, granularity: str, vector_size: int, criterion: str):
    """(structure scores, expand) where expand maps a structure mask back to the weight shape."""
    shape = scores.shape
    if granularity == "element":
        return scores, lambda mask: mask
    if granularity in ("channel", "row"):
        s = _aggregate(scores.reshape(shape[0], -1), criterion, 1)
        return s, lambda mask: mask.reshape(-1, *([1] * (len(shape) - 1))).expand(shape)
    if granularity == "kernel":
        if len(shape) != 4:
            raise ValueError(f"kernel granularity needs a conv weight [out, in, kh, kw], got shape {tuple(shape)}")
        s = _aggregate(scores, criterion, (2, 3))
        return s, lambda mask: mask[:, :, None, None].expand(shape)
    if granularity == "vector":
        flat = scores.reshape(shape[0], -1)
        if flat.shape[1] % vector_size:
            raise ValueError(f"vector granularity: input size {flat.shape[1]} is not a multiple of "
                             f"vector_size={vector_size}")
        s = _aggregate(flat.reshape(shape[0], -1, vector_size), criterion, 2)
        return s, lambda mask: mask[..., None].expand(-1, -1, vector_size).reshape(shape)
    raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


def _keep_top(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask keeping the round((1 - sparsity) * numel) highest scores (stable on ties)."""
    keep = int(round((1.0 - sparsity) * scores.numel()))
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if keep > 0:
        order = torch.sort(scores.reshape(-1), descending=True, stable=True).indices
        mask[order[:keep]] = True
    return mask.reshape(scores.shape)


def compute_masks(weights: dict[str, torch.Tensor], sparsity: float, granularity: str = "element",
                  criterion: str = "l1", scope: str = "layer", n: int = 2, m: int = 4, vector_size: int = 4,
                  grad_scores: dict[str, torch.Tensor] | None = None,
                  current_masks: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Masks (True = keep) for named weights. Weights already pruned by current_masks stay pruned
    (their scores drop to -inf), so masks only shrink as sparsity grows."""
    if scope not in ("layer", "global"):
        raise ValueError(f'scope must be "layer" or "global", got {scope!r}')
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    scores = {}
    for name, w in weights.items():
        s = element_scores(w, criterion, None if grad_scores is None else grad_scores.get(name)).float()
        if current_masks is not None and name in current_masks:
            s = torch.where(current_masks[name], s, torch.full_like(s, -float("inf")))
        scores[name] = s
    if granularity in ("n:m", "2:4"):
        if granularity == "2:4":
            n, m = 2, 4
        masks = {}
        for name, s in scores.items():
            mask = nm_mask(torch.where(torch.isinf(s), torch.full_like(s, -1.0), s), n, m)
            if current_masks is not None and name in current_masks:
                mask &= current_masks[name]
            masks[name] = mask
        return masks
    views = {name: _structure_view(s, granularity, vector_size, criterion) for name, s in scores.items()}
    if scope == "layer":
        return {name: expand(_keep_top(s, sparsity)) for name, (s, expand) in views.items()}
    # global: one ranking over every structure of every layer
    flat = torch.cat([s.reshape(-1) for s, _ in views.values()])
    keep = _keep_top(flat, sparsity)
    masks, offset = {}, 0
    for name, (s, expand) in views.items():
        masks[name] = expand(keep[offset:offset + s.numel()].reshape(s.shape))
        offset += s.numel()
    return masks


# ---------------------------------------------------------------- gradient scores


class GradientScorer:
    """Accumulates |w * dL/dw| per weight over the batches it sees (call after backward)."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules = modules
        self.scores = {name: torch.zeros_like(mod.weight, dtype=torch.float32) for name, mod in modules.items()}

    def accumulate(self) -> None:
        for name, mod in self.modules.items():
            if mod.weight.grad is not None:
                self.scores[name] += (mod.weight.detach() * mod.weight.grad.detach()).abs().float()

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batches: int = 8, batch_size: int = 64,
            loss_fn: Callable = F.cross_entropy) -> dict[str, torch.Tensor]:
        """Forward/backward over `batches` batches of (x, y) without updating the model."""
        was_training = model.training
        model.eval()  # BatchNorm statistics are not touched while scoring
        grads = {n: p.grad for n, p in model.named_parameters()}
        for i in range(batches):
            sl = slice((i * batch_size) % len(x), (i * batch_size) % len(x) + batch_size)
            model.zero_grad(set_to_none=True)
            loss_fn(model(x[sl]), y[sl]).backward()
            self.accumulate()
        for n, p in model.named_parameters():
            p.grad = grads[n]
        model.train(was_training)
        return self.scores


# ---------------------------------------------------------------- schedule


@dataclass
class CubicSchedule:
    """Zhu & Gupta (2017) gradual pruning: s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3
    for t in [t0, t0 + n * dt], updated every dt steps; s_f afterwards."""

    initial_sparsity: float = 0.0
    final_sparsity: float = 0.8
    begin_step: int = 0
    end_step: int = 100
    frequency: int = 10

    def __post_init__(self):
        from ._config_checks import check_float, check_int

        check_float(self, "initial_sparsity", "in [0, 1)", lambda v: 0 <= v < 1)
        check_float(self, "final_sparsity", "in [0, 1)", lambda v: 0 <= v < 1)
        check_int(self, "begin_step", 0)
        check_int(self, "end_step", self.begin_step)
        check_int(self, "frequency", 1)

    def sparsity(self, step: int) -> float:
        if step <= self.begin_step:
            return self.initial_sparsity
        if step >= self.end_step:
            return self.final_sparsity
        t = (step - self.begin_step) // self.frequency * self.frequency  # held between updates
        progress = min(t / max(self.end_step - self.begin_step, 1), 1.0)
        # s_i + (s_f - s_i) * (1 - (1 - p)^3): the same curve, exactly s_i at p = 0 (monotone in fp).
        return self.initial_sparsity + (self.final_sparsity - self.initial_sparsity) * (1.0 - (1.0 - progress) ** 3)

    def updates_at(self, step: int) -> bool:
        return self.begin_step <= step <= self.end_step and (step - self.begin_step) % self.frequency == 0


# ---------------------------------------------------------------- the pruner


@dataclass
class PruneConfig:
    """What prune_ does. sparsity: fraction of weights (or structures) removed; granularity, criterion,
    scope: see the module docstring; schedule: a CubicSchedule for iterative pruning (the masks are
    then recomputed by Pruner.step()), None for one-shot; module_types: which layers are pruned;
    filter_fn(module, name) -> bool narrows them further; gradient_batches: batches scored by the
    gradient criterion.

    criterion="wanda" / "sparsegpt" score each nn.Linear on the inputs it sees on `calibration` (a
    non-empty list or tuple of batches: tensors, tuples of positional inputs or dicts of keyword inputs;
    compress_kernels.calibrated_prune): element granularity (`sparsity` of each output row for Wanda, of
    each block of `block_size` columns for SparseGPT) or n:m / 2:4, per layer, one shot (no schedule).
    `sequential`: prune layer after layer on the inputs of the already pruned model; `damp`, `block_size`
    (a multiple of m for n:m): SparseGPT's damping and column block. Layers of module_types other than
    nn.Linear are passed over with the reason (Pruner.skipped)."""

    sparsity: float = 0.5
    granularity: str = "element"
    criterion: str = "l1"
    scope: str = "layer"
    n: int = 2
    m: int = 4
    vector_size: int = 4
    schedule: CubicSchedule | None = None
    module_types: tuple[type, ...] = (nn.Linear, nn.Conv2d)
    filter_fn: Callable[[nn.Module, str], bool] | None = None
    gradient_batches: int = 8
    calibration: list | tuple | None = field(default=None, repr=False)
    sequential: bool = True
    damp: float = 0.01
    block_size: int = 128

    def __post_init__(self):
        from ._config_checks import check_bool, check_choice, check_float, check_int

        check_float(self, "sparsity", "in [0, 1)", lambda v: 0 <= v < 1)
        check_choice(self, "granularity", GRANULARITIES)
        check_choice(self, "criterion", CRITERIA)
        check_choice(self, "scope", ("layer", "global"))
        check_int(self, "m", 1)
        check_int(self, "n", 1, self.m)
        check_int(self, "vector_size", 1)
        if self.schedule is not None and not isinstance(self.schedule, CubicSchedule):
            raise TypeError(f"PruneConfig: schedule must be None or a CubicSchedule, got {self.schedule!r}")
        types = self.module_types
        if not (isinstance(types, tuple) and types
                and all(isinstance(t, type) and issubclass(t, nn.Module) for t in types)):
            raise TypeError(f"PruneConfig: module_types must be a non-empty tuple of nn.Module subclasses, "
                            f"got {types!r}")
        if self.filter_fn is not None and not callable(self.filter_fn):
            raise TypeError(f"PruneConfig: filter_fn must be None or a callable (module, name) -> bool, "
                            f"got {self.filter_fn!r}")
        check_int(self, "gradient_batches", 1)
        check_bool(self, "sequential")
        check_float(self, "damp", "in [0, 1]", lambda v: 0 <= v <= 1)
        check_int(self, "block_size", 1)
        if self.criterion not in ("wanda", "sparsegpt"):
            if self.calibration is not None:
                raise ValueError(f'PruneConfig: calibration is read only by criterion="wanda" or "sparsegpt"; '
                                 f"criterion={self.criterion!r} does not use it (pass calibration=None)")
            return
        from .calibrated_prune import check_calibration

        what = f"criterion={self.criterion!r}"
        if self.granularity not in CALIBRATED_GRANULARITIES:
            raise ValueError(f"PruneConfig: {what} prunes at granularity {' / '.join(CALIBRATED_GRANULARITIES)}, "
                             f"got granularity={self.granularity!r}")
        if self.scope != "layer":
            raise ValueError(f'PruneConfig: {what} compares weights within a layer: it needs scope="layer", got '
                             f"scope={self.scope!r}")
        if self.schedule is not None:
            raise ValueError(f"PruneConfig: {what} prunes in one shot from calibration statistics: it takes no "
                             "schedule (pass schedule=None)")
        m = 4 if self.granularity == "2:4" else self.m
        if self.granularity != "element" and self.block_size % m:
            raise ValueError(f"PruneConfig: block_size must be a multiple of m = {m} (whole groups), got "
                             f"{self.block_size}")
        check_calibration(self, "calibration", what)


class Pruner:
    """Holds the masks of a model's pruned layers and enforces them."""

    def __init__(self, model: nn.Module, config: PruneConfig, data: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.model, self.config, self.data = model, config, data
        self.modules: dict[str, nn.Module] = {}
        self.skipped: list[tuple[str, str]] = []
        for name, mod in model.named_modules():
            if not isinstance(mod, config.module_types) or getattr(mod, "weight", None) is None:
                continue
            if config.filter_fn is not None and not config.filter_fn(mod, name):
                self.skipped.append((name, "excluded by filter_fn"))
                continue
            if config.criterion in ("wanda", "sparsegpt") and type(mod) is not nn.Linear:
                self.skipped.append((name, f"criterion={config.criterion!r} scores the inputs of nn.Linear layers "
                                           f"only, not {type(mod).__name__}"))
                continue
            if config.granularity in ("n:m", "2:4"):
                m = 4 if config.granularity == "2:4" else config.m
                k = mod.weight[0].numel()  # K of sparse24_layout.weight_rows
                if k % m:
                    self.skipped.append((name, f"input size {k} is not a multiple of {m}"))
                    continue
            self.modules[name] = mod
        self._hooks: list = []
        self._optimizer_hooks: list = []
        self.step_count = 0
        self.sparsity = 0.0
        for _name, mod in self.modules.items():
            mod.register_buffer("weight_mask", torch.ones_like(mod.weight, dtype=torch.bool))
            self._hooks.append(mod.weight.register_hook(lambda g, mod=mod: g * mod.weight_mask))

    # -------------------------------------------------------------- masks

    def masks(self) -> dict[str, torch.Tensor]:
        return {name: mod.weight_mask for name, mod in self.modules.items()}

    def update_masks(self, sparsity: float) -> None:
        """Recompute the masks for `sparsity` (monotone: pruned weights stay pruned) and apply them."""
        c = self.config
        if c.criterion in ("wanda", "sparsegpt"):
            self._calibrated_prune(sparsity)
            return
        grad_scores = None
        if c.criterion == "gradient":
            if self.data is None:
                raise ValueError("Pruner: the gradient criterion needs data=(x, y) to score with")
            grad_scores = GradientScorer(self.modules).run(self.model, *self.data, batches=c.gradient_batches)
        weights = {name: mod.weight for name, mod in self.modules.items()}
        masks = compute_masks(weights, sparsity, c.granularity, c.criterion, c.scope, c.n, c.m, c.vector_size,
                              grad_scores, self.masks())
        for name, mod in self.modules.items():
            mod.weight_mask.copy_(masks[name])
        self.sparsity = sparsity
        self.apply()

    @torch.no_grad()
    def _calibrated_prune(self, sparsity: float) -> None:
        """Wanda / SparseGPT masks (and SparseGPT's updated weights) from the calibration batches."""
        from .calibrated_prune import calibrated_weights, layer_pruner

        c = self.config
        structured = c.granularity in ("n:m", "2:4")
        n, m = (2, 4) if c.granularity == "2:4" else (c.n, c.m)
        prune_layer = layer_pruner(c.criterion, sparsity, n if structured else None, m if structured else None,
                                   c.damp, c.block_size)
        results = calibrated_weights(self.model, self.modules, c.criterion, c.calibration, prune_layer,
                                     sequential=c.sequential, what=f'PruneConfig(criterion="{c.criterion}")',
                                     owner="PruneConfig")
        for name, mod in self.modules.items():
            weight, mask = results[name]
            mod.weight.copy_(weight)
            mod.weight_mask.copy_(mask)
        self.sparsity = sparsity
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (after an optimizer step, momentum or weight decay may move them)."""
        for mod in self.modules.values():
            mod.weight.mul_(mod.weight_mask)

    def step(self) -> None:
        """Call after every optimizer step (training.train's after_step): applies the masks and, with
        a schedule, updates them when the schedule says so."""
        self.step_count += 1
        s = self.config.schedule
        if s is not None and s.updates_at(self.step_count):
            target = s.sparsity(self.step_count)
            if target > self.sparsity:
                self.update_masks(target)
        self.apply()

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-apply the masks after every step of `optimizer` (instead of calling step() by hand)."""
        self._optimizer_hooks.append(optimizer.register_step_post_hook(lambda opt, args, kwargs: self.step()))

    def remove(self) -> None:
        """Detach hooks and drop the mask buffers; pruned weights stay zero, nothing is enforced."""
        for h in self._hooks + self._optimizer_hooks:
            h.remove()
        self._hooks, self._optimizer_hooks = [], []
        for mod in self.modules.values():
            del mod._buffers["weight_mask"]

    def report(self) -> dict[str, float]:
        """Fraction of zero weights per pruned layer, and "total"."""
        out, zeros, total = {}, 0, 0
        for name, mod in self.modules.items():
            z = int((mod.weight == 0).sum())
            out[name] = z / mod.weight.numel()
            zeros, total = zeros + z, total + mod.weight.numel()
        out["total"] = zeros / max(total, 1)
        return out


def prune_(model: nn.Module, config: PruneConfig, data: tuple[torch.Tensor, torch.Tensor] | None = None) -> Pruner:
    """Attach a Pruner to `model` and prune it: to config.sparsity at once (one-shot), or to the
    schedule's initial sparsity (iterative; call pruner.step() after every optimizer step).
    data=(x, y) feeds the gradient criterion; the wanda / sparsegpt criteria read config.calibration."""
    pruner = Pruner(model, config, data)
    first = config.schedule.initial_sparsity if config.schedule is not None else config.sparsity
    if config.granularity in ("n:m", "2:4") or first > 0:
        pruner.update_masks(first)
    return pruner


# ---------------------------------------------------------------- lottery tickets


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's parameters and buffers (the weights to rewind to)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("weight_mask")}


@torch.no_grad()
def rewind_(model: nn.Module, state: dict[str, torch.Tensor], pruner: Pruner | None = None) -> None:
    """Load the snapshot's weights back (lottery-ticket rewinding) and re-apply the pruner's masks."""
    model.load_state_dict(state, strict=False)
    if pruner is not None:
        pruner.apply()


# ---------------------------------------------------------------- structured channel removal


def _select(t: torch.Tensor | None, dim: int, keep: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.detach().index_select(dim, keep).clone()


@torch.no_grad()
def remove_channels_(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, next_conv: nn.Conv2d, keep: torch.Tensor) -> None:
    """Physically keep only the output channels `keep` of conv (and of its BatchNorm) and the
    matching input channels of next_conv. Both convs must have groups == 1."""
    if conv.groups != 1 or next_conv.groups != 1:
        raise ValueError("remove_channels_: grouped convolutions are not supported")
    keep = keep.sort().values
    conv.weight = nn.Parameter(_select(conv.weight, 0, keep))
    if conv.bias is not None:
        conv.bias = nn.Parameter(_select(conv.bias, 0, keep))
    conv.out_channels = len(keep)
    if bn is not None:
        if bn.affine:
            bn.weight = nn.Parameter(_select(bn.weight, 0, keep))
            bn.bias = nn.Parameter(_select(bn.bias, 0, keep))
        if bn.track_running_stats:
            bn.running_mean = _select(bn.running_mean, 0, keep)
            bn.running_var = _select(bn.running_var, 0, keep)
        bn.num_features = len(keep)
    next_conv.weight = nn.Parameter(_select(next_conv.weight, 1, keep))
    next_conv.in_channels = len(keep)


def channel_scores(conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, criterion: str = "l1") -> torch.Tensor:
    """Importance of each output channel: the l1 (or l2) norm of its filter, times |gamma| of the
    following BatchNorm when there is one (a channel whose gamma is ~0 carries nothing)."""
    w = conv.weight.detach().reshape(conv.out_channels, -1)
    s = w.abs().sum(1) if criterion == "l1" else w.square().sum(1).sqrt()
    if bn is not None and bn.affine:
        s = s * bn.weight.detach().abs()
    return s


def block_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d | None, nn.Conv2d]]:
    """(name, conv1, bn1, conv2) of every residual basic block (a module with conv1, bn1, conv2):
    the inner channels, which can be removed without touching the residual path."""
    out = []
    for name, mod in model.named_modules():
        c1, c2 = getattr(mod, "conv1", None), getattr(mod, "conv2", None)
        if isinstance(c1, nn.Conv2d) and isinstance(c2, nn.Conv2d) and name:
            out.append((name, c1, getattr(mod, "bn1", None), c2))
    return out


def prune_channels_(model: nn.Module, amount: float = 0.3, criterion: str = "l1",
                    pairs: Iterable[tuple[str, nn.Conv2d, nn.BatchNorm2d | None, nn.Conv2d]] | None = None,
                    multiple_of: int = 1) -> dict[str, tuple[int, int]]:
    """Remove `amount` of the inner channels of every pair (default: every basic block's conv1 ->
    bn1 -> conv2), the lowest-scoring first; returns {name: (channels before, after)}.
    multiple_of rounds the kept count to the nearest multiple (at least one multiple): oneDNN's
    AVX-512 convolutions work on blocks of 16 channels, so 45 kept channels cost as much as 48."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"prune_channels_: amount must be in [0, 1), got {amount}")
    report = {}
    for name, conv, bn, next_conv in (block_pairs(model) if pairs is None else pairs):
        before = conv.out_channels
        keep_count = max(1, before - int(round(amount * before)))
        if multiple_of > 1:
            keep_count = min(before, max(multiple_of, int(round(keep_count / multiple_of)) * multiple_of))
        keep = torch.topk(channel_scores(conv, bn, criterion), keep_count).indices
        remove_channels_(conv, bn, next_conv, keep)
        report[name] = (before, keep_count)
    return report


def pruned_copy(model: nn.Module, config: PruneConfig) -> nn.Module:
    """A one-shot pruned deep copy (masks removed, zeros kept)."""
    m = copy.deepcopy(model)
    prune_(m, config).remove()
    return m
