"""Pruning criteria that read calibration activations: Wanda and SparseGPT, for 2:4 (n:m) and
element granularity, shared by Sparse24Config(method=...) (convert_) and PruneConfig(criterion=...)
(prune_).

Both look at the inputs X ([rows, K], every token of every calibration batch) a Linear layer sees:

* Wanda (Sun et al. 2023): score[n, k] = |W[n, k]| * ||X[:, k]||_2; n:m keeps, in every group of m
  consecutive inputs k of each output row n, the n with the largest score; element granularity keeps
  the round((1 - sparsity) * K) largest scores of each output row (the paper's per-output comparison).
  The weights kept are unchanged.
* SparseGPT (Frantar & Alistarh 2023): an approximate Optimal Brain Surgeon, row-parallel. With
  H = X^T X + damp * mean(diag(X^T X)) * I and U the upper Cholesky factor of H^-1, columns are
  visited left to right in blocks; the weights to prune are chosen by the OBS saliency w^2 / U[k, k]^2
  on the weights as updated so far: for n:m at the first column of each group of m (the m - n smallest
  of each row), for element granularity at the first column of each block (the round(sparsity * N *
  B) smallest of the block's [N, B] weights, the paper's adaptive mask selection); each column's error
  e = (w - w_kept) / U[k, k] is then spread over the columns to its right, W[:, k+1:] -= e U[k, k+1:],
  so the kept weights absorb what the pruned ones did on the calibration data. Inputs that are always
  zero (diag(H) = 0) get weight 0 and H[k, k] = 1.

sequential=True (the default, as both papers do) prunes the layers in the order they are first
called and collects each layer's inputs with the layers before it already pruned, so every layer
corrects the error of the ones before it; this runs the calibration batches once per layer.
sequential=False collects every layer's inputs from the dense model in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from .batches import call_arguments, forward_signature
from .prune import nm_mask

METHODS = ("magnitude", "wanda", "sparsegpt")
CALIBRATED_CRITERIA = ("wanda", "sparsegpt")


def check_calibration(config: object, field: str, what: str) -> None:
    """config.<field> must be a non-empty list or tuple of batches (tensor, tuple / list of positional
    inputs, or dict of keyword inputs): the calibrated criteria run it once per layer, so a one-shot
    iterator would be used up after the first layer."""
    batches = getattr(config, field)
    name = type(config).__name__
    if not isinstance(batches, (list, tuple)) or not batches:
        raise TypeError(f"{name}: {what} needs {field}, a non-empty list or tuple of batches (it is run once per "
                        f"layer with sequential=True), got {type(batches).__name__}")
    for index, batch in enumerate(batches):
        if not isinstance(batch, (torch.Tensor, tuple, list, Mapping)):
            raise TypeError(f"{name}: {field}[{index}] is a {type(batch).__name__}: expected a tensor, a tuple / list "
                            "of positional inputs or a dict of keyword inputs")


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """|W[n, k]| * ||X_k||_2 of a Linear weight [N, K] (input_norms: [K], the L2 norm of each input
    feature over the calibration rows), in float32."""
    if weight.dim() != 2 or input_norms.shape != (weight.shape[1],):
        raise ValueError(f"wanda: weight must be [N, K] and input_norms [K], got {tuple(weight.shape)} and "
                         f"{tuple(input_norms.shape)}")
    return weight.detach().abs().float() * input_norms.float().reshape(1, -1)


def wanda_mask(weight: torch.Tensor, input_norms: torch.Tensor, sparsity: float = 0.5,
               n: int | None = None, m: int | None = None) -> torch.Tensor:
    """The Wanda mask of a Linear weight [N, K]: with n and m, per row the best n of every group of m
    along K (prune.nm_mask: ties keep the first pattern in lexicographic order); without, per row the
    round((1 - sparsity) * K) largest scores (ties: the lower k first)."""
    scores = wanda_scores(weight, input_norms)
    if n is not None and m is not None:
        return nm_mask(scores, n, m)
    keep = int(round((1.0 - sparsity) * scores.shape[1]))
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if keep:
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :keep]
        mask.scatter_(1, order, True)
    return mask


def wanda_mask_24(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """The 2:4 Wanda mask of a Linear weight [N, K]: per row, in each group of four along K, the two
    largest |W| * ||X_k||_2 (input_norms: [K], the L2 norm of each input feature over the calibration
    rows). Ties keep the first pattern in lexicographic order (prune.nm_mask)."""
    if weight.dim() != 2 or input_norms.shape != (weight.shape[1],):
        raise ValueError(f"wanda_mask_24: weight must be [N, K] and input_norms [K], got {tuple(weight.shape)} and "
                         f"{tuple(input_norms.shape)}")
    return wanda_mask(weight, input_norms, n=2, m=4)


@torch.no_grad()
def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float = 0.5, n: int | None = None,
                    m: int | None = None, damp: float = 0.01,
                    block_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on a Linear weight [N, K] (see the module docstring): (updated weight, mask). With n and
    m: exactly m - n pruned weights in every group of m along K of each row (K % m == 0, block_size a
    multiple of m); without: round(sparsity * N * B) pruned in each block of B columns. hessian: X^T X
    ([K, K], summed over calibration rows; its scale does not matter). damp: the fraction of the mean
    diagonal added to the diagonal; block_size: columns updated together. Computed in float64; the
    weight is returned in its dtype, zero where the mask is False."""
    rows, k = weight.shape
    structured = n is not None and m is not None
    group = m if structured else 1
    if structured and k % m:
        raise ValueError(f"sparsegpt: K = {k} is not a multiple of m = {m}")
    if hessian.shape != (k, k):
        raise ValueError(f"sparsegpt: hessian must be [{k}, {k}], got {tuple(hessian.shape)}")
    if block_size <= 0 or block_size % group:
        raise ValueError(f"sparsegpt: block_size must be a positive multiple of {group}, got {block_size}")
    w = weight.detach().double().clone()
    h = hessian.double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(damp * torch.diagonal(h).mean())
    # U: upper Cholesky factor of H^-1 (H^-1 = U^T U); row k of U from the diagonal on holds the OBS
    # update of the columns right of k once columns < k are fixed.
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    mask = torch.ones_like(w, dtype=torch.bool)
    for start in range(0, k, block_size):
        stop = min(start + block_size, k)
        block = w[:, start:stop].clone()
        errors = torch.zeros_like(block)
        u_block = u[start:stop, start:stop]
        keep = torch.ones_like(block, dtype=torch.bool)
        diagonal = torch.diagonal(u_block)
        if not structured:  # the block's mask, on the weights as updated so far
            saliency = (block.square() / diagonal.square()).flatten()
            pruned = int(round(sparsity * saliency.numel()))
            if pruned:
                keep.view(-1)[torch.sort(saliency, stable=True).indices[:pruned]] = False
        for i in range(stop - start):
            if structured and i % m == 0:  # this group's mask, on the weights as updated so far
                saliency = block[:, i:i + m].square() / diagonal[i:i + m].square()
                smallest = saliency.topk(m - n, dim=1, largest=False).indices
                keep[:, i:i + m].scatter_(1, smallest, False)
            column = block[:, i]
            kept = column * keep[:, i]
            error = (column - kept) / u_block[i, i]
            block[:, i:] -= error.unsqueeze(1) * u_block[i, i:].unsqueeze(0)
            block[:, i] = kept
            errors[:, i] = error
        w[:, start:stop] = block
        mask[:, start:stop] = keep
        w[:, stop:] -= errors @ u[start:stop, stop:]
    return (w * mask).to(weight.dtype), mask


