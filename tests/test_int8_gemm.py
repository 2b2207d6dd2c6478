"""int8 GEMM / linear: exact against the reference on every ISA path and thread count, opcheck,
torch.compile, and a test for every argument check."""

import pytest
import torch

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.testing import rand_int as rand_int8
from compress_kernels.testing import rand_weight, run_on_every_isa

OPS = torch.ops.compress_kernels
SHAPES = [  # (M, N, K): row tails (M % 6), column tails (N % 16, N % 64) and depth tails (K % 4)
    (1, 1, 1), (1, 64, 64), (2, 17, 3), (5, 15, 5), (6, 16, 4), (7, 63, 130), (13, 65, 131),
    (12, 130, 257), (33, 200, 64), (8, 70, 40), (8, 200, 9), (14, 48, 33),
]


@pytest.mark.parametrize("m, n, k", SHAPES)
@pytest.mark.parametrize("x_dtype", [torch.int8, torch.uint8])
def test_int8_gemm_matches_reference(m, n, k, x_dtype):
    lo, hi = ck.numerics.dtype_range(x_dtype)
    a = rand_int8(m, k, lo=lo, hi=hi, dtype=x_dtype)
    b = rand_int8(n, k)  # the full int8 range, -128 included
    want = ref.int8_gemm(a, b)
    assert torch.equal(run_on_every_isa(ck.int8_gemm, a, b), want)
    assert torch.equal(run_on_every_isa(ck.int8_gemm, a, ck.int8_pack_weight(b)), want)


def test_extreme_values_do_not_overflow_the_microkernel():
    k = 4096
    for xv, wv in [(-128, -128), (127, -128), (-128, 127), (255, -128), (255, 127)]:
        dtype = torch.uint8 if xv == 255 else torch.int8
        a = torch.full((7, k), xv, dtype=torch.int64).to(dtype)
        b = torch.full((19, k), wv, dtype=torch.int8)
        assert torch.equal(run_on_every_isa(ck.int8_gemm, a, b), ref.int8_gemm(a, b))


