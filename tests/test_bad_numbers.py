"""Numbers that would silently become something else are refused, with a message naming the
argument and the rule: non-integer multipliers / shifts / zero points / clamps in every op wrapper
(and in the C++ glue for direct torch.ops calls), non-finite or non-positive scales, out-of-range
zero points and non-finite weights in every module constructor / from_float, non-finite ranges in
the numerics helpers."""

import numpy as np
import pytest
import torch
from torch import nn

import compress_kernels as ck
from compress_kernels import numerics

M0, SHIFT = 1 << 30, 0  # the multiplier 0.5
OPS = torch.ops.compress_kernels


def _x(rows=3, k=8):
    return (torch.arange(rows * k).reshape(rows, k) % 41 - 20).to(torch.int8)


def _sparse_values(n=4, k=8):
    w = (torch.arange(n * k).reshape(n, k) % 4 + 1).to(torch.int8)
    w.view(n, k // 4, 4)[..., 1::2] = 0
    return ck.sparse24_compress(w)


def _image():
    return (torch.arange(100).reshape(1, 4, 5, 5) % 37 - 18).to(torch.int8)


def _conv_weight():
    return (torch.arange(144).reshape(4, 4, 3, 3) % 5 - 2).to(torch.int8)


def _sparse_conv_values():
    w = (torch.arange(144).reshape(4, 3, 3, 4) % 4 + 1).to(torch.int8)  # [OC, KH, KW, C]
    w[..., 1::2] = 0
    return ck.sparse24_compress(w.reshape(4, 36))


# Every op wrapper that takes a multiplier / zero point / clamp, as call(**overrides) with valid defaults.
def _requantize(m0=M0, shift=SHIFT, zero_point=0, qmin=-128, qmax=127):
    return ck.requantize(torch.arange(-5, 5, dtype=torch.int32), m0, shift, zero_point, qmin, qmax)


def _int8_linear(m0=M0, shift=SHIFT, zero_point=0, qmin=-128, qmax=127, x_zero_point=0):
    return ck.int8_linear(_x(), x_zero_point, torch.ones(4, 8, dtype=torch.int8), None, m0, shift, zero_point,
                          qmin, qmax)


def _int8_conv2d(m0=M0, shift=SHIFT, zero_point=0, qmin=-128, qmax=127, x_zero_point=0):
    return ck.int8_conv2d(_image(), x_zero_point, _conv_weight(), None, m0, shift, zero_point, qmin, qmax)


def _int8_add(m0=M0, shift=SHIFT, zero_point=0, qmin=-128, qmax=127, x_zero_point=0):
    a = _x()
    return ck.ops.int8_add(a, x_zero_point, m0, shift, a, 0, M0, SHIFT, M0, SHIFT, zero_point, qmin, qmax)


def _sparse24_int8_linear(m0=M0, shift=SHIFT, zero_point=0, qmin=-128, qmax=127, x_zero_point=0):
    values, meta = _sparse_values()
    return ck.sparse24_int8_linear(_x(), x_zero_point, values, meta, None, m0, shift, zero_point, qmin, qmax)


def _sparse24_int8_conv2d(m0=M0, shift=SHIFT, zero_point=0, qmin=-128, qmax=127, x_zero_point=0):
    values, meta = _sparse_conv_values()
    return ck.sparse24_int8_conv2d(_image(), x_zero_point, values, meta, None, m0, shift, zero_point, qmin, qmax,
                                   kernel_size=3)


WRAPPERS = {
    "requantize": _requantize,
    "int8_linear": _int8_linear,
    "int8_conv2d": _int8_conv2d,
    "int8_add": _int8_add,
    "sparse24_int8_linear": _sparse24_int8_linear,
    "sparse24_int8_conv2d": _sparse24_int8_conv2d,
}
M0_NAME = {"int8_add": "a_m0"}
SHIFT_NAME = {"int8_add": "a_shift"}
X_ZP_NAME = {"int8_add": "a_zero_point"}
ZP_NAME = {"requantize": "zero_point"}


@pytest.mark.parametrize("op", list(WRAPPERS))
def test_valid_integer_kinds_are_accepted(op):
    call = WRAPPERS[op]
    want = call()
    for m0 in (np.int64(M0), torch.tensor(M0), torch.tensor([M0], dtype=torch.int64),
               torch.tensor(M0, dtype=torch.int32)):
        assert torch.equal(call(m0=m0), want)
    assert torch.equal(call(zero_point=np.int32(0), qmin=torch.tensor(-128), qmax=np.int64(127)), want)


@pytest.mark.parametrize("op", list(WRAPPERS))
@pytest.mark.parametrize("bad, kind", [
    (0.0123, "float 0.0123"),
    (1073741824.0, "float 1073741824.0"),  # integral, still a float: refused, not truncated
    (torch.tensor([0.5]), r"a torch.float32 tensor of shape \(1,\)"),
    (torch.tensor(3.0, dtype=torch.float64), r"a torch.float64 tensor of shape \(\)"),
    ([0.25, 0.5], r"list \[0.25, 0.5\]"),
    (np.float64(0.5), "float64"),
    (True, "bool True"),
    (torch.tensor(True), "a torch.bool tensor"),
])
def test_non_integer_m0_is_refused(op, bad, kind):
    name = M0_NAME.get(op, "m0")
    with pytest.raises(TypeError, match=rf"{op}: {name} must be an integer \(int32.*got .*{kind}.*"
                                        r"quantize_multiplier\(r\) returns the \(m0, shift\) pair"):
        WRAPPERS[op](m0=bad)


@pytest.mark.parametrize("op", list(WRAPPERS))
@pytest.mark.parametrize("bad", [1.0, torch.tensor([-1.0]), False])
def test_non_integer_shift_is_refused(op, bad):
    name = SHIFT_NAME.get(op, "shift")
    with pytest.raises(TypeError, match=rf"{op}: {name} must be an integer \(int32"):
        WRAPPERS[op](shift=bad)


@pytest.mark.parametrize("op", list(WRAPPERS))
@pytest.mark.parametrize("bad, shown", [(2**31, r"\[2147483648, 2147483648\]"),
                                        (torch.tensor([-(2**31) - 1], dtype=torch.int64), r"\[-2147483649"),
                                        (2**70, "1180591620717411303424")])
def test_out_of_int32_m0_is_refused(op, bad, shown):
    name = M0_NAME.get(op, "m0")
    with pytest.raises(ValueError, match=rf"{op}: {name} must hold int32 integers in \[-2147483648, 2147483647\], "
                                         rf"got .*{shown}"):
        WRAPPERS[op](m0=bad)


@pytest.mark.parametrize("op, arg", [(op, arg) for op in WRAPPERS
                                     for arg in ("zero_point", "qmin", "qmax", "x_zero_point")
                                     if (op, arg) != ("requantize", "x_zero_point")])  # requantize has no input
@pytest.mark.parametrize("bad, kind", [(0.5, "float 0.5"), (3.0, "float 3.0"), (True, "bool True"),
                                       (torch.tensor(1.0), "a torch.float32 tensor")])
def test_non_integer_zero_point_and_clamp_are_refused(op, arg, bad, kind):
    name = {"zero_point": ZP_NAME.get(op, "out_zero_point"), "x_zero_point": X_ZP_NAME.get(op, "x_zero_point")}.get(
        arg, arg)
    with pytest.raises(TypeError, match=rf"{op}: {name} must be an integer, got {kind}"):
        WRAPPERS[op](**{arg: bad})


@pytest.mark.parametrize("op", list(WRAPPERS))
def test_out_of_int32_zero_point_is_refused(op):
    name = ZP_NAME.get(op, "out_zero_point")
    with pytest.raises(ValueError, match=rf"{op}: {name} must be an integer in \[-2147483648, 2147483647\], "
                                         r"got 1099511627776"):
        WRAPPERS[op](zero_point=2**40)


def test_other_integer_arguments_are_refused_when_float():
    x = torch.randn(3, 8)
    with pytest.raises(TypeError, match="quantize_rows: qmax must be an integer, got float 127.0"):
        ck.quantize_rows(x, 127.0)
    x_q, x_s = ck.quantize_rows(x)
    with pytest.raises(TypeError, match="int8_linear_float: x_zero_point must be an integer, got float 0.0"):
        ck.int8_linear_float(x_q, 0.0, torch.ones(4, 8, dtype=torch.int8), x_s, torch.ones(4))
    a = _x()
    with pytest.raises(TypeError, match="int8_add: left_shift must be an integer, got float 20.5"):
        ck.ops.int8_add(a, 0, M0, SHIFT, a, 0, M0, SHIFT, M0, SHIFT, 0, -128, 127, torch.int8, 20.5)
    with pytest.raises(TypeError, match="int8_add: out_m0 must be an integer"):
        ck.ops.int8_add(a, 0, M0, SHIFT, a, 0, M0, SHIFT, 0.5, SHIFT)
    with pytest.raises(TypeError, match="int8_conv2d: stride must be an integer, got float 1.5"):
        ck.int8_conv2d(_image(), 0, _conv_weight(), None, M0, SHIFT, stride=1.5)
    with pytest.raises(TypeError, match="int8_conv2d: padding must be an integer, got float 1.0"):
        ck.int8_conv2d(_image(), 0, _conv_weight(), None, M0, SHIFT, padding=(1.0, 1))
    with pytest.raises(ValueError, match=r"int8_conv2d: dilation must be an int or a pair of ints, got \(1, 1, 1\)"):
        ck.int8_conv2d(_image(), 0, _conv_weight(), None, M0, SHIFT, dilation=(1, 1, 1))
    with pytest.raises(TypeError, match="int8_conv2d: groups must be an integer, got bool True"):
        ck.int8_conv2d(_image(), 0, _conv_weight(), None, M0, SHIFT, groups=True)
    values, meta = _sparse_conv_values()
    with pytest.raises(TypeError, match="sparse24_int8_conv2d: kernel_size must be an integer, got float 3.0"):
        ck.sparse24_int8_conv2d(_image(), 0, values, meta, None, M0, SHIFT, kernel_size=3.0)
    with pytest.raises(TypeError, match="sparse24_conv2d: dilation must be an integer, got float 1.0"):
        ck.sparse24_conv2d(torch.randn(1, 4, 5, 5), values.float(), meta, None, 3, 1, 0, 1.0)
    idx = torch.zeros(16, 36, dtype=torch.uint8)
    with pytest.raises(TypeError, match="codebook_conv2d: bits must be an integer, got float 4.0"):
        ck.codebook_conv2d(torch.randn(1, 4, 5, 5), ck.codebook_pack(idx, 4), torch.zeros(1, 16), 4.0, None, 3)


def test_direct_op_calls_refuse_float_multipliers():
    acc = torch.arange(4, dtype=torch.int32)
    shift = torch.tensor([0], dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"requantize: m0 must be Int, got Float \(an int32 tensor: the fixed-point "
                                           r"multiplier.*\); for a real multiplier r, "
                                           r"compress_kernels.quantize_multiplier"):
        OPS.requantize(acc, torch.tensor([0.0123]), shift, 0, -128, 127, torch.int8, "double")
    with pytest.raises(RuntimeError, match="requantize: shift must be Int, got Double .*quantize_multiplier"):
        OPS.requantize(acc, torch.tensor([M0], dtype=torch.int32), torch.tensor([1.0], dtype=torch.float64), 0, -128,
                       127, torch.int8, "double")
    with pytest.raises(RuntimeError, match=r"requantize: m0 must be Int, got Long \(an int32 tensor: the fixed-point "
                                           r"multiplier real ~= m0 \* 2\^\(shift - 31\)\)"):
        OPS.requantize(acc, torch.tensor([M0]), shift, 0, -128, 127, torch.int8, "double")
    with pytest.raises(RuntimeError, match="int8_linear: m0 must be Int, got Float .*quantize_multiplier"):
        OPS.int8_linear(_x(), 0, torch.ones(4, 8, dtype=torch.int8), None, torch.tensor([0.5]), shift, 0, -128, 127,
                        torch.int8, "double")
    a = _x()
    one = torch.tensor([M0], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="int8_add: b_m0 must be Int, got Float .*quantize_multiplier"):
        OPS.int8_add(a, 0, one, shift, a, 0, torch.tensor([0.5]), shift, one, shift, 0, -128, 127, torch.int8, 20)


# ---------------------------------------------------------------- modules


def _linear(n=4, k=8):
    torch.manual_seed(0)
    return nn.Linear(k, n)


STATIC = {"input_scale": 0.05, "input_zero_point": 128, "output_scale": 0.1, "output_zero_point": 128}


@pytest.mark.parametrize("arg, bad, err, rule", [
    ("input_scale", 0.0, ValueError, "must be a finite positive float, got 0.0"),
    ("input_scale", -0.5, ValueError, "must be a finite positive float, got -0.5"),
    ("input_scale", float("nan"), ValueError, "must be a finite positive float, got nan"),
    ("output_scale", float("inf"), ValueError, "must be a finite positive float, got inf"),
    ("output_scale", torch.tensor(float("-inf")), ValueError, "must be a finite positive float, got -inf"),
    ("output_scale", True, TypeError, "must be a finite positive float, got bool True"),
    ("output_scale", "0.1", TypeError, "must be a finite positive float, got str '0.1'"),
    ("input_zero_point", 256, ValueError, r"must be in \[0, 255\] for torch.uint8, got 256"),
    ("input_zero_point", -1, ValueError, r"must be in \[0, 255\] for torch.uint8, got -1"),
    ("output_zero_point", 127.5, TypeError, r"must be an integer in \[0, 255\] for torch.uint8, got float 127.5"),
    ("output_zero_point", True, TypeError, r"must be an integer in \[0, 255\] for torch.uint8, got True"),
])
def test_quant_linear_refuses_bad_qparams(arg, bad, err, rule):
    with pytest.raises(err, match=rf"QuantLinear.from_float\(Linear\(in_features=8.*\): {arg} {rule}"):
        ck.QuantLinear.from_float(_linear(), **{**STATIC, arg: bad})


def test_quant_linear_refuses_bad_weight_scale_and_int8_zero_point():
    with pytest.raises(ValueError, match=r"weight_scale must hold finite positive scales, got 0.0 at index \[2\]"):
        ck.QuantLinear.from_float(_linear(), **STATIC, weight_scale=torch.tensor([0.1, 0.1, 0.0, 0.1]))
    with pytest.raises(ValueError, match=r"output_zero_point must be in \[-128, 127\] for torch.int8, "
                                         "got 128"):
        ck.QuantLinear.from_float(_linear(), **STATIC, output_dtype=torch.int8)


@pytest.mark.parametrize("dynamic", [False, True])
def test_quant_linear_refuses_non_finite_weights_naming_the_first(dynamic):
    lin = _linear()
    with torch.no_grad():
        lin.weight[2, 5] = float("nan")
        lin.weight[3, 1] = float("inf")
    kw = {"dynamic": True} if dynamic else STATIC
    with pytest.raises(ValueError, match=r"QuantLinear.from_float\(Linear\(in_features=8, out_features=4, "
                                         r"bias=True\)\): weight must be finite to be quantized, got nan at index "
                                         r"\[2, 5\]"):
        ck.QuantLinear.from_float(lin, **kw)
    lin = _linear()
    with torch.no_grad():
        lin.bias[1] = float("-inf")
    with pytest.raises(ValueError, match=r"bias must be finite to be quantized, got -inf at index \[1\]"):
        ck.QuantLinear.from_float(lin, **kw)


def test_quant_conv_refuses_bad_qparams_and_weights():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3)
    kw = {**STATIC}
    with pytest.raises(ValueError, match=r"QuantConv2d.from_float\(Conv2d\(4, 8.*\): input_scale must be a finite "
                                         "positive float, got 0.0"):
        ck.QuantConv2d.from_float(conv, **{**kw, "input_scale": 0.0})
    with pytest.raises(ValueError, match="output_scale must be a finite positive float, got inf"):
        ck.QuantConv2d.from_float(conv, **{**kw, "output_scale": float("inf")})
    with pytest.raises(ValueError, match=r"input_zero_point must be in \[-128, 127\] for torch.int8, "
                                         "got 128"):
        ck.QuantConv2d.from_float(conv, **kw, input_dtype=torch.int8)
    with pytest.raises(TypeError, match=r"output_zero_point must be an integer in \[0, 255\] for torch.uint8, got "
                                        "float 3.0"):
        ck.QuantConv2d.from_float(conv, **{**kw, "output_zero_point": 3.0})
    with pytest.raises(ValueError, match=r"weight_scale must hold finite positive scales, got nan at index \[0\]"):
        ck.QuantConv2d.from_float(conv, **kw, weight_scale=torch.full((8,), float("nan")))
    with torch.no_grad():
        conv.weight[7, 3, 2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"weight must be finite to be quantized, got nan at index \[7, 3, 2, 1\]"):
        ck.QuantConv2d.from_float(conv, **kw)
    conv = nn.Conv2d(4, 8, 3)
    bn = nn.BatchNorm2d(8).eval()
    bn.running_var[5] = -1.0  # sqrt of a negative variance: the folded weight of channel 5 is NaN
    with pytest.raises(ValueError, match=r"BatchNorm2d\(8.*\)\): weight \(BatchNorm folded\) must be finite to be "
                                         r"quantized, got nan at index \[5, 0, 0, 0\]"):
        ck.QuantConv2d.from_float(conv, bn, **kw)


