"""int8_add: TFLite's quantized ADD in one kernel (QuantAdd's residual addition), bit-exact against
reference.int8_add on every CPU path, in channels_last and other layouts."""

import pytest
import torch

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.testing import run_on_every_isa


def _multipliers(*reals):
    out = []
    for r in reals:
        m0, shift = ck.quantize_multiplier(torch.tensor(r, dtype=torch.float64))
        out += [m0.reshape(1), shift.reshape(1)]
    return out


def _case(shape, a_dtype, b_dtype, seed, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    lo_hi = {torch.uint8: (0, 256), torch.int8: (-128, 128)}
    a = torch.randint(*lo_hi[a_dtype], shape, generator=g, dtype=torch.int16).to(a_dtype)
    b = torch.randint(*lo_hi[b_dtype], shape, generator=g, dtype=torch.int16).to(b_dtype)
    if channels_last:
        a = a.contiguous(memory_format=torch.channels_last)
        b = b.contiguous(memory_format=torch.channels_last)
    s_a, s_b, s_y = 0.03, 0.05, 0.07
    twice = 2 * max(s_a, s_b)
    ma, sa, mb, sb, mo, so = _multipliers(s_a / twice, s_b / twice, twice / ((1 << 20) * s_y))
    return a, b, (ma, sa, mb, sb, mo, so)


@pytest.mark.parametrize("shape, channels_last", [((2, 16, 5, 7), True), ((2, 16, 5, 7), False), ((4099,), False),
                                                  ((3, 70001), False)])
@pytest.mark.parametrize("a_dtype, b_dtype", [(torch.uint8, torch.uint8), (torch.int8, torch.uint8)])
@pytest.mark.parametrize("out", [(torch.uint8, 130, 0, 255), (torch.uint8, 130, 130, 255), (torch.int8, -3, -128, 127),
                                 (torch.int32, 7, -(2**31), 2**31 - 1)])
def test_int8_add_matches_reference(shape, channels_last, a_dtype, b_dtype, out):
    a, b, (ma, sa, mb, sb, mo, so) = _case(shape, a_dtype, b_dtype, seed=len(shape), channels_last=channels_last)
    out_dtype, zy, qmin, qmax = out
    za, zb = (120 if a_dtype == torch.uint8 else -5), 131
    args = (a, za, ma, sa, b, zb, mb, sb, mo, so, zy, qmin, qmax, out_dtype)
    want = ref.int8_add(*args)
    got = run_on_every_isa(ck.ops.int8_add, *args)
    assert torch.equal(got, want)
    if channels_last:
        assert got.is_contiguous(memory_format=torch.channels_last)  # no layout change between layers


def test_int8_add_mixed_layouts_and_left_shift():
    a, b, (ma, sa, mb, sb, mo, so) = _case((2, 8, 4, 4), torch.uint8, torch.uint8, seed=3)
    b_cl = b.contiguous(memory_format=torch.channels_last)
    for shift in (0, 7, 22):
        args = (a, 10, ma, sa, b_cl, 200, mb, sb, mo, so, 0, 0, 255, torch.uint8, shift)
        assert torch.equal(ck.ops.int8_add(*args), ref.int8_add(*args))
    sliced = a[:, :, ::2]
    args = (sliced, 10, ma, sa, b[:, :, ::2], 200, mb, sb, mo, so, 0, 0, 255, torch.uint8)
    assert torch.equal(ck.ops.int8_add(*args), ref.int8_add(*args))


@pytest.mark.parametrize("change, message", [
    (dict(a=torch.zeros(4, dtype=torch.int32)), "int8_add: a must be int8 or uint8, got Int"),
    (dict(b=torch.zeros(5, dtype=torch.uint8)), r"int8_add: a and b must have the same shape, got \[4\] and \[5\]"),
    (dict(a_zero_point=300), r"int8_add: a_zero_point must be in \[0, 255\]"),
    (dict(b_m0=torch.ones(2, dtype=torch.int32)), r"int8_add: b_m0 must have one element \(a per-tensor multiplier\)"),
    (dict(out_shift=torch.tensor([40], dtype=torch.int32)), r"int8_add: out_shift must be in \[-31, 30\], got 40"),
    (dict(a_m0=torch.tensor([-1], dtype=torch.int32)), "int8_add: a_m0 must be >= 0"),
    (dict(left_shift=23), r"int8_add: left_shift must be in \[0, 22\]"),
    (dict(qmin=10, qmax=5), "int8_add: qmin must be <= qmax"),
])
def test_int8_add_refuses(change, message):
    one = torch.ones(1, dtype=torch.int32)
    kwargs = dict(a=torch.zeros(4, dtype=torch.uint8), a_zero_point=0, a_m0=one * 2**30, a_shift=one * 0,
                  b=torch.zeros(4, dtype=torch.uint8), b_zero_point=0, b_m0=one * 2**30, b_shift=one * 0,
                  out_m0=one * 2**30, out_shift=one * -20, out_zero_point=0, qmin=0, qmax=255, out_dtype=torch.uint8)
    kwargs.update(change)
    with pytest.raises(RuntimeError, match=message):
        ck.ops.int8_add(**kwargs)


def test_int8_add_raw_op_refuses_float_multipliers():
    one = torch.ones(1, dtype=torch.int32)
    x = torch.zeros(4, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="int8_add: a_shift must be Int, got Float"):
        torch.ops.compress_kernels.int8_add(x, 0, one, torch.tensor([1.0]), x, 0, one, one, one, one, 0, 0, 255,
                                            torch.uint8)


def test_int8_add_opcheck_and_compile():
    a, b, (ma, sa, mb, sb, mo, so) = _case((2, 8, 3, 3), torch.uint8, torch.uint8, seed=5, channels_last=True)
    args = (a, 3, ma, sa, b, 4, mb, sb, mo, so, 1, 0, 255, torch.uint8, 20)
    torch.library.opcheck(torch.ops.compress_kernels.int8_add.default, args)
    compiled = torch.compile(lambda *t: ck.ops.int8_add(*t), fullgraph=True)
    assert torch.equal(compiled(*args), ref.int8_add(*args))