def _linear_case(m, n, k, x_dtype, per_channel, bias, seed=0):
    lo, hi = ck.numerics.dtype_range(x_dtype)
    x = rand_int8(m, k, lo=lo, hi=hi, dtype=x_dtype, seed=seed)
    w = rand_weight(n, k, seed=seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    b = torch.randint(-(2**20), 2**20, (n,), generator=g, dtype=torch.int32) if bias else None
    real = (torch.rand(n if per_channel else 1, generator=g, dtype=torch.float64) + 0.05) / (k * 40)
    m0, shift = ck.quantize_multiplier(real)
    return x, w, b, m0, shift


@pytest.mark.parametrize("m, n, k", SHAPES)
@pytest.mark.parametrize("x_dtype, x_zp", [(torch.uint8, 0), (torch.uint8, 131), (torch.int8, -7), (torch.int8, 127)])
@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_linear_matches_reference(m, n, k, x_dtype, x_zp, per_channel):
    x, w, b, m0, shift = _linear_case(m, n, k, x_dtype, per_channel, bias=True)
    packed = ck.int8_pack_weight(w)
    for out_dtype, zp, qmin, qmax, rounding in [
        (torch.int8, 3, -128, 127, "double"), (torch.uint8, 120, 120, 255, "double"),
        (torch.uint8, 0, 0, 255, "single"), (torch.int32, -5, -(2**31), 2**31 - 1, "double"),
        (torch.int8, -128, -128, -100, "single"),
    ]:
        want = ref.int8_linear(x, x_zp, w, b, m0, shift, zp, qmin, qmax, out_dtype, rounding)
        got = run_on_every_isa(ck.int8_linear, x, x_zp, packed, b, m0, shift, zp, qmin, qmax, out_dtype, rounding)
        assert torch.equal(got, want), (out_dtype, zp, qmin, qmax, rounding)
    # the raw (unpacked) weight gives the same result
    got_raw = ck.int8_linear(x, x_zp, w, None, m0, shift, 0, -128, 127, torch.int8)
    assert torch.equal(got_raw, ref.int8_linear(x, x_zp, w, None, m0, shift, 0, -128, 127, torch.int8))


def test_int8_linear_bias_wraps_like_int32_hardware():
    x = torch.full((2, 8), 255, dtype=torch.uint8)
    w = torch.full((3, 8), 127, dtype=torch.int8)
    b = torch.tensor([2**31 - 1, -(2**31), 0], dtype=torch.int32)
    want = ref.int8_linear(x, 0, w, b, torch.tensor([2**30]), torch.tensor([0]), 0, -(2**31), 2**31 - 1, torch.int32)
    got = run_on_every_isa(ck.int8_linear, x, 0, w, b, 2**30, 0, 0, -(2**31), 2**31 - 1, torch.int32)
    assert torch.equal(got, want)


@pytest.mark.parametrize("m, n, k", [(1, 70, 33), (9, 33, 64), (40, 17, 100)])
@pytest.mark.parametrize("x_zp", [0, 5])
def test_int8_linear_float_is_bit_exact(m, n, k, x_zp):
    x, w, _, _, _ = _linear_case(m, n, k, torch.int8, True, False)
    g = torch.Generator().manual_seed(3)
    x_scale = torch.rand(m, generator=g) * 0.1
    w_scale = torch.rand(n, generator=g) * 0.01
    bias = torch.randn(n, generator=g)
    for xs, ws, bb in [(x_scale, w_scale, bias), (x_scale[:1].clone(), w_scale, None),
                       (x_scale, w_scale[:1].clone(), bias)]:
        want = ref.int8_linear_float(x, x_zp, w, xs, ws, bb)
        got = run_on_every_isa(ck.int8_linear_float, x, x_zp, ck.int8_pack_weight(w), xs, ws, bb)
        assert torch.equal(got, want)


def test_quantize_rows_is_bit_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(17, 301, generator=g) * torch.logspace(-3, 3, 17)[:, None]
    x[3] = 0  # an all-zero row gets scale 1
    rq, rs = ref.quantize_rows(x)
    for x_case, (want_q, want_s) in [(x, (rq, rs)), (x[:, :13], ref.quantize_rows(x[:, :13].contiguous()))]:
        q = run_on_every_isa(lambda t: ck.quantize_rows(t)[0], x_case)
        s = run_on_every_isa(lambda t: ck.quantize_rows(t)[1], x_case)
        assert torch.equal(q, want_q) and torch.equal(s, want_s)
    s = ck.quantize_rows(x)[1]
    assert s[3].item() == 1.0
    with pytest.raises(RuntimeError, match="qmax must be in \\[1, 127\\], got 128"):
        ck.quantize_rows(x, 128)
    with pytest.raises(RuntimeError, match="x must be Float, got Double"):
        ck.quantize_rows(x.double())


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_do_not_depend_on_thread_count(threads):
    x, w, b, m0, shift = _linear_case(50, 300, 200, torch.uint8, True, True)
    want = ref.int8_linear(x, 17, w, b, m0, shift, 1, -128, 127, torch.int8)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert torch.equal(run_on_every_isa(ck.int8_linear, x, 17, w, b, m0, shift, 1), want)
    finally:
        torch.set_num_threads(old)


def test_pack_weight_layout():
    w = rand_weight(20, 6)
    packed = ck.int8_pack_weight(w)
    assert packed.dtype == torch.int32 and packed.shape == ck.ops.packed_shape("int8_pack_weight", 20, 6)
    packed = ck.ops.packed_payload(packed, "int8_pack_weight")  # after the header rows
    assert packed.shape == (20, 2 + 2)
    k_pad = 8
    data = packed.flatten()[: 20 * k_pad // 4].view(torch.int8)
    # block 0 holds rows 0..15, group 0 = k 0..3 of each row, 4 bytes per row
    assert torch.equal(data[:64].reshape(16, 4), w[:16, :4])
    # block 1 is the 4-row tail: group 1 = k 4..5 then two zero pad bytes
    tail = data[16 * k_pad:].reshape(2, 4, 4)
    assert torch.equal(tail[1, :, :2], w[16:, 4:6]) and not tail[1, :, 2:].any()
    trailer = packed.flatten()[20 * k_pad // 4:]
    assert torch.equal(trailer[:20], w.int().sum(1)) and (trailer[20:] == 6).all()


def test_empty_rows_and_non_contiguous_inputs():
    w = rand_weight(8, 16)
    assert ck.int8_gemm(torch.zeros(0, 16, dtype=torch.int8), w).shape == (0, 8)
    x = rand_int8(16, 10).T  # [10, 16], non-contiguous
    assert torch.equal(ck.int8_gemm(x, w), ref.int8_gemm(x, w))
    x_strided = rand_int8(10, 40)[:, ::2]  # stride 2 in K
    assert torch.equal(ck.int8_gemm(x_strided, rand_weight(8, 20)), ref.int8_gemm(x_strided, rand_weight(8, 20)))


# ---- paths of the AVX2 kernel the cases above do not reach (int8_gemm_avx2.cpp)


def test_large_row_chunks_and_row_strides():
    # One thread, one 64-column panel: the plan's row chunk is ~M/4 rows, here over 2 MB once widened
    # to int16, so the AVX2 kernel widens each 4-row tile on its own instead of the whole chunk. The
    # x view has a row stride larger than K (read in place, not copied).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for x_dtype, x_zp in [(torch.uint8, 77), (torch.int8, -3)]:
            lo, hi = ck.numerics.dtype_range(x_dtype)
            x = rand_int8(1003, 4203, lo=lo, hi=hi, dtype=x_dtype, seed=5)[:, :4201]
            w = rand_int8(29, 4201, seed=6)  # a full 16-row block and a 13-row tail
            m0, shift = ck.quantize_multiplier(torch.rand(29, dtype=torch.float64) / 4201 / 200 + 1e-7)
            b = torch.randint(-(2**20), 2**20, (29,), dtype=torch.int32)
            packed = ck.int8_pack_weight(w)
            want = ref.int8_linear(x, x_zp, w, b, m0, shift, 5, -128, 127, torch.int8)
            assert torch.equal(run_on_every_isa(ck.int8_linear, x, x_zp, packed, b, m0, shift, 5), want)
            assert torch.equal(run_on_every_isa(ck.int8_gemm, x, packed), ref.int8_gemm(x, w))
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("m, n, k", [(5, 29, 20), (4, 13, 7), (11, 45, 64)])
def test_int8_linear_float_partial_blocks(m, n, k):
    # column tails of 9..15 and 1..8 rows in the float epilogue (masked loads and stores)
    x, w, _, _, _ = _linear_case(m, n, k, torch.uint8, True, False, seed=4)
    g = torch.Generator().manual_seed(5)
    x_scale, w_scale, bias = torch.rand(m, generator=g), torch.rand(n, generator=g), torch.randn(n, generator=g)
    want = ref.int8_linear_float(x, 3, w, x_scale, w_scale, bias)
    assert torch.equal(run_on_every_isa(ck.int8_linear_float, x, 3, ck.int8_pack_weight(w), x_scale, w_scale, bias),
                       want)


# ---- bad input


def _lin(x=None, x_zp=0, w=None, bias=None, m0=2**30, shift=-10, zp=0, qmin=-128, qmax=127,
         out_dtype=torch.int8, rounding="double"):
    x = rand_int8(4, 8, dtype=torch.int8) if x is None else x
    w = rand_weight(5, 8) if w is None else w
    return ck.int8_linear(x, x_zp, w, bias, m0, shift, zp, qmin, qmax, out_dtype, rounding)


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=torch.zeros(4, 8)), "x must be int8 or uint8, got Float"),
    (dict(x=torch.zeros(2, 4, 8, dtype=torch.int8)), "x must be 2-D, got 3-D"),
    (dict(x_zp=200), "x_zero_point must be in \\[-128, 127\\] for Char input, got 200"),
    (dict(x=torch.zeros(4, 8, dtype=torch.uint8), x_zp=-1), "x_zero_point must be in \\[0, 255\\]"),
    (dict(x=torch.zeros(4, 0, dtype=torch.int8)), "x must have K > 0 columns"),
    (dict(w=torch.zeros(5, 8)), "w must be int8 \\[N, K\\] or a packed int32 weight"),
    (dict(w=torch.zeros(5, 9, dtype=torch.int8)), "K mismatch: x has K=8 but w has shape \\[5, 9\\]"),
    (dict(w=torch.zeros(5, 8, 1, dtype=torch.int8)), "w must be 2-D, got 3-D"),
    (dict(w=torch.zeros(5, 7, dtype=torch.int32)), "w is not a packed weight of any family \\(no header"),
    (dict(bias=torch.zeros(5)), "bias must be Int, got Float"),
    (dict(bias=torch.zeros(4, dtype=torch.int32)), "bias must have shape \\[5\\], got \\[4\\]"),
    (dict(m0=[2**30] * 3, shift=[0] * 3), "must have 1 \\(per-tensor\\) or 5 \\(per-channel\\) elements, got 3"),
    (dict(shift=40), "shift must be in \\[-31, 30\\]"),
    (dict(out_dtype=torch.float32), "out_dtype must be int8, uint8 or int32"),
    (dict(zp=300, out_dtype=torch.uint8, qmin=0, qmax=255), "zero_point must be in \\[0, 255\\]"),
    (dict(rounding="up"), 'rounding must be "double" or "single"'),
])
def test_int8_linear_refuses(kwargs, message):
    with pytest.raises(RuntimeError, match=message):
        _lin(**kwargs)


