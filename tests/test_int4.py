"""Group-wise int4 weights: the quantizer, int4_pack's layout and header, int4_linear against the
reference on every CPU path (w4a8 bit for bit, w4a16 within the stated bound), every argument
check with its message, opcheck, torch.compile, and the Int4Linear module / Int4WeightConfig."""

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress_kernels as ck
from compress_kernels import numerics, ops
from compress_kernels import reference as ref
from compress_kernels.testing import rand_x, run_on_every_isa

OPS = torch.ops.compress_kernels


def _weight(n, k, group_size, symmetric=True, seed=0):
    """A random group-wise int4 weight: (w_int4, scales, zero_points or None)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-8, 8, (n, k), generator=g).to(torch.int8)
    scales = torch.rand(n, k // group_size, generator=g) * 0.1 + 0.01
    zero_points = None if symmetric else torch.randint(-8, 8, (n, k // group_size), generator=g).to(torch.int8)
    return w, scales, zero_points


# ---------------------------------------------------------------- the group-wise quantizer


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_groupwise_quantizer_round_trip_error_is_half_a_step(group_size, symmetric):
    w = torch.randn(24, 256, generator=torch.Generator().manual_seed(3))
    w[3, :group_size] = 0  # an all-zero group
    q, scales, zero_points = numerics.quantize_weight_groupwise(w, group_size, symmetric=symmetric)
    assert q.dtype == torch.int8 and scales.shape == (24, 256 // group_size)
    assert int(q.min()) >= (-7 if symmetric else -8) and int(q.max()) <= 7
    assert (zero_points is None) == symmetric
    deq = ref.int4_dequantize(q, scales, zero_points, group_size)
    step = scales.repeat_interleave(group_size, dim=1)
    assert bool(((deq - w).abs() <= step / 2 * (1 + 1e-6)).all())
    assert bool((deq[3, :group_size] == 0).all()) and float(scales[3, 0]) == 1.0
    if symmetric:  # the extremes of every group are hit exactly
        group_max = q.view(24, -1, group_size).abs().amax(-1)
        assert bool((group_max[scales != 1] == 7).all())


def test_groupwise_quantizer_refusals():
    with pytest.raises(ValueError, match=r"quantize_weight_groupwise: K=40 \(w's columns\) must be a multiple of "
                                         r"group_size=32"):
        numerics.quantize_weight_groupwise(torch.zeros(2, 40), 32)
    w = torch.zeros(2, 32)
    w[1, 5] = float("nan")
    with pytest.raises(ValueError, match=r"quantize_weight_groupwise: the weight must be finite to be quantized, "
                                         r"got nan at index \[1, 5\]"):
        numerics.quantize_weight_groupwise(w, 32)
    with pytest.raises(ValueError, match=r"w must be 2-D \[N, K\], got shape \(32,\)"):
        numerics.quantize_weight_groupwise(torch.zeros(32), 32)


# ---------------------------------------------------------------- pack / unpack


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("n,k,group_size", [(37, 128, 32), (16, 128, 64), (5, 256, 128), (33, 256, 256)])
def test_pack_layout_is_the_reference_and_unpack_inverts_it(n, k, group_size, symmetric):
    w, scales, zp = _weight(n, k, group_size, symmetric)
    pack = ck.int4_pack(w, scales, group_size, zp)
    param = ops.int4_pack_param(group_size, not symmetric)
    assert tuple(pack.shape) == ops.packed_shape("int4_pack", n, k, param) and pack.dtype == torch.int32
    assert ops.packed_n("int4_pack", pack.shape) == n
    assert torch.equal(ops.packed_payload(pack, "int4_pack"), ref.int4_pack_payload(w, scales, zp, group_size))
    q, s, z = ck.int4_unpack(pack, k, group_size)
    assert torch.equal(q, w) and torch.equal(s, scales)
    assert torch.equal(z, torch.zeros_like(z) if symmetric else zp)
    # 4 bits per weight + 32 bits per group scale (+ 32 per zero point)
    assert pack.shape[1] == k // group_size * (group_size // 8 + (1 if symmetric else 2))


def test_pack_refusals_name_the_argument_and_value():
    w, scales, zp = _weight(4, 64, 32, symmetric=False)
    cases = [
        ((w, scales, 48), r"int4_pack: group_size must be 32, 64, 128 or 256, got 48"),
        ((w.int(), scales, 32), r"int4_pack: w_int4 must be Char, got Int"),
        ((w[:, :40], scales, 32), r"int4_pack: K=40 \(w_int4's columns\) must be a multiple of group_size=32"),
        ((w, scales[:, :1], 32), r"int4_pack: scales must have shape \[4, 2\] \(N, K / group_size\), got \[4, 1\]"),
        ((w, scales.double(), 32), r"int4_pack: scales must be Float, got Double"),
        ((w.clone().index_put_((torch.tensor(2), torch.tensor(9)), torch.tensor(8, dtype=torch.int8)), scales, 32),
         r"int4_pack: w_int4 must hold int4 values in \[-8, 7\], got 8 at \[2, 9\]"),
        ((w, scales.clone().index_fill_(1, torch.tensor(1), 0.0), 32),
         r"int4_pack: scales must be finite and > 0, got 0 at \[0, 1\]"),
        ((w, scales.clone().index_fill_(1, torch.tensor(0), float("nan")), 32),
         r"int4_pack: scales must be finite and > 0, got nan at \[0, 0\]"),
        ((w, scales, 32, zp[:, :1]), r"int4_pack: zero_points must have shape \[4, 2\]"),
        ((w, scales, 32, zp.clone().fill_(-9)), r"int4_pack: zero_points must hold int4 values in \[-8, 7\], got -9"),
        ((w.view(1, 4, 64), scales, 32), r"int4_pack: w_int4 must be 2-D, got 3-D"),
        ((w[:0], scales[:0], 32), r"int4_pack: w_int4 must have N > 0 rows and K > 0 columns, got shape \[0, 64\]"),
        ((w, scales, 32, zp.int()), r"int4_pack: zero_points must be Char, got Int"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            ck.int4_pack(*args)
    with pytest.raises(TypeError, match=r"int4_pack: group_size must be an integer, got float 32.0"):
        ck.int4_pack(w, scales, 32.0)


def test_packed_shape_refuses_impossible_parameters():
    with pytest.raises(RuntimeError, match=r"packed_shape: int4_pack needs the parameter group_size \(32, 64, 128 "
                                           r"or 256\) \+ 65536 for a pack with zero points, got 16"):
        OPS.packed_shape("int4_pack", 4, 64, 16)
    with pytest.raises(RuntimeError, match=r"packed_shape: int4_pack needs K a multiple of group_size=64, got K=96"):
        OPS.packed_shape("int4_pack", 4, 96, 64)


# ---------------------------------------------------------------- int4_linear: w4a8


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_w4a8_is_bit_exact_on_every_isa(group_size, symmetric):
    n, k = 37, 256  # a block of 5 rows at the end
    w, scales, zp = _weight(n, k, group_size, symmetric, seed=group_size)
    pack = ck.int4_pack(w, scales, group_size, zp)
    bias = rand_x(n, seed=5)
    for m in (1, 3, 4, 9, 15):  # row tiles of 8, 4 and the rest on the vector tiers
        x = rand_x(m, k, seed=m)
        want = ref.int4_linear_w4a8(x, w, scales, zp, group_size, bias)
        got = run_on_every_isa(ck.int4_linear, x, pack, bias)
        assert torch.equal(got, want), (m, (got - want).abs().max())
    x = rand_x(6, k, seed=7) * 100
    assert torch.equal(run_on_every_isa(ck.int4_linear, x, pack), ref.int4_linear_w4a8(x, w, scales, zp, group_size))


def test_w4a8_same_bits_at_every_thread_count():
    w, scales, zp = _weight(256, 512, 32, symmetric=False, seed=4)  # 8 * 256 * 512 = 1M multiply-adds: threaded
    pack = ck.int4_pack(w, scales, 32, zp)
    x = rand_x(8, 512, seed=9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ck.int4_linear(x, pack)
        torch.set_num_threads(2)
        two = ck.int4_linear(x, pack)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two) and torch.equal(one, ref.int4_linear_w4a8(x, w, scales, zp, 32))


def test_w4a8_nonfinite_row_gives_nan_only_in_that_row():
    w, scales, _ = _weight(20, 64, 32)
    pack = ck.int4_pack(w, scales, 32)
    x = rand_x(3, 64)
    x[1, 7] = float("inf")
    y = ck.int4_linear(x, pack)
    assert bool(y[1].isnan().all())
    keep = torch.tensor([0, 2])
    assert torch.equal(y[keep], ref.int4_linear_w4a8(x[keep], w, scales, None, 32))
    assert ck.int4_linear(x[:0], pack).shape == (0, 20)


# ---------------------------------------------------------------- int4_linear: w4a16


@pytest.mark.parametrize("activation", ["fp32", "bf16"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_w4a16_within_the_stated_bound_on_every_isa(activation, symmetric):
    from compress_kernels.testing import ISAS

    n, k, group_size = 37, 256, 64
    w, scales, zp = _weight(n, k, group_size, symmetric, seed=11)
    pack = ck.int4_pack(w, scales, group_size, zp)
    bias = rand_x(n, seed=12)
    dtype = torch.bfloat16 if activation == "bf16" else torch.float32
    for m in (1, 5):
        x = rand_x(m, k, seed=13 + m).to(dtype)
        exact = ref.int4_linear_w4a16(x.float(), w, scales, zp, group_size, bias).double()
        exact = (x.double() @ ref.int4_dequantize(w, scales, zp, group_size).double().T) + bias.double()
        bound = ref.int4_linear_error_bound(x.float(), w, scales, zp, group_size)
        if activation == "bf16":  # plus the final rounding to bf16 (half an ulp: 2^-9 relative)
            bound = bound + exact.abs() * 2.0 ** -8
        for isa in ISAS:
            with ck.force_cpu_isa(isa):
                got = ck.int4_linear(x, pack, bias, activation)
            assert got.dtype == dtype
            err = (got.double() - exact).abs()
            assert bool((err <= bound).all()), (isa, float((err - bound).max()))


# ---------------------------------------------------------------- int4_linear: argument checks


def test_linear_refusals_name_the_argument_and_value():
    w, scales, _ = _weight(20, 64, 32)
    pack = ck.int4_pack(w, scales, 32)
    x = rand_x(3, 64)
    cases = [
        ((x, pack, None, "int4"), ValueError, r"int4_linear: activation must be \"int8\", \"fp32\" or \"bf16\", got "
                                              r"'int4'"),
        ((x.bfloat16(), pack), RuntimeError, r"int4_linear: x must be float32 for activation=\"int8\", got BFloat16"),
        ((x, pack, None, "bf16"), RuntimeError, r"int4_linear: x must be bfloat16 for activation=\"bf16\", got Float"),
        ((rand_x(3, 32), pack), RuntimeError,
         r"int4_linear: w_packed is an int4_pack \(group_size=32, symmetric, N=20, K=64\), expected an int4_pack "
         r"for K=32 \(from x\)"),
        ((x, pack, rand_x(21)), RuntimeError, r"int4_linear: bias must have shape \[20\], got \[21\]"),
        ((x, pack, rand_x(20).double()), RuntimeError, r"int4_linear: bias must be Float, got Double"),
        ((x, ck.int8_pack_weight(torch.ones(20, 64, dtype=torch.int8))), RuntimeError,
         r"int4_linear: w_packed is an int8_pack_weight \(N=20, K=64\), expected an int4_pack for K=64 \(from x\)"),
        ((x, torch.zeros_like(pack)), RuntimeError, r"int4_linear: w_packed is not a packed weight of any family"),
        ((x, pack[4:].clone()), RuntimeError, r"int4_linear: w_packed is not a packed weight of any family"),
        ((x[0], pack), RuntimeError, r"int4_linear: x must be 2-D, got 1-D"),
        ((x[:, :0], pack), RuntimeError, r"int4_linear: x must have K > 0 columns, got shape \[3, 0\]"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            ck.int4_linear(*args)
    with pytest.raises(RuntimeError, match=r"int4_linear: activation must be \"int8\" \(w4a8\), \"fp32\" or \"bf16\" "
                                           r"\(w4a16\), got \"int4\""):
        OPS.int4_linear(x, pack, None, "int4")  # the op itself, past the wrapper's check
    corrupted = pack.clone()
    corrupted.view(-1)[4] += 1  # K in the header
    with pytest.raises(RuntimeError, match=r"int4_linear: the header of w_packed is corrupted"):
        ck.int4_linear(x, corrupted)
    with pytest.raises(RuntimeError, match=r"int4_unpack: w_packed is not a packed weight of any family"):
        ck.int4_unpack(torch.zeros(20, 8, dtype=torch.int32), 64, 32)


def test_unpack_refuses_sizes_its_pack_does_not_have():
    """int4_unpack takes K and the group size from its caller (static output sizes); a pack that
    disagrees is refused by name, with data (the header) and without (meta / fake: the row width)."""
    w, scales, zp = _weight(20, 64, 32, symmetric=False)
    pack = ck.int4_pack(w, scales, 32, zp)
    with pytest.raises(RuntimeError, match=r"int4_unpack: w_packed is an int4_pack \(group_size=32, asymmetric, "
                                           r"N=20, K=64\), expected an int4_pack .*K=128"):
        ck.int4_unpack(pack, 128, 32)
    with pytest.raises(RuntimeError, match=r"int4_unpack: w_packed is an int4_pack \(group_size=32, asymmetric, "
                                           r"N=20, K=64\), expected group_size=64"):
        ck.int4_unpack(pack, 64, 64)
    with pytest.raises(RuntimeError, match=r"int4_unpack: in_features must be a positive multiple of "
                                           r"group_size=32, got 48"):
        ck.int4_unpack(pack, 48, 32)
    with pytest.raises(RuntimeError, match=r"int4_unpack: group_size must be 32, 64, 128 or 256, got 16"):
        ck.int4_unpack(pack, 64, 16)
    with pytest.raises(TypeError, match=r"int4_unpack: in_features must be an integer"):
        ck.int4_unpack(pack, 64.0, 32)
    meta = pack.to("meta")
    q, s, z = ck.int4_unpack(meta, 64, 32)
    assert q.shape == (20, 64) and s.shape == (20, 2) and z.shape == (20, 2) and q.dtype == torch.int8
    with pytest.raises(RuntimeError, match=r"int4_unpack: w_packed has rows of 12 words; an int4_pack for "
                                           r"in_features=128, group_size=32 has 20 \(symmetric\) or 24 "
                                           r"\(with zero points\)"):
        ck.int4_unpack(meta, 128, 32)


# ---------------------------------------------------------------- opcheck / compile


def test_opcheck():
    w, scales, zp = _weight(20, 64, 32, symmetric=False)
    pack = ck.int4_pack(w, scales, 32, zp)
    x, bias = rand_x(3, 64), rand_x(20)
    torch.library.opcheck(OPS.int4_pack, (w, scales, 32, zp))
    torch.library.opcheck(OPS.int4_pack, (w, scales, 32))
    torch.library.opcheck(OPS.int4_unpack, (pack, 64, 32))
    torch.library.opcheck(OPS.int4_linear, (x, pack, bias, "int8"))
    torch.library.opcheck(OPS.int4_linear, (x, pack, None, "fp32"))
    torch.library.opcheck(OPS.int4_linear, (x.bfloat16(), pack, bias, "bf16"))


def test_compile_fullgraph():
    w, scales, _ = _weight(20, 64, 32)
    pack = ck.int4_pack(w, scales, 32)
    x = rand_x(3, 64)
    f = torch.compile(lambda x: torch.relu(ck.int4_linear(x, pack)), fullgraph=True)
    assert torch.equal(f(x), torch.relu(ck.int4_linear(x, pack)))


# ---------------------------------------------------------------- Int4Linear / Int4WeightConfig


def _float_linear(k=64, n=20, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(k, n)


@pytest.mark.parametrize("activation", ["int8", "fp32", "bf16"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_module_matches_reference_mode_and_round_trips(activation, symmetric, tmp_path):
    import copy

    lin = _float_linear()
    q = ck.Int4Linear.from_float(lin, group_size=32, activation=activation, symmetric=symmetric)
    x = rand_x(2, 3, 64)
    y = q(x)
    assert y.shape == (2, 3, 20) and y.dtype == torch.float32
    with ck.reference_mode():
        y_ref = q(x)
    if activation == "int8":
        assert torch.equal(y, y_ref)
    else:
        assert torch.allclose(y, y_ref, rtol=2e-2 if activation == "bf16" else 1e-5, atol=1e-2)
    # close to the float layer: 4-bit weights
    assert float((y - lin(x).detach()).abs().max()) < 0.15
    path = tmp_path / "int4.pt"
    torch.save(q.state_dict(), path)
    fresh = ck.Int4Linear(64, 20, group_size=32, activation=activation, symmetric=symmetric)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(fresh(x), y)
    assert torch.equal(copy.deepcopy(q)(x), y)
    assert torch.equal(torch.compile(q, fullgraph=True)(x), y)
    assert set(q.state_dict()) == {"weight_packed", "bias", "_extra_state"}
    assert q.stored_bytes() < q.fp32_bytes() / 4


def test_module_nonfinite_row_is_the_float_layer_on_the_dequantized_weight():
    q = ck.Int4Linear.from_float(_float_linear(), group_size=32)
    x = rand_x(3, 64)
    x[2, 0] = float("inf")
    y = q(x)
    want = F.linear(x[2:], q.dequantized_weight(), q.bias)[0]
    assert bool(want.isinf().any())  # +-inf where the weight is non-zero, NaN where it is zero
    torch.testing.assert_close(y[2], want, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(y[:2], q(x[:2]))


def test_module_keeps_fp32_state_and_returns_the_input_dtype():
    q = ck.Int4Linear.from_float(_float_linear(), group_size=64, activation="bf16").bfloat16()
    assert q.bias.dtype == torch.float32
    x = rand_x(4, 64).bfloat16()
    assert q(x).dtype == torch.bfloat16


def test_module_refusals():
    lin = _float_linear()
    with pytest.raises(ValueError, match=r"Int4Linear: group_size must be one of \[32, 64, 128, 256\], got 48"):
        ck.Int4Linear(64, 8, group_size=48)
    with pytest.raises(ValueError, match=r"Int4Linear: activation must be one of \['int8', 'bf16', 'fp32'\], got "
                                         r"'fp16'"):
        ck.Int4Linear(64, 8, activation="fp16")
    with pytest.raises(TypeError, match=r"Int4Linear: symmetric must be a bool, got 1"):
        ck.Int4Linear(64, 8, symmetric=1)
    with pytest.raises(ValueError, match=r"Int4Linear: in_features=40 must be a multiple of group_size=32"):
        ck.Int4Linear(40, 8)
    with pytest.raises(TypeError, match=r"Int4Linear.from_float: expected nn.Linear, got Conv2d"):
        ck.Int4Linear.from_float(nn.Conv2d(2, 2, 1))
    bad = _float_linear()
    with torch.no_grad():
        bad.weight[1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"Int4Linear.from_float.*weight must be finite to be quantized, got inf at "
                                         r"index \[1, 2\]"):
        ck.Int4Linear.from_float(bad)
    # an unfilled layer has no pack header: refused by the op, not computed with
    with pytest.raises(RuntimeError, match=r"int4_linear: w_packed is not a packed weight of any family"):
        ck.Int4Linear(64, 20)(rand_x(1, 64))
    q = ck.Int4Linear.from_float(lin, group_size=32)
    state = q.state_dict()
    with pytest.raises(ValueError, match=r"Int4Linear at '<root>': load_state_dict: _extra_state\['group_size'\] = "
                                         r"32: expected 64 as this module was built"):
        ck.Int4Linear(64, 20, group_size=64).load_state_dict(state)
    with pytest.raises(ValueError, match=r"_extra_state\['symmetric'\] = True: expected False"):
        ck.Int4Linear(64, 20, symmetric=False).load_state_dict(state)
    tampered = dict(state, _extra_state={**state["_extra_state"], "activation": "int4"})
    with pytest.raises(ValueError, match=r"_extra_state\['activation'\] = 'int4': expected one of"):
        ck.Int4Linear(64, 20).load_state_dict(tampered)
    with pytest.raises(RuntimeError, match=r"weight_packed has shape \[28, 10\], expected \[24, 12\] \(int4_pack of "
                                           r"a 20 x 64 weight, group_size=32, asymmetric\): it does not belong to "
                                           r"this layer"):
        ck.Int4Linear(64, 20, symmetric=False).load_state_dict(dict(state, _extra_state={
            **state["_extra_state"], "symmetric": False}))
    with pytest.raises(TypeError, match=r"weight_packed has dtype torch.float32, expected torch.int32"):
        ck.Int4Linear(64, 20).load_state_dict(dict(state, weight_packed=state["weight_packed"].float()))
    # weights_only load of a state dict with extra state works (above); a pack from another layer of the
    # same shape is refused by the op at the first forward
    other = ck.Int4Linear.from_float(_float_linear(k=64, n=20, seed=1), group_size=32).state_dict()
    buffer = io.BytesIO()
    torch.save(other, buffer)
    buffer.seek(0)
    fresh = ck.Int4Linear(64, 20)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert not torch.equal(fresh(rand_x(1, 64)), q(rand_x(1, 64)))


def test_config_converts_and_reports():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.Linear(8, 4))
    report = ck.convert_(model, ck.Int4WeightConfig(group_size=32, activation="fp32"))
    assert isinstance(model[0], ck.Int4Linear) and isinstance(model[2], ck.Int4Linear)
    assert isinstance(model[3], nn.Linear)
    assert [name for name, _, _ in report.converted] == ["0", "2"]
    assert report.skipped[0][0] == "3" and "in_features=8 is not a multiple of group_size=32" in report.skipped[0][2]
    assert model(rand_x(2, 64)).shape == (2, 4)


def test_config_validates_its_fields():
    with pytest.raises(ValueError, match=r"Int4WeightConfig: group_size must be one of \[32, 64, 128, 256\], got 16"):
        ck.Int4WeightConfig(group_size=16)
    with pytest.raises(ValueError, match=r"Int4WeightConfig: activation must be one of \['int8', 'bf16', 'fp32'\]"):
        ck.Int4WeightConfig(activation="int4")
    with pytest.raises(TypeError, match=r"Int4WeightConfig: symmetric must be a bool"):
        ck.Int4WeightConfig(symmetric=1)
