"""Mixed conversion (one config per layer), the per-layer sensitivity sweep and the assignment under
a budget, on a small digits CNN (the study's ResNet with one block per stage, trained here)."""

import copy
import json
import math

import pytest
import torch

import compress_kernels as ck
from compress_kernels.nn import CodebookConv2d, SparseConv2d
from compress_kernels.nn.conv import QuantConv2d
from compress_kernels.nn.integer import DeQuantize
from compress_kernels.nn.linear import QuantLinear
from compress_kernels.prune import prune_channels_
from compress_kernels.sensitivity import assign, sensitivity, sqnr_db, top1
from compress_kernels.study import data, models, training
from compress_kernels.study.runner import stored_bytes


@pytest.fixture(scope="module")
def digits_cnn():
    """(model, calibration batches, (x_eval, y_eval)): width 8, one block per stage, 1 x 16 x 16 digits."""
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = data.load_digits(size=16, channels=1)
    model = models.ResNetCifar(width=8, in_channels=1, blocks=(1, 1, 1, 1))
    training.train(model, x_train, y_train, epochs=3, lr=0.05, augment=False)
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
    return model.eval(), [x_train[order[:128]]], (x_test[:240], y_test[:240])


def calibrated(model, batches):
    m = copy.deepcopy(model)
    ck.calibrate(m, batches)
    return m


# ---------------------------------------------------------------- mixed conversion


def test_mixed_static_each_layer_gets_its_config(digits_cnn):
    model, cal, _ = digits_cnn
    m = calibrated(model, cal)
    report = ck.convert_(m, {"conv1": None, "layer1.*": ck.Int8StaticConfig(), "layer2.0.conv1": ck.CodebookConfig(),
                             "layer2.0.conv2": ck.Sparse24Config(prune=True), "fc": ck.Int8StaticConfig()})
    assert isinstance(report, ck.MixedConversionReport)
    gm = report.model
    assert isinstance(gm.get_submodule("layer1_0_conv1"), QuantConv2d)
    assert isinstance(gm.get_submodule("layer1_0_conv2"), QuantConv2d)
    assert isinstance(gm.get_submodule("fc"), QuantLinear)
    assert isinstance(gm.get_submodule("layer2_0_conv1"), CodebookConv2d)
    assert isinstance(gm.get_submodule("layer2_0_conv2"), SparseConv2d)
    assert type(gm.get_submodule("conv1")) is torch.nn.Conv2d
    assert type(gm.get_submodule("layer3_0_conv1")) is torch.nn.Conv2d  # no key: float
    assert report.assignment["conv1"] == "float" and report.assignment["layer3.0.conv2"] == "float"
    assert report.assignment["layer2.0.conv1"].startswith("CodebookConfig(bits=4")
    # the integer chain of layer1 ends in a DeQuantize feeding the codebook conv and the downsample
    assert ("DeQuantize", "add_add", "layer2.0.conv1, layer2.0.downsample.0") in report.boundaries
    assert ("Quantize", "relu", "layer1.0.conv1, add_add") in report.boundaries
    assert "DeQuantize: add_add -> layer2.0.conv1" in str(report)
    assert any(name == "layer3.0.conv1" and "kept float" in why for name, _, why in report.skipped)
    # additions whose inputs are all float stay float
    assert sum(isinstance(mod, ck.QuantAdd) for mod in gm.modules()) == 1


def test_mixed_static_equals_hand_built_composition(digits_cnn):
    model, cal, (x, _) = digits_cnn
    m = calibrated(model, cal)
    everything = ck.convert_(m, {"*": ck.Int8StaticConfig()}).model
    uniform = ck.convert_(m, ck.Int8StaticConfig()).model
    assert torch.equal(everything(x), uniform(x))
    # a codebook layer inside the integer graph is the codebook of the calibrated (BatchNorm-folded) conv
    mixed = ck.convert_(m, {"layer1.*": ck.Int8StaticConfig(), "layer2.0.conv2": ck.CodebookConfig(bits=3)}).model
    folded = m._compress_kernels_observed.get_submodule("layer2.0.conv2")
    want = CodebookConv2d.from_float(folded, 3)
    got = mixed.get_submodule("layer2_0_conv2")
    assert torch.equal(got.packed_idx, want.packed_idx) and torch.equal(got.codebook, want.codebook)
    h = torch.randn(4, folded.in_channels, 4, 4)
    assert torch.equal(got(h), want(h))


