"""Fused fake quantization: parity with PyTorch's fake_quantize ops and with reference.py,
bit-identity across CPU paths and thread counts, clipped STE / LSQ gradients, masks, the EMA
observer, opcheck, torch.compile and every argument check."""

import math

import pytest
import torch

import compress_kernels as ck
from compress_kernels import ops
from compress_kernels import reference as ref
from compress_kernels.testing import run_on_every_isa

torch.manual_seed(0)

# (shape, axis): per tensor, spans (inner >= 256, several 16K blocks with tails), rows (last axis,
# and a middle axis with a small inner), a single-channel axis, odd sizes everywhere.
LAYOUTS = [
    ((1000, 37), None),
    ((3, 40000), None),
    ((6, 5, 301), 1),
    ((2, 3, 17000), 1),
    ((17, 300), 0),
    ((129, 33), -1),
    ((40, 7, 9), 1),
    ((5, 1, 33), 1),
    ((8, 600), -1),
]


def qparams(x, axis, qmin, qmax, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = 1 if axis is None else x.shape[axis]
    scale = (torch.rand(c, generator=g) * 0.05 + 0.01)
    zp = torch.randint(qmin, qmax + 1, (c,), generator=g, dtype=torch.int32).clamp(qmin + (qmax - qmin) // 4,
                                                                                     qmax - (qmax - qmin) // 4)
    return scale, zp


def sample(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 2).to(dtype)


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("shape,axis", LAYOUTS)
@pytest.mark.parametrize("qmin,qmax", [(-128, 127), (0, 255), (-7, 7)])
def test_forward_equals_torch(shape, axis, qmin, qmax):
    x = sample(shape)
    scale, zp = qparams(x, axis, qmin, qmax)
    y = run_on_every_isa(ops.fake_quant, x, scale, zp, qmin, qmax, axis)
    if axis is None:
        expected = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), qmin, qmax)
    else:
        expected = torch.fake_quantize_per_channel_affine(x, scale, zp, axis % x.dim(), qmin, qmax)
    assert torch.equal(y, expected)
    assert torch.equal(y, ref.fake_quant(x, scale, zp, qmin, qmax, axis))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape,axis", [((1000, 37), None), ((6, 5, 301), 1), ((129, 33), -1)])
def test_forward_dtypes_equal_reference(dtype, shape, axis):
    x = sample(shape, dtype)
    scale, zp = qparams(x, axis, -128, 127)
    y = run_on_every_isa(ops.fake_quant, x, scale, zp, -128, 127, axis)
    assert y.dtype == dtype
    assert torch.equal(y, ref.fake_quant(x, scale, zp, -128, 127, axis))
    if dtype != torch.float64:
        # PyTorch's op on the same low-precision input: computed in fp32, rounded to dtype.
        if axis is None:
            expected = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), -128, 127)
        else:
            expected = torch.fake_quantize_per_channel_affine(x, scale, zp, axis % x.dim(), -128, 127)
        assert torch.equal(y, expected)


def test_ties_round_half_to_even_and_saturation():
    s = 0.25  # exact ties: x / s = k + 0.5
    k = torch.arange(-300, 300, dtype=torch.float32)
    x = torch.cat([(k + 0.5) * s, torch.tensor([math.inf, -math.inf, 1e30, -1e30])])
    y = run_on_every_isa(ops.fake_quant, x, s, 0, -128, 127)
    expected = (torch.round(k + 0.5).clamp(-128, 127)) * s
    assert torch.equal(y[:-4], expected)
    assert y[-4:].tolist() == [127 * s, -128 * s, 127 * s, -128 * s]
    assert torch.equal(y, torch.fake_quantize_per_tensor_affine(x, s, 0, -128, 127))


def test_nan_input_gives_nan_and_zero_grad():
    x = torch.tensor([1.0, math.nan, -2.0], requires_grad=True)
    y = ops.fake_quant(x, 0.1, 0, -128, 127)
    assert math.isnan(y[1].item()) and not math.isnan(y[0].item())
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 1.0]


def test_float_zero_point_rounds_half_to_even():
    x = sample((50, 50))
    y = ops.fake_quant(x, torch.tensor([0.02]), torch.tensor([2.5]), -128, 127)
    assert torch.equal(y, ops.fake_quant(x, 0.02, 2, -128, 127))


