"""k-means of weights for weight sharing (Deep Compression): 2^b shared values per layer or per
group of output channels, fast because the data are one-dimensional.

Algorithm of :func:`kmeans_1d` (deterministic for a given seed):

1. A fine histogram (``bins`` equal-width bins over [min, max]) with each bin's count and exact
   (float64) sum: one pass over the data. Each non-empty bin stands for its members at their mean.
2. Initialization on the histogram: ``"linear"`` (k values evenly spaced over [min, max], Deep
   Compression's choice, which keeps the rare large weights represented) or ``"kmeans++"``
   (greedy D^2 sampling as in scikit-learn, from a seeded numpy generator); ``"best"`` (default)
   runs the linear start and ``n_init`` k-means++ starts and keeps the lowest histogram SSE.
3. Lloyd iterations on the histogram. In 1-D the clusters of sorted centroids are contiguous
   ranges between the midpoints of neighbouring centroids, so one iteration is a binary search of
   k - 1 midpoints in the sorted bin means plus prefix sums: O(k log bins), independent of the
   number of weights.
4. Exact polish: up to ``polish`` Lloyd iterations on the real values (exact assignment to the
   nearest centroid through the bins plus a correction for the bins that a midpoint cuts; centroids
   as exact float64 means of their members), stopping when the assignment no longer changes: then
   every centroid is the mean of its members and every weight sits with its nearest centroid.

Empty clusters (possible with more centroids than distinct values) keep their previous value.
tests/test_cluster.py compares the SSE with scikit-learn's KMeans; benchmarks/bench_codebook.py
measures both speeds.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_BINS = 1 << 16


class _Binned:
    """The fine histogram of a float32 array: bin of every value, and per non-empty bin its count
    and mean (exact float64 sums). Also maps midpoints back to per-value labels quickly."""

    def __init__(self, a: np.ndarray, bins: int):
        self.a = a
        self.lo, self.hi = float(a.min()), float(a.max())
        self.bins = bins
        self.scale = bins / (self.hi - self.lo) if self.hi > self.lo else 0.0
        self.pos = np.minimum(((a.astype(np.float64) - self.lo) * self.scale).astype(np.int64), bins - 1)
        counts = np.bincount(self.pos, minlength=bins).astype(np.float64)
        sums = np.bincount(self.pos, weights=a, minlength=bins)
        keep = counts > 0
        self.counts, self.means = counts[keep], sums[keep] / counts[keep]

    def labels(self, mid: np.ndarray) -> np.ndarray:
        """label = number of midpoints < value (the nearest of the sorted centroids, ties to the
        lower one), exactly: a per-bin lower bound from the bin's edge, then raised while the value
        lies beyond the next midpoint (only values in bins that a midpoint cuts move)."""
        mid = mid.astype(np.float32)
        edge = self.lo + (np.arange(self.bins) - 0.01) / max(self.scale, 1e-300)
        base = np.searchsorted(mid, edge, side="left").astype(np.int64)
        label = base[self.pos]
        upper = np.append(mid, np.float32(np.inf))
        while True:
            step = self.a > upper[label]
            if not step.any():
                return label
            label += step


def _lloyd_on_histogram(means, counts, prefix_c, prefix_s, centroids, iters):
    """Lloyd iterations on weighted points sorted ascending (numpy float64, a few microseconds per
    iteration); returns (centroids ascending, sse of the points)."""
    k = centroids.shape[0]
    bounds = np.empty(k + 1, dtype=np.int64)  # cluster t holds bins [bounds[t], bounds[t + 1])
    bounds[0], bounds[k] = 0, means.shape[0]
    centroids = np.sort(centroids)
    for _ in range(iters):
        bounds[1:k] = np.searchsorted(means, (centroids[1:] + centroids[:-1]) / 2, side="right")
        count = prefix_c[bounds[1:]] - prefix_c[bounds[:-1]]
        total = prefix_s[bounds[1:]] - prefix_s[bounds[:-1]]
        new = np.where(count > 0, total / np.maximum(count, 1e-300), centroids)
        if np.array_equal(new, centroids):
            break
        centroids = np.sort(new)  # means of sorted contiguous ranges; sorting only moves empties
    centroids = np.sort(centroids)
    return centroids, _histogram_sse(means, counts, centroids)


def _histogram_sse(means, counts, centroids):
    mid = (centroids[1:] + centroids[:-1]) / 2
    label = np.searchsorted(mid, means)
    return float((counts * (means - centroids[label]) ** 2).sum())


def _kmeans_pp(means, counts, k, rng):
    """Greedy k-means++ seeding on the weighted histogram points, as scikit-learn does it: D^2
    sampling of 2 + log(k) candidates per step, keeping the one that lowers the potential most."""
    trials = 2 + int(np.log(k))
    chosen = [int(rng.choice(means.shape[0], p=counts / counts.sum()))]
    dist = (means - means[chosen[0]]) ** 2
    for _ in range(1, k):
        weights = counts * dist
        total = weights.sum()
        if total <= 0:  # fewer distinct values than centroids
            chosen.append(chosen[-1])
            continue
        cand = np.searchsorted(np.cumsum(weights), rng.random(trials) * total).clip(max=means.shape[0] - 1)
        new_dist = np.minimum(dist[None, :], (means[None, :] - means[cand][:, None]) ** 2)
        best = int(np.argmin((new_dist * counts[None, :]).sum(1)))
        chosen.append(int(cand[best]))
        dist = new_dist[best]
    return means[chosen].copy()


def kmeans_1d(values: torch.Tensor, k: int, *, init: str = "best", n_init: int = 2, iters: int = 1000,
              seed: int = 0, bins: int = DEFAULT_BINS, polish: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the values of any tensor into k centroids. Returns (centroids fp32 [k] ascending,
    labels int64 with values.shape). ``init``: "linear", "kmeans++" or "best" (linear and n_init
    k-means++ starts, the lowest SSE kept). Same inputs and seed, same result."""
    if init not in ("linear", "kmeans++", "best"):
        raise ValueError(f'kmeans_1d: init must be "linear", "kmeans++" or "best", got {init!r}')
    if k < 1:
        raise ValueError(f"kmeans_1d: k must be >= 1, got {k}")
    flat = values.detach().reshape(-1).float().cpu()
    if flat.numel() == 0:
        raise ValueError("kmeans_1d: no values to cluster")
    a = flat.numpy()
    h = _Binned(a, bins)
    means, counts = h.means, h.counts
    prefix_c = np.concatenate([[0.0], np.cumsum(counts)])
    prefix_s = np.concatenate([[0.0], np.cumsum(counts * means)])
    starts = []
    if init in ("linear", "best"):
        starts.append(np.linspace(h.lo, h.hi, k))
    if init in ("kmeans++", "best"):
        rng = np.random.default_rng(seed)
        starts += [_kmeans_pp(means, counts, k, rng) for _ in range(max(n_init, 1))]
    centroids, best_sse = None, float("inf")
    for start in starts:
        c, err = _lloyd_on_histogram(means, counts, prefix_c, prefix_s, start, iters)
        if err < best_sse:
            centroids, best_sse = c, err
    labels = h.labels((centroids[1:] + centroids[:-1]) / 2)
    for _ in range(polish):
        count = np.bincount(labels, minlength=k)
        total = np.bincount(labels, weights=a, minlength=k)
        # exact member means; a sorted contiguous partition keeps its means sorted
        centroids = np.where(count > 0, total / np.maximum(count, 1), centroids)
        new_labels = h.labels((centroids[1:] + centroids[:-1]) / 2)
        if np.array_equal(new_labels, labels):
            break  # converged: each centroid is the mean of its members, each value at its nearest
        labels = new_labels
    return torch.from_numpy(centroids.astype(np.float32)), torch.from_numpy(labels).view(values.shape)