def test_mixed_module_configs_equal_hand_built_model(digits_cnn):
    model, _, (x, _) = digits_cnn
    report = ck.convert_(model, {"layer1.0.conv1": ck.ChannelPruneConfig(0.5), "layer2.*": ck.CodebookConfig(bits=4),
                                 "layer3.0.conv2": ck.Sparse24Config(prune=True)}, inplace=False)
    hand = copy.deepcopy(model)
    block = hand.layer1[0]
    prune_channels_(hand, 0.5, pairs=[("layer1.0", block.conv1, block.bn1, block.conv2)])
    ck.convert_(hand, ck.CodebookConfig(bits=4), filter_fn=lambda _m, name: name.startswith("layer2."))
    ck.convert_(hand, ck.Sparse24Config(prune=True), filter_fn=lambda _m, name: name == "layer3.0.conv2")
    with torch.no_grad():
        assert torch.equal(report.model(x), hand(x))
    assert report.model.layer1[0].conv1.out_channels == 4 and report.model.layer1[0].conv2.in_channels == 4
    assert isinstance(report.model.layer2[0].downsample[0], CodebookConv2d)
    assert model.layer1[0].conv1.out_channels == 8  # inplace=False left the model alone
    assert [c[0] for c in report.converted] == ["layer1.0.conv1", "layer2.0.conv1", "layer2.0.conv2",
                                                "layer2.0.downsample.0", "layer3.0.conv2"]


@pytest.mark.parametrize("mapping, error, match", [
    ({"layer9.*": ck.CodebookConfig()}, ValueError, r"mapping key 'layer9\.\*' matches no layer"),
    ({"layer1.*": ck.CodebookConfig(), "layer1.0.conv1": ck.Sparse24Config()}, ValueError,
     r"layer 'layer1\.0\.conv1' is matched by two mapping keys, 'layer1\.\*' and 'layer1\.0\.conv1'"),
    ({"conv1": ck.Int8DynamicConfig()}, ValueError, r"Int8DynamicConfig cannot convert layer 'conv1' \(Conv2d\)"),
    ({"layer1.0.conv2": ck.ChannelPruneConfig()}, ValueError, r"needs the conv1 of a basic block.*'layer1\.0\.conv2'"),
    ({"layer1.*": ck.Int8StaticConfig(), "fc": ck.Int8StaticConfig(observer="minmax")}, ValueError,
     "a mapping takes one Int8StaticConfig"),
    ({"layer1.*": ck.Int8StaticConfig(), "layer2.0.conv1": ck.ChannelPruneConfig()}, ValueError,
     "ChannelPruneConfig and Int8StaticConfig in one mapping"),
    ({"fc": "int8"}, TypeError, r"mapping\['fc'\] is 'int8'; a mapping value must be None"),
    ({"fc": ck.QATConfig()}, TypeError, r"mapping\['fc'\] is QATConfig"),
    ({3: ck.CodebookConfig()}, TypeError, "mapping keys must be layer names or fnmatch patterns"),
    ({}, TypeError, "a mapping must be a non-empty dict"),
])
def test_mixed_mapping_errors(digits_cnn, mapping, error, match):
    model, _, _ = digits_cnn
    with pytest.raises(error, match=match):
        ck.convert_(model, mapping, inplace=False)


def test_mixed_refuses_filter_fn_and_uncalibrated_static(digits_cnn):
    model, _, _ = digits_cnn
    with pytest.raises(TypeError, match="filter_fn cannot be combined with a mapping"):
        ck.convert_(model, {"fc": ck.CodebookConfig()}, filter_fn=lambda m, n: True)
    with pytest.raises(RuntimeError, match="needs calibration statistics"):
        ck.convert_(copy.deepcopy(model), {"fc": ck.Int8StaticConfig()})
    with pytest.raises(ValueError, match=r"ChannelPruneConfig: amount must be a number in \(0, 1\), got 1.5"):
        ck.ChannelPruneConfig(1.5)
    with pytest.raises(ValueError, match=r"ChannelPruneConfig: criterion must be one of \['l1', 'l2'\], got 'l3'"):
        ck.ChannelPruneConfig(criterion="l3")
    with pytest.raises(ValueError, match=r"ChannelPruneConfig: multiple_of must be an int >= 1, got 0"):
        ck.ChannelPruneConfig(multiple_of=0)


# ---------------------------------------------------------------- sensitivity


METHODS = {"int8_static": ck.Int8StaticConfig(), "kmeans4": ck.CodebookConfig(bits=4),
           "kmeans2": ck.CodebookConfig(bits=2), "sparse24": ck.Sparse24Config(prune=True),
           "channels50": ck.ChannelPruneConfig(0.5), "int8_dynamic": ck.Int8DynamicConfig()}