def test_results_do_not_depend_on_thread_count():
    x = sample((2, 3, 17000))
    g = sample((2, 3, 17000), seed=1)
    scale, zp = qparams(x, 1, -128, 127)
    results = []
    for threads in (1, 2):
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            results.append((ops.fake_quant(x, scale, zp, -128, 127, 1),
                            *ops.fake_quant_backward(g, x, scale, zp.float(), -128, 127, 1)))
        finally:
            torch.set_num_threads(prev)
    for a, b in zip(*results):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- mask


@pytest.mark.parametrize("shape,axis", [((1000, 37), None), ((17, 300), 0), ((129, 33), -1)])
def test_mask_keeps_pruned_weights_zero(shape, axis):
    x = sample(shape).requires_grad_()
    scale, zp = qparams(x, axis, -128, 127)
    scale.requires_grad_()
    zpf = zp.float().requires_grad_()
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(3)) > 0.5
    y = ops.fake_quant(x, scale, zpf, -128, 127, axis, mask)
    assert torch.all(y[~mask] == 0) and not torch.signbit(y[~mask]).any()
    assert torch.equal(y, ref.fake_quant(x, scale, zp, -128, 127, axis, mask))
    g = sample(shape, seed=2)
    y.backward(g)
    assert torch.all(x.grad[~mask] == 0)
    # The qparam gradients see only the kept elements: equal to the gradients of x * mask's kept
    # part computed with the dropped elements' gradient zeroed.
    _, gs, gz = ref.fake_quant_backward(g * mask, x, scale, zpf, -128, 127, axis, mask)
    torch.testing.assert_close(scale.grad, gs, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(zpf.grad, gz, rtol=1e-5, atol=1e-7)
    # A 0/1 float mask means the same as the bool one.
    assert torch.equal(ops.fake_quant(x.detach(), scale.detach(), zp, -128, 127, axis, mask.float()), y.detach())


# ---------------------------------------------------------------- backward


@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_backward_equals_reference(shape, axis):
    x = sample(shape) * 2  # wide enough that some elements clip
    g = sample(shape, seed=1)
    scale, zp = qparams(x, axis, -128, 127)
    zpf = zp.float()

    def backward():
        return torch.cat([t.reshape(-1).double() for t in
                          ops.fake_quant_backward(g, x, scale, zpf, -128, 127, axis)])

    run_on_every_isa(backward)  # bit-identical across CPU paths
    gx, gs, gz = ops.fake_quant_backward(g, x, scale, zpf, -128, 127, axis)
    rx, rs, rz = ref.fake_quant_backward(g, x, scale, zpf, -128, 127, axis)
    assert torch.equal(gx, rx)
    # fp32 products summed in fp64, in a different order: a few ulps of fp32.
    torch.testing.assert_close(gs, rs, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(gz, rz, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_backward_low_precision_bit_identical(dtype):
    x = sample((6, 5, 301), dtype)
    g = sample((6, 5, 301), dtype, seed=1)
    scale, zp = qparams(x, 1, -128, 127)

    def backward():
        gx, gs, gz = ops.fake_quant_backward(g, x, scale, zp.float(), -128, 127, 1)
        return torch.cat([gx.double().reshape(-1), gs.double(), gz.double()])

    out = run_on_every_isa(backward)
    rx, rs, _ = ref.fake_quant_backward(g, x, scale, zp.float(), -128, 127, 1)
    assert torch.equal(out[: x.numel()], rx.double().reshape(-1))
    torch.testing.assert_close(out[x.numel(): x.numel() + 5], rs.double(), rtol=1e-6, atol=1e-9)


def test_autograd_clipped_ste_and_default_lsq_scale():
    x = sample((64, 100)).requires_grad_()
    scale = torch.tensor([0.01], requires_grad=True)
    y = ops.fake_quant(x, scale, 0, -128, 127)
    g = sample((64, 100), seed=4)
    y.backward(g)
    q = torch.round(x.detach() * (1 / scale.detach())) + 0
    inside = (q >= -128) & (q <= 127)
    assert (~inside).any() and inside.any()
    assert torch.equal(x.grad, torch.where(inside, g, torch.zeros_like(g)))
    factor = 1 / math.sqrt(x.numel() * 127)
    _, rs, _ = ref.fake_quant_backward(g, x, scale, torch.tensor([0]), -128, 127, grad_factor=factor)
    torch.testing.assert_close(scale.grad, rs, rtol=1e-6, atol=1e-9)


def test_per_channel_lsq_scale_uses_numel_per_channel():
    x = sample((8, 500))
    g = sample((8, 500), seed=1)
    scale, zp = qparams(x, 0, -128, 127)
    _, gs, _ = ops.fake_quant_backward(g, x, scale, zp, -128, 127, 0)
    _, gs1, _ = ops.fake_quant_backward(g, x, scale, zp, -128, 127, 0, grad_factor=1.0)
    torch.testing.assert_close(gs, gs1 / math.sqrt(500 * 127))


@pytest.mark.parametrize("per_channel", [False, True])
def test_gradients_match_torch_learnable_fake_quant(per_channel):
    """With grad_factor=1.0, grad_x equals torch._fake_quantize_learnable_*'s and the scale / zero
    point gradients agree to fp32 rounding. Differences of definition: PyTorch's default g is 1
    (the caller passes 1/sqrt(numel * qmax), numel = the whole tensor even per channel), ours is
    1/sqrt(n * qmax) with n the elements per scale; PyTorch computes r - v inside the range as
    ((q - z) * s - x) / s (our r - v is the same quantity without the extra roundings). PyTorch's
    backward takes the zero point as trunc(z + 0.5), which for a negative z is z + 1, so its clipping
    range disagrees with its own forward; ours uses the forward's round-half-even z everywhere. The
    comparison uses non-negative zero points, where both agree."""
    x = sample((16, 300)) * 2
    g = sample((16, 300), seed=1)
    scale, zp = qparams(x, 0 if per_channel else None, -128, 127)
    zp = zp.abs()
    xs, ss, zs = x.clone().requires_grad_(), scale.clone().requires_grad_(), zp.float().requires_grad_()
    if per_channel:
        yt = torch._fake_quantize_learnable_per_channel_affine(xs, ss, zs, 0, -128, 127, 1.0)
    else:
        yt = torch._fake_quantize_learnable_per_tensor_affine(xs, ss, zs, -128, 127, 1.0)
    yt.backward(g)
    xo, so, zo = x.clone().requires_grad_(), scale.clone().requires_grad_(), zp.float().requires_grad_()
    yo = ops.fake_quant(xo, so, zo, -128, 127, 0 if per_channel else None, grad_factor=1.0)
    yo.backward(g)
    assert torch.equal(yo, yt.detach())
    assert torch.equal(xo.grad, xs.grad)
    torch.testing.assert_close(so.grad, ss.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(zo.grad, zs.grad, rtol=1e-4, atol=1e-4)


def test_gradcheck_where_the_estimators_are_exact():
    """The STE and LSQ gradients are the true derivatives where the output is clipped (dy/dx = 0,
    dy/ds = qmin - z or qmax - z) and where the mask drops an element (all 0); inside the range they
    are estimators by design, tested against the reference above. The zero point is rounded in the
    forward, so its LSQ gradient (-s outside the range) is an estimator everywhere and is tested
    against the reference and PyTorch instead. gradcheck in fp64 on inputs that clip, per tensor
    and per channel, with a mask."""
    g = torch.Generator().manual_seed(5)
    sign = torch.where(torch.rand(6, 7, generator=g) > 0.5, 1.0, -1.0).double()
    x = (sign * (5 + torch.rand(6, 7, generator=g, dtype=torch.float64))).requires_grad_()
    mask = torch.rand(6, 7, generator=g) > 0.3
    for axis, c in ((None, 1), (0, 6), (1, 7)):
        scale = (0.01 + 0.01 * torch.rand(c, generator=g, dtype=torch.float64)).requires_grad_()
        zp = torch.randint(-3, 4, (c,), generator=g).double()

        def fn(x, scale, zp, axis=axis):
            return ops.fake_quant(x, scale, zp, -100, 100, axis, mask, grad_factor=1.0)

        assert torch.autograd.gradcheck(fn, (x, scale, zp), eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------- observer


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("qmin,qmax", [(0, 255), (-128, 127)])
def test_observe_equals_torch_observer(symmetric, qmin, qmax):
    from torch.ao.quantization.observer import MovingAverageMinMaxObserver

    dtype = torch.quint8 if qmin == 0 else torch.qint8
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    observer = MovingAverageMinMaxObserver(averaging_constant=0.1, dtype=dtype, qscheme=qscheme)
    rmin, rmax = torch.tensor([math.inf]), torch.tensor([-math.inf])
    for step in range(3):
        x = sample((64, 100), seed=step) + step * 0.5
        run_on_every_isa(lambda x=x: ops.fake_quant_observe(x, rmin.clone(), rmax.clone(), 0.1, qmin, qmax,
                                                            symmetric)[0])
        y, scale, zp = ops.fake_quant_observe(x, rmin, rmax, 0.1, qmin, qmax, symmetric)
        observer(x)
        s_t, z_t = observer.calculate_qparams()
        assert rmin.item() == observer.min_val.item() and rmax.item() == observer.max_val.item()
        assert scale.item() == s_t.item() and zp.item() == z_t.item()
        assert torch.equal(y, torch.fake_quantize_per_tensor_affine(x, s_t.item(), int(z_t), qmin, qmax))


def test_observe_close_to_fused_moving_avg_obs_fake_quant():
    """PyTorch's fused op chooses qparams with its own nudged rule (ChooseQuantizationParams);
    the observed range is the same, and the outputs agree to within one quantization step."""
    x = sample((64, 100))
    rmin, rmax = torch.tensor([math.inf]), torch.tensor([-math.inf])
    t_min, t_max = torch.tensor([math.inf]), torch.tensor([-math.inf])
    t_scale, t_zp = torch.tensor([1.0]), torch.tensor([0], dtype=torch.int32)
    on = torch.tensor([1], dtype=torch.long)
    for step in range(2):
        xs = x + step
        y, scale, _ = ops.fake_quant_observe(xs, rmin, rmax, 0.01, 0, 255)
        yt = torch.fused_moving_avg_obs_fake_quant(xs, on, on, t_min, t_max, t_scale, t_zp, 0.01, 0, 255, 0)
        assert rmin.item() == t_min.item() and rmax.item() == t_max.item()
        assert (y - yt).abs().max().item() <= scale.item() * 1.01


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_observe_per_channel_equals_reference(axis):
    x0, x1 = sample((6, 50, 7)), sample((6, 50, 7), seed=1)
    c = x0.shape[axis]
    r = [torch.full((c,), math.inf), torch.full((c,), -math.inf)]
    e = [torch.full((c,), math.inf), torch.full((c,), -math.inf)]
    for x in (x0, x1):
        y, s, z = ops.fake_quant_observe(x, r[0], r[1], 0.2, -128, 127, True, axis)
        ye, se, ze = ref.fake_quant_observe(x, e[0], e[1], 0.2, -128, 127, True, axis)
        assert torch.equal(r[0], e[0]) and torch.equal(r[1], e[1])
        assert torch.equal(s, se) and torch.equal(z, ze) and torch.equal(y, ye)


def test_observe_gradient_is_clipped_ste_and_mask():
    x = (sample((30, 40)) * 3).requires_grad_()
    rmin, rmax = torch.tensor([-1.0]), torch.tensor([1.0])
    mask = sample((30, 40), seed=7) > 0
    y, scale, zp = ops.fake_quant_observe(x, rmin, rmax, 0.5, -128, 127, False, None, mask)
    assert torch.all(y[~mask] == 0)
    y.sum().backward()
    q = torch.round(x.detach() * (1 / scale)) + zp
    expected = ((q >= -128) & (q <= 127) & mask).float()
    assert torch.equal(x.grad, expected)
    assert 0 < expected.sum() < mask.sum()


# ---------------------------------------------------------------- opcheck and torch.compile


def _opcheck_cases():
    x = sample((8, 300))
    s, z = qparams(x, 1, -128, 127)
    mask = sample((8, 300), seed=2) > 0
    return [
        ("fake_quant", (x, torch.tensor([0.02]), torch.tensor([3], dtype=torch.int32), -128, 127, None, None, None)),
        ("fake_quant", (x, s, z, -128, 127, 1, mask, None)),
        ("fake_quant", (x.requires_grad_(), s.clone().requires_grad_(), z.float().requires_grad_(), -128, 127, -1,
                        None, 1.0)),
        ("fake_quant_backward", (sample((8, 300), seed=1), x.detach(), s, z.float(), -128, 127, 1, mask, None, True,
                                 True)),
        ("fake_quant_observe", (x.detach(), torch.full((300,), math.inf), torch.full((300,), -math.inf), 0.1, 0, 255,
                                False, 1, None)),
    ]


@pytest.mark.parametrize("case", range(5))
def test_opcheck(case):
    name, args = _opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.compress_kernels, name).default, args)


def test_compile_fullgraph_forward_backward():
    def step(x, scale, zp, rmin, rmax):
        y = ops.fake_quant(x, scale, zp, -128, 127, 0)
        a, _, _ = ops.fake_quant_observe(y, rmin, rmax, 0.1, 0, 255)
        return a.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    x = sample((16, 300)).requires_grad_()
    scale = (torch.rand(16) * 0.02 + 0.01).requires_grad_()
    zp = torch.zeros(16)
    stats = [torch.tensor([math.inf]), torch.tensor([-math.inf])]
    loss = compiled(x, scale, zp, *stats)
    loss.backward()
    x2, s2 = x.detach().clone().requires_grad_(), scale.detach().clone().requires_grad_()
    stats2 = [torch.tensor([math.inf]), torch.tensor([-math.inf])]
    step(x2, s2, zp, *stats2).backward()
    assert torch.equal(x.grad, x2.grad) and torch.equal(scale.grad, s2.grad)
    assert torch.equal(stats[0], stats2[0]) and torch.equal(stats[1], stats2[1])


# ---------------------------------------------------------------- argument checks


def _x():
    return sample((4, 6))


BAD_CALLS = [
    (lambda: ops.fake_quant(_x().int(), 0.1, 0), "x must be float32, bfloat16, float16 or float64"),
    (lambda: ops.fake_quant(_x(), 0.1, 0, 5, 5), "qmin must be < qmax, got qmin=5 qmax=5"),
    (lambda: ops.fake_quant(_x(), 0.1, 0, 0, 2**24), r"\[qmin, qmax\] must lie in \[-2\^23, 2\^23\]"),
    (lambda: ops.fake_quant(_x(), torch.ones(6) * 0.1, torch.zeros(6), axis=2), r"axis must be in \[-2, 1\]"),
    (lambda: ops.fake_quant(_x(), torch.ones(5) * 0.1, torch.zeros(5), axis=1),
     "scale must have one element per channel of x along axis = 6, got 5"),
    (lambda: ops.fake_quant(_x(), torch.ones(2) * 0.1, torch.zeros(2)),
     r"scale must have 1 element \(per tensor, axis=None\) = 1, got 2"),
    (lambda: ops.fake_quant(_x(), torch.ones(6) * 0.1, torch.zeros(5), axis=1),
     "zero_point must have 6 element"),
    (lambda: ops.fake_quant(_x(), torch.ones(1, 1), torch.zeros(1, 1)), "must be 0-D or 1-D"),
    (lambda: ops.fake_quant(_x(), torch.ones(1, dtype=torch.int32), 0), "scale must be a floating tensor"),
    (lambda: ops.fake_quant(_x(), 0.1, torch.zeros(1, dtype=torch.bool)), "zero_point must be an integer or floating"),
    (lambda: ops.fake_quant(_x(), 0.0, 0), "scale must be finite and > 0, got 0 at channel 0"),
    (lambda: ops.fake_quant(_x(), -1.0, 0), "scale must be finite and > 0, got -1"),
    (lambda: ops.fake_quant(_x(), math.nan, 0), "scale must be finite and > 0, got nan"),
    (lambda: ops.fake_quant(_x(), torch.tensor([1e-50], dtype=torch.float64), 0),
     "scale must be representable in fp32 with a finite reciprocal"),
    (lambda: ops.fake_quant(_x(), 0.1, 200), r"zero_point must lie in \[qmin, qmax\] = \[-128, 127\], got 200"),
    (lambda: ops.fake_quant(_x(), torch.ones(6), torch.tensor([0, 0, 0, -300, 0, 0]), axis=-1),
     "got -300 at channel 3"),
    (lambda: ops.fake_quant(_x(), 0.1, 0, mask=torch.ones(4, 5, dtype=torch.bool)), r"mask must have x's shape"),
    (lambda: ops.fake_quant(_x(), 0.1, 0, mask=torch.full((4, 6), 0.5)), "a non-bool mask must hold only 0 and 1"),
    (lambda: ops.fake_quant(_x(), 0.1, 0, grad_factor=0.0), "grad_factor must be finite and > 0"),
    (lambda: ops.fake_quant_backward(_x().double(), _x(), torch.tensor([0.1]), torch.tensor([0]), -128, 127),
     "fake_quant_backward: grad must have x's shape and dtype"),
    (lambda: ops.fake_quant_observe(_x(), torch.tensor([0.0]), torch.tensor([1.0]), 0.0),
     r"momentum must be in \(0, 1\], got 0"),
    (lambda: ops.fake_quant_observe(_x(), torch.tensor([0.0]).double(), torch.tensor([1.0]), 0.1),
     "running_min must be Float"),
    (lambda: ops.fake_quant_observe(_x(), torch.zeros(2), torch.zeros(2), 0.1),
     "running_min must be a contiguous CPU float32 tensor with 1 element"),
    (lambda: ops.fake_quant_observe(torch.tensor([1.0, math.inf]), torch.zeros(1), torch.zeros(1), 0.1),
     "x must be finite to be observed"),
    (lambda: ops.fake_quant_observe(torch.zeros(0), torch.zeros(1), torch.zeros(1), 0.1),
     "x must not be empty"),
    (lambda: ops.fake_quant_observe(_x().int(), torch.zeros(1), torch.zeros(1), 0.1),
     "fake_quant_observe: x must be float32"),
    (lambda: ops.fake_quant_observe(_x(), torch.zeros(1), torch.zeros(1), 0.1, 3, 3),
     "fake_quant_observe: qmin must be < qmax"),
]


@pytest.mark.parametrize("case", range(len(BAD_CALLS)))
def test_bad_arguments_raise_clear_errors(case):
    call, message = BAD_CALLS[case]
    with pytest.raises(RuntimeError, match=message):
        call()


def test_public_names():
    assert ck.fake_quant is ops.fake_quant and ck.fake_quant_observe is ops.fake_quant_observe


# ---------------------------------------------------------------- FakeQuantize module


def test_module_ema_observer_then_frozen():
    fq = ck.nn.FakeQuantize(0, 255, observer="ema", momentum=0.1)
    rmin, rmax = torch.tensor([math.inf]), torch.tensor([-math.inf])
    for step in range(2):
        x = sample((32, 40), seed=step) + step
        y = fq(x)
        ye, s, z = ops.fake_quant_observe(x, rmin, rmax, 0.1, 0, 255)
        assert torch.equal(y, ye) and torch.equal(fq.scale, s) and torch.equal(fq.zero_point, z)
        assert torch.equal(fq.running_min, rmin) and torch.equal(fq.running_max, rmax)
    fq.disable_observer()
    x = sample((32, 40), seed=9) * 5
    assert torch.equal(fq(x), ops.fake_quant(x, s, z, 0, 255))
    assert torch.equal(fq.running_min, rmin)  # frozen
    fq.disable_fake_quant()
    assert fq(x) is x


def test_module_observer_runs_while_fake_quant_disabled():
    fq = ck.nn.FakeQuantize(-128, 127, symmetric=True).disable_fake_quant()
    x = sample((10, 10))
    assert fq(x) is x
    assert fq.running_min.item() == x.min().item() and fq.scale.item() == pytest.approx(x.abs().max().item() / 127.5)


def test_module_per_channel_weight_with_mask_and_gradient():
    w = sample((8, 3, 3, 3)).requires_grad_()
    mask = sample((8, 3, 3, 3), seed=5) > 0
    fq = ck.nn.FakeQuantize(-127, 127, axis=0, channels=8, symmetric=True, momentum=1.0)
    y = fq(w, mask)
    s, z = fq.calculate_qparams()
    assert s.shape == (8,) and torch.all(z == 0)
    assert torch.equal(y, ops.fake_quant(w.detach(), s, z, -127, 127, 0, mask))
    assert torch.all(y[~mask] == 0)
    y.sum().backward()
    assert torch.all(w.grad[~mask] == 0) and torch.all(w.grad[mask] == 1)


def test_module_lsq_learns_scale_and_zero_point():
    fq = ck.nn.FakeQuantize(0, 15, observer="lsq", learnable_zero_point=True)
    x = sample((64, 64)).requires_grad_()
    y = fq(x)  # first batch initializes the qparams from its range
    s0, z0 = ref.observer_qparams(x.detach().min(), x.detach().max(), 0, 15)
    assert fq.initialized.item() == 1
    assert torch.equal(fq.scale.detach(), s0.reshape(1)) and fq.zero_point.item() == z0.item()
    assert isinstance(fq.scale, torch.nn.Parameter) and isinstance(fq.zero_point, torch.nn.Parameter)
    g = sample((64, 64), seed=1)
    y.backward(g)
    _, gs, gz = ref.fake_quant_backward(g, x.detach(), fq.scale.detach(), fq.zero_point.detach(), 0, 15)
    torch.testing.assert_close(fq.scale.grad, gs, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(fq.zero_point.grad, gz, rtol=1e-5, atol=1e-8)


def test_module_fixed_state_dict_deepcopy_and_repr(tmp_path):
    import copy

    fq = ck.nn.FakeQuantize(-128, 127, axis=1, channels=4, observer="ema")
    x = sample((5, 4, 6))
    fq(x)
    path = tmp_path / "fq.pt"
    torch.save(fq.state_dict(), path)
    other = ck.nn.FakeQuantize(-128, 127, axis=1, channels=4, observer="ema").disable_observer()
    other.load_state_dict(torch.load(path, weights_only=True))
    fq.disable_observer()
    assert torch.equal(other(x), fq(x))
    assert torch.equal(copy.deepcopy(fq)(x), fq(x))
    fixed = ck.nn.FakeQuantize(-8, 7, observer="fixed", scale=0.1, zero_point=1)
    assert torch.equal(fixed(x), ops.fake_quant(x, 0.1, 1, -8, 7))
    assert "qmin=-128, qmax=127, axis=1, channels=4, observer=ema" in repr(fq)
    assert "observer=fixed" in repr(fixed) and "per_tensor" in repr(fixed)


@pytest.mark.parametrize("kwargs,message", [
    (dict(observer="kl"), "observer must be one of"),
    (dict(qmin=3, qmax=3), "qmin must be < qmax"),
    (dict(channels=4), "needs a channel axis"),
    (dict(axis=0, channels=0), "channels must be >= 1"),
    (dict(observer="fixed"), "needs a scale"),
    (dict(momentum=0.0), "momentum must be in"),
])
def test_module_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ck.nn.FakeQuantize(**kwargs)


# ---------------------------------------------------------------- every SIMD path on awkward inputs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,axis", [((3, 5, 37), 1), ((77, 19), -1), ((1001,), None), ((16, 1, 7), 0)])
def test_every_isa_bit_identical_with_mask_specials_and_tails(dtype, shape, axis):
    """Lengths that leave 1-15 element tails, a mask, NaN / inf / huge values and exact ties: every
    CPU path (portable, AVX2, AVX-512 where present) must give the same bits, forward and backward
    (grad_x and the LSQ scale / zero-point gradients)."""
    x = sample(shape, torch.float32, seed=3) * 3
    flat = x.view(-1)
    flat[::97] = float("nan")
    flat[5::101] = float("inf")
    flat[7::103] = -1e30
    flat[9::89] = 0.125 * 2.5  # a tie at scale 0.125
    x = x.to(dtype)
    g = sample(shape, torch.float32, seed=4).to(dtype)
    mask = sample(shape, torch.float32, seed=5) > -0.5
    scale, zp = qparams(x.float().nan_to_num(0, 10, -10), axis, -128, 127)
    scale = torch.full_like(scale, 0.125) if axis is None else scale
    zpf = zp.float()

    def both():
        y = ops.fake_quant(x, scale, zp, -128, 127, axis, mask)
        gx, gs, gz = ops.fake_quant_backward(g, x, scale, zpf, -128, 127, axis, mask)
        return torch.cat([t.double().reshape(-1) for t in (y, gx, gs, gz)]).view(torch.int64)  # NaN-safe

    out = run_on_every_isa(both).view(torch.float64)
    n = x.numel()
    assert torch.equal(out[:n].nan_to_num(7.0), ref.fake_quant(x, scale, zp, -128, 127, axis, mask).double()
                       .reshape(-1).nan_to_num(7.0))
    assert not out[:n][~mask.reshape(-1)].any()