def test_integer_modules_refuse_bad_qparams():
    with pytest.raises(ValueError, match="Quantize: scale must be a finite positive float, got 0.0"):
        ck.nn.integer.Quantize(0.0, 0, torch.uint8)
    with pytest.raises(ValueError, match="DeQuantize: scale must be a finite positive float, got nan"):
        ck.nn.integer.DeQuantize(float("nan"), 0, torch.uint8)
    with pytest.raises(ValueError, match=r"Quantize: zero_point must be in \[-128, 127\] for torch.int8, "
                                         "got 200"):
        ck.nn.integer.Quantize(0.1, 200, torch.int8)
    with pytest.raises(TypeError, match=r"DeQuantize: zero_point must be an integer in \[0, 255\] for torch.uint8, "
                                        "got float 1.5"):
        ck.nn.integer.DeQuantize(0.1, 1.5, torch.uint8)
    with pytest.raises(TypeError, match="QuantReLU: zero_point must be an integer .* got float 0.5"):
        ck.nn.integer.QuantReLU(0.5)
    add = ck.QuantAdd.from_qparams
    with pytest.raises(ValueError, match="QuantAdd.from_qparams: a scale must be a finite positive float, got 0.0"):
        add((0.0, 0), (0.1, 0), (0.1, 0))
    with pytest.raises(ValueError, match="QuantAdd.from_qparams: out scale must be a finite positive float, got inf"):
        add((0.1, 0), (0.1, 0), (float("inf"), 0))
    with pytest.raises(ValueError, match=r"QuantAdd.from_qparams: b zero_point must be an integer in \[-128, 255\] "
                                         r"\(int8 or uint8 input\), got 300"):
        add((0.1, 0), (0.1, 300), (0.1, 0))
    with pytest.raises(TypeError, match=r"QuantAdd.from_qparams: a zero_point must be an integer .* got float 2.5"):
        add((0.1, 2.5), (0.1, 0), (0.1, 0))
    with pytest.raises(ValueError, match=r"QuantAdd.from_qparams: out zero_point must be in \[-128, 127\] "
                                         "for torch.int8, got 255"):
        add((0.1, 0), (0.1, 0), (0.1, 255), output_dtype=torch.int8)


