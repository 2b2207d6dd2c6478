"""Weight-only FP8 layers (Fp8WeightLinear / Fp8WeightConv2d, Fp8WeightConfig): one byte per weight,
codes equal to torch's float8 casts of W / scale, outputs within the stated bf16 tolerance of the
fp32 reference, state dict checks, conversion report, torch.compile, every refused argument."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress_kernels as ck
from compress_kernels import formats, reference
from compress_kernels.nn.fp8 import Fp8WeightConv2d, Fp8WeightLinear

TORCH_FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def linear(seed=0, n=24, k=40, bias=True):
    torch.manual_seed(seed)
    return nn.Linear(k, n, bias=bias)


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_linear_codes_and_output(fmt):
    lin = linear()
    q = Fp8WeightLinear.from_float(lin, fmt)
    scale = lin.weight.detach().abs().amax(1) / formats.FORMATS[fmt].max_finite
    assert torch.equal(q.weight_scale, scale)
    expected_codes = (lin.weight.detach() / scale[:, None]).to(TORCH_FP8[fmt]).view(torch.uint8)
    assert torch.equal(q.weight_codes, expected_codes)
    assert q.weight_codes.dtype == torch.uint8 and q.weight_codes.element_size() == 1
    x = torch.randn(5, 3, 40, generator=torch.Generator().manual_seed(1))
    y = q(x)
    ref = reference.fp8_weight_linear(x, q.weight_codes, q.weight_scale, q.bias, fmt)
    assert y.dtype == torch.float32 and y.shape == (5, 3, 24)
    # bf16 input and bf16 matmul result: 2^-8 relative per product term, bounded by sum |x||w|
    bound = F.linear(x.abs(), q.dequantized_weight().abs()) * 2**-7 + 1e-6
    assert bool(((y - ref).abs() <= bound).all())
    # the quantization error itself is small and not zero
    err = (ref - lin(x)).abs().max()
    assert 0 < err < (0.05 if fmt == "e4m3" else 0.1) * lin(x).abs().max()
    assert torch.equal(q.decoded_weight().float(), formats.decode(q.weight_codes, fmt))


def test_conv_matches_reference():
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1, groups=2)
    q = Fp8WeightConv2d.from_float(conv)
    x = torch.randn(2, 6, 9, 9)
    ref = F.conv2d(x, q.dequantized_weight(), q.bias, 2, 1, 1, 2)
    y = q(x)
    bound = F.conv2d(x.abs(), q.dequantized_weight().abs(), None, 2, 1, 1, 2) * 2**-7 + 1e-6
    assert bool(((y - ref).abs() <= bound).all())
    assert y.dtype == torch.float32
    assert q(x.bfloat16()).dtype == torch.bfloat16


def test_convert_model_report_bytes_and_compile():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding="same"),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    x = torch.randn(2, 3, 4, 4)
    expected = model(x)
    report = ck.convert_(model, ck.Fp8WeightConfig(), inplace=False)
    converted = report.model
    assert [c[0] for c in report.converted] == ["0", "4"]
    assert report.skipped == [("2", "Conv2d", "only numeric zero padding is supported")]
    y = converted(x)
    assert (y - expected).abs().max() < 0.05 * expected.abs().max()
    fp8 = converted[4]
    assert sum(t.numel() * t.element_size() for t in fp8.state_dict().values() if isinstance(t, torch.Tensor)) == (
        10 * 128 + 4 * 10 + 4 * 10)
    compiled = torch.compile(fp8, fullgraph=True)
    x2 = torch.randn(3, 128)
    assert torch.equal(compiled(x2), fp8(x2))
    small = ck.convert_(model, ck.Fp8WeightConfig(format="e5m2", min_weights=1000), inplace=False)
    assert [c[0] for c in small.converted] == ["4"]
    assert small.model[4].format == "e5m2"


def test_state_dict_round_trip_and_checks():
    q = Fp8WeightLinear.from_float(linear())
    fresh = Fp8WeightLinear(40, 24)
    fresh.load_state_dict(q.state_dict())
    x = torch.randn(4, 40)
    assert torch.equal(fresh(x), q(x))
    buf = __import__("io").BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh(x), q(x))
    with pytest.raises(ValueError, match=r"\['format'\] = 'e4m3': expected 'e5m2' as this module was built"):
        Fp8WeightLinear(40, 24, format="e5m2").load_state_dict(q.state_dict())
    state = q.state_dict()
    state["weight_codes"] = state["weight_codes"].clone()
    state["weight_codes"][3, 5] = 0xFF
    with pytest.raises(ValueError, match=r"weight_codes holds code 255 at index \(3, 5\), which is NaN / Inf in e4m3"):
        fresh.load_state_dict(state)
    state = q.state_dict()
    state["weight_codes"] = state["weight_codes"].to(torch.int8)
    with pytest.raises(TypeError, match="weight_codes has dtype torch.int8, expected torch.uint8"):
        fresh.load_state_dict(state)
    state = q.state_dict()
    state["weight_scale"] = -state["weight_scale"]
    with pytest.raises(ValueError, match="weight_scale holds .*, expected finite scales > 0"):
        fresh.load_state_dict(state)
    conv = Fp8WeightConv2d.from_float(nn.Conv2d(2, 4, 3))
    state = conv.state_dict()
    state["_extra_state"] = {**state["_extra_state"], "stride": (0, 1)}
    with pytest.raises(ValueError, match=r"\['stride'\] = \(0, 1\): expected a pair of ints >= 1"):
        Fp8WeightConv2d(2, 4, 3).load_state_dict(state)


def test_dtype_conversion_keeps_storage():
    q = Fp8WeightLinear.from_float(linear()).double()
    assert q.weight_scale.dtype == torch.float32 and q.decode_table.dtype == torch.bfloat16
    assert q(torch.randn(2, 40, dtype=torch.float64)).dtype == torch.float64


def test_refused_arguments():
    bad = linear()
    with torch.no_grad():
        bad.weight[2, 7] = float("inf")
    with pytest.raises(ValueError, match=r"weight must be finite to be quantized, got inf at index \[2, 7\]"):
        Fp8WeightLinear.from_float(bad)
    with pytest.raises(ValueError, match=r"format must be one of \['e4m3', 'e5m2'\], got 'e2m1'"):
        Fp8WeightLinear(4, 4, format="e2m1")
    with pytest.raises(TypeError, match="expected nn.Linear, got Conv2d"):
        Fp8WeightLinear.from_float(nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="only numeric zero padding is supported, got padding='same'"):
        Fp8WeightConv2d.from_float(nn.Conv2d(1, 1, 3, padding="same"))
    with pytest.raises(ValueError, match="groups=3 must divide in_channels=4"):
        Fp8WeightConv2d(4, 6, 3, groups=3)
    q = Fp8WeightLinear.from_float(linear())
    with pytest.raises(ValueError, match="the input's last dimension is 39, expected in_features = 40"):
        q(torch.randn(2, 39))
    with pytest.raises(TypeError, match="the input must be a floating-point tensor, got torch.int64"):
        q(torch.ones(2, 40, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"Fp8WeightConfig: format must be one of \['e4m3', 'e5m2'\], got 'E4M3'"):
        ck.Fp8WeightConfig(format="E4M3")
    with pytest.raises(TypeError, match="Fp8WeightConfig: min_weights must be an int, got 1.5"):
        ck.Fp8WeightConfig(min_weights=1.5)
