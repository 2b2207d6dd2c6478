"""State that round-trips and state that is refused.

Every module keeps its switches and modes in its state dict (a frozen FakeQuantize loads frozen), and
load_state_dict refuses tampered or unknown state (unknown / missing keys, wrong types, out-of-range
values, inconsistent shapes) before it changes the module, naming the module, the key, the value and
what is expected. Floating-point dtype conversions keep the quantization parameters in fp32."""

import copy

import pytest
import torch
from torch import nn

import compress_kernels as ck
from compress_kernels.nn.codebook import CodebookLinear
from compress_kernels.nn.fake_quant import FakeQuantize
from compress_kernels.nn.integer import DeQuantize, QuantAdd, QuantAvgPool2d, Quantize, QuantReLU
from compress_kernels.nn.qat import ActFakeQuant


def holder(module: nn.Module) -> nn.Module:
    """The module at path "layer" (so messages show where it sits)."""
    m = nn.Module()
    m.layer = module
    return m


def static_linear(seed: int = 0, **kw) -> ck.QuantLinear:
    torch.manual_seed(seed)
    return ck.QuantLinear.from_float(nn.Linear(16, 8), input_scale=0.05, input_zero_point=3, output_scale=0.1,
                                     output_zero_point=120, activation="relu", **kw)


def tampered(module: nn.Module, key: str, value):
    state = holder(module).state_dict()
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in state.items()}
    if key.startswith("_extra_state."):
        field = key.split(".", 1)[1]
        if value is _DELETE:
            del state["layer._extra_state"][field]
        else:
            state["layer._extra_state"][field] = value
    else:
        state["layer." + key] = value
    return state


_DELETE = object()


# ---------------------------------------------------------------- FakeQuantize: switches round-trip


def test_frozen_fake_quantize_loads_frozen():
    fq = FakeQuantize(0, 255, momentum=0.5)
    fq(torch.linspace(-1, 3, 100))
    fq.disable_observer()
    fresh = FakeQuantize(0, 255, momentum=0.5)
    fresh.load_state_dict(fq.state_dict())
    assert fresh.observer_enabled is False and fresh.fake_quant_enabled is True
    before = fresh.running_min.clone(), fresh.scale.clone()
    y = fresh(torch.linspace(-10, 10, 50))  # a frozen module does not observe
    assert torch.equal(fresh.running_min, before[0]) and torch.equal(fresh.scale, before[1])
    assert torch.equal(y, fq(torch.linspace(-10, 10, 50)))

    fq.disable_fake_quant()
    fresh.load_state_dict(fq.state_dict())
    x = torch.linspace(-1, 1, 7)
    assert fresh.fake_quant_enabled is False and torch.equal(fresh(x), x)


def test_fake_quantize_settings_round_trip():
    fq = FakeQuantize(-8, 7, symmetric=True, momentum=0.25)
    fresh = FakeQuantize(-128, 127)
    fresh.load_state_dict(fq.state_dict())
    assert (fresh.qmin, fresh.qmax, fresh.symmetric, fresh.momentum) == (-8, 7, True, 0.25)


def test_act_fake_quant_dtype_round_trips():
    q = ActFakeQuant(torch.int8)
    fresh = ActFakeQuant(torch.uint8)
    fresh.load_state_dict(q.state_dict())
    assert fresh.dtype is torch.int8 and (fresh.qmin, fresh.qmax) == (-128, 127)


BAD_FAKE_QUANT = [
    ("_extra_state.observer_enabled", "yes", TypeError, r"_extra_state\['observer_enabled'\] = 'yes': expected a bool"),
    ("_extra_state.fake_quant_enabled", 1, TypeError, r"_extra_state\['fake_quant_enabled'\] = 1: expected a bool"),
    ("_extra_state.momentum", 2.0, ValueError, r"_extra_state\['momentum'\] = 2.0: expected a number in \(0, 1\]"),
    ("_extra_state.grad_factor", -1.0, ValueError, r"_extra_state\['grad_factor'\] = -1.0: expected a number > 0"),
    ("_extra_state.qmax", -200, ValueError, r"_extra_state\['qmax'\] = -200: expected an int in \[-127, inf\]"),
    ("_extra_state.observer", "lsq", ValueError,
     r"_extra_state\['observer'\] = 'lsq': expected 'ema' as this module was built"),
    ("_extra_state.channels", 4, ValueError, r"_extra_state\['channels'\] = 4: expected 1 as this module was built"),
    ("_extra_state.mode", "banana", ValueError, r"_extra_state has unknown key\(s\) \['mode'\]"),
    ("_extra_state.symmetric", _DELETE, ValueError, r"_extra_state lacks key\(s\) \['symmetric'\]"),
    ("zero_point", torch.tensor([300], dtype=torch.int32), ValueError,
     r"layer.zero_point holds \[300\], expected values in \[qmin, qmax\] = \[-128, 127\]"),
    ("zero_point", torch.tensor([0.5]), TypeError, r"layer.zero_point has dtype torch.float32, expected torch.int32"),
    ("scale", torch.tensor([float("nan")]), ValueError, r"layer.scale holds nan, expected finite scales > 0"),
]