def test_sparse_and_codebook_conversions_refuse_non_finite_weights():
    lin = _linear(8, 16)
    with torch.no_grad():
        lin.weight.view(8, 4, 4)[..., 1::2] = 0
        lin.weight[6, 4] = float("inf")
    with pytest.raises(ValueError, match=r"SparseLinear.from_float\(Linear\(in_features=16, out_features=8, bias=True"
                                         r"\)\): weight must be finite to be quantized, got inf at index \[6, 4\]"):
        ck.SparseLinear.from_float(lin, int8=True)
    assert torch.isinf(ck.SparseLinear.from_float(lin).dense_weight()[6, 4])  # fp32 mode stores it as is
    conv = nn.Conv2d(4, 8, 1)
    with torch.no_grad():
        conv.weight[:, 1::2] = 0
        conv.bias[3] = float("nan")
    with pytest.raises(ValueError, match=r"SparseConv2d.from_float\(Conv2d\(4, 8.*\): bias must be finite to be "
                                         r"quantized, got nan at index \[3\]"):
        ck.SparseConv2d.from_float(conv, int8=True)
    lin = _linear(16, 8)
    with torch.no_grad():
        lin.weight[9, 0] = float("nan")
    with pytest.raises(ValueError, match=r"CodebookLinear.from_float\(Linear\(in_features=8, out_features=16.*: "
                                         r"weight must be finite to be quantized, got nan at index \[9, 0\]"):
        ck.CodebookLinear.from_float(lin, bits=2)
    conv = nn.Conv2d(4, 16, 3)
    with torch.no_grad():
        conv.weight[1, 2, 0, 0] = float("-inf")
    with pytest.raises(ValueError, match=r"CodebookConv2d.from_float\(Conv2d\(4, 16.*: weight must be finite to be "
                                         r"quantized, got -inf at index \[1, 2, 0, 0\]"):
        ck.CodebookConv2d.from_float(conv, bits=2)