def cluster_weight(weight: torch.Tensor, bits: int, *, granularity: str = "layer",
                   group_size: int | None = None, init: str = "best", seed: int = 0,
                   zero_centroid: bool | None = None, **kmeans_args) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of a weight [N, ...] into 2^bits shared values. Returns (codebook fp32 [G, 2^bits],
    idx uint8 with weight.shape) such that weight ~= codebook[n // (N // G), idx[n, ...]].

    granularity: "layer" (G = 1) or "group" (one codebook per ``group_size`` consecutive output
    channels; group_size must divide N). zero_centroid: reserve entry 0 = 0.0 exactly for the exact
    zeros (pruned weights), which then stay exactly zero; None = on when at least 1% of the weights
    are exactly zero. The other weights are clustered into the remaining 2^bits - 1 entries.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"cluster_weight: bits must be in [1, 8], got {bits}")
    w = weight.detach().float().cpu()
    n = w.shape[0]
    if granularity == "layer":
        group_size = n
    elif granularity == "group":
        if group_size is None or group_size < 1 or n % group_size != 0:
            raise ValueError(f"cluster_weight: group_size must be a positive divisor of the {n} output "
                             f"channels, got {group_size}")
    else:
        raise ValueError(f'cluster_weight: granularity must be "layer" or "group", got {granularity!r}')
    k = 1 << bits
    if zero_centroid is None:
        zero_centroid = int(torch.count_nonzero(w == 0)) >= 0.01 * w.numel()
    if zero_centroid and k < 2:
        raise ValueError("cluster_weight: a dedicated zero centroid needs bits >= 1 and a second entry")
    rows = w.reshape(n, -1)
    groups = n // group_size
    codebook = torch.zeros(groups, k)
    idx = torch.zeros(rows.shape, dtype=torch.uint8)
    for g in range(groups):
        part = rows[g * group_size:(g + 1) * group_size]
        if zero_centroid:
            nonzero = part != 0
            if bool(nonzero.any()):
                cents, labels = kmeans_1d(part[nonzero], k - 1, init=init, seed=seed, **kmeans_args)
                codebook[g, 1:] = cents
                sub = torch.zeros(part.shape, dtype=torch.uint8)
                sub[nonzero] = (labels + 1).to(torch.uint8)
                idx[g * group_size:(g + 1) * group_size] = sub
            codebook[g, 0] = 0.0
        else:
            cents, labels = kmeans_1d(part, k, init=init, seed=seed, **kmeans_args)
            codebook[g] = cents
            idx[g * group_size:(g + 1) * group_size] = labels.to(torch.uint8)
    return codebook, idx.view(w.shape)


def sse(weight: torch.Tensor, codebook: torch.Tensor, idx: torch.Tensor) -> float:
    """Sum of squared errors of the clustered reconstruction (float64)."""
    from .reference import codebook_dequantize

    return float(((weight.double() - codebook_dequantize(idx, codebook).double()) ** 2).sum())


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Unstructured magnitude mask: True for the weights kept (the largest |w|, ties broken by
    position), exactly round(sparsity * numel) zeros. A minimal helper for the prune -> cluster ->
    fine-tune pipeline; the full pruning toolkit is compress_kernels.prune."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"magnitude_mask: sparsity must be in [0, 1), got {sparsity}")
    flat = weight.detach().reshape(-1).abs()
    drop = int(round(sparsity * flat.numel()))
    mask = torch.ones(flat.numel(), dtype=torch.bool, device=weight.device)
    if drop > 0:
        order = torch.sort(flat, stable=True).indices
        mask[order[:drop]] = False
    return mask.view(weight.shape)
