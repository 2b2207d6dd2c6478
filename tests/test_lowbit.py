"""Low-bit fake quantization (compress_kernels.lowbit, nn.WeightFakeQuantize): FP8 / FP4 formats and
group-wise integers with per-tensor / per-channel / per-group scales, equal to torch's float8 casts
and to a loop-by-loop integer reference; the straight-through gradient; the module's state dict;
QAT with float weight formats; every refused argument."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress_kernels as ck
from compress_kernels import formats, lowbit
from compress_kernels.nn.fake_quant import WeightFakeQuantize
from compress_kernels.nn.qat import QATLinear

FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def sample(shape, seed=0, spread=8):
    g = torch.Generator().manual_seed(seed)
    n = torch.Size(shape).numel()
    return (torch.randn(n, generator=g) * torch.exp2(torch.randint(-spread, spread, (n,), generator=g).float())
            ).reshape(shape)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, NaN where the other is NaN."""
    nan = torch.isnan(a)
    return torch.equal(nan, torch.isnan(b)) and torch.equal(a[~nan].view(torch.int32), b[~nan].view(torch.int32))


@pytest.mark.parametrize("fmt", list(FP8))
def test_unit_scale_equals_torch_cast(fmt):
    x = torch.cat([sample((5000,), spread=30), formats.decode(torch.arange(256, dtype=torch.uint8), fmt),
                   torch.tensor([float("inf"), -float("inf"), float("nan"), -0.0, 1e30, -1e-30])])
    y = lowbit.fake_quantize(x, fmt, scale=torch.ones(1))
    assert same(y, x.to(FP8[fmt]).float())


@pytest.mark.parametrize("fmt", list(FP8))
@pytest.mark.parametrize("axis,group_size", [(None, None), (0, None), (1, None), (0, 32), (None, 64)])
def test_float_format_scales_equal_torch_cast(fmt, axis, group_size):
    x = sample((24, 128), seed=1)
    y = lowbit.fake_quantize(x, fmt, axis=axis, group_size=group_size)
    if group_size is not None:
        blocks = x.reshape(24, -1, group_size)
        s = (blocks.abs().amax(-1, keepdim=True) / formats.FORMATS[fmt].max_finite)
        expected = ((blocks / s).to(FP8[fmt]).float() * s).reshape(x.shape)
    else:
        dims = [d for d in range(2) if d != axis] if axis is not None else [0, 1]
        s = x.abs().amax(dim=dims, keepdim=True) / formats.FORMATS[fmt].max_finite
        expected = (x / s).to(FP8[fmt]).float() * s
    assert same(y, expected)
    assert not torch.equal(y, x)


def test_e2m1_values_and_nan_passthrough():
    x = torch.tensor([[0.1, 0.7, -2.6, 6.0, float("nan"), 100.0, -1.2, 4.9]])
    y = lowbit.fake_quantize(x, "e2m1", scale=torch.ones(1))
    assert y[0, :4].tolist() == [0.0, 0.5, -3.0, 6.0]
    assert torch.isnan(y[0, 4]) and y[0, 5:].tolist() == [6.0, -1.0, 4.0]
    grouped = lowbit.fake_quantize(sample((4, 64), seed=3), "e2m1", group_size=32)
    scale, _ = lowbit.compute_scales(sample((4, 64), seed=3), "e2m1", group_size=32)
    levels = (grouped.reshape(4, 2, 32) / scale.unsqueeze(-1)).abs()
    allowed = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6])
    assert ((levels.reshape(-1, 1) - allowed).abs().min(-1).values < 1e-5).all()