@pytest.mark.parametrize("key,value,error,pattern", BAD_FAKE_QUANT,
                         ids=[b[0] + "=" + repr(b[1])[:20] for b in BAD_FAKE_QUANT])
def test_fake_quantize_refuses_tampered_state(key, value, error, pattern):
    fq = FakeQuantize()
    state = tampered(fq, key, value)
    target = holder(FakeQuantize())
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(error, match=r"FakeQuantize at 'layer': load_state_dict: .*" + pattern):
        target.load_state_dict(state)
    after = target.state_dict()
    assert after["layer._extra_state"] == before["layer._extra_state"]  # refused before any change


def test_fake_quantize_observer_switch_needs_an_observer():
    state = tampered(FakeQuantize(observer="fixed", scale=0.1), "_extra_state.observer_enabled", True)
    with pytest.raises(ValueError, match=r"FakeQuantize at 'layer': .*\['observer_enabled'\] = True: expected False: "
                                         r"observer='fixed' has no observer"):
        holder(FakeQuantize(observer="fixed", scale=0.1)).load_state_dict(state)


def test_extra_state_that_is_not_a_dict():
    state = holder(FakeQuantize()).state_dict()
    state["layer._extra_state"] = ["ema"]
    with pytest.raises(TypeError, match=r"FakeQuantize at 'layer': load_state_dict: layer._extra_state must be a dict, "
                                        r"got list"):
        holder(FakeQuantize()).load_state_dict(state)


# ---------------------------------------------------------------- integer layers


def test_quant_linear_round_trips_exactly():
    q = static_linear()
    fresh = holder(ck.QuantLinear(16, 8, mode="dynamic", output_dtype=torch.int8, rounding="single"))
    fresh.load_state_dict(holder(q).state_dict())
    x = torch.randint(0, 256, (5, 16), dtype=torch.uint8)
    assert torch.equal(fresh.layer(x), q(x))
    assert (fresh.layer.mode, fresh.layer.output_zero_point, fresh.layer.qmin) == ("static", 120, 120)


BAD_LINEAR = [
    ("_extra_state.mode", "banana", ValueError, r"\['mode'\] = 'banana': expected one of \['static', 'dynamic'\]"),
    ("_extra_state.rounding", "nearest", ValueError,
     r"\['rounding'\] = 'nearest': expected one of \['double', 'single'\]"),
    ("_extra_state.input_dtype", "int32", ValueError,
     r"\['input_dtype'\] = 'int32': expected one of \['int8', 'uint8'\]"),
    ("_extra_state.input_zero_point", 300, ValueError, r"\['input_zero_point'\] = 300: expected an int in \[0, 255\]"),
    ("_extra_state.output_zero_point", 1.5, TypeError, r"\['output_zero_point'\] = 1.5: expected an int"),
    ("_extra_state.qmax", 100, ValueError, r"\['qmax'\] = 100: expected an int in \[120, 255\]"),
    ("_extra_state.per_channel", False, ValueError,
     r"\['per_channel'\] = False: expected True as this module was built"),
    ("_extra_state.sparse24", True, ValueError, r"\['sparse24'\] = True: expected False as this module was built"),
    ("_extra_state.bias_dtype", "int32", ValueError, r"unknown key\(s\) \['bias_dtype'\]"),
    ("weight_q", torch.zeros(8, 16), TypeError, r"layer.weight_q has dtype torch.float32, expected torch.int8"),
    ("m0", torch.full((8,), -5, dtype=torch.int32), ValueError,
     r"layer.m0 holds -5, expected values in \[0, 2147483647\]"),
    ("shift", torch.full((8,), 40, dtype=torch.int32), ValueError,
     r"layer.shift holds 40, expected values in \[-31, 30\]"),
    ("weight_scale", torch.zeros(8), ValueError, r"layer.weight_scale holds 0.0, expected finite scales > 0"),
    ("input_scale", torch.tensor(1), TypeError,
     r"layer.input_scale has dtype torch.int64, expected a floating-point scale"),
]


@pytest.mark.parametrize("key,value,error,pattern", BAD_LINEAR, ids=[b[0] + "=" + repr(b[1])[:20] for b in BAD_LINEAR])
def test_quant_linear_refuses_tampered_state(key, value, error, pattern):
    state = tampered(static_linear(), key, value)
    target = holder(static_linear(seed=1))
    x = torch.randint(0, 256, (3, 16), dtype=torch.uint8)
    y_before = target.layer(x)
    with pytest.raises(error, match=r"QuantLinear at 'layer': load_state_dict: .*" + pattern):
        target.load_state_dict(state)
    assert torch.equal(target.layer(x), y_before)  # refused before anything was loaded


