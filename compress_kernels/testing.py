"""Helpers for testing compress_kernels (like torch.testing): the CPU paths this machine runs, a
runner that checks a computation gives the same bits on every one of them, and the seeded random
operands the CPU and CUDA tests share.

Every generator draws from its own ``torch.Generator`` seeded with ``seed`` on the CPU, so a
given call returns the same tensor on every machine and in every test that makes it; move the
result to a device with ``.to(device)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .numerics import dtype_range
from .ops import force_cpu_isa, quantize_multiplier

__all__ = [
    "CODEBOOK_CONV_CASES",
    "ISAS",
    "available_isas",
    "codebook_linear_case",
    "int8_conv_case",
    "rand_codebook",
    "rand_idx",
    "rand_int",
    "rand_weight",
    "rand_x",
    "random_24",
    "run_on_every_isa",
]


# ---------------------------------------------------------------- CPU paths


def available_isas() -> list[str]:
    """Every CPU path this machine can run, lowest first (the portable one always), then
    "amx_emulated" (the AMX kernels on the scalar tile model, which every machine runs)."""
    isas = ["portable"]
    for name in ("avx2", "avx512vnni", "avx512vbmi", "amx"):
        try:
            with force_cpu_isa(name):
                isas.append(name)
        except RuntimeError as err:  # this CPU lacks it
            assert "this CPU lacks" in str(err)
    return isas + ["amx_emulated"]


# The paths of this machine, probed once when the module is imported.
ISAS = available_isas()


def run_on_every_isa(fn: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
    """fn(*args, **kwargs) once under each path of ISAS; asserts every result equals the portable
    path's (torch.equal: same shape, dtype and bits) and returns that result."""
    results = []
    for name in ISAS:
        with force_cpu_isa(name):
            results.append(fn(*args, **kwargs))
    for name, r in zip(ISAS[1:], results[1:], strict=True):
        assert torch.equal(results[0], r), f"{name} differs from the portable path"
    return results[0]


# ---------------------------------------------------------------- seeded random operands


def rand_int(*shape: int, lo: int = -128, hi: int = 127, dtype: torch.dtype = torch.int8,
             seed: int = 0) -> torch.Tensor:
    """Integers uniform in [lo, hi] (both included) of the given shape, as dtype."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi + 1, shape, generator=g, dtype=torch.int64).to(dtype)


def rand_weight(n: int, k: int, seed: int = 1) -> torch.Tensor:
    """An int8 [n, k] weight in the symmetric narrow range [-127, 127] the int8 modules use."""
    return rand_int(n, k, lo=-127, hi=127, seed=seed)


def rand_idx(n: int, k: int, bits: int, seed: int = 0) -> torch.Tensor:
    """uint8 [n, k] codebook indices uniform in [0, 2**bits)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1 << bits, (n, k), generator=g, dtype=torch.int64).to(torch.uint8)


def rand_codebook(groups: int, bits: int, seed: int = 1) -> torch.Tensor:
    """fp32 [groups, 2**bits] codebooks (centroids drawn from the standard normal)."""
    return torch.randn(groups, 1 << bits, generator=torch.Generator().manual_seed(seed))


def rand_x(*shape: int, seed: int = 2) -> torch.Tensor:
    """fp32 activations of the given shape drawn from the standard normal."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def random_24(n: int, k: int, dtype: torch.dtype = torch.float32, seed: int = 0, keep: int = 2) -> torch.Tensor:
    """A random [n, k] weight with `keep` (<= 2) non-zeros at random positions of every group of
    four along k: standard-normal values for floating dtypes, int8 values in [-127, 127] with the
    kept positions never zero for torch.int8."""
    if k % 4 != 0:
        raise ValueError(f"random_24: k must be a multiple of 4 (groups of four along k), got {k}")
    if not 0 <= keep <= 2:
        raise ValueError(f"random_24: keep must be in [0, 2] (2:4 keeps at most 2 of 4), got {keep}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.rand(n, k // 4, 4, generator=g).argsort(-1)[..., :keep]
    mask = torch.zeros(n, k // 4, 4, dtype=torch.bool).scatter_(-1, idx, True).reshape(n, k)
    if dtype == torch.int8:
        w = torch.randint(-127, 128, (n, k), generator=g).masked_fill(~mask, 0)
        return torch.where(mask & (w == 0), torch.ones_like(w), w).to(torch.int8)
    return (torch.randn(n, k, generator=g) * mask).to(dtype)


# ---------------------------------------------------------------- whole op cases


def codebook_linear_case(m: int, n: int, k: int, groups: int, bits: int,
                         seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x fp32 [m, k], indices uint8 [n, k] of `bits` bits, codebooks fp32 [groups, 2**bits], bias fp32 [n])
    for codebook_linear, drawn with seeds seed, seed + 1, seed + 2 and seed + 3."""
    return (rand_x(m, k, seed=seed), rand_idx(n, k, bits, seed=seed + 1), rand_codebook(groups, bits, seed=seed + 2),
            rand_x(n, seed=seed + 3))


# codebook_conv2d shapes the CPU and CUDA tests both run:
# (B, C, H, W, C_out, kernel, stride, padding, dilation, groups, codebooks)
CODEBOOK_CONV_CASES = [
    (2, 3, 8, 8, 16, 3, 1, 1, 1, 1, 1),
    (1, 5, 9, 7, 20, (3, 2), (2, 1), (0, 1), 1, 1, 4),
    (2, 4, 10, 10, 32, 3, 2, 2, 2, 2, 2),
    (1, 6, 5, 5, 48, 1, 1, 0, 1, 3, 3),
    (3, 8, 6, 6, 17, 2, 1, 0, 1, 1, 17),
]


def int8_conv_case(n: int, c: int, h: int, w: int, oc: int, k: int, groups: int = 1,
                   x_dtype: torch.dtype = torch.uint8, seed: int = 0, per_channel: bool = True):
    """(x [n, c, h, w] of x_dtype over its whole range, weight int8 [oc, c / groups, k, k] in [-127, 127],
    bias int32 [oc] in [-2**16, 2**16), m0, shift) for int8_conv2d: the fixed-point multiplier of a real
    scale of about 1 / (60 * the reduction depth), per output channel (or one when not per_channel),
    so the int32 sums land inside the int8 output range."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = dtype_range(x_dtype)
    x = torch.randint(lo, hi + 1, (n, c, h, w), generator=g).to(x_dtype)
    wt = torch.randint(-127, 128, (oc, c // groups, k, k), generator=g).to(torch.int8)
    b = torch.randint(-(2**16), 2**16, (oc,), generator=g, dtype=torch.int32)
    real = (torch.rand(oc if per_channel else 1, generator=g, dtype=torch.float64) + 0.1) / (k * k * c / groups * 60)
    m0, shift = quantize_multiplier(real)
    return x, wt, b, m0, shift