def _int_reference(x, bits, group_size, symmetric):
    """Loop over rows and groups: symmetric / asymmetric integer fake quantization per group."""
    out = torch.empty_like(x)
    rows = x.reshape(x.shape[0], -1)
    flat = out.reshape(x.shape[0], -1)
    for r in range(rows.shape[0]):
        for g0 in range(0, rows.shape[1], group_size):
            block = rows[r, g0:g0 + group_size]
            if symmetric:
                qmax = 2 ** (bits - 1) - 1
                qmin, s, z = -qmax, float(block.abs().max()) / qmax, 0
                s = s if s > 0 else 1.0
            else:
                qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
                lo, hi = min(float(block.min()), 0.0), max(float(block.max()), 0.0)
                s = max((hi - lo) / (qmax - qmin), torch.finfo(torch.float32).eps)
                s = float(torch.tensor(s, dtype=torch.float32))
                z = int(min(max(qmin - round(lo / s), qmin), qmax))
            s_t = torch.tensor(s, dtype=torch.float32)
            q = torch.clamp(torch.round(block / s_t) + z, qmin, qmax)
            flat[r, g0:g0 + group_size] = (q - z) * s_t
    return out


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int_groups_equal_loop_reference(bits, group_size, symmetric):
    x = sample((6, 256), seed=bits + group_size, spread=3)
    y = lowbit.fake_quantize(x, f"int{bits}", group_size=group_size, symmetric=symmetric)
    expected = _int_reference(x, bits, group_size, symmetric)
    assert torch.allclose(y, expected, rtol=0, atol=1e-6 * float(x.abs().max()))
    q, scale, zero_point = lowbit.quantize_groups(x, bits, group_size, symmetric)
    assert scale.shape == (6, 256 // group_size) and q.dtype == torch.int8
    assert torch.equal(lowbit.dequantize_groups(q, scale, zero_point, group_size), y)
    # smaller groups fit the data better
    if group_size == 32:
        coarse = lowbit.fake_quantize(x, f"int{bits}", group_size=128, symmetric=symmetric)
        assert (y - x).pow(2).sum() < (coarse - x).pow(2).sum()


def test_conv_weight_groups_run_along_flattened_k():
    w = sample((8, 16, 3, 3), seed=4)
    y = lowbit.fake_quantize(w, "int4", group_size=48)
    assert torch.equal(y, _int_reference(w, 4, 48, True))
    assert lowbit.compute_scales(w, "int4", group_size=48)[0].shape == (8, 3)


def test_straight_through_gradient_is_clipped():
    x = torch.tensor([[0.3, 2.0, 500.0, -1000.0, 7.4, -7.6]], requires_grad=True)
    lowbit.fake_quantize(x, "e4m3", scale=torch.ones(1)).sum().backward()
    assert x.grad.tolist() == [[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]]
    x.grad = None
    lowbit.fake_quantize(x, "int4", scale=torch.ones(1)).sum().backward()
    assert x.grad.tolist() == [[1.0, 1.0, 0.0, 0.0, 1.0, 0.0]]  # round(-7.6) = -8 is outside [-7, 7]
    w = sample((4, 64), seed=5).requires_grad_()
    lowbit.fake_quantize(w, "e2m1", group_size=32).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # scales from the data: nothing clips


def test_bf16_and_fp64_inputs_keep_their_dtype():
    x = sample((4, 64), seed=6)
    for dtype in (torch.bfloat16, torch.float64):
        y = lowbit.fake_quantize(x.to(dtype), "e4m3", group_size=32)
        assert y.dtype == dtype
        assert torch.equal(y, lowbit.fake_quantize(x.to(dtype).float(), "e4m3", group_size=32).to(dtype))


def test_refused_arguments():
    x = sample((4, 96))
    with pytest.raises(ValueError, match=r"format must be one of \['e4m3', 'e5m2', 'e2m1', 'int2'.*got 'fp8'"):
        lowbit.fake_quantize(x, "fp8")
    with pytest.raises(ValueError, match=r"group_size=64 must divide K = 96 \(the input of shape \(4, 96\)"):
        lowbit.fake_quantize(x, "int4", group_size=64)
    with pytest.raises(ValueError, match="axis must be None or 0, got 1"):
        lowbit.fake_quantize(x, "int4", axis=1, group_size=32)
    with pytest.raises(ValueError, match="group_size must be None or an int >= 1, got 0"):
        lowbit.fake_quantize(x, "int4", group_size=0)
    with pytest.raises(ValueError, match="axis must be None or a dimension of the 2-d input, got 2"):
        lowbit.fake_quantize(x, "int4", axis=2)
    with pytest.raises(ValueError, match=r"scale has 1 element\(s\), expected 12 \(shape \(4, 3\)\)"):
        lowbit.fake_quantize(x, "int4", scale=torch.ones(1), group_size=32)
    with pytest.raises(ValueError, match="scale holds 0.0, expected finite scales > 0"):
        lowbit.fake_quantize(x, "e4m3", scale=torch.zeros(1))
    with pytest.raises(ValueError, match="float format 'e5m2' takes no zero point"):
        lowbit.fake_quantize(x, "e5m2", scale=torch.ones(1), zero_point=torch.ones(1, dtype=torch.int32))
    with pytest.raises(ValueError, match="symmetric=False \\(zero points\\) needs an integer format, got 'e4m3'"):
        lowbit.fake_quantize(x, "e4m3", symmetric=False)
    with pytest.raises(TypeError, match="x must be a floating-point tensor, got torch.int64"):
        lowbit.fake_quantize(torch.ones(3, dtype=torch.int64), "int8")
    with pytest.raises(ValueError, match="bits must be an int in \\[2, 8\\], got 9"):
        lowbit.quantize_groups(x, 9, 32)
    with pytest.raises(ValueError, match="non-finite|NaN|nan"):
        lowbit.quantize_groups(torch.full((2, 32), float("nan")), 4, 32)


# ---------------------------------------------------------------- the module


def test_module_forward_mask_and_state():
    w = sample((8, 64), seed=7).requires_grad_()
    fq = WeightFakeQuantize("int4", group_size=32)
    assert torch.equal(fq(w), lowbit.fake_quantize(w, "int4", group_size=32))
    mask = torch.rand(8, 64, generator=torch.Generator().manual_seed(0)) > 0.5
    y = fq(w, mask)
    y.sum().backward()
    assert bool((y[~mask] == 0).all()) and bool((w.grad[~mask] == 0).all()) and bool((w.grad[mask] == 1).all())
    assert "format=int4, group_size=32" in repr(fq)
    other = WeightFakeQuantize("int4", group_size=32)
    other.fake_quant_enabled = False
    fq.load_state_dict(other.state_dict())
    assert fq.fake_quant_enabled is False and fq(w) is w


def test_module_refuses_other_settings_and_bad_state():
    fq = WeightFakeQuantize("e4m3", axis=0)
    with pytest.raises(ValueError, match=r"\['format'\] = 'e5m2': expected 'e4m3' as this module was built"):
        fq.load_state_dict(WeightFakeQuantize("e5m2", axis=0).state_dict())
    with pytest.raises(ValueError, match=r"\['group_size'\] = 32: expected None"):
        fq.load_state_dict(WeightFakeQuantize("e4m3", group_size=32).state_dict())
    state = fq.state_dict()
    state["_extra_state"] = {**state["_extra_state"], "fake_quant_enabled": "yes"}
    with pytest.raises(TypeError, match=r"\['fake_quant_enabled'\] = 'yes': expected a bool"):
        fq.load_state_dict(state)
    state["_extra_state"] = {**fq.state_dict()["_extra_state"], "scale": 1.0}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['scale'\]"):
        fq.load_state_dict(state)
    with pytest.raises(ValueError, match="WeightFakeQuantize: format must be one of"):
        WeightFakeQuantize("int9")
    with pytest.raises(ValueError, match="symmetric=False \\(zero points\\) needs an integer format, got 'e2m1'"):
        WeightFakeQuantize("e2m1", symmetric=False)
    with pytest.raises(ValueError, match="axis must be None or 0, got 1"):
        WeightFakeQuantize("int4", axis=1, group_size=32)
    with pytest.raises(TypeError, match="saturate must be None or a bool, got 'no'"):
        WeightFakeQuantize("e4m3", saturate="no")


# ---------------------------------------------------------------- QAT with float weight formats


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.bn(self.conv(x))), 1))


