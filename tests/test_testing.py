"""compress_kernels.testing: the CPU path list, run_on_every_isa, and the seeded generators the CPU
and CUDA tests share."""

import pytest
import torch

import compress_kernels as ck
from compress_kernels.testing import (
    ISAS,
    available_isas,
    rand_codebook,
    rand_idx,
    rand_int,
    rand_weight,
    rand_x,
    random_24,
    run_on_every_isa,
)


def test_available_isas_lists_the_runnable_paths_lowest_first():
    assert ISAS == available_isas()
    assert ISAS[0] == "portable" and ISAS[-1] == "amx_emulated"
    order = ["portable", "avx2", "avx512vnni", "avx512vbmi", "amx", "amx_emulated"]
    assert [order.index(name) for name in ISAS] == sorted(order.index(name) for name in ISAS)
    for name in ISAS:
        with ck.force_cpu_isa(name):
            assert ck.cpu_isa() == name


def test_run_on_every_isa_runs_each_path_and_returns_the_common_result():
    seen = []

    def gemm(x, w):
        seen.append(ck.cpu_isa())
        return ck.int8_gemm(x, w)

    x, w = rand_int(5, 40, seed=3), rand_weight(17, 40)
    got = run_on_every_isa(gemm, x, w)
    assert seen == ISAS
    assert torch.equal(got, x.long() @ w.long().T)


def test_run_on_every_isa_names_the_path_that_differs():
    def path_index():
        return torch.tensor([ISAS.index(ck.cpu_isa())])

    with pytest.raises(AssertionError, match=f"{ISAS[1]} differs from the portable path"):
        run_on_every_isa(path_index)


def test_generators_are_seeded_and_in_range():
    assert torch.equal(rand_int(3, 4, seed=7), rand_int(3, 4, seed=7))
    assert not torch.equal(rand_int(64, 64, seed=7), rand_int(64, 64, seed=8))
    x = rand_int(4096, lo=0, hi=255, dtype=torch.uint8)
    assert x.dtype == torch.uint8 and x.shape == (4096,) and x.min() == 0 and x.max() == 255
    w = rand_weight(64, 64)
    assert w.dtype == torch.int8 and w.min() == -127 and w.max() == 127
    idx = rand_idx(32, 64, 3)
    assert idx.dtype == torch.uint8 and idx.shape == (32, 64) and int(idx.max()) == 7
    assert rand_codebook(2, 4).shape == (2, 16) and rand_x(2, 3).shape == (2, 3)
    assert torch.equal(rand_x(2, 3), rand_x(2, 3)) and not torch.equal(rand_x(2, 3), rand_x(2, 3, seed=3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("keep", [0, 1, 2])
def test_random_24_keeps_exactly_keep_of_every_four(dtype, keep):
    w = random_24(16, 64, dtype, seed=keep, keep=keep)
    assert w.dtype == dtype and w.shape == (16, 64)
    nonzeros = (w != 0).reshape(16, 16, 4).sum(-1)
    assert torch.equal(nonzeros, torch.full_like(nonzeros, keep))
    if dtype == torch.int8:
        assert int(w.min()) >= -127


def test_random_24_refuses_what_is_not_2_to_4():
    with pytest.raises(ValueError, match="random_24: k must be a multiple of 4 .*got 10"):
        random_24(2, 10)
    with pytest.raises(ValueError, match=r"random_24: keep must be in \[0, 2\] .*got 3"):
        random_24(2, 8, keep=3)