def test_numerics_helpers_refuse_non_finite_ranges():
    with pytest.raises(ValueError, match=r"choose_qparams: min_val must be finite to be quantized, got nan at index "
                                         r"\[\]"):
        numerics.choose_qparams(torch.tensor(float("nan")), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"choose_qparams: max_val must be finite to be quantized, got inf at index "
                                         r"\[1\]"):
        numerics.choose_qparams(torch.zeros(3), torch.tensor([1.0, float("inf"), 2.0]), symmetric=True)
    with pytest.raises(ValueError, match=r"quantize_weight: the weight must be finite to be quantized, got nan at "
                                         r"index \[1, 0\]"):
        numerics.quantize_weight(torch.tensor([[1.0, 2.0], [float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="activation_clamp: scale must be a finite positive float, got 0.0"):
        numerics.activation_clamp("relu6", 0.0, 0, torch.uint8)
    observer = numerics.MinMaxObserver()  # refused where the bad batch arrives, before any range is kept
    with pytest.raises(ValueError, match="MinMaxObserver.observe: the batch holds NaN or infinite values"):
        observer.observe(torch.tensor([0.0, float("inf")]))
    # finite ranges still work as before
    scale, zp = numerics.choose_qparams(torch.tensor(-1.0), torch.tensor(3.0))
    assert torch.allclose(scale, torch.tensor(4.0 / 255)) and int(zp) == 64