def test_dynamic_mode_with_sparse24_is_refused():
    q = static_linear()
    state = tampered(q, "_extra_state.mode", "dynamic")
    state["layer._extra_state"]["sparse24"] = True
    with pytest.raises(ValueError, match=r"QuantLinear at 'layer': .*\['sparse24'\] = True: expected False"):
        holder(static_linear()).load_state_dict(state)


def test_inconsistent_shapes_are_reported_by_key():
    state = holder(static_linear()).state_dict()
    with pytest.raises(RuntimeError, match=r"size mismatch for layer.weight_q"):
        holder(ck.QuantLinear(12, 8)).load_state_dict(state)


def test_quant_conv_refuses_bad_geometry():
    conv = ck.QuantConv2d.from_float(nn.Conv2d(4, 8, 3), input_scale=0.1, input_zero_point=0, output_scale=0.1,
                                     output_zero_point=0)
    for value, error, pattern in ((( 0, 1), ValueError, r"\['stride'\] = \(0, 1\): expected a pair of ints >= 1"),
                                  ((1, 1, 1), ValueError, r"\['stride'\] = \(1, 1, 1\): expected a pair of ints >= 1")):
        with pytest.raises(error, match=r"QuantConv2d at 'layer': " + ".*" + pattern):
            holder(copy.deepcopy(conv)).load_state_dict(tampered(conv, "_extra_state.stride", value))
    with pytest.raises(ValueError, match=r"QuantConv2d at 'layer': .*\['padding'\] = \[-1, 0\]: expected a pair of "
                                         r"ints >= 0"):
        holder(copy.deepcopy(conv)).load_state_dict(tampered(conv, "_extra_state.padding", [-1, 0]))


def test_glue_modules_refuse_bad_state():
    with pytest.raises(ValueError, match=r"Quantize at 'layer': load_state_dict: layer._extra_state\['dtype'\] = "
                                         r"'float': expected one of \['int8', 'uint8', 'int32'\]"):
        holder(Quantize()).load_state_dict(tampered(Quantize(), "_extra_state.dtype", "float"))
    with pytest.raises(ValueError, match=r"DeQuantize at 'layer': .*\['zero_point'\] = 200: expected an int in \[-128, "
                                         r"127\]"):
        state = tampered(DeQuantize(), "_extra_state.dtype", "int8")
        state["layer._extra_state"]["zero_point"] = 200
        holder(DeQuantize()).load_state_dict(state)
    with pytest.raises(ValueError, match=r"Quantize at 'layer': .*layer.scale holds -1.0, expected finite scales > 0"):
        holder(Quantize()).load_state_dict(tampered(Quantize(), "scale", torch.tensor(-1.0)))
    with pytest.raises(TypeError, match=r"QuantReLU at 'layer': .*\['zero_point'\] = '0': expected an int"):
        holder(QuantReLU()).load_state_dict(tampered(QuantReLU(), "_extra_state.zero_point", "0"))
    with pytest.raises(ValueError, match=r"QuantAvgPool2d at 'layer': .*\['kernel_size'\] = 0: expected an int >= 1"):
        holder(QuantAvgPool2d(2)).load_state_dict(tampered(QuantAvgPool2d(2), "_extra_state.kernel_size", 0))
    add = QuantAdd.from_qparams((0.1, 3), (0.2, 5), (0.3, 7))
    with pytest.raises(ValueError, match=r"QuantAdd at 'layer': .*\['zero_points'\] = \[3, 5\]: expected three ints"):
        holder(QuantAdd()).load_state_dict(tampered(add, "_extra_state.zero_points", [3, 5]))
    with pytest.raises(TypeError,
                       match=r"QuantAdd at 'layer': .*layer.m0_a has dtype torch.int64, expected torch.int32"):
        holder(QuantAdd()).load_state_dict(tampered(add, "m0_a", torch.tensor([5])))
    fresh = holder(QuantAdd())
    fresh.load_state_dict(holder(add).state_dict())
    assert fresh.layer.zero_points == (3, 5, 7)


