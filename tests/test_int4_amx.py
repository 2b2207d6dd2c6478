"""The w4a8 int4 kernel on AMX tiles (int4_amx-inl.h; M >= 16 on the amx and amx_emulated paths):
bit-exact against the reference and the vector tiers for every group size, symmetric and
asymmetric packs, row tiles with tails, weights with a partial last block, bias, non-finite rows and
any thread count."""

import pytest
import torch

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.testing import rand_x, run_on_every_isa


def _weight(n, k, group_size, symmetric, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    scales = torch.rand(n, k // group_size, generator=g) * 0.05 + 0.001
    zp = None if symmetric else torch.randint(-8, 8, (n, k // group_size), generator=g, dtype=torch.int8)
    return w, scales, zp


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size, k", [(32, 256), (64, 192), (128, 384), (256, 512)])
def test_tile_kernel_is_bit_exact_on_every_isa(group_size, k, symmetric):
    n = 37  # two whole blocks of 16 columns and a last block of 5
    w, scales, zp = _weight(n, k, group_size, symmetric, seed=group_size + k)
    pack = ck.int4_pack(w, scales, group_size, zp)
    bias = rand_x(n, seed=3)
    for m in (16, 17, 31, 40):  # whole row tiles, and tails of 1, 15 and 8 rows
        x = rand_x(m, k, seed=m)
        want = ref.int4_linear_w4a8(x, w, scales, zp, group_size, bias if m % 2 else None)
        got = run_on_every_isa(ck.int4_linear, x, pack, bias if m % 2 else None)
        assert torch.equal(got, want), (m, (got - want).abs().max())


def test_extreme_activations_and_weights():
    k, gs = 256, 64
    w = torch.full((16, k), -8, dtype=torch.int8)
    w[:, ::2] = 7
    scales = torch.full((16, k // gs), 0.5)
    zp = torch.full((16, k // gs), 7, dtype=torch.int8)
    x = torch.full((20, k), -3.0)
    x[:, 1::3] = 3.0  # quantize_rows maps these rows to +-127
    for z in (None, zp):
        pack = ck.int4_pack(w, scales, gs, z)
        assert torch.equal(run_on_every_isa(ck.int4_linear, x, pack), ref.int4_linear_w4a8(x, w, scales, z, gs))


def test_nonfinite_rows_stay_in_their_row_on_tiles():
    w, scales, zp = _weight(24, 128, 32, symmetric=False, seed=1)
    pack = ck.int4_pack(w, scales, 32, zp)
    x = rand_x(18, 128, seed=2)
    x[4, 0], x[17, 100] = float("nan"), float("-inf")
    y = run_on_every_isa(lambda: ck.int4_linear(x, pack).nan_to_num(nan=1234.5))
    assert bool((y[[4, 17]] == 1234.5).all())
    keep = [i for i in range(18) if i not in (4, 17)]
    assert torch.equal(y[keep], ref.int4_linear_w4a8(x[keep], w, scales, zp, 32))


def test_same_bits_at_every_thread_count():
    w, scales, zp = _weight(200, 512, 128, symmetric=True, seed=6)
    pack = ck.int4_pack(w, scales, 128, zp)
    x = rand_x(48, 512, seed=7)
    threads = torch.get_num_threads()
    try:
        results = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            results.append(run_on_every_isa(ck.int4_linear, x, pack))
    finally:
        torch.set_num_threads(threads)
    want = ref.int4_linear_w4a8(x, w, scales, zp, 128)
    assert all(torch.equal(r, want) for r in results)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size, k", [(32, 256), (64, 192), (128, 384)])
def test_w4a16_bf16_tiles_within_the_stated_bound(group_size, k, symmetric):
    """bf16 x at M >= 16 runs on tdpbf16ps (amx, amx_emulated): within int4.h's w4a16 bound of the exact
    result, and the hardware tiles and their scalar model agree with each other closely."""
    from compress_kernels.testing import ISAS

    n = 37
    w, scales, zp = _weight(n, k, group_size, symmetric, seed=group_size)
    pack = ck.int4_pack(w, scales, group_size, zp)
    bias = rand_x(n, seed=4)
    for m in (16, 21):
        x = rand_x(m, k, seed=m).bfloat16()
        exact = (x.double() @ ref.int4_dequantize(w, scales, zp, group_size).double().T) + bias.double()
        bound = ref.int4_linear_error_bound(x.float(), w, scales, zp, group_size) + exact.abs() * 2.0**-8
        results = {}
        for isa in ISAS:
            with ck.force_cpu_isa(isa):
                results[isa] = ck.int4_linear(x, pack, bias, "bf16")
            err = (results[isa].double() - exact).abs()
            assert bool((err <= bound).all()), (isa, m, float((err - bound).max()))
        if "amx" in results:  # the scalar model of tdpbf16ps against the instruction itself
            assert torch.equal(results["amx"], results["amx_emulated"])


def test_w4a16_tile_decode_covers_every_nibble():
    """Every int4 value -8..7 in every position of a chunk: the bf16 decode tables of the tile kernel."""
    k, gs = 64, 32
    w = (torch.arange(16 * k, dtype=torch.int64).reshape(16, k) % 16 - 8).to(torch.int8)
    w = w[:, torch.randperm(k, generator=torch.Generator().manual_seed(1))].contiguous()
    scales = torch.ones(16, k // gs)
    pack = ck.int4_pack(w, scales, gs)
    x = torch.eye(k)[:32].bfloat16()  # row i selects k = i: the output is column i of the weight
    got = run_on_every_isa(lambda: ck.int4_linear(x, pack, None, "bf16").float())
    assert torch.equal(got, w[:, :32].T.float())