def test_packed_weight_for_another_k_is_refused():
    packed = ck.int8_pack_weight(rand_weight(5, 7))  # K=7 pads to 8, same width as K=8
    with pytest.raises(RuntimeError, match=r"w is an int8_pack_weight \(N=5, K=7\), expected an int8_pack_weight for "
                                           r"K=8 \(from x\)"):
        _lin(w=packed)


def test_depth_that_could_overflow_is_refused():
    k = 65794  # 65794 * 255 * 128 > 2^31 - 1
    with pytest.raises(RuntimeError, match="K=65794 could overflow the int32 accumulator"):
        ck.int8_gemm(torch.zeros(1, k, dtype=torch.int8), torch.zeros(1, k, dtype=torch.int8))
    with pytest.raises(RuntimeError, match="K=65794 could overflow"):
        ck.int8_pack_weight(torch.zeros(1, k, dtype=torch.int8))
    ck.int8_gemm(torch.zeros(1, k - 1, dtype=torch.int8), torch.zeros(1, k - 1, dtype=torch.int8))


@pytest.mark.parametrize("kwargs, message", [
    (dict(x_scale=torch.ones(3)), "x_scale must have 1 or M=4 elements"),
    (dict(w_scale=torch.ones(2)), "w_scale must have 1 or N=5 elements"),
    (dict(x_scale=torch.ones(4, dtype=torch.float64)), "x_scale must be Float, got Double"),
    (dict(bias=torch.ones(5, dtype=torch.int32)), "bias must be Float, got Int"),
    (dict(bias=torch.ones(6)), "bias must have shape \\[5\\]"),
])
def test_int8_linear_float_refuses(kwargs, message):
    args = dict(x_scale=torch.ones(4), w_scale=torch.ones(5), bias=None) | kwargs
    with pytest.raises(RuntimeError, match=message):
        ck.int8_linear_float(rand_int8(4, 8), 0, rand_weight(5, 8), args["x_scale"], args["w_scale"], args["bias"])