def test_sparse_and_codebook_refuse_other_builds():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight.mul_(ck.prune.mask_2to4(lin.weight))
    sparse = ck.SparseLinear.from_float(lin, int8=True)
    with pytest.raises(ValueError, match=r"SparseLinear at 'layer': .*\['int8'\] = True: expected False as this module "
                                         r"was built"):
        holder(ck.SparseLinear(16, 8)).load_state_dict(holder(sparse).state_dict())
    with pytest.raises(TypeError, match=r"SparseLinear at 'layer': .*layer.values has dtype torch.float32, expected "
                                        r"torch.int8"):
        holder(ck.SparseLinear(16, 8, int8=True)).load_state_dict(tampered(sparse, "values", torch.zeros(8, 8)))
    book = CodebookLinear.from_float(lin, bits=4)
    with pytest.raises(ValueError, match=r"CodebookLinear at 'layer': .*\['bits'\] = 4: expected 3 as this module was "
                                         r"built"):
        holder(CodebookLinear(16, 8, bits=3)).load_state_dict(holder(book).state_dict())
    fresh = holder(CodebookLinear(16, 8, bits=4))
    fresh.load_state_dict(holder(book).state_dict())
    x = torch.randn(3, 16)
    assert torch.equal(fresh.layer(x), book(x))


# ---------------------------------------------------------------- QAT modules


def test_frozen_qat_graph_loads_frozen():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4))
    qat = ck.prepare_qat_(copy.deepcopy(model), ck.QATConfig())
    qat(torch.randn(4, 3, 8, 8))
    ck.freeze_qat_(qat)
    fresh = ck.prepare_qat_(copy.deepcopy(model), ck.QATConfig())
    fresh.load_state_dict(qat.state_dict())
    quants = [m for m in fresh.modules() if isinstance(m, ActFakeQuant)]
    assert quants and all(not q.observer_enabled for q in quants)
    assert fresh.get_submodule("0").bn_frozen is True
    state = qat.state_dict()
    state["0._extra_state"]["learnable_scale"] = True
    with pytest.raises(ValueError, match=r"QATConv2d at '0': .*\['learnable_scale'\] = True: expected False as this "
                                         r"module was built \(prepare the model with the same "
                                         r"QATConfig.learnable_scale\)"):
        fresh.load_state_dict(state)
    state = qat.state_dict()
    state["0._extra_state"]["bn_frozen"] = "yes"
    with pytest.raises(TypeError, match=r"QATConv2d at '0': .*\['bn_frozen'\] = 'yes': expected a bool"):
        fresh.load_state_dict(state)


# ---------------------------------------------------------------- dtype conversions


@pytest.mark.parametrize("convert", [lambda m: m.double(), lambda m: m.half(), lambda m: m.bfloat16(),
                                     lambda m: m.to(torch.float64)], ids=["double", "half", "bfloat16", "to"])
def test_integer_modules_keep_fp32_quantization_parameters(convert):
    q = static_linear()
    x = torch.randint(0, 256, (5, 16), dtype=torch.uint8)
    want = q(x)
    convert(q)
    assert q.weight_scale.dtype == q.input_scale.dtype == q.bias.dtype == torch.float32
    assert torch.equal(q(x), want)

    dyn = ck.QuantLinear.from_float(nn.Linear(16, 8), dynamic=True)
    xf = torch.randn(5, 16)
    want = dyn(xf)
    convert(dyn)
    assert dyn.weight_scale.dtype == torch.float32
    got = dyn(xf.double())
    assert got.dtype == torch.float64 and torch.equal(got, want.double())

    fq = FakeQuantize(0, 255)
    fq(torch.linspace(-1, 1, 64))
    convert(fq)
    assert fq.scale.dtype == fq.running_min.dtype == torch.float32
    assert fq(torch.linspace(-1, 1, 64).half()).dtype == torch.float16

    quant = Quantize(0.1, 3)
    convert(quant)
    assert quant.scale.dtype == torch.float32


def test_lsq_scale_parameter_stays_fp32():
    fq = FakeQuantize(-127, 127, observer="lsq", symmetric=True, scale=0.1)
    fq.double()
    assert isinstance(fq.scale, nn.Parameter) and fq.scale.dtype == torch.float32
    y = fq(torch.linspace(-1, 1, 9, dtype=torch.float64, requires_grad=True))
    y.sum().backward()
    assert fq.scale.grad.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_codebook_and_sparse_layers_after_dtype_conversion(dtype):
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight.mul_(ck.prune.mask_2to4(lin.weight))
    x = torch.randn(3, 16).to(dtype)
    book = CodebookLinear.from_float(lin, bits=4)
    want = book(x.float()).to(dtype)
    book.to(dtype)
    assert book.codebook.dtype == torch.float32 and isinstance(book.codebook, nn.Parameter)
    if dtype == torch.bfloat16:  # bf16 x on CPU runs the bf16 kernel (codebook rounded to bf16, fp32 sums)
        assert book(x).dtype == dtype
        torch.testing.assert_close(book(x).float(), want.float(), rtol=2e-2, atol=2e-2)
    else:
        assert torch.equal(book(x), want)  # computed in fp32, returned in the input's dtype
    sparse = ck.SparseLinear.from_float(lin).to(dtype)  # SparseLinear's own semantics: bf16 runs the bf16 kernel
    y = sparse(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), lin(x.float()), rtol=2e-2, atol=2e-2)
