"""2:4 pruning criteria that read calibration activations: Wanda and SparseGPT.

Both look at the inputs X ([rows, K], every token of every calibration batch) a Linear layer sees:

* Wanda (Sun et al. 2023): score[n, k] = |W[n, k]| * ||X[:, k]||_2; in every group of four
  consecutive inputs k of each output row n, keep the two with the largest score. The weights kept
  are unchanged.
* SparseGPT (Frantar & Alistarh 2023): an approximate Optimal Brain Surgeon, row-parallel. With
  H = X^T X + damp * mean(diag(X^T X)) * I and U the upper Cholesky factor of H^-1, columns are
  visited left to right in blocks; at the first column of each group of four, the two weights of
  each row with the smallest w^2 / U[k, k]^2 (the OBS saliency, on the weights as updated so far) are
  marked pruned; each column's error e = (w - w_kept) / U[k, k] is then spread over the columns to
  its right, W[:, k+1:] -= e U[k, k+1:], so the kept weights absorb what the pruned ones did on the
  calibration data. Inputs that are always zero (diag(H) = 0) get weight 0 and H[k, k] = 1.

sequential=True (the default, as both papers do) prunes the layers in the order they are first
called and collects each layer's inputs with the layers before it already pruned, so every layer
corrects the error of the ones before it; this runs the calibration batches once per layer.
sequential=False collects every layer's inputs from the dense model in one pass.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from .batches import call_arguments, forward_signature
from .prune import nm_mask

METHODS = ("magnitude", "wanda", "sparsegpt")


def wanda_mask_24(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """The 2:4 Wanda mask of a Linear weight [N, K]: per row, in each group of four along K, the two
    largest |W| * ||X_k||_2 (input_norms: [K], the L2 norm of each input feature over the calibration
    rows). Ties keep the first pattern in lexicographic order (prune.nm_mask)."""
    if weight.dim() != 2 or input_norms.shape != (weight.shape[1],):
        raise ValueError(f"wanda_mask_24: weight must be [N, K] and input_norms [K], got {tuple(weight.shape)} and "
                         f"{tuple(input_norms.shape)}")
    return nm_mask(weight.detach().abs().float() * input_norms.float().reshape(1, -1), 2, 4)


@torch.no_grad()
def sparsegpt_24(weight: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01,
                 block_size: int = 128) -> torch.Tensor:
    """The SparseGPT 2:4 weight of a Linear weight [N, K] (see the module docstring): exactly two
    zeros in every group of four along K of each row, the other weights updated. hessian: X^T X
    ([K, K], summed over calibration rows; its scale does not matter). damp: the fraction of the mean
    diagonal added to the diagonal; block_size: columns updated together (a multiple of 4). Computed in
    float64; returns the weight's dtype."""
    n, k = weight.shape
    if k % 4:
        raise ValueError(f"sparsegpt_24: K = {k} is not a multiple of 4")
    if hessian.shape != (k, k):
        raise ValueError(f"sparsegpt_24: hessian must be [{k}, {k}], got {tuple(hessian.shape)}")
    if block_size <= 0 or block_size % 4:
        raise ValueError(f"sparsegpt_24: block_size must be a positive multiple of 4, got {block_size}")
    w = weight.detach().double().clone()
    h = hessian.double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(damp * torch.diagonal(h).mean())
    # U: upper Cholesky factor of H^-1 (H^-1 = U^T U); row k of U from the diagonal on holds the OBS
    # update of the columns right of k once columns < k are fixed.
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    for start in range(0, k, block_size):
        stop = min(start + block_size, k)
        block = w[:, start:stop].clone()
        errors = torch.zeros_like(block)
        u_block = u[start:stop, start:stop]
        keep = torch.ones_like(block, dtype=torch.bool)
        for i in range(stop - start):
            if i % 4 == 0:  # choose this group's mask on the weights as updated so far
                saliency = block[:, i:i + 4].square() / torch.diagonal(u_block)[i:i + 4].square()
                pruned = saliency.topk(2, dim=1, largest=False).indices
                keep[:, i:i + 4].scatter_(1, pruned, False)
            column = block[:, i]
            kept = column * keep[:, i]
            error = (column - kept) / u_block[i, i]
            block[:, i:] -= error.unsqueeze(1) * u_block[i, i:].unsqueeze(0)
            block[:, i] = kept
            errors[:, i] = error
        w[:, start:stop] = block
        w[:, stop:] -= errors @ u[start:stop, stop:]
    return w.to(weight.dtype)


