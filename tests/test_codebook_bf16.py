"""codebook_linear with bf16 activations on CPU: the codebook rounded to bf16, fp32 sums, one rounding to bf16.
From 8-16 rows (codebook_bf16_tile_min_rows) on the tile tiers (amx: tdpbf16ps; amx_emulated: its scalar model, on every
machine) the weight is
decoded into bf16 tiles; below that, and on the vector tiers, x is widened and the fp32 kernel runs. Every path
is within reference.codebook_linear_bf16_bound of the exact sum, and the hardware tiles equal their model."""

import pytest
import torch

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.testing import ISAS, rand_codebook, rand_idx, rand_x

OPS = torch.ops.compress_kernels


def _case(n, k, bits, groups, seed):
    idx = rand_idx(n, k, bits, seed=seed)
    return idx, ck.codebook_pack(idx, bits), rand_codebook(groups, bits, seed=seed + 1), rand_x(n, seed=seed + 2)


def _within_bound(y, x, idx, codebook, bias):
    exact = ref.codebook_linear_bf16(x, idx, codebook, bias)
    # the bound of the fp32 sum, then one bf16 rounding of it (half an ulp: 2^-9 relative, taken as 2^-8)
    bound = ref.codebook_linear_bf16_bound(x, idx, codebook) + exact.abs() * 2.0 ** -8
    err = (y.double() - exact).abs()
    return bool((err <= bound).all()), float((err - bound).max())


# (bits, N, K, codebooks): shared 4-bit codebooks (the vpmultishiftqb decode) with whole and partial blocks and
# K tails inside a word; per-channel and group codebooks (per-lane gathers); 5-, 6- and 8-bit tables.
CASES = [(4, 37, 96, 1), (4, 64, 130, 1), (4, 48, 75, 3), (3, 40, 77, 8), (6, 33, 64, 33), (8, 48, 100, 3),
         (5, 32, 64, 2), (4, 48, 64, 48), (2, 20, 33, 1), (1, 16, 40, 1)]


@pytest.mark.parametrize("bits, n, k, groups", CASES)
def test_every_path_within_the_stated_bound(bits, n, k, groups):
    idx, packed, codebook, bias = _case(n, k, bits, groups, seed=bits * 100 + n)
    for m in (1, 7, 8, 15, 16, 33):  # the fp32 path below 8-16 rows; tiles with 8-15 rows, whole tiles and tails
        x = rand_x(m, k, seed=m).bfloat16()
        results = {}
        for isa in ISAS:
            with ck.force_cpu_isa(isa):
                results[isa] = OPS.codebook_linear(x, packed, codebook, bits, bias if m % 2 else None)
            assert results[isa].dtype == torch.bfloat16 and results[isa].shape == (m, n)
            ok, excess = _within_bound(results[isa], x, idx, codebook, bias if m % 2 else None)
            assert ok, (isa, m, excess)
        if "amx" in results:  # the scalar model of tdpbf16ps and the decode against the hardware
            assert torch.equal(results["amx"], results["amx_emulated"]), m


@pytest.mark.parametrize("bits", [4, 8])
def test_tile_decode_places_every_index(bits):
    """x = rows of the identity: output row i is column k = i of the weight, exactly one product, so the
    result is exactly the bf16-rounded codebook entry of every (n, k) on every path."""
    n, k = 35, 72
    idx, packed, codebook, _ = _case(n, k, bits, 1, seed=3)
    x = torch.eye(k).bfloat16()
    want = ref.codebook_dequantize(idx, codebook.bfloat16().float()).T.bfloat16()
    for isa in ISAS:
        with ck.force_cpu_isa(isa):
            assert torch.equal(OPS.codebook_linear(x, packed, codebook, bits, None), want), isa


def test_rounding_subnormals_and_nonfinite():
    """The codebook is rounded to bf16 before the products; bf16 subnormals in x and in the codebook read as
    zero; a NaN or an infinity in x gives NaN (0x7FC0) or +-Inf in its row only."""
    n, k, bits = 16, 64, 4
    idx = torch.zeros(n, k, dtype=torch.uint8)
    idx[:, 1] = 1
    idx[:, 2] = 2
    codebook = torch.tensor([[1.0, 1.0 + 2.0 ** -10, 2.0 ** -130] + [0.0] * 13])  # 1+2^-10 rounds to 1 in bf16
    packed = ck.codebook_pack(idx, bits)
    x = torch.zeros(12, k)
    x[:, 1] = 1.0
    x[1, 0] = 2.0 ** -128  # a bf16 subnormal: read as zero
    x[2, 2] = 1.0  # times the subnormal entry: zero
    x[3, 5] = float("nan")
    x[4, 7] = float("inf")
    x = x.bfloat16()
    for isa in ISAS:
        with ck.force_cpu_isa(isa):
            y = OPS.codebook_linear(x, packed, codebook, bits, None)
        bits16 = y.view(torch.int16)
        assert bool((bits16[3] == 0x7FC0).all()), isa
        assert bool((y[4] == float("inf")).all()), isa
        keep = [0, 1, 2] + list(range(5, 12))
        assert torch.equal(y[keep].float(), torch.ones(len(keep), n)), isa


def test_same_bits_at_every_thread_count():
    idx, packed, codebook, bias = _case(200, 256, 4, 1, seed=9)
    x = rand_x(70, 256, seed=1).bfloat16()
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            for isa in ("amx", "amx_emulated"):
                if isa in ISAS:
                    with ck.force_cpu_isa(isa):
                        results.append(OPS.codebook_linear(x, packed, codebook, 4, bias))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(r, results[0]) for r in results)