@pytest.fixture(scope="module")
def table(digits_cnn):
    model, cal, val = digits_cnn
    return sensitivity(model, val, METHODS, calibration=cal, timing_reps=3, progress=False)


def test_sensitivity_table_shape_and_reasons(digits_cnn, table):
    model, _, _ = digits_cnn
    layers = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert table.layers == layers
    assert len(table.cells) == len(layers) * len(METHODS)
    assert table.float_metric > 60
    assert "K = kh * kw * in_channels = 9 is not a multiple of 4" in table.cell("conv1", "sparse24").reason
    assert table.cell("conv1", "int8_dynamic").status == "n/a"
    assert table.cell("fc", "int8_dynamic").status == "ok"
    assert table.cell("layer1.0.conv2", "channels50").status == "n/a"
    ok = [c for c in table.cells if c.status == "ok"]
    assert all(c.latency_us > 0 and c.latency_float_us > 0 and math.isfinite(c.sqnr_db) for c in ok)
    for layer in layers:  # 2-bit codebooks hurt more than 4-bit, on every layer
        assert table.cell(layer, "kmeans2").sqnr_db < table.cell(layer, "kmeans4").sqnr_db
    worst2 = min(table.cell(layer, "kmeans2").metric for layer in layers)
    worst4 = min(table.cell(layer, "kmeans4").metric for layer in layers)
    assert worst2 <= worst4


def test_sensitivity_bytes_exact(digits_cnn, table):
    model, _, _ = digits_cnn
    conv = model.layer2[0].conv2                    # 16 x 16 x 3 x 3, no bias
    cell = table.cell("layer2.0.conv2", "kmeans4")
    packed = ck.ops.packed_shape("codebook_pack", 16, 16 * 9, 4)
    assert cell.bytes_float == conv.weight.numel() * 4
    assert cell.bytes == math.prod(packed) * 4 + 16 * 4 + 16  # int32 packed indices, fp32 codebook, bool zero flags
    # conv1 (8 -> 16 channels) keeps 8 of its 16 outputs, and bn1 (4 fp32 per channel + the int64 batch
    # count) with it; conv2's inputs are its own layer's business
    pruned = table.cell("layer2.0.conv1", "channels50")
    assert pruned.bytes_float == (16 * 8 * 9 + 4 * 16) * 4 + 8
    assert pruned.bytes == (8 * 8 * 9 + 4 * 8) * 4 + 8
    assert "8 of 16 channels kept" in pruned.reason


def test_sensitivity_cells_equal_whole_model_runs(digits_cnn, table):
    """A module-swap cell resumes the graph from cached values: it must equal running the whole model
    with the layer converted; a static cell is the real one-layer mixed conversion."""
    model, cal, (x, y) = digits_cnn
    for layer, method in (("layer2.0.conv2", "kmeans2"), ("layer3.0.conv1", "channels50"), ("fc", "int8_dynamic")):
        whole = ck.convert_(model, {layer: METHODS[method]}, inplace=False).model
        with torch.no_grad():
            out = whole(x)
        cell = table.cell(layer, method)
        assert cell.metric == pytest.approx(top1(out, y), abs=1e-9)
        assert cell.sqnr_db == pytest.approx(sqnr_db(model(x), out), rel=1e-6)
    static = ck.convert_(calibrated(model, cal), {"layer1.0.conv1": ck.Int8StaticConfig()}).model
    with torch.no_grad():
        acc = top1(static(x), y)
    assert table.cell("layer1.0.conv1", "int8_static").metric == pytest.approx(acc, abs=1e-9)


