"""Workflows that fail clearly, and a convert_ that loses nothing.

Models torch.fx cannot trace, models already converted or prepared, and non-finite calibration data
fail at the call that can explain them, naming the module or node, why, and what to do instead, with
the original exception chained. convert_ converts a module reached by several paths once (the tie
kept) and reports every module of a handled type it passes over, with the reason."""

import copy

import pytest
import torch
from torch import fx, nn

import compress_kernels as ck
from compress_kernels import numerics
from compress_kernels.static_quant import CalibrationError


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor value
            return self.fc(x)
        return x


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(8, 8)
        self.block = DataDependent()

    def forward(self, x):
        return self.block(self.stem(x))


class KeywordInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, input_ids=None, attention_mask=None):
        x = self.fc(input_ids)
        return x if attention_mask is None else x * attention_mask


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, 8, generator=g) for _ in range(n)]


# ---------------------------------------------------------------- tracing


@pytest.fixture(params=["calibrate", "prepare_qat_"])
def workflow(request):
    """The name of a workflow that traces the model with torch.fx (run it with run_workflow)."""
    return request.param


def run_workflow(workflow, model, **kwargs):
    return ck.calibrate(model, batches(), **kwargs) if workflow == "calibrate" else ck.prepare_qat_(model, **kwargs)


def test_data_dependent_control_flow_names_the_module(workflow):
    with pytest.raises(RuntimeError, match=rf"{workflow}: torch.fx cannot trace DataDependent "
                                           r"\(in DataDependent.forward\): "
                                           r"TraceError: symbolically traced variables cannot be used as inputs to "
                                           r"control flow\. .*Int8DynamicConfig, CodebookConfig and Sparse24Config "
                                           r"need no tracing") as info:
        run_workflow(workflow, DataDependent(), capture="fx")
    assert isinstance(info.value.__cause__, fx.proxy.TraceError)
    with pytest.raises(RuntimeError, match=rf"{workflow}: torch.fx cannot trace Outer \(in the forward of module "
                                           r"'block'\): TraceError"):
        run_workflow(workflow, Outer(), capture="fx")


def test_untraceable_model_converts_without_tracing():
    model = Outer()
    report = ck.convert_(model, ck.Int8DynamicConfig())
    assert [name for name, _, _ in report.converted] == ["stem", "block.fc"]


def test_keyword_inputs_explain_the_wrapper(workflow):
    with pytest.raises(TypeError, match=rf"{workflow}: KeywordInputs.forward takes input_ids=None: torch.fx traces "
                                        r"every forward argument as a tensor.*wrap the model in a module whose forward "
                                        r"takes the tensors it needs positionally, e.g. forward\(self, x\): return "
                                        r"model\(input_ids=x\)\. Int8DynamicConfig"):
        run_workflow(workflow, KeywordInputs(), capture="fx")


def test_wrapped_keyword_model_calibrates():
    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.fc(x)

    ck.calibrate(Wrapper(KeywordInputs()), batches())


# ---------------------------------------------------------------- already converted / prepared


def test_converted_model_is_refused():
    model = mlp()
    dynamic = ck.convert_(copy.deepcopy(model), ck.Int8DynamicConfig()).model
    with pytest.raises(ValueError, match=r"calibrate: module '0' is a QuantLinear: the model was already converted; "
                                         r"start from the float model"):
        ck.calibrate(dynamic, batches())
    with pytest.raises(ValueError, match=r"prepare_qat_: module '0' is a QuantLinear: the model was already converted"):
        ck.prepare_qat_(dynamic)
    ck.calibrate(model, batches())
    integer = ck.convert_(model, ck.Int8StaticConfig(observer="minmax")).model
    with pytest.raises(ValueError, match=r"calibrate: module '.*' is a Quantize: the model was already converted"):
        ck.calibrate(integer, batches())
    with pytest.raises(ValueError, match=r"convert_ with Int8StaticConfig: module '.*' is a Quantize: the model was "
                                         r"already converted"):
        ck.convert_(integer, ck.Int8StaticConfig())


