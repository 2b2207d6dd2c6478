"""The two kernels of a static int8 layer behind a float interface: quantize_per_tensor (fp32 ->
int8 / uint8 in one pass, non-finite rows flagged) and int8_linear_dequant (int8_linear with the
dequantization in its epilogue). Exact against the reference on every ISA path, equal to the
composition of numerics.quantize / int8_linear / numerics.dequantize, opcheck, every argument check
on CPU and on meta tensors; QuantLinearFloatIO on them equals its reference mode bit for bit and
computes non-finite rows in float."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress_kernels as ck
from compress_kernels import numerics
from compress_kernels import reference as ref
from compress_kernels.nn.float_io import QuantLinearFloatIO
from compress_kernels.testing import rand_int, rand_weight, run_on_every_isa

OPS = torch.ops.compress_kernels


def _special_values(scale: float) -> torch.Tensor:
    """Ties of x / scale at both signs, values just off the ties, saturating and overflowing values,
    subnormals, signed zeros."""
    ties = (torch.arange(-300, 300, dtype=torch.float32) + 0.5) * scale
    near = torch.cat([torch.nextafter(ties, torch.tensor(float("inf"))),
                      torch.nextafter(ties, torch.tensor(float("-inf")))])
    edge = torch.tensor([0.0, -0.0, 1e-45, -1e-45, 1e-38, 3e38, -3e38, 1e30, -1e30, scale * 127.5, scale * 255.5,
                         -scale * 128.5, scale * 2 ** 24, -scale * 2 ** 24])
    return torch.cat([ties, near, edge])


def _quantize(x, scale, zp, qmin, qmax, dtype):
    q, bad = ck.quantize_per_tensor(x, scale, zp, qmin, qmax, dtype)
    return torch.cat([q.reshape(-1).to(torch.int32), bad.to(torch.int32)])


@pytest.mark.parametrize("cols", [1, 7, 8, 15, 16, 17, 33, 100])
@pytest.mark.parametrize("dtype, zp, qmin, qmax", [(torch.uint8, 128, 0, 255), (torch.uint8, 3, 10, 250),
                                                   (torch.int8, 0, -128, 127), (torch.int8, -20, -127, 127)])
def test_quantize_per_tensor_matches_reference_and_numerics(cols, dtype, zp, qmin, qmax):
    scale = torch.tensor(0.0371)
    g = torch.Generator().manual_seed(cols)
    values = torch.cat([_special_values(float(scale)), torch.randn(3000, generator=g) * 6])
    values = values[torch.randperm(values.numel(), generator=g)]
    x = values[: values.numel() // cols * cols].reshape(-1, cols)
    got = run_on_every_isa(_quantize, x, scale, zp, qmin, qmax, dtype)
    want_q, want_bad = ref.quantize_per_tensor(x, scale, zp, qmin, qmax, dtype)
    assert torch.equal(got, torch.cat([want_q.reshape(-1).to(torch.int32), want_bad.to(torch.int32)]))
    # finite inputs: numerics.quantize's bits (the layer's Quantize module)
    assert torch.equal(want_q, numerics.quantize(x, scale, zp, dtype, qmin, qmax))
    assert not bool(want_bad.any())


def test_quantize_per_tensor_flags_nonfinite_rows_only():
    x = torch.randn(6, 37, generator=torch.Generator().manual_seed(1))
    x[1, 0], x[3, 36], x[4, 5] = float("nan"), float("inf"), float("-inf")
    scale = torch.tensor(0.02)
    got = run_on_every_isa(_quantize, x, scale, 7, -128, 127, torch.int8)
    q, bad = got[:-6].reshape(6, 37), got[-6:]
    assert bad.tolist() == [0, 1, 0, 1, 1, 0]
    assert q[1, 0] == 7 and q[3, 36] == 7 and q[4, 5] == 7  # non-finite elements take the zero point
    finite_rows = [0, 2, 5]
    assert torch.equal(q[finite_rows].to(torch.int8), numerics.quantize(x[finite_rows], scale, 7, torch.int8))


def test_quantize_per_tensor_keeps_the_shape_of_x():
    x = torch.randn(2, 3, 20)
    q, bad = ck.quantize_per_tensor(x, torch.tensor(0.1), 128, 0, 255, torch.uint8)
    assert q.shape == (2, 3, 20) and q.dtype == torch.uint8 and bad.shape == (6,)
    q, bad = ck.quantize_per_tensor(torch.empty(0, 5), torch.tensor(0.1), 0, -128, 127, torch.int8)
    assert q.shape == (0, 5) and bad.shape == (0,)


def _linear_case(m, n, k, per_channel, seed=0):
    x = rand_int(m, k, lo=0, hi=255, dtype=torch.uint8, seed=seed)
    w = rand_weight(n, k, seed=seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    bias = torch.randint(-(2**16), 2**16, (n,), generator=g, dtype=torch.int32)
    real = (torch.rand(n if per_channel else 1, generator=g, dtype=torch.float64) + 0.05) / (k * 40)
    m0, shift = ck.quantize_multiplier(real)
    return x, w, bias, m0, shift


@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (5, 15, 5), (7, 63, 130), (16, 64, 64), (33, 200, 64),
                                     (64, 48, 257)])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("int_dtype, zp, qmin, qmax, rounding", [(torch.uint8, 120, 0, 255, "double"),
                                                                 (torch.uint8, 0, 0, 255, "single"),
                                                                 (torch.int8, -5, -128, 100, "double")])
def test_int8_linear_dequant_is_dequantize_of_int8_linear(m, n, k, per_channel, int_dtype, zp, qmin, qmax, rounding):
    x, w, bias, m0, shift = _linear_case(m, n, k, per_channel, seed=m + n)
    packed = ck.int8_pack_weight(w)
    out_scale = torch.tensor(0.0123)
    got = run_on_every_isa(ck.int8_linear_dequant, x, 17, packed, bias, m0, shift, zp, qmin, qmax, int_dtype,
                           out_scale, rounding)
    want = ref.int8_linear_dequant(x, 17, w, bias, m0, shift, zp, qmin, qmax, int_dtype, out_scale, rounding)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    composed = numerics.dequantize(ck.int8_linear(x, 17, packed, bias, m0, shift, zp, qmin, qmax, int_dtype,
                                                  rounding), out_scale, zp)
    assert torch.equal(got, composed)


def test_opcheck():
    x, w, bias, m0, shift = _linear_case(9, 20, 33, True)
    packed = ck.int8_pack_weight(w)
    torch.library.opcheck(OPS.int8_linear_dequant, (x, 3, packed, bias, m0, shift, 128, 0, 255, torch.uint8,
                                                    torch.tensor(0.05), "double"))
    torch.library.opcheck(OPS.quantize_per_tensor, (torch.randn(4, 9), torch.tensor(0.1), 128, 0, 255, torch.uint8))


def _on_meta(args):
    return tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)


def _dequant_args(**change):
    x, w, bias, m0, shift = _linear_case(4, 16, 8, True)
    args = dict(x=x, x_zero_point=0, w=ck.int8_pack_weight(w), bias=bias, m0=m0, shift=shift, out_zero_point=128,
                qmin=0, qmax=255, int_dtype=torch.uint8, out_scale=torch.tensor(0.05), rounding="double")
    args.update(change)
    return tuple(args.values())


@pytest.mark.parametrize("change, message", [
    (dict(int_dtype=torch.int32, out_zero_point=0, qmin=-5, qmax=5), r"int8_linear_dequant: int_dtype must be int8 or "
     r"uint8, got Int"),
    (dict(out_scale=torch.tensor([0.1, 0.2])), r"int8_linear_dequant: out_scale must have one element \(a per-tensor "
     r"scale\), got shape \[2\]"),
    (dict(out_scale=torch.tensor(0.1, dtype=torch.float64)), r"int8_linear_dequant: out_scale must be"),
    (dict(out_zero_point=300), r"int8_linear_dequant: zero_point must be in \[0, 255\] for Byte, got 300"),
    (dict(qmin=-1), r"int8_linear_dequant: \[qmin, qmax\] must lie in \[0, 255\] for Byte, got \[-1, 255\]"),
])
def test_int8_linear_dequant_refuses_bad_arguments_on_cpu_and_meta(change, message):
    args = _dequant_args(**change)
    with pytest.raises(RuntimeError, match=message):
        OPS.int8_linear_dequant(*args)
    if "out_scale" not in change or change["out_scale"].numel() != 1 or change["out_scale"].dtype != torch.float32:
        with pytest.raises(RuntimeError, match=message):
            OPS.int8_linear_dequant(*_on_meta(args[:2]), args[2].to("meta"), *_on_meta(args[3:]))


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_nonpositive_or_nonfinite_scales_are_refused(value):
    with pytest.raises(RuntimeError, match=r"int8_linear_dequant: out_scale must be finite and > 0, got"):
        OPS.int8_linear_dequant(*_dequant_args(out_scale=torch.tensor(value)))
    with pytest.raises(RuntimeError, match=r"quantize_per_tensor: scale must be finite and > 0, got"):
        OPS.quantize_per_tensor(torch.randn(2, 3), torch.tensor(value), 0, -128, 127, torch.int8)


@pytest.mark.parametrize("args, message", [
    ((torch.randn(2, 3).double(), torch.tensor(0.1), 0, -128, 127, torch.int8),
     r"quantize_per_tensor: x must be"),
    ((torch.tensor(1.0), torch.tensor(0.1), 0, -128, 127, torch.int8),
     r"quantize_per_tensor: x must have at least one dimension \(rows along the last\), got a 0-D tensor"),
    ((torch.randn(2, 3), torch.tensor([0.1, 0.2]), 0, -128, 127, torch.int8),
     r"quantize_per_tensor: scale must have one element \(a per-tensor scale\), got shape \[2\]"),
    ((torch.randn(2, 3), torch.tensor(0.1), 0, -5, 5, torch.int32),
     r"quantize_per_tensor: out_dtype must be int8 or uint8, got Int"),
    ((torch.randn(2, 3), torch.tensor(0.1), -1, 0, 255, torch.uint8),
     r"quantize_per_tensor: zero_point must be in \[0, 255\] for Byte, got -1"),
    ((torch.randn(2, 3), torch.tensor(0.1), 0, 10, 5, torch.int8),
     r"quantize_per_tensor: qmin must be <= qmax, got qmin=10 qmax=5"),
])
def test_quantize_per_tensor_refuses_bad_arguments_on_cpu_and_meta(args, message):
    with pytest.raises(RuntimeError, match=message):
        OPS.quantize_per_tensor(*args)
    with pytest.raises(RuntimeError, match=message):
        OPS.quantize_per_tensor(*_on_meta(args))


def test_python_wrappers_refuse_non_integer_zero_points():
    with pytest.raises(TypeError, match="quantize_per_tensor: zero_point must be an int"):
        ck.quantize_per_tensor(torch.randn(2, 3), torch.tensor(0.1), 3.0, -128, 127, torch.int8)


# ---------------------------------------------------------------- the float-interface layer


def _float_io_layer(k=40, n=24, seed=0, dtype=torch.uint8):
    torch.manual_seed(seed)
    linear = nn.Linear(k, n)
    zp = 128 if dtype == torch.uint8 else 0
    return QuantLinearFloatIO.from_float(linear, (0.02, zp), (0.03, zp + 5), dtype=dtype), linear


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8])
def test_float_io_layer_equals_its_reference_mode(dtype):
    layer, _ = _float_io_layer(dtype=dtype)
    x = torch.randn(3, 11, 40, generator=torch.Generator().manual_seed(5)) * 2
    got = run_on_every_isa(layer, x)
    with ck.reference_mode():
        want = layer(x)
    assert got.shape == (3, 11, 24) and torch.equal(got, want)
    # and the three modules composed by hand
    composed = layer.dequantize(layer.linear(layer.quantize(x.reshape(-1, 40)))).reshape(3, 11, 24)
    assert torch.equal(got, composed)


def test_float_io_layer_computes_nonfinite_rows_in_float():
    layer, _ = _float_io_layer()
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(2))
    x[1, 3], x[3, 0] = float("nan"), float("-inf")
    y = layer(x)
    want_float = F.linear(x, layer.linear.dequantized_weight(), layer.linear.bias)
    torch.testing.assert_close(y[[1, 3]], want_float[[1, 3]], rtol=0, atol=0, equal_nan=True)
    assert bool(y[1].isnan().all()) and bool(y[3].isinf().any())
    assert torch.equal(y[[0, 2, 4]], layer(x[[0, 2, 4]]))  # the other rows do not see the bad ones
    with ck.reference_mode():
        y_ref = layer(x)
    assert torch.equal(y.nan_to_num(), y_ref.nan_to_num())


def test_float_io_layer_compiles_with_the_same_result():
    layer, _ = _float_io_layer()
    x = torch.randn(6, 40, generator=torch.Generator().manual_seed(3))
    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    assert torch.equal(compiled(x), layer(x))
