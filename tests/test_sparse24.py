"""2:4 sparse kernels: compression layout, CUTLASS conversion round trip, fp32 and int8 linear
against the reference on every ISA path and thread count, opcheck, torch.compile, bad input."""

import copy

import pytest
import torch

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.testing import ISAS, random_24, run_on_every_isa

OPS = torch.ops.compress_kernels
SHAPES = [  # (M, N, K): row tails (M % 16, M % 48), column tails (N % 8, N % 16, N % 256), K % 8 == 4
    (1, 1, 4), (1, 8, 8), (3, 7, 12), (16, 16, 64), (17, 33, 100), (47, 9, 36), (49, 130, 260),
    (97, 257, 64),
    # single rows: 4 blocks of 8 columns at a time, then 3 / 2 / 1, a partial last block, a panel
    # boundary at 256 columns
    (1, 61, 36), (1, 300, 520), (1, 24, 1028), (1, 16, 20),
    # several k blocks of 512 with partial sums kept in out, an odd last group
    (5, 40, 1028), (50, 19, 644),
    # the rows kernel (tasks of >= 16 rows): 2 and 3 row vectors, k blocks of 128 with the
    # accumulators kept between them, a last k block of one group, partial blocks of 16 columns
    (32, 40, 388), (48, 264, 132), (33, 8, 1024),
]


# ---------------------------------------------------------------- layout


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.float64])
@pytest.mark.parametrize("n, k", [(1, 4), (5, 12), (33, 64), (7, 260)])
def test_compress_matches_reference_and_round_trips(dtype, n, k):
    for keep in (0, 1, 2):
        w = random_24(n, k, dtype, seed=keep, keep=keep)
        values, meta = ck.sparse24_compress(w)
        rv, rm = ref.sparse24_compress(w)
        assert values.dtype == dtype and meta.dtype == torch.uint8
        assert values.shape == (n, k // 2) and meta.shape == (n, (k + 7) // 8)
        assert torch.equal(values, rv) and torch.equal(meta, rm)
        assert torch.equal(ck.sparse24_decompress(values, meta), w)
        assert torch.equal(ref.sparse24_decompress(values, meta), w)


def test_layout_is_the_documented_one():
    # Row 0: group 0 keeps positions 1 and 3, group 1 keeps 0 and 2, group 2 (odd tail) keeps 2, 3.
    w = torch.tensor([[0.0, 5.0, 0.0, 6.0, 7.0, 0.0, 8.0, 0.0, 0.0, 0.0, 9.0, 1.0]])
    values, meta = ck.sparse24_compress(w)
    assert values.tolist() == [[5.0, 6.0, 7.0, 8.0, 9.0, 1.0]]
    nib = [1 | 3 << 2, 0 | 2 << 2, 2 | 3 << 2]
    assert meta.tolist() == [[nib[0] | nib[1] << 4, nib[2]]]
    # An all-zero group keeps positions 0 and 1; a single non-zero at 2 is paired with 0.
    w = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0]])
    values, meta = ck.sparse24_compress(w)
    assert values.tolist() == [[0.0, 0.0, 0.0, 3.0]]
    assert meta.tolist() == [[(0 | 1 << 2) | (0 | 2 << 2) << 4]]


def test_negative_zero_is_a_zero():
    w = torch.tensor([[-0.0, 1.0, -0.0, 2.0]])
    values, _ = ck.sparse24_compress(w * torch.tensor([[1.0, 1.0, 0.0, 1.0]]))
    assert values.tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize("dtype, n, k", [(torch.float16, 32, 64), (torch.bfloat16, 64, 128), (torch.int8, 32, 64),
                                         (torch.int8, 16, 128)])
def test_cutlass_round_trip_and_agreement_with_torch(dtype, n, k):
    from torch.sparse import _semi_structured_conversions as tconv

    w = random_24(n, k, dtype, seed=3)
    values, meta = ck.sparse24_compress(w)
    sparse, meta_reordered = ck.ops.sparse24_to_cutlass(values, meta)
    # PyTorch's own CUTLASS decoder reads our conversion back to the same dense weight ...
    assert torch.equal(tconv.sparse_semi_structured_to_dense_cutlass(sparse, meta_reordered), w)
    # ... our inverse recovers our layout exactly ...
    v2, m2 = ck.ops.sparse24_from_cutlass(sparse, meta_reordered)
    assert torch.equal(v2, values) and torch.equal(m2, meta)
    # ... and PyTorch's CUTLASS encoder's output decodes to the same weight through ours.
    t_sparse, t_meta = tconv.sparse_semi_structured_from_dense_cutlass(w)
    v3, m3 = ck.ops.sparse24_from_cutlass(t_sparse, t_meta)
    assert torch.equal(ck.sparse24_decompress(v3, m3), w)


