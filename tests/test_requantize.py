"""Fixed-point requantization: bit-exact against the int64 reference (itself checked against a
literal Python transcription of gemmlowp / TFLite), on every shift, edge values and fuzz."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.testing import ISAS, run_on_every_isa

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


# ---- a literal transcription of gemmlowp / TFLite on Python ints: checks the reference itself


def py_srdhm(a, b):
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else (1 - (1 << 30))
    return int((ab + nudge) / (1 << 31)) if abs(ab + nudge) < 2**52 else _trunc_div(ab + nudge, 1 << 31)


def _trunc_div(a, b):
    q = abs(a) // b
    return q if a >= 0 else -q


def py_rdbpot(x, e):
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def py_mbqm(x, m0, shift, rounding):
    if rounding == "double":
        left, right = max(shift, 0), max(-shift, 0)
        shifted = min(max(x * (1 << left), INT32_MIN), INT32_MAX)
        return py_rdbpot(py_srdhm(shifted, m0), right)
    total = 31 - shift
    return min(max((x * m0 + (1 << (total - 1))) >> total, INT32_MIN), INT32_MAX)


def edge_values() -> list[int]:
    """gemmlowp-style edges: 0, +-2^k, +-2^k +- 1, the int32 extremes and their neighbours."""
    vals = {0, 1, -1, INT32_MIN, INT32_MIN + 1, INT32_MIN + 2, INT32_MAX, INT32_MAX - 1, INT32_MAX - 2}
    for k in range(31):
        for v in (1 << k, (1 << k) + 1, (1 << k) - 1, 3 << k if k < 29 else 1 << k):
            vals.update({v, -v})
    return sorted(v for v in vals if INT32_MIN <= v <= INT32_MAX)


EDGE_X = edge_values()
EDGE_M0 = [0, 1 << 30, (1 << 30) + 1, 1518500250, 1762037865, (1 << 31) - 2, (1 << 31) - 1]
ALL_SHIFTS = list(range(-31, 31))


def test_reference_matches_literal_gemmlowp():
    xs = EDGE_X[::3]
    for rounding in ("double", "single"):
        for shift in ALL_SHIFTS[::5] + [30, -31]:
            for m0 in EDGE_M0:
                got = ref.multiply_by_quantized_multiplier(torch.tensor(xs), torch.tensor(m0),
                                                           torch.tensor(shift), rounding)
                want = [py_mbqm(x, m0, shift, rounding) for x in xs]
                assert got.tolist() == want, (rounding, shift, m0)


def test_ties_round_as_specified(isa):
    # m0 = 2^30, shift = -1 is the multiplier 1/4: x = 2 -> 0.5, x = -2 -> -0.5, x = 6 -> 1.5.
    # 4 values run the scalar tail of every SIMD path; the repeated copy (67 values) runs the vector body too.
    x = torch.tensor([2, -2, 6, -6] * 17, dtype=torch.int32)[:67]
    double = ck.requantize(x, 1 << 30, -1, 0, INT32_MIN, INT32_MAX, torch.int32, "double")
    single = ck.requantize(x, 1 << 30, -1, 0, INT32_MIN, INT32_MAX, torch.int32, "single")
    # double: the high mul is exact (x / 2), RoundingDivideByPOT rounds ties away from zero.
    assert double.tolist() == ([1, -1, 2, -2] * 17)[:67]
    # single: one rounding, ties toward +infinity.
    assert single.tolist() == ([1, 0, 2, -1] * 17)[:67]
    for n in (4, 16, 17):  # lengths at and around one vector
        got = ck.requantize(x[:n], 1 << 30, -1, 0, INT32_MIN, INT32_MAX, torch.int32, "double")
        assert got.tolist() == double.tolist()[:n]


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_every_shift_on_edge_values_per_tensor(rounding):
    acc = torch.tensor(EDGE_X, dtype=torch.int32)
    for shift in ALL_SHIFTS:
        for m0 in EDGE_M0:
            want = ref.requantize(acc, torch.tensor([m0]), torch.tensor([shift]), 0, INT32_MIN, INT32_MAX,
                                  torch.int32, rounding)
            got = run_on_every_isa(ck.requantize, acc, m0, shift, 0, INT32_MIN, INT32_MAX, torch.int32,
                                   rounding)
            assert torch.equal(got, want), (rounding, shift, m0)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_every_shift_per_channel(rounding):
    # One channel per (shift, m0) pair, every edge value in every channel; 62 * 7 channels is not
    # a multiple of 16, so the SIMD tail is exercised too.
    pairs = [(s, m) for s in ALL_SHIFTS for m in EDGE_M0]
    shift = torch.tensor([p[0] for p in pairs], dtype=torch.int32)
    m0 = torch.tensor([p[1] for p in pairs], dtype=torch.int32)
    acc = torch.tensor(EDGE_X, dtype=torch.int32)[:, None].expand(-1, len(pairs)).contiguous()
    want = ref.requantize(acc, m0, shift, 0, INT32_MIN, INT32_MAX, torch.int32, rounding)
    got = run_on_every_isa(ck.requantize, acc, m0, shift, 0, INT32_MIN, INT32_MAX, torch.int32, rounding)
    assert torch.equal(got, want)


@pytest.mark.parametrize("out_dtype", [torch.int8, torch.uint8])
def test_zero_points_and_clamps(out_dtype):
    lo, hi = ck.numerics.dtype_range(out_dtype)
    acc = torch.arange(-3000, 3000, 7, dtype=torch.int32)
    m0, shift = ck.quantize_multiplier(0.037)
    for zp in range(lo, hi + 1, 3):
        for qmin, qmax in [(lo, hi), (zp, hi), (max(lo, zp - 5), min(hi, zp + 9))]:
            want = ref.requantize(acc, m0, shift, zp, qmin, qmax, out_dtype)
            got = run_on_every_isa(ck.requantize, acc, m0, shift, zp, qmin, qmax, out_dtype)
            assert torch.equal(got, want), (zp, qmin, qmax)


def test_int32_output_with_zero_point_does_not_overflow():
    acc = torch.tensor([INT32_MAX, INT32_MIN, 0], dtype=torch.int32)
    got = run_on_every_isa(ck.requantize, acc, (1 << 31) - 1, 0, 1000, INT32_MIN, INT32_MAX, torch.int32)
    want = ref.requantize(acc, torch.tensor([(1 << 31) - 1]), torch.tensor([0]), 1000, INT32_MIN, INT32_MAX,
                          torch.int32)
    assert torch.equal(got, want)
    assert got[0].item() == INT32_MAX


@settings(max_examples=300, deadline=None)
@given(
    xs=st.lists(st.integers(INT32_MIN, INT32_MAX), min_size=1, max_size=40),
    m0=st.integers(0, INT32_MAX),
    shift=st.integers(-31, 30),
    zp=st.integers(-128, 127),
    rounding=st.sampled_from(["double", "single"]),
)
def test_fuzz_against_reference(xs, m0, shift, zp, rounding):
    acc = torch.tensor(xs, dtype=torch.int32)
    want = ref.requantize(acc, torch.tensor([m0]), torch.tensor([shift]), zp, -128, 127, torch.int8, rounding)
    got = run_on_every_isa(ck.requantize, acc, m0, shift, zp, -128, 127, torch.int8, rounding)
    assert torch.equal(got, want)
    assert [py_mbqm(x, m0, shift, rounding) for x in xs] == ref.multiply_by_quantized_multiplier(
        acc, torch.tensor(m0), torch.tensor(shift), rounding).tolist()


# ---- quantize_multiplier


def test_quantize_multiplier_matches_reference_and_encodes_the_real():
    reals = [0.0, 1e-12, 2.0**-32, 2.0**-31, 1e-9, 0.001, 0.0123, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 100.0,
             2.0**29, 1 - 2.0**-33, 1 - 2.0**-40, 0.5 - 2.0**-40]
    real = torch.tensor(reals, dtype=torch.float64)
    m0, shift = ck.quantize_multiplier(real)
    rm0, rshift = ref.quantize_multiplier(real)
    assert torch.equal(m0, rm0) and torch.equal(shift, rshift)
    for r, m, s in zip(reals, m0.tolist(), shift.tolist()):
        if m == 0:
            assert r < 2.0**-31 and s == 0
            continue
        assert 2**30 <= m < 2**31 and -31 <= s <= 30
        assert math.isclose(m * 2.0 ** (s - 31), r, rel_tol=2.0**-30)


def test_quantize_multiplier_rounds_up_to_the_next_power_of_two():
    # q * 2^31 rounds to 2^31: stored as (2^30, shift + 1).
    m0, shift = ck.quantize_multiplier(1 - 2.0**-33)
    assert (m0.item(), shift.item()) == (2**30, 1)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), 2.0**30])
def test_quantize_multiplier_refuses(bad):
    with pytest.raises(RuntimeError, match="finite, >= 0 and < 2\\^30"):
        ck.quantize_multiplier(bad)


def test_quantize_multiplier_refuses_integer_tensor():
    with pytest.raises(RuntimeError, match="real must be a floating tensor"):
        torch.ops.compress_kernels.quantize_multiplier(torch.tensor([1]))


# ---- bad input: every check, with its message


def _rq(acc=None, m0=1 << 30, shift=0, zp=0, qmin=-128, qmax=127, out_dtype=torch.int8, rounding="double"):
    acc = torch.zeros(4, 3, dtype=torch.int32) if acc is None else acc
    return ck.requantize(acc, m0, shift, zp, qmin, qmax, out_dtype, rounding)


@pytest.mark.parametrize("kwargs, message", [
    (dict(acc=torch.zeros(3, dtype=torch.int64)), "acc must be Int, got Long"),
    (dict(m0=[1, 2]), "m0 and shift must have the same numel"),
    (dict(m0=[1, 2], shift=[0, 0]), "must have 1 \\(per-tensor\\) or 3 \\(per-channel\\) elements, got 2"),
    (dict(m0=-5), "m0 must be >= 0"),
    (dict(shift=31), "shift must be in \\[-31, 30\\], got values in \\[31, 31\\]"),
    (dict(shift=-32), "shift must be in \\[-31, 30\\]"),
    (dict(qmin=5, qmax=4), "qmin must be <= qmax"),
    (dict(qmin=-200), "must lie in \\[-128, 127\\] for Char"),
    (dict(out_dtype=torch.uint8, qmin=0, qmax=255, zp=300), "zero_point must be in \\[0, 255\\]"),
    (dict(out_dtype=torch.float32), "out_dtype must be int8, uint8 or int32"),
    (dict(rounding="nearest"), 'rounding must be "double" or "single", got "nearest"'),
    (dict(acc=torch.tensor(5, dtype=torch.int32), m0=[1, 2], shift=[0, 0]), "need acc with a channel"),
])
def test_requantize_refuses(kwargs, message):
    with pytest.raises(RuntimeError, match=message):
        _rq(**kwargs)


def test_requantize_multiplier_dtype_is_checked():
    with pytest.raises(RuntimeError, match="m0 must be Int, got Long"):
        torch.ops.compress_kernels.requantize(torch.zeros(2, dtype=torch.int32), torch.tensor([1]),
                                              torch.tensor([0], dtype=torch.int32), 0, -128, 127,
                                              torch.int8)


def test_requantize_handles_empty_and_non_contiguous():
    assert _rq(acc=torch.zeros(0, 3, dtype=torch.int32)).shape == (0, 3)
    acc = torch.randint(-(2**20), 2**20, (5, 8), dtype=torch.int32).T  # non-contiguous view
    m0, shift = ck.quantize_multiplier(0.01)
    assert torch.equal(ck.requantize(acc, m0, shift), ref.requantize(acc, m0, shift, 0, -128, 127, torch.int8))


def test_opcheck():
    acc = torch.randint(-(2**24), 2**24, (6, 5), dtype=torch.int32)
    m0, shift = ck.quantize_multiplier(torch.rand(5) * 0.01)
    for args in [(acc, m0, shift, 3, -128, 127, torch.int8, "double"),
                 (acc, m0[:1].clone(), shift[:1].clone(), 0, 0, 255, torch.uint8, "single")]:
        torch.library.opcheck(torch.ops.compress_kernels.requantize.default, args)
    torch.library.opcheck(torch.ops.compress_kernels.quantize_multiplier.default,
                          (torch.rand(4, dtype=torch.float64),))


def test_isa_paths_listed():
    assert ISAS[0] == "portable"
    assert ISAS[-1] == "amx_emulated"
    with pytest.raises(RuntimeError, match='isa must be "", "auto", "portable", "avx2", "avx512vnni", "avx512vbmi", '
                                           '"amx" or "amx_emulated", got "sse9"'):
        torch.ops.compress_kernels._cpu_isa("sse9")
