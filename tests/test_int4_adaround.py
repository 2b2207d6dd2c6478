"""Int4WeightConfig(rounding_weights="adaround"): AdaRound on the calibration batches chooses each int4
weight's rounding direction with the nearest rounding's group scales; it lowers every converted layer's
output error on its calibration inputs against round-to-nearest, is deterministic for a seed, and its
settings are checked when the config is built."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress_kernels as ck
from compress_kernels.adaround import collect_layer_inputs


def seeded_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def calibration():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(64, 64, generator=g) for _ in range(2)]


ADA = ck.AdaRoundConfig(bits=4, group_size=32, iterations=150, batch_size=32, lr=2e-2, max_samples=128, seed=3)


def convert(rounding, adaround=ADA):
    config = (ck.Int4WeightConfig(group_size=32, activation="fp32", rounding_weights="adaround",
                                  calibration=calibration(), adaround=adaround)
              if rounding == "adaround" else ck.Int4WeightConfig(group_size=32, activation="fp32"))
    return ck.convert_(seeded_mlp(), config).model


def test_adaround_lowers_every_layers_output_error_against_nearest():
    float_model = seeded_mlp()
    inputs = collect_layer_inputs(float_model, calibration(), ["0", "2", "4"])
    nearest, adaround = convert("nearest"), convert("adaround")
    for name in ("0", "2", "4"):
        w = float_model.get_submodule(name).weight.detach()
        x = inputs[name]
        errors = {}
        for label, model in (("nearest", nearest), ("adaround", adaround)):
            layer = model.get_submodule(name)
            assert isinstance(layer, ck.Int4Linear)
            errors[label] = float((F.linear(x, w) - F.linear(x, layer.dequantized_weight())).pow(2).sum())
        assert errors["adaround"] < 0.9 * errors["nearest"], (name, errors)
        # the scales are the nearest rounding's: only rounding directions changed, by at most one step
        q_n, s_n, _ = nearest.get_submodule(name).int4_weight()
        q_a, s_a, _ = adaround.get_submodule(name).int4_weight()
        assert torch.equal(s_n, s_a) and int((q_n.int() - q_a.int()).abs().max()) <= 1 and not torch.equal(q_n, q_a)
        assert int(q_a.abs().max()) <= 7


def test_adaround_is_deterministic_for_a_seed_and_the_model_runs():
    first, second = convert("adaround"), convert("adaround")
    for name in ("0", "2", "4"):
        assert torch.equal(first.get_submodule(name).weight_packed, second.get_submodule(name).weight_packed)
    x = calibration()[0][:4]
    assert torch.equal(first(x), second(x))
    default = ck.Int4WeightConfig(rounding_weights="adaround", calibration=calibration())
    assert default.adaround is None  # AdaRoundConfig(bits=4, group_size=32) at conversion


def test_w4a8_with_adaround_converts_and_skips_like_nearest():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.Linear(8, 4))
    report = ck.convert_(model, ck.Int4WeightConfig(rounding_weights="adaround", calibration=calibration(),
                                                    adaround=ADA))
    assert [name for name, _, _ in report.converted] == ["0", "2"]
    assert report.skipped[0][0] == "3"
    assert model(calibration()[0][:2]).shape == (2, 4)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(rounding_weights="adaround"), TypeError,
     r'rounding_weights="adaround" needs calibration, a non-empty list or tuple of batches, got NoneType'),
    (dict(rounding_weights="adaround", calibration=[]), TypeError, r"needs calibration"),
    (dict(rounding_weights="adaround", calibration=["x"]), TypeError,
     r"calibration\[0\] must be a floating-point tensor or an \(input, label\) pair, got str"),
    (dict(rounding_weights="adaround", calibration=[torch.zeros(2, 64)], symmetric=False), ValueError,
     r'rounding_weights="adaround" needs symmetric=True'),
    (dict(calibration=[torch.zeros(2, 64)]), ValueError, r'calibration is read only by rounding_weights="adaround"'),
    (dict(adaround=ADA), ValueError, r'adaround is read only by rounding_weights="adaround"'),
    (dict(rounding_weights="round"), ValueError, r"rounding_weights must be one of \['nearest', 'adaround'\]"),
    (dict(rounding_weights="adaround", calibration=[torch.zeros(2, 64)], adaround=ck.AdaRoundConfig(bits=8)),
     ValueError, r"adaround must round to the layers' int4 grid \(bits=4, group_size=32, symmetric=True\), got "
                 r"bits=8, group_size=None, symmetric=True"),
    (dict(rounding_weights="adaround", calibration=[torch.zeros(2, 64)], adaround="yes"), TypeError,
     r"adaround must be None or an AdaRoundConfig, got str"),
])
def test_config_refusals(kwargs, error, message):
    with pytest.raises(error, match=r"Int4WeightConfig: .*" + message):
        ck.Int4WeightConfig(**kwargs)


def test_from_float_refuses_rounded_weights_of_another_shape():
    lin = nn.Linear(64, 8)
    with pytest.raises(ValueError, match=r"rounded has shapes \[8, 32\] and \[8, 1\], expected \[8, 64\] and \[8, 2\]"):
        ck.Int4Linear.from_float(lin, 32, rounded=(torch.zeros(8, 32, dtype=torch.int8), torch.ones(8, 1)))
    with pytest.raises(ValueError, match=r"rounded weights need symmetric=True"):
        ck.Int4Linear.from_float(lin, 32, symmetric=False, rounded=(torch.zeros(8, 64, dtype=torch.int8),
                                                                    torch.ones(8, 2)))
