"""Every observer's qparams pinned to hand-computed values (per tensor and per channel, symmetric and
affine, uint8 and int8) and, where torch.ao has the same observer, to its calculate_qparams; the EMA
update sequences pinned step by step.

The formulas (torch.ao's MinMaxObserver): the range is widened to include 0; affine scale =
(max - min) / (qmax - qmin), zero_point = clamp(qmin - round(min / scale), qmin, qmax); symmetric
scale = max(-min, max) / ((qmax - qmin) / 2), zero_point 0 (int8) or 128 (uint8). EMA:
running = running + momentum * (batch - running), the first batch taken as is."""

import pytest
import torch
from torch.ao.quantization import observer as ao

from compress_kernels import numerics, reference
from compress_kernels.nn.fake_quant import FakeQuantize
from compress_kernels.nn.qat import ActFakeQuant

RANGES = {"uint8": (0, 255, torch.quint8), "int8": (-128, 127, torch.qint8)}
TWO_BATCHES = [torch.tensor([-1.0, 0.5, 0.25]), torch.tensor([0.0, 3.0, 2.0])]  # overall range [-1, 3]

# (dtype, symmetric) -> hand-computed (scale, zero_point) of the range [-1, 3]
HAND = {
    ("uint8", False): (4 / 255, 64),    # 1 / (4 / 255) = 63.75 -> 64
    ("int8", False): (4 / 255, -64),    # -128 + 64
    ("uint8", True): (3 / 127.5, 128),
    ("int8", True): (3 / 127.5, 0),
}


def ao_qparams(obs_cls, batches, dtype: str, symmetric: bool, per_channel: bool = False, **kw):
    qmin, qmax, qdtype = RANGES[dtype]
    if per_channel:
        scheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
    else:
        scheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    # the default range of the dtype (a customized quant_min / quant_max moves torch.ao's symmetric uint8
    # zero point from 128 to (qmin + qmax) // 2)
    obs = obs_cls(dtype=qdtype, qscheme=scheme, **kw)
    assert (obs.quant_min, obs.quant_max) == (qmin, qmax)
    for b in batches:
        obs(b)
    return obs.calculate_qparams()


# ---------------------------------------------------------------- min-max


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_minmax_observer_pinned(dtype):
    obs = numerics.MinMaxObserver()
    for b in TWO_BATCHES:
        obs.observe(b)
    scale, zp = obs.qparams(getattr(torch, dtype))
    want_scale, want_zp = HAND[(dtype, False)]
    assert scale == pytest.approx(want_scale, rel=1e-6) and zp == want_zp
    ao_scale, ao_zp = ao_qparams(ao.MinMaxObserver, TWO_BATCHES, dtype, False)
    assert scale == pytest.approx(float(ao_scale), rel=1e-7) and zp == int(ao_zp)


def test_minmax_range_widened_to_zero():
    obs = numerics.MinMaxObserver()
    obs.observe(torch.tensor([0.5, 2.0]))
    assert obs.qparams(torch.uint8) == (pytest.approx(2 / 255, rel=1e-6), 0)
    assert obs.qparams(torch.int8) == (pytest.approx(2 / 255, rel=1e-6), -128)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["affine", "symmetric"])
def test_choose_qparams_and_reference_observer_qparams_pinned(dtype, symmetric):
    qmin, qmax, _ = RANGES[dtype]
    want_scale, want_zp = HAND[(dtype, symmetric)]
    scale, zp = numerics.choose_qparams(torch.tensor(-1.0), torch.tensor(3.0), getattr(torch, dtype), symmetric)
    assert float(scale) == pytest.approx(want_scale, rel=1e-6) and int(zp) == want_zp
    scale, zp = reference.observer_qparams(torch.tensor([-1.0]), torch.tensor([3.0]), qmin, qmax, symmetric)
    assert float(scale) == pytest.approx(want_scale, rel=1e-6) and int(zp) == want_zp
    ao_scale, ao_zp = ao_qparams(ao.MinMaxObserver, TWO_BATCHES, dtype, symmetric)
    assert torch.equal(scale, ao_scale) and int(zp) == int(ao_zp)


# ---------------------------------------------------------------- EMA