def test_qat_with_fp8_weights_trains_and_refuses_integer_conversion():
    torch.manual_seed(0)
    model = SmallNet()
    qat = ck.prepare_qat_(model, ck.QATConfig(weight_format="e4m3"), inplace=False)
    fc = qat.fc
    assert isinstance(fc, QATLinear) and fc.weight_format == "e4m3"
    x = torch.randn(4, 8 * 8 * 8)
    expected = F.linear(x, lowbit.fake_quantize(fc.linear.weight, "e4m3", axis=0), fc.linear.bias)
    assert torch.equal(fc(x), expected)
    opt = torch.optim.SGD(qat.parameters(), lr=0.1)
    before = fc.linear.weight.detach().clone()
    F.cross_entropy(qat(torch.randn(8, 1, 8, 8)), torch.arange(8)).backward()
    opt.step()
    assert not torch.equal(before, fc.linear.weight)
    with pytest.raises(ValueError, match="prepared with weight_format='e4m3' \\(float weights\\); the integer-only"):
        ck.convert_(qat)
    fresh = ck.prepare_qat_(SmallNet(), ck.QATConfig(weight_format="e4m3"))
    fresh.load_state_dict(qat.state_dict())
    integer = ck.prepare_qat_(SmallNet(), ck.QATConfig())
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['weight_format'\]"):
        integer.load_state_dict(qat.state_dict())


def test_qat_config_checks_weight_format():
    with pytest.raises(ValueError, match=r"QATConfig: weight_format must be one of \['int', 'e4m3', 'e5m2', 'e2m1'\], "
                                         r"got 'int4'"):
        ck.QATConfig(weight_format="int4")
    with pytest.raises(ValueError, match="learnable_scale=True \\(LSQ\\) is for integer weights, got "
                                         "weight_format='e5m2'"):
        ck.QATConfig(weight_format="e5m2", learnable_scale=True)