def test_module_runs_bf16_on_the_bf16_kernel():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    layer = ck.CodebookLinear.from_float(linear, bits=4)
    x = torch.randn(3, 10, 96)
    y32 = layer(x)
    y16 = layer(x.bfloat16())
    assert y16.dtype == torch.bfloat16 and y16.shape == (3, 10, 40)
    want = OPS.codebook_linear(x.bfloat16().reshape(30, 96), layer.packed_idx, layer.effective_codebook(), 4,
                               layer.bias).reshape(3, 10, 40)
    assert torch.equal(y16, want)
    assert torch.allclose(y16.float(), y32, rtol=2e-2, atol=2e-2)
    # a module converted to bf16 (codebook and bias buffers in bf16) still runs: they are widened for the op
    assert layer.bfloat16()(x.bfloat16()).dtype == torch.bfloat16


def test_bf16_gradients():
    idx, packed, codebook, bias = _case(24, 40, 4, 1, seed=5)
    x = rand_x(9, 40, seed=2).bfloat16().requires_grad_()
    cb = codebook.clone().requires_grad_()
    b = bias.clone().requires_grad_()
    OPS.codebook_linear(x, packed, cb, 4, b).float().sum().backward()
    w = ref.codebook_dequantize(idx, codebook)
    assert x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(x.grad.float(), w.sum(0).expand(9, 40).bfloat16().float(), rtol=1e-2, atol=1e-2)
    assert torch.equal(b.grad, torch.full((24,), 9.0))


def test_opcheck_and_meta():
    idx, packed, codebook, bias = _case(32, 64, 4, 1, seed=7)
    x = rand_x(16, 64, seed=3).bfloat16()
    torch.library.opcheck(OPS.codebook_linear, (x, packed, codebook, 4, bias))
    y = OPS.codebook_linear(x.to("meta"), packed.to("meta"), codebook.to("meta"), 4, bias.to("meta"))
    assert y.dtype == torch.bfloat16 and y.shape == (16, 32)


def test_bf16_x_still_needs_an_fp32_codebook_and_bias():
    _, packed, codebook, bias = _case(32, 64, 4, 1, seed=7)
    x = rand_x(8, 64, seed=3).bfloat16()
    with pytest.raises(RuntimeError, match="codebook_linear: codebook must be Float, got BFloat16"):
        OPS.codebook_linear(x, packed, codebook.bfloat16(), 4, bias)
    with pytest.raises(RuntimeError, match="codebook_linear: bias must be Float, got BFloat16"):
        OPS.codebook_linear(x, packed, codebook, 4, bias.bfloat16())
    with pytest.raises(RuntimeError, match="codebook_linear: x must be Float or BFloat16, got Half"):
        OPS.codebook_linear(x.half(), packed, codebook, 4, bias)


# (k, x, codebook index) of the probes of tdpbf16ps's order (amx_tiles.h, EmulatedTiles::dot_bf16), with the entries
# 1, 2^-12 and 2^-30: products 1, 2^-24 and 2^-60 (x of 1 or -1 picks 1 or -1).
TDPBF16PS_PROBES = [
    # the even chain loses 2^-24 to 1 + 2^-24 = 1 and cancels; the odd chain keeps 2^-60
    ([(0, 1.0, 1), (2, 2.0 ** -12, 2), (3, 2.0 ** -30, 3), (4, -1.0, 1)], 2.0 ** -60),
    ([(1, 1.0, 1), (2, 2.0 ** -12, 2), (5, -1.0, 1)], 2.0 ** -24),  # 1 and -1 cancel in the odd chain
    ([(0, 1.0, 1), (2, 2.0 ** -12, 2), (4, -1.0, 1)], 0.0),  # one chain, in pair order
    ([(0, 2.0 ** -12, 2), (16, 1.0, 1), (30, -1.0, 1)], 0.0),
    ([(0, 1.0, 1), (2, -1.0, 1), (4, 2.0 ** -12, 2)], 2.0 ** -24),
    # 1 from the first 32 k, then 2^-24 on each chain (summed first: 2^-23), then -1 in the third 32 k
    ([(0, 1.0, 1), (32, 2.0 ** -12, 2), (33, 2.0 ** -12, 2), (64, -1.0, 1)], 2.0 ** -23),
]


@pytest.mark.parametrize("probe, want", TDPBF16PS_PROBES)
def test_tile_model_follows_tdpbf16ps_order(probe, want):
    """Cancellations that expose the order of tdpbf16ps's additions: the scalar model gives the value the
    instruction gave on Sapphire Rapids (and the hardware the same, where the CPU has it)."""
    k = 96
    idx = torch.zeros(16, k, dtype=torch.uint8)
    x = torch.zeros(16, k)  # 16 rows: the tile path for a 2-bit codebook (codebook_bf16_tile_min_rows)
    for kk, xv, iv in probe:
        idx[:, kk], x[:, kk] = iv, xv
    codebook = torch.tensor([[0.0, 1.0, 2.0 ** -12, 2.0 ** -30]])
    packed = ck.codebook_pack(idx, 2)
    for isa in [name for name in ISAS if name.startswith("amx")]:
        with ck.force_cpu_isa(isa):
            y = OPS.codebook_linear(x.bfloat16(), packed, codebook, 2, None)
        assert bool((y.float() == want).all()), (isa, float(y[0, 0]), want)
