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


SIZE_ARGS = dict(budget="kmeans4", extra_budgets=[("kmeans4", 0.9), 10])


@pytest.fixture(scope="module")
def size_result(digits_cnn, table):
    model, cal, val = digits_cnn
    return assign(model, val, METHODS, table=table, **SIZE_ARGS, timing_reps=3, calibration=cal, progress=False)


def test_sensitivity_is_reproducible_and_writes_reports(digits_cnn, table, size_result, tmp_path):
    """The same model, data, methods and seed give the same table (every column but the latencies)
    and the same assignment."""
    model, cal, val = digits_cnn
    again = sensitivity(model, val, METHODS, calibration=cal, timing_reps=1, seed=0, progress=False)
    columns = ("layer", "method", "status", "reason", "metric", "drop", "sqnr_db", "kl", "bytes", "bytes_float")
    assert [[getattr(c, k) for k in columns] for c in again.cells] == \
        [[getattr(c, k) for k in columns] for c in table.cells]
    assert again.seed == table.seed == 0
    first = size_result
    second = assign(model, val, METHODS, table=again, **SIZE_ARGS, timing_reps=1, calibration=cal, progress=False)
    assert first.methods == second.methods and first.measured.name == second.measured.name
    assert [(c.name, c.metric, c.kl, c.bytes) for c in first.candidates] == \
        [(c.name, c.metric, c.kl, c.bytes) for c in second.candidates]
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
    with pytest.raises(ValueError, match="seed must be an int >= 0, got 1.5"):
        sensitivity(model, val, METHODS, seed=1.5, progress=False)

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


def test_assign_at_the_size_of_a_uniform_model(digits_cnn, size_result, tmp_path):
    model, _, val = digits_cnn
    result = size_result
    ref = result.candidate("all kmeans4")
    main = result.budget
    assert (main.spec, main.reference, main.limit) == ("kmeans4", "kmeans4", ref.bytes)
    assert ref.bytes == stored_bytes(ck.convert_(model, METHODS["kmeans4"], inplace=False).model)
    # the chosen model meets the budget and no measured candidate within it is more accurate
    chosen = result.measured
    assert chosen.bytes <= ref.bytes and chosen.name in main.feasible
    assert chosen.metric == max(result.candidate(n).metric for n in main.feasible) >= ref.metric
    assert set(main.feasible) == {c.name for c in result.candidates if c.bytes <= ref.bytes}
    assert result.measured.bytes == stored_bytes(result.model)
    with torch.no_grad():
        out = result.model(val[0])
    assert chosen.metric == pytest.approx(top1(out, val[1]))
    assert chosen.kl == pytest.approx(ck.kl_divergence(model(val[0]), out), rel=1e-9)
    mixed = [c for c in result.candidates if c.kind == "mixed"]
    assert len(mixed) >= 3 and len({tuple(sorted(c.methods.items())) for c in mixed}) == len(mixed)
    assert any(c.name.startswith("mixed kl kmeans4 +") for c in mixed)  # refinements of the reference
    assert {c.kind for c in result.candidates} == {"float", "uniform", "mixed"}
    # extra budgets: 0.9 x the reference's bytes, and 10 bytes, which nothing meets
    tighter, impossible = result.budgets[1:]
    assert tighter.limit == pytest.approx(0.9 * ref.bytes) and "all kmeans4" not in tighter.feasible
    assert impossible.chosen is None and impossible.feasible == []
    for attr, flag in (("bytes", "pareto_size"), ("latency_ratio", "pareto_latency")):
        for c in result.candidates:  # on the front exactly when no other candidate is as cheap and as accurate
            dominated = any(getattr(o, attr) <= getattr(c, attr) and o.metric >= c.metric
                            and (getattr(o, attr), o.metric) != (getattr(c, attr), c.metric) for o in result.candidates)
            assert getattr(c, flag) == (not dominated)
    saved = json.loads(result.to_json())
    assert saved["measured"]["bytes"] == chosen.bytes and saved["budgets"][0]["chosen"] == chosen.name
    assert f"| {chosen.name} (chosen) |" in result.to_markdown()
    assert open(result.plot(str(tmp_path / "p.png")), "rb").read(4) == b"\x89PNG"