def test_prepare_qat_twice_is_refused():
    qat = ck.prepare_qat_(mlp())
    with pytest.raises(ValueError, match=r"prepare_qat_: the model is already a QAT graph \(returned by "
                                         r"prepare_qat_\): train it and convert it with convert_\(qat_model\)"):
        ck.prepare_qat_(qat)
    holder = nn.Sequential(copy.deepcopy(qat.get_submodule("0")))
    with pytest.raises(ValueError,
                       match=r"prepare_qat_: module '0' is a QATLinear: the model was already prepared for QAT"):
        ck.prepare_qat_(holder)
    with pytest.raises(ValueError, match=r"calibrate: the model is already a QAT graph"):
        ck.calibrate(qat, batches())
    with pytest.raises(ValueError, match=r"convert_: the model is a QAT graph \(prepare_qat_\): convert it with "
                                         r"convert_\(qat_model\), with no config"):
        ck.convert_(qat, ck.Int8StaticConfig())
    with pytest.raises(TypeError, match=r"prepare_qat_: config must be a QATConfig, got Int8StaticConfig"):
        ck.prepare_qat_(mlp(), ck.Int8StaticConfig())


# ---------------------------------------------------------------- non-finite calibration data


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_calibration_is_refused_at_calibrate(bad):
    data = batches()
    data[1][2, 3] = bad
    with pytest.raises(CalibrationError, match=rf"calibrate: the model input 'input' holds 1 non-finite value\(s\) "
                                               rf"\(first {bad}\).*\(batch 1\)") as info:
        ck.calibrate(mlp(), data)
    assert isinstance(info.value.__cause__, CalibrationError)
    assert isinstance(info.value, ValueError)


def test_non_finite_activation_names_the_layer():
    model = mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(CalibrationError, match=r"calibrate: the output of module '2' holds 4 non-finite value\(s\) "
                                               r"\(first nan\).*\(batch 0\)"):
        ck.calibrate(model, batches())


@pytest.mark.parametrize("name", sorted(numerics.OBSERVERS))
def test_observers_refuse_non_finite_batches(name):
    obs = numerics.make_observer(name)
    with pytest.raises(ValueError, match=rf"{type(obs).__name__}.observe: the batch holds NaN or infinite values"):
        obs.observe(torch.tensor([0.0, float("nan")]))


# ---------------------------------------------------------------- convert_ loses nothing


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(8, 8)
        self.dec = self.enc

    def forward(self, x):
        return self.dec(torch.relu(self.enc(x)))


def test_module_used_twice_converts_once_and_stays_shared():
    torch.manual_seed(0)
    lin = nn.Linear(8, 8)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    report = ck.convert_(model, ck.Int8DynamicConfig())
    assert isinstance(model[0], ck.QuantLinear) and model[0] is model[2]
    assert report.converted == [("0", "Linear", "QuantLinear")]
    assert report.aliases == [("2", "0")]
    assert "= 2: the same module as 0 (converted once, still shared)" in str(report)

    tied = Tied()
    report = ck.convert_(tied, ck.CodebookConfig(bits=2), inplace=False)
    assert report.model.enc is report.model.dec and type(report.model.enc).__name__ == "CodebookLinear"
    assert report.aliases == [("dec", "enc")]
    assert isinstance(tied.enc, nn.Linear)  # inplace=False left the original alone


def test_shared_module_skipped_by_filter_is_skipped_at_every_path():
    lin = nn.Linear(8, 8)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    report = ck.convert_(model, ck.Int8DynamicConfig(), filter_fn=lambda m, name: name != "0")
    assert model[0] is model[2] is lin
    assert report.skipped == [("0", "Linear", "excluded by filter_fn"),
                              ("2", "Linear", "the same module as '0', which was skipped")]


def test_linear_subclass_and_attention_projection_are_reported():
    class MyLinear(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Module()
    model.custom = MyLinear(8, 8)
    model.attn = nn.MultiheadAttention(8, 2)
    model.plain = nn.Linear(8, 8)
    report = ck.convert_(model, ck.Int8DynamicConfig())
    assert [c[0] for c in report.converted] == ["plain"]
    skipped = {name: (kind, why) for name, kind, why in report.skipped}
    assert skipped["custom"][0] == "MyLinear"
    assert "a subclass of torch.nn.modules.linear.Linear: its forward may differ" in skipped["custom"][1]
    assert skipped["attn.out_proj"][0] == "NonDynamicallyQuantizableLinear"
    assert "MultiheadAttention reads its projection weights directly" in skipped["attn.out_proj"][1]
    assert isinstance(model.custom, MyLinear)
    assert type(model.attn.out_proj).__name__ == "NonDynamicallyQuantizableLinear"


def test_static_conversion_reports_every_call_of_a_shared_module():
    torch.manual_seed(0)
    lin = nn.Linear(8, 8)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    ck.calibrate(model, batches())
    report = ck.convert_(model, ck.Int8StaticConfig(observer="minmax"))
    names = [c[0] for c in report.converted]
    assert names == ["0", "0 (call 2)"]
    x = batches(1)[0]
    assert (report.model(x) - model(x)).abs().max() < 0.1