def test_cutlass_conversion_refuses_what_cutlass_cannot_hold():
    values, meta = ck.sparse24_compress(random_24(32, 64))
    with pytest.raises(ValueError, match="1:2 tf32"):
        ck.ops.sparse24_to_cutlass(values, meta)
    values, meta = ck.sparse24_compress(random_24(8, 64, torch.float16))
    with pytest.raises(ValueError, match="N % 32 == 0"):
        ck.ops.sparse24_to_cutlass(values, meta)
    values, meta = ck.sparse24_compress(random_24(16, 96, torch.int8))
    with pytest.raises(ValueError, match="K % 64 == 0 for torch.int8, got N=16, K=96"):
        ck.ops.sparse24_to_cutlass(values, meta)
    values, meta = ck.sparse24_compress(random_24(32, 64, torch.float16))
    with pytest.raises(ValueError, match="meta must be torch.int16"):
        ck.ops.sparse24_from_cutlass(values, meta.view(torch.int32))


def test_compressed_bytes():
    values, meta = ck.sparse24_compress(random_24(256, 1024))
    assert (values.numel() * 4 + meta.numel()) / (256 * 1024 * 4) == 0.53125  # <= 56.25%


# ---------------------------------------------------------------- fp32 linear


@pytest.mark.parametrize("m, n, k", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_sparse24_linear_matches_reference(m, n, k, bias):
    w = random_24(n, k, seed=m)
    g = torch.Generator().manual_seed(k)
    x = torch.randn(m, k, generator=g)
    b = torch.randn(n, generator=g) if bias else None
    values, meta = ck.sparse24_compress(w)
    packed = ck.sparse24_f32_pack(values, meta)
    got = run_on_every_isa(ck.sparse24_linear, x, packed, meta, b)
    want = ref.sparse24_linear(x, values, meta, b)
    # fp32 accumulation of k/2 products: error <= k/2 * eps * sum|w x| (loose bound below).
    tol = 1e-6 * k * (x.abs().double() @ w.abs().T.double() + 1)
    assert got.dtype == torch.float32 and got.shape == (m, n)
    assert ((got.double() - want).abs() <= tol).all()
    assert torch.equal(ck.sparse24_linear(x, values, meta, b), got)  # unpacked values: same bits
    assert torch.allclose(got, torch.nn.functional.linear(x, w, b), rtol=1e-4, atol=1e-4)


# bf16 from TILE_MIN_ROWS rows runs on tiles on the tile tiers (sparse24.h, "bf16 on tiles"): other roundings than
# the vector tiers' exact model, within the stated bound, the amx tier equal to its scalar model.
TILE_MIN_ROWS = 8
TILE_ISAS = [name for name in ISAS if name.startswith("amx")]
VECTOR_ISAS = [name for name in ISAS if not name.startswith("amx")]


def _same_on(isas, fn, *args):
    """fn(*args) under each path of isas; asserts they all give the same bits and returns the first."""
    results = []
    for name in isas:
        with ck.force_cpu_isa(name):
            results.append(fn(*args))
    for name, r in zip(isas[1:], results[1:], strict=True):
        assert torch.equal(results[0].view(torch.int16) if r.dtype == torch.bfloat16 else results[0],
                           r.view(torch.int16) if r.dtype == torch.bfloat16 else r), f"{name} differs from {isas[0]}"
    return results[0]


def _within_bf16_bound(got, x, values, meta, bias=None):
    exact = ref.sparse24_bf16_linear_exact(x, values, meta, bias)
    bound = ref.sparse24_bf16_linear_bound(x, values, meta) + 2.0 ** -8 * exact.abs()  # + the bf16 rounding
    return bool(((got.double() - exact).abs() <= bound).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse24_linear_is_independent_of_threads_and_strides(dtype):
    w = random_24(300, 256, dtype, seed=1)
    values, meta = ck.sparse24_compress(w)
    packed = ck.sparse24_bf16_pack(values, meta) if dtype == torch.bfloat16 else ck.sparse24_f32_pack(values, meta)
    x = torch.randn(200, 512).to(dtype)[:, ::2]  # non-contiguous rows
    threads = torch.get_num_threads()
    bits = (lambda t: t.view(torch.int16)) if dtype == torch.bfloat16 else (lambda t: t)
    # bf16 at 200 rows: the vector tiers share one model, the tile tiers (sparse24.h, "bf16 on tiles") another
    for isas in ([ISAS] if dtype == torch.float32 else [VECTOR_ISAS, TILE_ISAS]):
        try:
            torch.set_num_threads(1)
            one = _same_on(isas, ck.sparse24_linear, x, packed, meta, None)
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(bits(_same_on(isas, ck.sparse24_linear, x.contiguous(), packed, meta, None)), bits(one))
    x_rows = torch.randn(200, 300).to(dtype)[:, 20:276]  # rows with a stride > K: read in place
    assert torch.equal(bits(ck.sparse24_linear(x_rows, packed, meta, None)),
                       bits(ck.sparse24_linear(x_rows.contiguous(), packed, meta, None)))


# ---------------------------------------------------------------- bf16 linear


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16)


@pytest.mark.parametrize("m, n, k", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_sparse24_bf16_linear_is_exact(m, n, k, bias):
    w = random_24(n, k, torch.bfloat16, seed=m)
    g = torch.Generator().manual_seed(k)
    x = torch.randn(m, k, generator=g).bfloat16()
    b = torch.randn(n, generator=g).bfloat16() if bias else None
    values, meta = ck.sparse24_compress(w)
    packed = ck.sparse24_bf16_pack(values, meta)
    got = _same_on(ISAS if m < TILE_MIN_ROWS else VECTOR_ISAS, ck.sparse24_linear, x, packed, meta, b)
    assert got.dtype == torch.bfloat16 and got.shape == (m, n)
    assert torch.equal(_bits(got), _bits(ref.sparse24_bf16_linear(x, values, meta, b)))  # the exact model
    with ck.force_cpu_isa(VECTOR_ISAS[-1]):
        assert torch.equal(_bits(ck.sparse24_linear(x, values, meta, b)), _bits(got))  # unpacked values: same bits
        if bias:  # an fp32 bias of the same values: same bits
            assert torch.equal(_bits(ck.sparse24_linear(x, packed, meta, b.float())), _bits(got))
    if m >= TILE_MIN_ROWS:  # the tile path: hardware = model, within the bound, same bits unpacked
        tiles = _same_on(TILE_ISAS, ck.sparse24_linear, x, packed, meta, b)
        assert tiles.dtype == torch.bfloat16 and _within_bf16_bound(tiles, x, values, meta, b)
        with ck.force_cpu_isa("amx_emulated"):
            assert torch.equal(_bits(ck.sparse24_linear(x, values, meta, b)), _bits(tiles))
    want = torch.nn.functional.linear(x.double(), w.double(), None if b is None else b.double())
    # one bf16 rounding (2^-9 relative) plus the fp32 accumulation
    assert ((got.double() - want).abs()
            <= 2.0 ** -8 * want.abs() + 1e-5 * k * (x.double().abs() @ w.double().abs().T)).all()


def test_sparse24_bf16_tininess_after_rounding():
    """Sums next to 2^-126 (odd product -+2^-126, then an even product p): x86 FTZ flushes a sum
    whose value rounded with an unbounded exponent is below 2^-126, so -2^-126 + 2^-150 -> -0 but
    -2^-126 + 2^-151 (a tie, rounds to 2^-126) stays -2^-126. Every vector path equals the exact model (8 rows:
    the tile path accumulates as tdpbf16ps does, see test_sparse24_bf16_tiles_special_values)."""
    ps = [2.0 ** -150, 1.5 * 2.0 ** -151, 2.0 ** -151, 2.0 ** -152, 1.5 * 2.0 ** -150, -(2.0 ** -150), 2.0 ** -149, 0.0]
    x = torch.zeros(len(ps), 4, dtype=torch.float64)  # one group: no later +0 products turn -0 into +0
    x[:, 1] = 2.0 ** -63
    x[:, 0] = torch.tensor(ps, dtype=torch.float64) * 2.0 ** 75  # even product v0 * x0 = p
    x = x.bfloat16()
    w = torch.zeros(2, 4, dtype=torch.float64)
    w[:, 0] = 2.0 ** -75
    w[0, 1], w[1, 1] = -(2.0 ** -63), 2.0 ** -63  # odd product -2^-126 (column 0), +2^-126 (column 1)
    values, meta = ck.sparse24_compress(w.bfloat16())
    got = _bits(_same_on(VECTOR_ISAS, ck.sparse24_linear, x, ck.sparse24_bf16_pack(values, meta), meta, None))
    assert torch.equal(got, _bits(ref.sparse24_bf16_linear(x, values, meta)))
    neg_min, neg_zero = -0x7F80, -0x8000  # 0x8080 (-2^-126) and 0x8000 (-0.0) as int16
    assert got[:, 0].tolist() == [neg_zero, neg_zero, neg_min, neg_min, neg_zero, neg_min, neg_zero, neg_min]
    assert got[:, 1].tolist() == [0x80, 0x80, 0x80, 0x80, 0x80, 0, 0x80, 0x80]  # +2^-126 + p, p >= 0: no flush


def test_sparse24_bf16_special_values():
    """Denormal inputs (read as 0), denormal partial sums (flushed to 0), infinities, NaN (-> 0x7FC0),
    signed zeros, overflow: every vector path equals the exact model bit for bit (19 rows: the tile path is
    test_sparse24_bf16_tiles_special_values)."""
    n, k, m = 40, 36, 19
    g = torch.Generator().manual_seed(5)
    w = random_24(n, k, torch.bfloat16, seed=3)
    x = torch.randn(m, k, generator=g).bfloat16()
    tiny = torch.tensor([1e-39, -3e-39, 2.0 ** -126, -(2.0 ** -126)]).bfloat16()  # denormals, smallest normals
    x.view(-1)[::7] = tiny.repeat(x.numel() // 28 + 1)[: x.view(-1)[::7].numel()]
    x[1] = 2.0 ** -70  # products ~2^-140: denormal sums, flushed
    x[2, :8] = torch.tensor([float("inf"), 1, float("-inf"), 0, float("nan"), 1, 3e38, 3e38]).bfloat16()
    x[3] = -0.0
    x[4] = 3e38  # overflow to infinity
    values, meta = ck.sparse24_compress(w)
    values.view(-1)[::5] = torch.tensor(-1e-39).bfloat16()  # denormal weights: read as 0 (keeps meta valid)
    b = torch.randn(n, generator=g)
    b[0] = -0.0
    for bias in (None, b):
        got = _bits(_same_on(VECTOR_ISAS, ck.sparse24_linear, x, ck.sparse24_bf16_pack(values, meta), meta, bias))
        assert torch.equal(got, _bits(ref.sparse24_bf16_linear(x, values, meta, bias)))
    assert (got == 0x7FC0).any() and (got.view(torch.bfloat16).isinf()).any()


def test_sparse24_bf16_tiles_special_values():
    """The tile path on the inputs above: a row with an infinity or a NaN gives NaN (0x7FC0) or an infinity in
    its own row only, overflow gives infinities, denormal inputs and partial sums count as 0 (within the bound),
    and the hardware equals the scalar model bit for bit."""
    n, k, m = 40, 36, 19
    g = torch.Generator().manual_seed(5)
    w = random_24(n, k, torch.bfloat16, seed=3)
    x = torch.randn(m, k, generator=g).bfloat16()
    tiny = torch.tensor([1e-39, -3e-39, 2.0 ** -126, -(2.0 ** -126)]).bfloat16()
    x.view(-1)[::7] = tiny.repeat(x.numel() // 28 + 1)[: x.view(-1)[::7].numel()]
    x[1] = 2.0 ** -70
    x[2, :8] = torch.tensor([float("inf"), 1, float("-inf"), 0, float("nan"), 1, 3e38, 3e38]).bfloat16()
    x[3] = -0.0
    x[4] = 3e38
    values, meta = ck.sparse24_compress(w)
    values.view(-1)[::5] = torch.tensor(-1e-39).bfloat16()
    b = torch.randn(n, generator=g)
    for bias in (None, b):
        got = _same_on(TILE_ISAS, ck.sparse24_linear, x, ck.sparse24_bf16_pack(values, meta), meta, bias)
        finite_rows = [r for r in range(m) if r not in (2, 4)]
        assert _within_bf16_bound(got[finite_rows], x[finite_rows], values, meta, bias)
        row2 = _bits(got[2])
        assert bool(((row2 == 0x7FC0) | got[2].isinf()).all()) and bool((row2 == 0x7FC0).any())
        assert bool((got[4].isinf() | (_bits(got[4]) == 0x7FC0)).all()) and bool(got[4].isinf().any())
        assert not bool(got[finite_rows].isnan().any())


# ---------------------------------------------------------------- int8 linear


def _int8_case(m, n, k, x_dtype, per_channel, seed=0):
    lo, hi = ck.numerics.dtype_range(x_dtype)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(lo, hi + 1, (m, k), generator=g).to(x_dtype)
    w = random_24(n, k, torch.int8, seed=seed + 1)
    b = torch.randint(-(2**20), 2**20, (n,), generator=g, dtype=torch.int32)
    real = (torch.rand(n if per_channel else 1, generator=g, dtype=torch.float64) + 0.05) / (k * 20)
    m0, shift = ck.quantize_multiplier(real)
    return x, w, b, m0, shift


@pytest.mark.parametrize("m, n, k", SHAPES)
@pytest.mark.parametrize("x_dtype, x_zp", [(torch.uint8, 0), (torch.uint8, 131), (torch.int8, -7), (torch.int8, 127)])
def test_sparse24_int8_linear_matches_reference(m, n, k, x_dtype, x_zp):
    x, w, b, m0, shift = _int8_case(m, n, k, x_dtype, per_channel=(m % 2 == 1))
    values, meta = ck.sparse24_compress(w)
    packed = ck.sparse24_int8_pack(values, meta)
    for out_dtype, zp, qmin, qmax, rounding, bias in [
        (torch.int8, 3, -128, 127, "double", b), (torch.uint8, 120, 120, 255, "single", b),
        (torch.int32, -5, -(2**31), 2**31 - 1, "double", None),
    ]:
        want = ref.sparse24_int8_linear(x, x_zp, values, meta, bias, m0, shift, zp, qmin, qmax, out_dtype, rounding)
        # the same as the dense int8_linear on the decompressed weight
        assert torch.equal(want, ref.int8_linear(x, x_zp, w, bias, m0, shift, zp, qmin, qmax, out_dtype, rounding))
        got = run_on_every_isa(ck.sparse24_int8_linear, x, x_zp, packed, meta, bias, m0, shift, zp, qmin, qmax,
                               out_dtype, rounding)
        assert torch.equal(got, want), (out_dtype, rounding)
    got_raw = ck.sparse24_int8_linear(x, x_zp, values, meta, b, m0, shift, 0, -128, 127, torch.int8)
    assert torch.equal(got_raw, ref.sparse24_int8_linear(x, x_zp, values, meta, b, m0, shift, 0, -128, 127,
                                                         torch.int8))


def test_sparse24_int8_extremes_and_threads():
    k = 4096
    for xv, wv in [(-128, -127), (127, 127), (255, -127), (0, 127)]:
        dtype = torch.uint8 if xv >= 128 or xv == 0 else torch.int8
        x = torch.full((7, k), xv, dtype=torch.int64).to(dtype)
        w = torch.zeros(19, k, dtype=torch.int8)
        w[:, 1::4] = wv
        w[:, 2::4] = wv
        values, meta = ck.sparse24_compress(w)
        m0, shift = ck.quantize_multiplier(torch.tensor(1.0))
        want = ref.sparse24_int8_linear(x, 0, values, meta, None, m0, shift, 0, -(2**31), 2**31 - 1, torch.int32)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            got = run_on_every_isa(ck.sparse24_int8_linear, x, 0, values, meta, None, m0, shift, 0, -(2**31),
                                   2**31 - 1, torch.int32)
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(got, want)


# ---------------------------------------------------------------- opcheck / compile


def _f32_args():
    w = random_24(20, 24)
    values, meta = ck.sparse24_compress(w)
    return torch.randn(5, 24), values, meta, torch.randn(20)


def _int8_args():
    x, w, b, m0, shift = _int8_case(5, 20, 24, torch.uint8, True)
    values, meta = ck.sparse24_compress(w)
    return x, values, meta, b, m0, shift


def test_opcheck():
    x, values, meta, b = _f32_args()
    torch.library.opcheck(OPS.sparse24_compress, (ck.sparse24_decompress(values, meta),))
    torch.library.opcheck(OPS.sparse24_decompress, (values, meta))
    torch.library.opcheck(OPS.sparse24_f32_pack, (values, meta))
    torch.library.opcheck(OPS.sparse24_linear, (x, values, meta, b))
    torch.library.opcheck(OPS.sparse24_linear, (x, ck.sparse24_f32_pack(values, meta), meta, None))
    vb = values.bfloat16()
    torch.library.opcheck(OPS.sparse24_bf16_pack, (vb, meta))
    torch.library.opcheck(OPS.sparse24_linear, (x.bfloat16(), ck.sparse24_bf16_pack(vb, meta), meta, b.bfloat16()))
    xq, vq, mq, bq, m0, shift = _int8_args()
    torch.library.opcheck(OPS.sparse24_int8_pack, (vq, mq))
    for w in (vq, ck.sparse24_int8_pack(vq, mq)):
        torch.library.opcheck(OPS.sparse24_int8_linear,
                              (xq, 3, w, mq, bq, m0, shift, 1, -128, 127, torch.int8, "double"))


def test_torch_compile_fullgraph():
    x, values, meta, b = _f32_args()
    packed = ck.sparse24_f32_pack(values, meta)
    xq, vq, mq, bq, m0, shift = _int8_args()
    packed_q = ck.sparse24_int8_pack(vq, mq)

    packed_b = ck.sparse24_bf16_pack(values.bfloat16(), meta)

    def f(x, xq):
        y = ck.sparse24_linear(x, packed, meta, b)
        yq = ck.sparse24_int8_linear(xq, 3, packed_q, mq, bq, m0, shift, 0, -128, 127, torch.int8)
        yb = ck.sparse24_linear(x.bfloat16(), packed_b, meta, b)
        return y, yq, yb

    want = f(x, xq)
    got = torch.compile(f, fullgraph=True, backend="eager")(x, xq)
    assert all(torch.equal(g, w) for g, w in zip(got, want)) and got[2].dtype == torch.bfloat16


# ---------------------------------------------------------------- bad input


def test_bad_input_messages():
    x, values, meta, b = _f32_args()
    with pytest.raises(RuntimeError, match=r"sparse24_compress: K .* must be a positive multiple of 4.*K=6"):
        ck.sparse24_compress(torch.zeros(2, 6))
    with pytest.raises(RuntimeError, match=r"sparse24_compress: w is not 2:4 sparse: row 1, columns 4..7"):
        w = torch.zeros(2, 8)
        w[1, 4:7] = 1.0
        ck.sparse24_compress(w)
    with pytest.raises(RuntimeError, match="sparse24_compress: w must be 2-D"):
        ck.sparse24_compress(torch.zeros(8))
    with pytest.raises(RuntimeError, match=r"sparse24_decompress: meta must have shape \[20, 3\]"):
        ck.sparse24_decompress(values, meta[:, :2])
    with pytest.raises(RuntimeError, match="sparse24_decompress: meta must be Byte"):
        ck.sparse24_decompress(values, meta.to(torch.int8))
    with pytest.raises(RuntimeError, match="sparse24_decompress: meta is not a valid 2:4 metadata: row 0, group 1"):
        bad = meta.clone()
        bad[0, 0] = (1 | 3 << 2) | (0xF << 4)  # group 0 keeps (1, 3); group 1 says (3, 3)
        ck.sparse24_decompress(values, bad)
    with pytest.raises(RuntimeError, match="sparse24_decompress: meta is not a valid 2:4 metadata"):
        bad = ck.sparse24_compress(torch.zeros(1, 4))[1]
        bad[0, 0] |= 0x40  # non-zero padding nibble
        ck.sparse24_decompress(torch.zeros(1, 2), bad)
    with pytest.raises(RuntimeError, match="sparse24_linear: K mismatch: x has K=20"):
        ck.sparse24_linear(torch.randn(5, 20), values, meta)
    with pytest.raises(RuntimeError, match="sparse24_linear: x must be float32 or bfloat16 on the CPU, got Double"):
        ck.sparse24_linear(x.double(), values, meta)
    with pytest.raises(RuntimeError, match=r"sparse24_linear: values must be bf16 \[N, K/2\] or sparse24_bf16_pack.s "
                                           r"packed tensor \(with bf16 x\), got Float"):
        ck.sparse24_linear(x.bfloat16(), values, meta)
    vb = values.bfloat16()
    with pytest.raises(RuntimeError, match="sparse24_linear: with bf16 x, bias must be bf16 or fp32, got Double"):
        ck.sparse24_linear(x.bfloat16(), vb, meta, torch.zeros(20, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"sparse24_linear: bias must have shape \[20\], got \[3\]"):
        ck.sparse24_linear(x.bfloat16(), vb, meta, torch.zeros(3, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match=r"sparse24_linear: values is not a packed weight of any family \(no header"):
        ck.sparse24_linear(x.bfloat16(), torch.zeros(7, dtype=torch.bfloat16), meta)
    with pytest.raises(RuntimeError, match="sparse24_linear: K mismatch: x has K=20"):
        ck.sparse24_linear(torch.randn(5, 20).bfloat16(), vb, meta)
    with pytest.raises(RuntimeError, match="sparse24_linear: meta of shape .* does not belong to the packed weight"):
        ck.sparse24_linear(x.bfloat16(), ck.sparse24_bf16_pack(vb, meta), meta[:3])
    with pytest.raises(RuntimeError, match="sparse24_linear: packed values must be contiguous"):
        p = ck.sparse24_bf16_pack(vb, meta)
        ck.sparse24_linear(x.bfloat16(), torch.stack((p, p), 1)[:, 0], meta)
    with pytest.raises(RuntimeError, match="sparse24_bf16_pack: values must be BFloat16"):
        ck.sparse24_bf16_pack(values, meta)
    with pytest.raises(RuntimeError, match="sparse24_bf16_pack: values must have at least one row"):
        ck.sparse24_bf16_pack(torch.zeros(0, 2, dtype=torch.bfloat16), torch.zeros(0, 1, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match=r"sparse24_linear: values must be float32 \[N, K/2\] or sparse24_f32_pack's "
                                           r"packed tensor, got Double of shape \[20, 12\]"):
        ck.sparse24_linear(x, values.double(), meta)
    with pytest.raises(RuntimeError, match=r"sparse24_linear: bias must have shape \[20\]"):
        ck.sparse24_linear(x, values, meta, torch.zeros(3))
    with pytest.raises(RuntimeError, match="sparse24_linear: bias must be Float"):
        ck.sparse24_linear(x, values, meta, torch.zeros(20, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"sparse24_linear: values is not a packed weight of any family \(no header"):
        ck.sparse24_linear(x, torch.zeros(7), meta)
    with pytest.raises(RuntimeError, match="sparse24_linear: meta of shape .* does not belong to the packed weight"):
        ck.sparse24_linear(x, ck.sparse24_f32_pack(values, meta), meta[:3])
    with pytest.raises(RuntimeError, match="sparse24_linear: packed values must be contiguous"):
        p = ck.sparse24_f32_pack(values, meta)
        ck.sparse24_linear(x, torch.stack((p, p), 1)[:, 0], meta)
    with pytest.raises(RuntimeError, match="sparse24_f32_pack: values must have at least one row"):
        ck.sparse24_f32_pack(torch.zeros(0, 2), torch.zeros(0, 1, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="sparse24_linear: x must be 2-D"):
        ck.sparse24_linear(x[0], values, meta)


def test_bad_int8_input_messages():
    xq, vq, mq, bq, m0, shift = _int8_args()
    args = (m0, shift, 0, -128, 127, torch.int8)
    with pytest.raises(RuntimeError, match="sparse24_int8_linear: x must be int8 or uint8"):
        ck.sparse24_int8_linear(xq.float(), 0, vq, mq, bq, *args)
    with pytest.raises(RuntimeError, match=r"sparse24_int8_linear: x_zero_point must be in \[0, 255\]"):
        ck.sparse24_int8_linear(xq, -1, vq, mq, bq, *args)
    with pytest.raises(RuntimeError, match=r"sparse24_int8_linear: values must be int8 \[N, K/2\] or an int32 packed"):
        ck.sparse24_int8_linear(xq, 0, vq.float(), mq, bq, *args)
    with pytest.raises(RuntimeError, match=r"sparse24_int8_linear: values is not a packed weight of any family \(no "
                                           r"header"):
        ck.sparse24_int8_linear(xq, 0, torch.zeros(5, dtype=torch.int32), mq, bq, *args)
    packed = ck.sparse24_int8_pack(vq, mq)
    with pytest.raises(RuntimeError, match="sparse24_int8_linear: meta of shape .* does not belong"):
        ck.sparse24_int8_linear(xq, 0, packed, mq[:2], bq, *args)
    with pytest.raises(RuntimeError, match="sparse24_int8_linear: packed values must be contiguous"):
        ck.sparse24_int8_linear(xq, 0, torch.stack((packed, packed), 1)[:, 0], mq, bq, *args)
    with pytest.raises(RuntimeError, match="sparse24_int8_linear: K mismatch: x has K=8"):
        ck.sparse24_int8_linear(xq[:, :8], 0, packed, mq, bq, *args)
    with pytest.raises(RuntimeError, match=r"sparse24_int8_linear: bias must have shape \[20\]"):
        ck.sparse24_int8_linear(xq, 0, packed, mq, bq[:3], *args)
    with pytest.raises(RuntimeError, match="sparse24_int8_linear: bias must be Int"):
        ck.sparse24_int8_linear(xq, 0, packed, mq, bq.float(), *args)
    with pytest.raises(RuntimeError, match="sparse24_int8_linear: m0 and shift must have 1"):
        ck.sparse24_int8_linear(xq, 0, packed, mq, bq, m0[:3], shift[:3], 0, -128, 127, torch.int8)
    with pytest.raises(RuntimeError, match="sparse24_int8_linear: out_dtype must be int8, uint8 or int32"):
        ck.sparse24_int8_linear(xq, 0, packed, mq, bq, m0, shift, 0, -128, 127, torch.float32)
    with pytest.raises(RuntimeError, match='sparse24_int8_linear: rounding must be "double" or "single"'):
        ck.sparse24_int8_linear(xq, 0, packed, mq, bq, m0, shift, 0, -128, 127, torch.int8, "up")
    with pytest.raises(RuntimeError, match="sparse24_int8_linear: x must be 2-D"):
        ck.sparse24_int8_linear(xq[0], 0, packed, mq, bq, *args)
    with pytest.raises(RuntimeError, match="sparse24_int8_pack: K=65796 could overflow the int32 accumulator"):
        ck.sparse24_int8_pack(*ck.sparse24_compress(torch.zeros(1, 65796, dtype=torch.int8)))
    with pytest.raises(RuntimeError, match="sparse24_int8_pack: values must be Char"):
        ck.sparse24_int8_pack(vq.float(), mq)
    with pytest.raises(RuntimeError, match="sparse24_int8_pack: values must have at least one row"):
        ck.sparse24_int8_pack(torch.zeros(0, 2, dtype=torch.int8), torch.zeros(0, 1, dtype=torch.uint8))


# ---------------------------------------------------------------- modules and convert_


def _pruned(module):
    with torch.no_grad():  # a conv's groups of four are input channels at one kernel tap
        module.weight.mul_(ck.prune.mask_2to4(module.weight))
    return module


@pytest.mark.parametrize("int8", [False, True])
def test_sparse_linear_module(int8):
    torch.manual_seed(0)
    lin = _pruned(torch.nn.Linear(64, 24))
    sl = ck.SparseLinear.from_float(lin, int8=int8)
    x = torch.randn(3, 5, 64)
    want = lin(x)
    got = sl(x)
    assert got.shape == (3, 5, 24)
    tol = 5e-2 if int8 else 1e-5
    assert torch.allclose(got, want, atol=tol, rtol=tol)
    assert torch.allclose(sl.dense_weight(), lin.weight, atol=lin.weight.abs().max().item() / 100 if int8 else 0)
    assert (sl.dense_weight()[lin.weight == 0] == 0).all()  # pruned weights stay zero through quantization
    # state dict round trip (the packed buffer is rebuilt, not stored)
    sd = sl.state_dict()
    assert "packed" not in sd and set(sd) >= {"values", "meta"}
    other = ck.SparseLinear(64, 24, int8=int8)
    other.load_state_dict(sd)
    assert torch.equal(other(x), got)
    assert torch.equal(copy.deepcopy(sl)(x), got)
    assert "int8=" + str(int8) in repr(sl)
    # values (K/2 per row) + metadata (K/8 bytes per row) + per-channel fp32 scales for int8
    assert sl.compressed_bytes() == (24 * (32 + 8 + 4) if int8 else 24 * (32 * 4 + 8))


def test_sparse_linear_module_bf16():
    """module.bfloat16() runs the bf16 kernel: the bits of sparse24_linear on the bf16 values."""
    torch.manual_seed(0)
    lin = _pruned(torch.nn.Linear(64, 24))
    sl = ck.SparseLinear.from_float(lin).bfloat16()
    assert sl.packed.dtype == torch.bfloat16 and sl.values.dtype == torch.bfloat16
    x = torch.randn(3, 5, 64).bfloat16()
    got = sl(x)
    assert got.dtype == torch.bfloat16 and got.shape == (3, 5, 24)
    want = ck.sparse24_linear(x.reshape(15, 64), sl.values, sl.meta, sl.bias).reshape(3, 5, 24)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    assert torch.allclose(got.float(), lin.bfloat16()(x).float(), atol=3e-2, rtol=3e-2)
    other = ck.SparseLinear(64, 24).bfloat16()
    other.load_state_dict(sl.state_dict())
    assert torch.equal(other(x).view(torch.int16), got.view(torch.int16))
    assert torch.allclose(sl.float()(x.float()), lin.float()(x.float()), atol=3e-2)  # back to fp32: fp32 kernel


@pytest.mark.parametrize("int8", [False, True])
def test_sparse_modules_in_bf16_models(int8):
    """model.bfloat16() keeps SparseConv2d (fp32 or int8 kernels inside, bf16 bias) and int8
    SparseLinear working: bf16 in and out, close to the bf16 dense layers."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 8, 3, padding=1)
    rows = ck.sparse24_layout.weight_rows(conv.weight.data)
    conv.weight.data = ck.sparse24_layout.weight_from_rows(rows * ck.prune.nm_mask(rows.abs(), 2, 4), conv.weight.shape)
    sc = ck.SparseConv2d.from_float(conv, int8=int8).bfloat16()
    x = torch.randn(2, 16, 8, 8).bfloat16()
    y = sc(x)
    assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), conv.bfloat16()(x).float(), atol=0.1, rtol=0.05)
    lin = _pruned(torch.nn.Linear(64, 24))
    sl = ck.SparseLinear.from_float(lin, int8=int8).bfloat16()
    xl = torch.randn(5, 64).bfloat16()
    assert sl(xl).dtype == torch.bfloat16
    assert torch.allclose(sl(xl).float(), lin.bfloat16()(xl).float(), atol=0.1, rtol=0.05)


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_sparse_conv_module(int8, stride, padding, dilation):
    torch.manual_seed(1)
    conv = _pruned(torch.nn.Conv2d(8, 12, 3, stride=stride, padding=padding, dilation=dilation))
    sc = ck.SparseConv2d.from_float(conv, int8=int8)
    x = torch.randn(2, 8, 11, 9)
    want = conv(x)
    got = sc(x)
    assert got.shape == want.shape
    tol = 6e-2 if int8 else 1e-5
    assert torch.allclose(got, want, atol=tol, rtol=tol)


def test_sparse_modules_refuse_bad_weights():
    lin = torch.nn.Linear(8, 4)
    with pytest.raises(ValueError, match="SparseLinear: the weight is not 2:4 sparse"):
        ck.SparseLinear.from_float(lin)
    with pytest.raises(ValueError, match="K = 6 .* is not a multiple of 4"):
        ck.SparseLinear(6, 4)
    with pytest.raises(ValueError, match="SparseConv2d: groups=2 is not supported"):
        ck.SparseConv2d.from_float(torch.nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(TypeError, match="expected nn.Linear"):
        ck.SparseLinear.from_float(torch.nn.Conv2d(4, 4, 3))
    sl = ck.SparseLinear(8, 4, int8=True)
    with pytest.raises(ValueError, match=r"SparseLinear at '<root>': load_state_dict: _extra_state\['int8'\] = False: "
                                         r"expected True"):
        sl.load_state_dict(ck.SparseLinear(8, 4).state_dict())


def test_convert_reports_skipped_layers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, groups=2, padding=1),
                                torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 16, 10))
    report = ck.convert_(model, ck.Sparse24Config(), inplace=False)
    reasons = {name: why for name, _, why in report.skipped}
    assert reasons["0"] == "K = kh * kw * in_channels = 27 is not a multiple of 4 (2:4 needs groups of four)"
    assert reasons["1"] == "groups=2: only groups=1 convolutions are supported"
    assert reasons["2"].startswith("weight is not 2:4 sparse")
    assert report.converted == []
    report = ck.convert_(model, ck.Sparse24Config(int8=True, prune=True), inplace=False)
    assert [name for name, _, _ in report.converted] == ["2", "4"]
    x = torch.randn(2, 3, 4, 4)
    pruned = copy.deepcopy(model)
    _pruned(pruned[2])
    _pruned(pruned[4])
    assert torch.allclose(report.model(x), pruned(x), atol=5e-2, rtol=5e-2)
    assert "SparseConv2d" in str(report)