@torch.no_grad()
def sparsegpt_24(weight: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01,
                 block_size: int = 128) -> torch.Tensor:
    """The SparseGPT 2:4 weight of a Linear weight [N, K] (sparsegpt_prune with n=2, m=4): exactly two
    zeros in every group of four along K of each row, the other weights updated."""
    k = weight.shape[1]
    if k % 4:
        raise ValueError(f"sparsegpt_24: K = {k} is not a multiple of 4")
    if hessian.shape != (k, k):
        raise ValueError(f"sparsegpt_24: hessian must be [{k}, {k}], got {tuple(hessian.shape)}")
    if block_size <= 0 or block_size % 4:
        raise ValueError(f"sparsegpt_24: block_size must be a positive multiple of 4, got {block_size}")
    return sparsegpt_prune(weight, hessian, n=2, m=4, damp=damp, block_size=block_size)[0]


class InputStats:
    """Accumulates, over every row of a Linear's inputs, sum_k x^2 per feature (Wanda) or X^T X
    (SparseGPT, full=True), in float64. `owner` names the config in the error message."""

    def __init__(self, name: str, k: int, full: bool, owner: str = "Sparse24Config"):
        self.name = name
        self.owner = owner
        self.rows = 0
        self.square_sums = torch.zeros(k, dtype=torch.float64)
        self.gram = torch.zeros(k, k, dtype=torch.float64) if full else None

    def __call__(self, module, args, kwargs):
        x = (args[0] if args else kwargs["input"]).detach().reshape(-1, module.in_features).double()
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{self.owner}: the calibration inputs of layer {self.name!r} hold NaN or infinite "
                             "values: check the calibration batches (and the layers before it)")
        self.rows += x.shape[0]
        self.square_sums += x.square().sum(0)
        if self.gram is not None:
            self.gram += x.T @ x

    @property
    def input_norms(self) -> torch.Tensor:
        return self.square_sums.sqrt()


