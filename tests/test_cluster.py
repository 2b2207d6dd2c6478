"""k-means of weights: quality against scikit-learn, determinism, the k-means fixed-point properties,
groups, the dedicated zero centroid, and argument checks."""

import pytest
import torch

from compress_kernels import cluster
from compress_kernels import reference as ref

sklearn_cluster = pytest.importorskip("sklearn.cluster")


def weights_like(kind: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == 0:  # trained-weight-like: narrow bulk, heavy tails
        return torch.randn(size, generator=g) * 0.02 + torch.randn(size, generator=g).pow(3) * 0.005
    if kind == 1:
        return torch.rand(size, generator=g) - 0.5
    return torch.randn(size, generator=g).exp()  # skewed


def sse_of(values, centroids, labels):
    return float(((values.double() - centroids.double()[labels]) ** 2).sum())


@pytest.mark.parametrize("kind", [0, 1, 2])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5])
def test_sse_within_one_percent_of_sklearn(kind, bits):
    values = weights_like(kind, 20_000, seed=bits)
    centroids, labels = cluster.kmeans_1d(values, 1 << bits, seed=0)
    km = sklearn_cluster.KMeans(n_clusters=1 << bits, n_init=1, random_state=0).fit(values.double().view(-1, 1).numpy())
    assert sse_of(values, centroids, labels) <= 1.01 * km.inertia_


@pytest.mark.parametrize("init", ["linear", "kmeans++", "best"])
def test_lloyd_fixed_point_properties(init):
    values = weights_like(0, 30_000, seed=3)
    centroids, labels = cluster.kmeans_1d(values, 16, init=init, seed=1, polish=50)
    assert centroids.shape == (16,) and labels.shape == values.shape and labels.dtype == torch.int64
    assert bool((centroids[1:] >= centroids[:-1]).all())
    # every value sits with a nearest centroid (exactly, in fp32)
    dist = (values[:, None] - centroids[None, :]).abs()
    assert bool((dist.gather(1, labels[:, None]).squeeze(1) <= dist.min(1).values).all())
    # every non-empty centroid is (to fp32 rounding) the mean of its members
    for c in range(16):
        members = values[labels == c]
        if members.numel():
            centroid = float(centroids[c])
            assert abs(float(members.double().mean()) - centroid) <= 1e-6 * max(1.0, abs(centroid))


def test_deterministic_for_a_seed():
    values = weights_like(0, 10_000, seed=4)
    a = cluster.kmeans_1d(values, 32, init="kmeans++", seed=7)
    b = cluster.kmeans_1d(values, 32, init="kmeans++", seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_few_distinct_values_and_constant_input():
    values = torch.tensor([1.0, 1.0, 2.0, 3.0, 3.0, 3.0])
    centroids, labels = cluster.kmeans_1d(values, 8)
    assert torch.equal(centroids[labels], values)  # every value represented exactly
    centroids, labels = cluster.kmeans_1d(torch.full((10,), 0.5), 4)
    assert torch.equal(centroids[labels], torch.full((10,), 0.5))


def test_cluster_weight_per_layer_and_per_group():
    w = torch.randn(32, 8, 3, 3, generator=torch.Generator().manual_seed(5))
    w[16:] *= 10  # a second group with a very different range
    cb, idx = cluster.cluster_weight(w, 3)
    assert cb.shape == (1, 8) and idx.shape == w.shape and idx.dtype == torch.uint8
    cb_g, idx_g = cluster.cluster_weight(w, 3, granularity="group", group_size=16)
    assert cb_g.shape == (2, 8)
    err_layer = cluster.sse(w, cb, idx)
    err_group = cluster.sse(w, cb_g, idx_g)
    assert err_group < err_layer
    # each group's codebook is that group's own k-means
    own, _ = cluster.kmeans_1d(w[:16], 8)
    assert torch.equal(cb_g[0], own)
    assert torch.equal(ref.codebook_dequantize(idx_g, cb_g)[:16], own[idx_g[:16].long()])


def test_zero_centroid_keeps_pruned_weights_exactly_zero():
    w = torch.randn(64, 100, generator=torch.Generator().manual_seed(6))
    mask = cluster.magnitude_mask(w, 0.8)
    assert int((~mask).sum()) == round(0.8 * w.numel())
    assert bool(w[mask].abs().min() >= w[~mask].abs().max())
    pruned = w * mask
    cb, idx = cluster.cluster_weight(pruned, 4)  # auto: 80% exact zeros
    assert float(cb[0, 0]) == 0.0
    rebuilt = ref.codebook_dequantize(idx, cb)
    assert torch.equal(rebuilt == 0, pruned == 0)  # zeros stay zero, no survivor maps to zero
    assert bool((idx[~mask] == 0).all()) and bool((idx[mask] != 0).all())
    cb_off, _ = cluster.cluster_weight(pruned, 4, zero_centroid=False)
    assert float(cb_off.abs().min()) < 1e-3  # without it, k-means still spends a centroid near zero


def test_bad_arguments():
    w = torch.randn(6, 4)
    with pytest.raises(ValueError, match=r"bits must be in \[1, 8\], got 9"):
        cluster.cluster_weight(w, 9)
    with pytest.raises(ValueError, match="group_size must be a positive divisor of the 6 output channels, got 4"):
        cluster.cluster_weight(w, 2, granularity="group", group_size=4)
    with pytest.raises(ValueError, match='granularity must be "layer" or "group"'):
        cluster.cluster_weight(w, 2, granularity="channel")
    with pytest.raises(ValueError, match='init must be "linear", "kmeans\\+\\+" or "best"'):
        cluster.kmeans_1d(w, 4, init="random")
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        cluster.kmeans_1d(w, 0)
    with pytest.raises(ValueError, match="no values to cluster"):
        cluster.kmeans_1d(torch.empty(0), 4)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.0"):
        cluster.magnitude_mask(w, 1.0)