def test_ema_observer_sequence_pinned():
    obs = numerics.EMAObserver(momentum=0.1)
    ao_obs = ao.MovingAverageMinMaxObserver(averaging_constant=0.1, dtype=torch.quint8)
    steps = [(torch.tensor([-1.0, 3.0]), (-1.0, 3.0)),     # the first batch is taken as is
             (torch.tensor([-3.0, 1.0]), (-1.2, 2.8)),     # -1 + 0.1 * (-3 + 1), 3 + 0.1 * (1 - 3)
             (torch.tensor([0.0, 5.0]), (-1.08, 3.02))]    # -1.2 + 0.1 * (0 + 1.2), 2.8 + 0.1 * (5 - 2.8)
    for batch, (lo, hi) in steps:
        obs.observe(batch)
        ao_obs(batch)
        assert float(obs.min_val) == pytest.approx(lo, abs=1e-6) and float(obs.max_val) == pytest.approx(hi, abs=1e-6)
        assert float(ao_obs.min_val) == pytest.approx(lo, abs=1e-6)
    scale, zp = obs.qparams(torch.uint8)
    assert scale == pytest.approx(4.1 / 255, rel=1e-6) and zp == 67  # 1.08 / (4.1 / 255) = 67.17
    ao_scale, ao_zp = ao_obs.calculate_qparams()
    assert scale == pytest.approx(float(ao_scale), rel=1e-6) and zp == int(ao_zp)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["affine", "symmetric"])
def test_fake_quantize_ema_per_tensor_pinned(dtype, symmetric):
    qmin, qmax, _ = RANGES[dtype]
    fq = FakeQuantize(qmin, qmax, observer="ema", symmetric=symmetric, momentum=0.5)
    batches = [torch.tensor([-1.0, 3.0, 0.5]), torch.tensor([-3.0, 1.0]), torch.tensor([0.0, 6.0])]
    running = [(-1.0, 3.0), (-2.0, 2.0), (-1.0, 4.0)]  # -1 + 0.5 * (-3 + 1), 3 + 0.5 * (1 - 3); then (-1, 4)
    for b, (lo, hi) in zip(batches, running):
        fq(b)
        assert (float(fq.running_min), float(fq.running_max)) == (lo, hi)
    scale, zp = fq.calculate_qparams()
    if symmetric:  # max(1, 4) / 127.5
        want = (4 / 127.5, 128 if dtype == "uint8" else 0)
    else:  # 5 / 255; 1 / (5 / 255) = 51
        want = (5 / 255, 51 if dtype == "uint8" else -77)
    assert float(scale) == pytest.approx(want[0], rel=1e-6) and int(zp) == want[1]
    ao_scale, ao_zp = ao_qparams(ao.MovingAverageMinMaxObserver, batches, dtype, symmetric, averaging_constant=0.5)
    assert torch.equal(scale, ao_scale) and torch.equal(zp, ao_zp.to(torch.int32))


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["affine", "symmetric"])
def test_fake_quantize_ema_per_channel_pinned(dtype, symmetric):
    qmin, qmax, _ = RANGES[dtype]
    fq = FakeQuantize(qmin, qmax, axis=0, channels=2, observer="ema", symmetric=symmetric, momentum=0.25)
    batches = [torch.tensor([[-1.0, 3.0], [0.5, 2.0]]), torch.tensor([[-5.0, 7.0], [1.0, 10.0]])]
    for b in batches:
        fq(b)
    # channel 0: (-1, 3) then -1 + 0.25 * (-5 + 1) = -2, 3 + 0.25 * (7 - 3) = 4
    # channel 1: (0.5, 2) then 0.5 + 0.25 * 0.5 = 0.625, 2 + 0.25 * 8 = 4
    assert fq.running_min.tolist() == [-2.0, 0.625] and fq.running_max.tolist() == [4.0, 4.0]
    scale, zp = fq.calculate_qparams()
    if symmetric:
        want_scale, want_zp = [4 / 127.5, 4 / 127.5], [128, 128] if dtype == "uint8" else [0, 0]
    else:  # channel 0: 6 / 255, 2 / (6 / 255) = 85; channel 1: min widened to 0: 4 / 255, zero point qmin
        want_scale = [6 / 255, 4 / 255]
        want_zp = [85, 0] if dtype == "uint8" else [-43, -128]
    assert scale.tolist() == pytest.approx(want_scale, rel=1e-6) and zp.tolist() == want_zp
    ao_scale, ao_zp = ao_qparams(ao.MovingAveragePerChannelMinMaxObserver, batches, dtype, symmetric,
                                 per_channel=True, averaging_constant=0.25, ch_axis=0)
    assert torch.equal(scale, ao_scale) and torch.equal(zp, ao_zp.to(torch.int32))


