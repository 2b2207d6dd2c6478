"""Quantization-aware training: prepare_qat_ / convert_ / exact mode (compress_kernels/qat.py).

The converted integer model must equal the QAT model's exact evaluation mode bit for bit (not
approximately), for every configuration; accuracy targets on the bundled digits: int8 QAT
within 0.3 points of fp32, 4-bit weights / 8-bit activations within 1, 2:4-pruned + int8 within 1 with
the pruned weights exactly zero in the integer model.
"""

import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress_kernels as ck
from compress_kernels import numerics
from compress_kernels.nn.qat import ActFakeQuant, QATAdd, QATAvgPool2d, QATConv2d, QATLinear
from compress_kernels.sparse24_layout import weight_rows
from compress_kernels.study import models, training


class TorchvisionStyleNet(nn.Module):
    """Functional ReLU, a max-pool stem, `out = out + identity`, a sigmoid gate without an integer
    kernel in the middle, and a ReLU6: every kind of node the preparation must place quantizers around."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(8)
        self.gate = nn.Sigmoid()
        self.conv_c = nn.Conv2d(8, 16, 1)
        self.act6 = nn.ReLU6()
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn(self.stem(x))))
        out = self.bn_b(self.conv_b(F.relu(self.conv_a(x))))
        out = F.relu(out + x)
        out = self.act6(self.conv_c(self.gate(out)))
        return self.fc(torch.flatten(self.avg(out), 1))


def small_resnet():
    torch.manual_seed(0)
    return models.resnet18_cifar(width=8)


def train_steps(model, x, y, steps=3, lr=0.02):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for i in range(steps):
        xb, yb = x[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16]
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss


def assert_converts_exactly(qat, x):
    int_model = ck.convert_(qat).model
    with ck.qat_exact_mode(qat):
        want = qat(x)
    got = int_model(x)
    assert torch.equal(got, want), (got - want).abs().max()
    with ck.qat_exact_mode(qat, use_kernels=True):
        assert torch.equal(qat(x), want)
    return int_model


# ---------------------------------------------------------------- graph preparation


def test_prepare_places_quantizers_where_static_quant_quantizes():
    qat = ck.prepare_qat_(TorchvisionStyleNet(), inplace=False)
    mods = dict(qat.named_modules())
    assert sum(isinstance(m, QATConv2d) for m in mods.values()) == 4
    assert [m.bn is not None for m in mods.values() if isinstance(m, QATConv2d)] == [True, False, True, False]
    assert not any(isinstance(m, nn.BatchNorm2d) for name, m in mods.items() if "." not in name)  # folded
    assert sum(isinstance(m, QATLinear) for m in mods.values()) == 1
    assert sum(isinstance(m, QATAdd) for m in mods.values()) == 1
    assert sum(isinstance(m, QATAvgPool2d) for m in mods.values()) == 1
    quants = [name for name, m in mods.items() if isinstance(m, ActFakeQuant)]
    # input, stem+relu, conv_a+relu, conv_b, add+relu, gate (feeds conv_c), conv_c+relu6, fc
    assert len(quants) == 8, quants
    code = qat.code
    assert "act_quant_gate" in code and "act_quant_act6" in code and "act_quant_relu_1" in code


def test_training_updates_weights_batchnorm_and_observers(digits_data):
    x, y = digits_data[0][:48], digits_data[1][:48]
    model = small_resnet()
    qat = ck.prepare_qat_(model)  # in place: the QAT graph trains the model's own parameters
    before = model.conv1.weight.detach().clone()
    mean_before = model.bn1.running_mean.clone()
    loss = train_steps(qat, x, y)
    assert torch.isfinite(loss)
    assert not torch.equal(model.conv1.weight, before)
    assert not torch.equal(model.bn1.running_mean, mean_before)
    quant = qat.act_quant_x
    assert torch.isfinite(quant.running_min).all() and quant.scale.item() != 1.0
    # evaluation does not move the observers; freeze_qat_ stops them and the BatchNorm statistics
    qat.eval()
    scale = quant.scale.clone()
    qat(x[:8] * 3)
    assert torch.equal(quant.scale, scale)
    ck.freeze_qat_(qat)
    mean = model.bn1.running_mean.clone()
    train_steps(qat, x, y, steps=1)
    assert torch.equal(model.bn1.running_mean, mean) and torch.equal(quant.scale, scale)
    assert "bn_frozen=True" in repr(qat.conv1)


def test_on_grid_values_survive_dequantize_quantize():
    # the exact mode hands dequantized integers from layer to layer: quantize must give them back
    torch.manual_seed(0)
    for dtype in (torch.uint8, torch.int8):
        lo, hi = numerics.dtype_range(dtype)
        q = torch.arange(lo, hi + 1, dtype=torch.int32)
        for scale in torch.rand(200) * 10 ** torch.empty(200).uniform_(-6, 2):
            z = int(torch.randint(lo, hi + 1, ()))
            x = numerics.dequantize(q, float(scale), z)
            assert torch.equal(numerics.quantize(x, float(scale), z, dtype).to(torch.int32), q)


# ---------------------------------------------------------------- exactness of the conversion


@pytest.mark.parametrize("config", [
    ck.QATConfig(),
    ck.QATConfig(weight_bits=4),
    ck.QATConfig(weight_bits=2, per_channel=False),
    ck.QATConfig(learnable_scale=True),
    ck.QATConfig(activation_dtype=torch.int8, rounding="single"),
], ids=["int8", "w4", "w2-per-tensor", "lsq", "int8-act-single-rounding"])
def test_converted_model_equals_exact_mode_bit_for_bit(digits_data, config):
    x, y = digits_data[0][:64], digits_data[1][:64]
    qat = ck.prepare_qat_(small_resnet(), config)
    train_steps(qat, x, y)
    int_model = assert_converts_exactly(qat, x[48:])
    if config.weight_bits < 8:
        qmax = 2 ** (config.weight_bits - 1) - 1
        for m in int_model.modules():
            if isinstance(m, (ck.QuantConv2d, ck.QuantLinear)):
                assert m.weight_q.abs().max() <= qmax


def test_a_model_the_package_did_not_write_converts_exactly(digits_data):
    x, y = digits_data[0][:64], digits_data[1][:64]
    torch.manual_seed(0)
    qat = ck.prepare_qat_(TorchvisionStyleNet())
    train_steps(qat, x, y)
    report = ck.convert_(qat)
    assert ("gate", "Sigmoid", "no integer kernel; runs in float") in report.skipped
    assert any(dst == "QuantConv2d+relu6" for _, _, dst in report.converted)
    assert_converts_exactly(qat, x[48:])


def test_fast_simulation_is_within_one_step_of_the_integers(digits_data):
    x, y = digits_data[0][:64], digits_data[1][:64]
    qat = ck.prepare_qat_(small_resnet())
    train_steps(qat, x, y)
    report = ck.qat_mismatch_report(qat, [x[:16], (x[16:32], y[16:32])])
    assert report["elements"] > 0 and report["predictions"] == 32
    assert 0 < report["rate"] < 0.01, report["rate"]  # rounding ties only
    assert report["max_steps"] == 1
    assert set(report["per_layer"]) >= {"conv1", "fc", "avgpool"}
    assert qat.training  # the report leaves the mode as it found it


def test_state_dict_deepcopy_and_modes_keep_the_conversion(digits_data):
    x, y = digits_data[0][:64], digits_data[1][:64]
    qat = ck.prepare_qat_(small_resnet())
    train_steps(qat, x, y)
    copied = copy.deepcopy(qat)
    assert copied.avgpool.input_quant is copied.act_quant_layer4_1_relu_1  # the plain reference follows the copy
    want = ck.convert_(qat).model(x[:8])
    assert torch.equal(ck.convert_(copied).model(x[:8]), want)
    fresh = ck.prepare_qat_(small_resnet())
    fresh.load_state_dict(qat.state_dict())
    assert torch.equal(ck.convert_(fresh).model(x[:8]), want)


def test_pruning_masks_survive_qat_and_conversion(digits_data):
    x, y = digits_data[0][:64], digits_data[1][:64]
    model = small_resnet()
    pruner = ck.prune_(model, ck.PruneConfig(granularity="2:4"))
    qat = ck.prepare_qat_(model)
    opt = torch.optim.SGD(qat.parameters(), lr=0.05, momentum=0.9)
    pruner.attach(opt)
    for i in range(3):
        loss = F.cross_entropy(qat(x[i * 16:(i + 1) * 16]), y[i * 16:(i + 1) * 16])
        opt.zero_grad()
        loss.backward()
        assert not model.layer1[0].conv1.weight.grad[~model.layer1[0].conv1.weight_mask].any()
        opt.step()
    int_model = assert_converts_exactly(qat, x[48:])
    for name, mod in pruner.modules.items():
        q = int_model.get_submodule(name.replace(".", "_"))
        assert not q.weight_q[~mod.weight_mask].any(), name


# ---------------------------------------------------------------- accuracy on the digits (the targets above)


def qat_accuracy(model, data, config, epochs, after_step=None):
    x_train, y_train, x_test, y_test = data
    qat = ck.prepare_qat_(model, config)
    training.train(qat, x_train, y_train, epochs=epochs, lr=0.01, after_step=after_step)
    ck.freeze_qat_(qat)
    int_model = ck.convert_(qat).model
    with ck.qat_exact_mode(qat, use_kernels=True):
        exact = training.evaluate(qat, x_test[:128], y_test[:128])
    assert exact == training.evaluate(int_model, x_test[:128], y_test[:128])
    return training.evaluate(int_model, x_test, y_test), int_model


def test_int8_qat_within_0_3_points(digits_resnet):
    model, data, fp32 = digits_resnet
    acc, _ = qat_accuracy(copy.deepcopy(model), data, ck.QATConfig(), epochs=1)
    assert acc >= fp32 - 0.3, (acc, fp32)


def test_4bit_weight_qat_within_1_point(digits_resnet):
    model, data, fp32 = digits_resnet
    acc, _ = qat_accuracy(copy.deepcopy(model), data, ck.QATConfig(weight_bits=4), epochs=2)
    assert acc >= fp32 - 1.0, (acc, fp32)


def test_2to4_pruned_int8_qat_within_1_point(digits_resnet):
    model, data, fp32 = digits_resnet
    model = copy.deepcopy(model)
    pruner = ck.prune_(model, ck.PruneConfig(granularity="2:4"))
    # sparse24=True: the converted layers run the int8 2:4 kernel; qat_accuracy checks that they
    # still equal the exact evaluation mode bit for bit
    acc, int_model = qat_accuracy(model, data, ck.QATConfig(sparse24=True), epochs=2,
                                  after_step=lambda m: pruner.apply())
    assert acc >= fp32 - 1.0, (acc, fp32)
    for name, mod in pruner.modules.items():
        q = int_model.get_submodule(name.replace(".", "_"))
        assert q.sparse24, name
        assert not q.weight_q[~mod.weight_mask].any(), name
        assert (weight_rows(q.weight_q).reshape(-1, 4) != 0).sum(1).max() <= 2


# ---------------------------------------------------------------- DistributedDataParallel


DDP_SCRIPT = textwrap.dedent("""
    import sys
    import torch, torch.distributed as dist, torch.nn.functional as F
    import compress_kernels as ck
    from compress_kernels.study import models

    rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)                      # same initial model on both ranks
    qat = ck.prepare_qat_(models.resnet18_cifar(width=4))
    ddp = torch.nn.parallel.DistributedDataParallel(qat)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(100 + rank)             # different data on each rank
    for step in range(3):
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        loss = F.cross_entropy(ddp(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
    ck.broadcast_qat_state_(ddp)
    int_model = ck.convert_(ddp).model
    torch.manual_seed(7)
    torch.save({"state": int_model.state_dict(), "out": int_model(torch.randn(4, 3, 32, 32)),
                "loss": loss.item()}, out)
    dist.destroy_process_group()
""")


def test_ddp_two_processes_train_and_convert_identically(tmp_path):
    script = tmp_path / "ddp_qat.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(tmp_path / "store"),
                               str(tmp_path / f"rank{rank}.pt")], env=env, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    assert 0 < r0["loss"] < 10 and r0["loss"] != r1["loss"]  # each rank trained on its own batches
    assert r0["state"].keys() == r1["state"].keys()
    for key, value in r0["state"].items():
        other = r1["state"][key]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, key
    assert torch.equal(r0["out"], r1["out"])


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, message", [
    (dict(weight_bits=9), "weight_bits must be in [2, 8], got 9"),
    (dict(activation_bits=4), "activation_bits must be 8"),
    (dict(observer="kl"), "observer must be \"ema\""),
    (dict(activation_dtype=torch.int32), "activation_dtype must be torch.uint8 or torch.int8"),
    (dict(rounding="up"), "rounding must be \"double\" or \"single\", got 'up'"),
])
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError) as err:
        ck.prepare_qat_(small_resnet(), ck.QATConfig(**kwargs))
    assert message in str(err.value)


def test_errors_name_what_is_wrong():
    with pytest.raises(TypeError, match="only a model prepared by prepare_qat_ converts without one"):
        ck.convert_(small_resnet())
    with pytest.raises(RuntimeError, match="expected a model prepared by compress_kernels.prepare_qat_"):
        with ck.qat_exact_mode(small_resnet()):
            pass
    qat = ck.prepare_qat_(small_resnet(), inplace=False)
    with pytest.raises(ValueError, match="filter_fn is not supported for QAT models"):
        ck.convert_(qat, ck.QATConfig(), filter_fn=lambda m, n: True)
    with pytest.raises(ValueError, match="the QAT model fake-quantizes torch.uint8, conversion asked for torch.int8"):
        qat.act_quant_x.qparams(dtype=torch.int8)
    with pytest.raises(ValueError, match="weight_bits must be in \\[2, 8\\], got 1"):
        QATLinear(nn.Linear(4, 4), weight_bits=1)
    with pytest.raises(ValueError, match="weight_bits must be in \\[2, 8\\], got 12"):
        ck.QuantLinear.from_float(nn.Linear(4, 4), input_scale=0.1, output_scale=0.1, weight_bits=12)