def test_assign_at_the_latency_of_a_uniform_model(digits_cnn, table):
    model, cal, val = digits_cnn
    result = assign(model, val, METHODS, budget="int8_static", kind="latency_us", table=table, calibration=cal,
                    timing_reps=5, uniform=False, progress=False)
    main = result.budget
    assert {c.kind for c in result.candidates} == {"float", "uniform", "mixed"}
    assert [c.name for c in result.candidates if c.kind == "uniform"] == ["all int8_static"]
    assert main.values["all int8_static"] == 1.0 and "all int8_static" in main.feasible
    assert main.limit == 1.0 and all(main.values[n] <= 1.0 for n in main.feasible)
    assert result.measured.metric >= result.candidate("all int8_static").metric
    assert all(c.latency_us > 0 and c.latency_ratio > 0 for c in result.candidates)
    assert result.candidate("float").latency_ratio == 1.0


def test_local_moves_stay_within_the_limit():
    from compress_kernels.sensitivity import _local_moves

    # two layers; the start "a4"/"b4" costs 8; a pair of changes (a -> 8 bit, b -> 2 bit) fits the limit 8,
    # a single upgrade does not
    options = {"a": [(None, 8.0, 0.0), ("a8", 4.0, 0.01), ("a4", 4.0 - 2, 0.5)],
               "b": [(None, 8.0, 0.0), ("b4", 6.0 - 2, 0.2), ("b2", 1.0, 0.3)]}
    steps = _local_moves({"a": "a4", "b": "b4"}, options, limit=6.0, cost=6.0, steps=3)
    assert steps[0][0] == {"a": "a8", "b": "b2"}
    assert steps[0][1] == pytest.approx(5.0) and steps[0][2] == pytest.approx(0.31 - 0.7)
    assert all(cost <= 6.0 for _, cost, _ in steps)
    assert all(later[2] < earlier[2] for earlier, later in zip(steps, steps[1:]))
    assert _local_moves({"a": "a8", "b": "b2"}, options, limit=5.0, cost=5.0, steps=2) == []


def test_interleaved_times_and_kl():
    from compress_kernels.sensitivity import interleaved_times

    calls = []
    samples = interleaved_times({"x": lambda: calls.append("x"), "y": lambda: calls.append("y")}, rounds=3, warmup=1)
    assert calls == ["x", "y", "x", "y", "y", "x", "x", "y"]  # warm-up, then each round starts one further on
    assert {k: len(v) for k, v in samples.items()} == {"x": 3, "y": 3}
    torch.manual_seed(0)
    a, b = torch.randn(6, 10), torch.randn(6, 10)
    want = torch.nn.functional.kl_div(b.log_softmax(1), a.log_softmax(1), log_target=True, reduction="batchmean")
    assert ck.kl_divergence(a, b) == pytest.approx(want.item(), rel=1e-5)
    assert ck.kl_divergence(a, a) == 0.0


def test_assign_errors(digits_cnn, table):
    model, cal, val = digits_cnn
    with pytest.raises(ValueError, match="no assignment meets the budget 10"):
        assign(model, val, METHODS, budget=10, table=table, progress=False)
    with pytest.raises(ValueError, match=r"kind must be one of \['bytes', 'latency_us'\], got 'ms'"):
        assign(model, val, METHODS, budget=10, kind="ms", table=table, progress=False)
    with pytest.raises(ValueError, match="budget must be a positive number"):
        assign(model, val, METHODS, budget=-1, table=table, progress=False)
    with pytest.raises(ValueError, match=r"budget must be .* or \(method name, factor > 0\), got \('kmeans4', 0\)"):
        assign(model, val, METHODS, budget=("kmeans4", 0), table=table, progress=False)
    with pytest.raises(ValueError, match=r"budget 'kmeans3' names method 'kmeans3', not one of the methods"):
        assign(model, val, METHODS, budget="kmeans3", table=table, progress=False)
    with pytest.raises(ValueError, match=r"extra_budgets\[0\] must be a positive number"):
        assign(model, val, METHODS, budget=1000, extra_budgets=[None], table=table, progress=False)
    with pytest.raises(ValueError, match=r"proxy must be one of \['kl', 'noise', 'drop'\], got 'mse'"):
        assign(model, val, METHODS, budget=1000, proxy="mse", table=table, progress=False)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        assign(model, val, METHODS, budget=1000, seed=-1, table=table, progress=False)
    with pytest.raises(ValueError, match=r"the table has methods \['int8_static', 'kmeans4'"):
        assign(model, val, {"kmeans2": ck.CodebookConfig(bits=2)}, budget=1000, table=table, progress=False)
    small = sensitivity(model, val, {"int8_dynamic": ck.Int8DynamicConfig()}, layers=["conv1"], timing_reps=1,
                        progress=False)
    with pytest.raises(ValueError, match="method 'int8_dynamic' converts no layer of the table"):
        assign(model, val, {"int8_dynamic": ck.Int8DynamicConfig()}, budget="int8_dynamic", table=small,
               progress=False)