def test_act_fake_quant_qparams_pinned():
    q = ActFakeQuant(torch.uint8, momentum=0.5)
    q.train()
    q(torch.tensor([-1.0, 3.0]))
    q(torch.tensor([-2.0, 5.0]))  # running (-1 + 0.5 * (-2 + 1), 3 + 0.5 * (5 - 3)) = (-1.5, 4)
    scale, zp = q.qparams()
    assert scale == pytest.approx(5.5 / 255, rel=1e-6) and zp == 70  # 1.5 / (5.5 / 255) = 69.55


@pytest.mark.parametrize("symmetric", [False, True], ids=["affine", "symmetric"])
def test_lsq_initialization_pinned(symmetric):
    fq = FakeQuantize(-127, 127, axis=0, channels=2, observer="lsq", symmetric=symmetric)
    fq(torch.tensor([[-2.0, 1.0], [0.5, 0.25]]))
    scale, zp = fq.calculate_qparams()
    if symmetric:  # max(2, 1) / 127, max(0, 0.5) / 127
        assert scale.tolist() == pytest.approx([2 / 127, 0.5 / 127], rel=1e-6) and zp.tolist() == [0, 0]
    else:  # 3 / 254: -127 + round(2 / (3 / 254)) = -127 + 169 = 42 -> 42; 0.5 / 254: zero point -127
        assert scale.tolist() == pytest.approx([3 / 254, 0.5 / 254], rel=1e-6) and zp.tolist() == [42, -127]


# ---------------------------------------------------------------- sample-based observers


def sampled(obs, values: torch.Tensor):
    """Give a sample-based observer exactly these values (its own sample draws with replacement)."""
    obs.observe(values)
    obs.samples = [values.float()]
    return obs


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_percentile_observer_pinned(dtype):
    values = torch.arange(-50, 151, dtype=torch.float32)  # 201 values
    obs = sampled(numerics.PercentileObserver(percentile=99.0), values)
    # quantile 0.01 of 201 values: position 2 -> -48; quantile 0.99: position 198 -> 148
    scale, zp = obs.qparams(getattr(torch, dtype))
    assert scale == pytest.approx(196 / 255, rel=1e-5)
    assert zp == (62 if dtype == "uint8" else -66)  # 48 / (196 / 255) = 62.45


def test_percentile_of_a_non_negative_tensor_keeps_zero():
    obs = sampled(numerics.PercentileObserver(percentile=99.0), torch.arange(0, 101, dtype=torch.float32))
    assert obs.qparams(torch.uint8) == (pytest.approx(99 / 255, rel=1e-5), 0)  # the low percentile (1) -> 0


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_mse_observer_pinned(dtype):
    values = torch.arange(0, 256, dtype=torch.float32) * 0.01  # exactly the uint8 grid of scale 0.01
    obs = sampled(numerics.MSEObserver(), values)
    scale, zp = obs.qparams(getattr(torch, dtype))
    assert scale == pytest.approx(0.01, rel=1e-6) and zp == (0 if dtype == "uint8" else -128)


def test_mse_observer_keeps_a_single_outlier():
    values = torch.cat([torch.linspace(0, 1, 2000), torch.tensor([100.0])])
    obs = sampled(numerics.MSEObserver(), values)
    scale, zp = obs.qparams(torch.uint8)
    # a = 1: clipping the one outlier (at best to 20, a = 0.2) costs (100 - 20)^2 / 2001 = 3.2 per value,
    # far above the rounding error of the full range's step 100 / 255 (step^2 / 12 = 0.0128)
    assert scale == pytest.approx(100 / 255, rel=1e-6) and zp == 0


def test_kl_observer_pinned():
    obs = sampled(numerics.KLObserver(), torch.zeros(100))
    assert obs.qparams(torch.int8) == (1.0, 0) and obs.qparams(torch.uint8) == (1.0, 0)
    # A uniform bulk on [0, 1] and one value at 100: the bulk fills the first 21 of the 2048 bins (width
    # 100 / 2048), so the smallest candidate threshold, 256 bins (the uint8 levels) = 12.5, already holds
    # it undistorted: the outlier is clipped to 12.5.
    values = torch.cat([(torch.arange(20000, dtype=torch.float32) + 0.5) / 20000, torch.tensor([100.0])])
    obs = sampled(numerics.KLObserver(), values)
    assert obs.qparams(torch.uint8) == (pytest.approx(12.5 / 255, rel=1e-6), 0)
    # signed data: 128 levels per side, so the smallest threshold is 128 bins = 6.25, -6.25 widened to the minimum
    obs = sampled(numerics.KLObserver(), torch.cat([values, torch.tensor([-1.0])]))
    assert obs.qparams(torch.int8) == (pytest.approx(7.25 / 255, rel=1e-6), -128 + 35)