def _run(model: nn.Module, batches, what: str) -> int:
    signature = forward_signature(model)
    count = 0
    for index, batch in enumerate(batches):
        args, kwargs = call_arguments(batch, index, signature, what, type(model).__name__)
        model(*args, **kwargs)
        count += 1
    return count


@torch.no_grad()
def calibrated_weights(model: nn.Module, layers: dict[str, nn.Linear], method: str, calibration,
                       prune_layer: Callable[[nn.Linear, InputStats], tuple[torch.Tensor, torch.Tensor]],
                       sequential: bool = True, what: str = "", owner: str = "",
                       progress: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (pruned weight, mask)} for the nn.Linear `layers` of `model`: prune_layer(layer, stats)
    computes one layer's from the statistics of its inputs on the `calibration` batches (X^T X too when
    method is "sparsegpt"), layer after layer on the already pruned model (sequential) or all on the
    dense model's inputs. `what` / `owner` name the caller in error messages. The model's weights are
    restored before returning, its training flag too."""
    order: list[str] = []
    handles = []

    def first_call(name):
        def hook(module, args):
            if name not in order:
                order.append(name)
        return hook

    was_training = model.training
    model.eval()
    originals = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    results: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    full = method == "sparsegpt"
    try:
        handles = [layer.register_forward_pre_hook(first_call(name)) for name, layer in layers.items()]
        if _run(model, calibration, what) == 0:
            raise ValueError(f"{what}: calibration is empty: at least one batch is needed")
        for handle in handles:
            handle.remove()
        handles = []
        never = [name for name in layers if name not in order]
        if never:
            raise ValueError(f"{what}: layer {never[0]!r} is never called by the calibration batches: its inputs "
                             "cannot be observed (exclude it with filter_fn)")

        def prune(name: str, stats: InputStats) -> None:
            layer = layers[name]
            w, mask = prune_layer(layer, stats)
            results[name] = (w.detach().clone(), mask)
            if sequential:  # the layers after this one see its pruned output
                layer.weight.copy_(w)

        if sequential:
            for name in tqdm(order, desc=f"{method} pruning", disable=not progress, leave=False):
                stats = InputStats(name, layers[name].in_features, full, owner)
                handle = layers[name].register_forward_pre_hook(stats, with_kwargs=True)
                try:
                    _run(model, calibration, what)
                finally:
                    handle.remove()
                prune(name, stats)
        else:
            all_stats = {name: InputStats(name, layers[name].in_features, full, owner) for name in order}
            handles = [layers[name].register_forward_pre_hook(all_stats[name], with_kwargs=True) for name in order]
            _run(model, calibration, what)
            for name in order:
                prune(name, all_stats[name])
    finally:
        for handle in handles:
            handle.remove()
        for name, layer in layers.items():
            layer.weight.copy_(originals[name])
        model.train(was_training)
    return results


def layer_pruner(method: str, sparsity: float = 0.5, n: int | None = None, m: int | None = None,
                 damp: float = 0.01, block_size: int = 128):
    """prune_layer for calibrated_weights: Wanda or SparseGPT at n:m (n and m given) or element
    granularity (`sparsity` of each row for Wanda, of each block for SparseGPT)."""
    if method not in CALIBRATED_CRITERIA:
        raise ValueError(f"calibrated pruning: method must be one of {list(CALIBRATED_CRITERIA)}, got {method!r}")

    def prune_layer(layer: nn.Linear, stats: InputStats) -> tuple[torch.Tensor, torch.Tensor]:
        if method == "wanda":
            mask = wanda_mask(layer.weight, stats.input_norms, sparsity, n, m)
            return layer.weight * mask, mask
        return sparsegpt_prune(layer.weight, stats.gram, sparsity, n, m, damp, block_size)

    return prune_layer


@torch.no_grad()
def calibrated_24_weights(model: nn.Module, layers: dict[str, nn.Linear], config,
                          progress: bool = False) -> dict[str, torch.Tensor]:
    """{name: 2:4 weight} for the nn.Linear `layers` of `model` by config.method ("wanda" or
    "sparsegpt") on config.calibration batches (Sparse24Config; see calibrated_weights). The model's
    weights are restored before returning (the converted layers are built from the returned weights)."""
    results = calibrated_weights(
        model, layers, config.method, config.calibration,
        layer_pruner(config.method, n=2, m=4, damp=config.damp, block_size=config.block_size),
        sequential=config.sequential, what=f'Sparse24Config(method="{config.method}")', owner="Sparse24Config",
        progress=progress)
    return {name: weight for name, (weight, _) in results.items()}