class _InputStats:
    """Accumulates, over every row of a Linear's inputs, sum_k x^2 per feature (Wanda) or X^T X
    (SparseGPT), in float64."""

    def __init__(self, name: str, k: int, full: bool):
        self.name = name
        self.rows = 0
        self.square_sums = torch.zeros(k, dtype=torch.float64)
        self.gram = torch.zeros(k, k, dtype=torch.float64) if full else None

    def __call__(self, module, args, kwargs):
        x = (args[0] if args else kwargs["input"]).detach().reshape(-1, module.in_features).double()
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"Sparse24Config: the calibration inputs of layer {self.name!r} hold NaN or infinite "
                             "values: check the calibration batches (and the layers before it)")
        self.rows += x.shape[0]
        self.square_sums += x.square().sum(0)
        if self.gram is not None:
            self.gram += x.T @ x


def _run(model: nn.Module, batches, what: str) -> int:
    signature = forward_signature(model)
    count = 0
    for index, batch in enumerate(batches):
        args, kwargs = call_arguments(batch, index, signature, what, type(model).__name__)
        model(*args, **kwargs)
        count += 1
    return count


@torch.no_grad()
def calibrated_24_weights(model: nn.Module, layers: dict[str, nn.Linear], config,
                          progress: bool = False) -> dict[str, torch.Tensor]:
    """{name: 2:4 weight} for the nn.Linear `layers` of `model` by config.method ("wanda" or
    "sparsegpt") on config.calibration batches (see the module docstring). The model's weights are
    restored before returning (the converted layers are built from the returned weights); its training
    flag too."""
    what = f'Sparse24Config(method="{config.method}")'
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
    results: dict[str, torch.Tensor] = {}
    try:
        handles = [layer.register_forward_pre_hook(first_call(name)) for name, layer in layers.items()]
        if _run(model, config.calibration, what) == 0:
            raise ValueError(f"{what}: calibration is empty: at least one batch is needed")
        for handle in handles:
            handle.remove()
        handles = []
        never = [name for name in layers if name not in order]
        if never:
            raise ValueError(f"{what}: layer {never[0]!r} is never called by the calibration batches: its inputs "
                             "cannot be observed (exclude it with filter_fn)")
        full = config.method == "sparsegpt"

        def prune(name: str, stats: _InputStats) -> None:
            layer = layers[name]
            if config.method == "wanda":
                w = layer.weight * wanda_mask_24(layer.weight, stats.square_sums.sqrt())
            else:
                w = sparsegpt_24(layer.weight, stats.gram, config.damp, config.block_size)
            results[name] = w.detach().clone()
            if config.sequential:  # the layers after this one see its pruned output
                layer.weight.copy_(w)

        if config.sequential:
            for name in tqdm(order, desc=f"2:4 {config.method}", disable=not progress, leave=False):
                stats = _InputStats(name, layers[name].in_features, full)
                handle = layers[name].register_forward_pre_hook(stats, with_kwargs=True)
                try:
                    _run(model, config.calibration, what)
                finally:
                    handle.remove()
                prune(name, stats)
        else:
            all_stats = {name: _InputStats(name, layers[name].in_features, full) for name in order}
            handles = [layers[name].register_forward_pre_hook(all_stats[name], with_kwargs=True) for name in order]
            _run(model, config.calibration, what)
            for name in order:
                prune(name, all_stats[name])
    finally:
        for handle in handles:
            handle.remove()
        for name, layer in layers.items():
            layer.weight.copy_(originals[name])
        model.train(was_training)
    return results