def test_sensitivity_is_reproducible_and_writes_reports(digits_cnn, table, tmp_path):
    model, cal, val = digits_cnn
    again = sensitivity(model, val, METHODS, calibration=cal, layers=["layer1.0.conv1", "fc"], timing_reps=1,
                        progress=False)
    for c in again.cells:
        first = table.cell(c.layer, c.method)
        assert (c.status, c.metric, c.sqnr_db, c.bytes) == (first.status, first.metric, first.sqnr_db, first.bytes)
    saved = json.loads(table.to_json(str(tmp_path / "s.json")))
    assert len(saved["cells"]) == len(table.cells) and (tmp_path / "s.json").exists()
    md = table.to_markdown()
    assert "| layer2.0.conv2 | kmeans4 |" in md
    png = table.heatmap(str(tmp_path / "s.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_sensitivity_errors(digits_cnn):
    model, _, val = digits_cnn
    with pytest.raises(ValueError, match=r"layers \['nope'\] are not nn.Conv2d / nn.Linear layers"):
        sensitivity(model, val, METHODS, layers=["nope"], progress=False)
    with pytest.raises(TypeError, match="data must be \\(inputs, labels\\) tensors"):
        sensitivity(model, val[0], METHODS, progress=False)
    with pytest.raises(TypeError, match="method 'x' is 3"):
        sensitivity(model, val, {"x": 3}, progress=False)
    with pytest.raises(ValueError, match="metric must be \"top1\" or a callable"):
        sensitivity(model, val, METHODS, metric="top5", progress=False)
    with pytest.raises(ValueError, match="timing_reps must be an int >= 1, got 0"):
        sensitivity(model, val, METHODS, timing_reps=0, progress=False)
    with pytest.raises(ValueError, match="calibrated must be a copy of the model on which compress_kernels.calibrate"):
        sensitivity(model, val, METHODS, calibrated=copy.deepcopy(model), progress=False)
    with pytest.raises(ValueError, match="methods is empty"):
        sensitivity(model, val, [], progress=False)

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, a, b):
            return self.fc(a + b)

    with pytest.raises(TypeError, match=r"TwoInputs.forward takes \['a', 'b'\]; the sweep feeds one input"):
        sensitivity(TwoInputs(), (torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)), METHODS, progress=False)


def test_table_cell_lookup_error(table):
    with pytest.raises(KeyError, match=r"no cell \('fc', 'kmeans3'\)"):
        table.cell("fc", "kmeans3")


# ---------------------------------------------------------------- assignment


def test_assign_meets_size_budget_and_measures_it(digits_cnn, table, tmp_path):
    model, cal, val = digits_cnn
    budget = stored_bytes(model) // 4
    result = assign(model, val, METHODS, budget=budget, table=table, calibration=cal, timing_reps=2,
                    extra_budgets=[stored_bytes(model) // 2], progress=False)
    assert result.measured.bytes <= budget
    assert result.predicted["cost"] <= budget
    assert result.methods and set(result.methods) <= set(table.layers)
    assert result.measured.bytes == stored_bytes(result.model)
    with torch.no_grad():
        assert result.measured.metric == pytest.approx(top1(result.model(val[0]), val[1]))
    kinds = {c.kind for c in result.candidates}
    assert kinds == {"float", "uniform", "mixed"} and any(c.pareto for c in result.candidates)
    smallest = min(result.candidates, key=lambda c: (c.bytes, -c.metric))
    most_accurate = max(result.candidates, key=lambda c: (c.metric, -c.bytes))
    assert smallest.pareto and most_accurate.pareto
    for c in result.candidates:  # on the front exactly when no other candidate is as small and as accurate
        dominated = any(o.bytes <= c.bytes and o.metric >= c.metric and (o.bytes, o.metric) != (c.bytes, c.metric)
                        for o in result.candidates)
        assert c.pareto == (not dominated)
    again = assign(model, val, METHODS, budget=budget, table=table, calibration=cal, timing_reps=1, uniform=False,
                   progress=False)
    assert again.methods == result.methods  # the same table gives the same assignment
    assert json.loads(result.to_json())["measured"]["bytes"] == result.measured.bytes
    assert "| candidate | kind |" in result.to_markdown()
    assert open(result.plot(str(tmp_path / "p.png")), "rb").read(4) == b"\x89PNG"


def test_assign_errors(digits_cnn, table):
    model, cal, val = digits_cnn
    with pytest.raises(ValueError, match="no assignment meets the budget 10"):
        assign(model, val, METHODS, budget=10, table=table, progress=False)
    with pytest.raises(ValueError, match=r"kind must be one of \['bytes', 'latency_us'\], got 'ms'"):
        assign(model, val, METHODS, budget=10, kind="ms", table=table, progress=False)
    with pytest.raises(ValueError, match="budget must be a positive number"):
        assign(model, val, METHODS, budget=-1, table=table, progress=False)
    with pytest.raises(ValueError, match=r"the table has methods \['int8_static', 'kmeans2'"):
        assign(model, val, {"kmeans4": ck.CodebookConfig()}, budget=1000, table=table, progress=False)


def test_mixed_dequantize_count(digits_cnn):
    model, cal, _ = digits_cnn
    report = ck.convert_(calibrated(model, cal), {"layer2.0.conv1": ck.Int8StaticConfig()})
    deq = [b for b in report.boundaries if b[0] == "DeQuantize"]
    assert deq == [("DeQuantize", "layer2.0.conv1", "layer2.0.conv2")]
    assert sum(isinstance(m, DeQuantize) for m in report.model.modules()) == 1