def test_pack_weight_refuses():
    with pytest.raises(RuntimeError, match="w must be Char, got Float"):
        ck.int8_pack_weight(torch.zeros(3, 4))
    with pytest.raises(RuntimeError, match="w must have at least one row and one column"):
        ck.int8_pack_weight(torch.zeros(0, 4, dtype=torch.int8))
    with pytest.raises(RuntimeError, match="w must be 2-D, got 1-D"):
        ck.int8_pack_weight(torch.zeros(4, dtype=torch.int8))


# ---- opcheck and torch.compile


def test_opcheck():
    x, w, b, m0, shift = _linear_case(7, 20, 12, torch.uint8, True, True)
    packed = ck.int8_pack_weight(w)
    torch.library.opcheck(OPS.int8_pack_weight.default, (w,))
    torch.library.opcheck(OPS.int8_gemm.default, (x, w))
    torch.library.opcheck(OPS.int8_gemm.default, (x, packed))
    torch.library.opcheck(OPS.int8_linear.default, (x, 3, packed, b, m0, shift, 1, -128, 127, torch.int8, "double"))
    torch.library.opcheck(OPS.int8_linear.default, (x, 3, w, None, m0[:1].clone(), shift[:1].clone(), 0, 0, 255,
                                                     torch.uint8, "single"))
    torch.library.opcheck(OPS.int8_linear_float.default, (x, 0, packed, torch.rand(7), torch.rand(20), torch.rand(20)))
    torch.library.opcheck(OPS.quantize_rows.default, (torch.randn(5, 9), 127))


def test_compile_fullgraph():
    x, w, b, m0, shift = _linear_case(9, 20, 12, torch.uint8, True, True)
    packed = ck.int8_pack_weight(w)

    def f(x, packed, b, m0, shift):
        return ck.int8_linear(x, 3, packed, b, m0, shift, 1, -128, 127, torch.int8)

    compiled = torch.compile(f, fullgraph=True)
    assert torch.equal(compiled(x, packed, b, m0, shift), f(x, packed, b, m0, shift))