def test_mixed_dequantize_count(digits_cnn):
    model, cal, _ = digits_cnn
    report = ck.convert_(calibrated(model, cal), {"layer2.0.conv1": ck.Int8StaticConfig()})
    deq = [b for b in report.boundaries if b[0] == "DeQuantize"]
    assert deq == [("DeQuantize", "layer2.0.conv1", "layer2.0.conv2")]
    assert sum(isinstance(m, DeQuantize) for m in report.model.modules()) == 1


# ---------------------------------------------------------------- the study's Pareto view


def test_pareto_view(tmp_path):
    from dataclasses import asdict
    from types import SimpleNamespace

    from compress_kernels.sensitivity import BudgetResult, Candidate
    from compress_kernels.study import pareto
    from compress_kernels.study.runner import StudySettings

    settings = StudySettings()
    rows = [dict(name="fp32", available=True, top1=97.0, stored_bytes=1000, latency_b32_ms=10.0, finetune_steps=0),
            dict(name="int8_static", available=True, top1=97.0, stored_bytes=300, latency_b32_ms=8.0,
                 finetune_steps=0),
            dict(name="kmeans2", available=True, top1=90.0, stored_bytes=100, latency_b32_ms=20.0, finetune_steps=5),
            dict(name="gone", available=False)]
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"settings": asdict(settings), "test_images": 450, "variants": rows}))
    points, why = pareto.study_points(str(path), settings, 450)
    assert [p.name for p in points] == ["fp32", "int8_static", "kmeans2"] and "read from" in why
    assert [p.latency_ratio for p in points] == [1.0, 0.8, 2.0]
    assert pareto.study_points(str(path), StudySettings(width=4), 450) == (
        None, f"{path} was made with other settings (width)")
    assert pareto.study_points(str(path), settings, 64)[1] == f"{path} evaluated 450 held-out images, this run 64"
    assert pareto.study_points(str(tmp_path / "none.json"), settings, 450)[0] is None

    def cand(name, kind, metric, nbytes, ratio, methods=None):
        return Candidate(name, kind, metric, 0.0, 30.0, nbytes, 100.0 * ratio, ratio, methods or {})

    result = SimpleNamespace(
        candidates=[cand("float", "float", 97.0, 1000, 1.0), cand("all kmeans4", "uniform", 97.5, 200, 2.5),
                    cand("mixed kl 1 x kmeans4", "mixed", 97.5, 190, 1.5, {"fc": "kmeans4"}),
                    cand("mixed kl 0.9 x kmeans4", "mixed", 96.0, 180, 1.4, {"fc": "kmeans2"})],
        budgets=[BudgetResult("kmeans4", "bytes", "kmeans4", 1.0, 200, 200, chosen="mixed kl 1 x kmeans4")])
    points += pareto.assignment_points({"size": result, "again": result})
    assert len(points) == 3 + 2 + 4  # float and uniform candidates once, mixed ones per assignment
    chosen = next(p for p in points if p.name == "size: mixed kl 1 x kmeans4")
    assert chosen.note == "chosen at size: kmeans4" and chosen.source == "mixed"
    pareto.mark_fronts(points)
    front_size = {p.name for p in points if p.front_size}
    assert front_size == {"kmeans2", "size: mixed kl 0.9 x kmeans4", "again: mixed kl 0.9 x kmeans4",
                          "size: mixed kl 1 x kmeans4", "again: mixed kl 1 x kmeans4"}
    # equal points do not dominate each other; the uniform k-means model is as accurate as the mixed one, slower
    assert {p.name for p in points if p.front_latency} == {"int8_static", "size: mixed kl 1 x kmeans4",
                                                           "again: mixed kl 1 x kmeans4"}
    md = pareto.to_markdown(points, "test")
    assert "| int8_static | study | 97.00 | 300 | 0.800 | L |" in md
    png = pareto.plot(points, str(tmp_path / "pareto.png"), "test")
    assert open(png, "rb").read(4) == b"\x89PNG"
