"""QuantLinear: integer-exact static mode, dynamic mode as an nn.Linear drop-in, state and compile."""

import copy
import io

import pytest
import torch
from torch import nn

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.nn import QuantLinear


def make_linear(k=48, n=24, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(k, n)


def static_layer(linear, **kw):
    args = dict(input_scale=0.05, input_zero_point=120, output_scale=0.04, output_zero_point=110)
    args.update(kw)
    return QuantLinear.from_float(linear, **args)


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("rounding", ["double", "single"])
def test_static_equals_the_integer_reference(per_channel, rounding):
    lin = make_linear()
    q = static_layer(lin, per_channel=per_channel, rounding=rounding)
    x_q = q.quantize_input(torch.randn(2, 7, 48) * 2)
    got = q(x_q)
    assert got.shape == (2, 7, 24) and got.dtype == torch.uint8
    want = ref.int8_linear(x_q.reshape(-1, 48), 120, q.weight_q, q.bias_q, q.m0, q.shift, 110, 0, 255,
                           torch.uint8, rounding)
    assert torch.equal(got.reshape(-1, 24), want)
    # and it approximates the float layer to within a few output steps
    x_f = ck.numerics.dequantize(x_q, 0.05, 120)
    assert (q.dequantize_output(got) - lin(x_f)).abs().max().item() < 4 * 0.04


def test_static_fused_relu_and_int8_io():
    lin = make_linear()
    q = QuantLinear.from_float(lin, input_scale=0.05, input_zero_point=-3, output_scale=0.04, output_zero_point=-20,
                               input_dtype=torch.int8, output_dtype=torch.int8, activation="relu6")
    x_q = q.quantize_input(torch.randn(9, 48))
    y = q(x_q)
    assert y.dtype == torch.int8
    assert y.min().item() >= -20 and y.max().item() <= -20 + round(6 / 0.04)
    x_f = ck.numerics.dequantize(x_q, 0.05, -3)
    assert (q.dequantize_output(y) - lin(x_f).clamp(0, 6)).abs().max().item() < 4 * 0.04


def test_dynamic_is_a_drop_in_for_linear():
    lin = make_linear(256, 64)
    q = QuantLinear.from_float(lin, dynamic=True)
    x = torch.randn(3, 5, 256)
    y = q(x)
    assert y.shape == (3, 5, 64) and y.dtype == torch.float32
    torch.testing.assert_close(y, lin(x).detach(), atol=0.03, rtol=0.02)
    # exactly the composition of the reference ops
    xq, xs = ref.quantize_rows(x.reshape(-1, 256))
    want = ref.int8_linear_float(xq, 0, q.weight_q, xs, q.weight_scale, q.bias)
    assert torch.equal(y.reshape(-1, 64), want)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), lin)
    ref_out = model(x).detach()
    model[2] = q
    torch.testing.assert_close(model(x), ref_out, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("dynamic", [False, True])
def test_state_dict_round_trip_is_bit_exact(dynamic):
    lin = make_linear()
    q = QuantLinear.from_float(lin, dynamic=True) if dynamic else static_layer(lin, activation="relu")
    x = torch.randn(6, 48) if dynamic else q.quantize_input(torch.randn(6, 48))
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    fresh = QuantLinear(48, 24, mode="dynamic" if dynamic else "static")
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh(x), q(x))
    assert (fresh.qmin, fresh.input_zero_point) == (q.qmin, q.input_zero_point)
    assert torch.equal(copy.deepcopy(q)(x), q(x))
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=False)(x), q(x))


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph(dynamic):
    lin = make_linear()
    q = QuantLinear.from_float(lin, dynamic=True) if dynamic else static_layer(lin)
    x = torch.randn(4, 48) if dynamic else q.quantize_input(torch.randn(4, 48))
    compiled = torch.compile(q, fullgraph=True)
    assert torch.equal(compiled(x), q(x))


def test_from_float_refuses():
    with pytest.raises(TypeError, match="expected nn.Linear, got Conv2d"):
        QuantLinear.from_float(nn.Conv2d(3, 3, 1), dynamic=True)
    with pytest.raises(ValueError, match="static mode needs input_scale and output_scale"):
        QuantLinear.from_float(make_linear())
    with pytest.raises(ValueError, match="input_zero_point must be in \\[0, 255\\]"):
        static_layer(make_linear(), input_zero_point=-1)
    with pytest.raises(ValueError, match='mode must be "static" or "dynamic"'):
        QuantLinear(4, 4, mode="weird")
    with pytest.raises(ValueError, match='activation must be None, "relu" or "relu6"'):
        static_layer(make_linear(), activation="gelu")


def test_extra_repr_names_the_quantization():
    s = repr(static_layer(make_linear(), activation="relu"))
    assert "mode=static" in s and "zp=120" in s and "clamp=[110, 255]" in s
