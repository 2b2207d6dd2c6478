"""Post-training static quantization: a trained float CNN (residual additions written in forward)
becomes an integer-only network whose outputs equal the reference integer simulation exactly,
within 0.5 points of fp32 top-1 on the bundled digits, for the package's ResNet and for an
independently written torchvision-style ResNet."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress_kernels as ck
from compress_kernels.study import training


class TorchvisionStyleBlock(nn.Module):
    """Written here, independently of compress_kernels.study.models: torchvision's BasicBlock layout with
    a max-pool stem around it, F.relu calls and `out = out + identity`."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + identity
        return F.relu(out)


class TorchvisionStyleNet(nn.Module):
    def __init__(self, width=16, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 5, 1, 2, bias=True)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(TorchvisionStyleBlock(width, width, 1), TorchvisionStyleBlock(width, width, 1))
        self.layer2 = nn.Sequential(TorchvisionStyleBlock(width, 2 * width, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


def calibration_batches(x, n=4, size=64):
    return [x[i * size:(i + 1) * size] for i in range(n)]


@pytest.fixture(scope="module")
def calibrated_resnet(digits_resnet):
    model, (x_train, y_train, x_test, y_test), fp32 = digits_resnet
    model = copy.deepcopy(model)
    ck.calibrate(model, calibration_batches(x_train))
    return model, x_test, y_test, fp32


def test_resnet18_converts_to_integer_only_within_half_a_point(calibrated_resnet):
    model, x_test, y_test, fp32 = calibrated_resnet
    report = ck.convert_(model, ck.Int8StaticConfig(observer="mse", per_channel=True))
    int_model = report.model
    acc = training.evaluate(int_model, x_test, y_test)
    assert acc >= fp32 - 0.5, (acc, fp32)
    kinds = {dst for _, _, dst in report.converted}
    assert {"QuantConv2d+relu", "QuantConv2d", "QuantAdd+relu", "QuantLinear", "QuantAvgPool2d"} <= kinds
    assert report.skipped == []
    n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert sum(isinstance(m, ck.QuantConv2d) for m in int_model.modules()) == n_conv
    assert sum(isinstance(m, ck.QuantAdd) for m in int_model.modules()) == 8  # one per BasicBlock
    # integer-only: no float conv / linear / batchnorm remains
    assert not any(isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) for m in int_model.modules())


@pytest.mark.parametrize("observer", ["minmax", "ema", "percentile", "kl"])
def test_every_observer_converts_a_working_model(calibrated_resnet, observer):
    model, x_test, y_test, fp32 = calibrated_resnet
    acc = training.evaluate(ck.convert_(model, ck.Int8StaticConfig(observer=observer)).model, x_test, y_test)
    assert acc >= fp32 - 3.0, (observer, acc, fp32)


def test_per_tensor_weights_and_int8_activations(calibrated_resnet):
    model, x_test, y_test, fp32 = calibrated_resnet
    cfg = ck.Int8StaticConfig(observer="mse", per_channel=False, activation_dtype=torch.int8, rounding="single")
    acc = training.evaluate(ck.convert_(model, cfg).model, x_test, y_test)
    assert acc >= fp32 - 3.0


def test_integer_model_equals_the_reference_simulation_exactly(calibrated_resnet):
    model, x_test, _, _ = calibrated_resnet
    int_model = ck.convert_(model, ck.Int8StaticConfig(observer="percentile")).model
    x = x_test[:40]
    with ck.reference_mode():
        want = int_model(x)
    assert torch.equal(int_model(x), want)


def test_a_model_the_package_did_not_write(digits_data):
    x_train, y_train, x_test, y_test = digits_data
    torch.manual_seed(1)
    net = TorchvisionStyleNet()
    training.train(net, x_train, y_train, epochs=2, lr=0.05)
    fp32 = training.evaluate(net, x_test, y_test)
    ck.calibrate(net, calibration_batches(x_train))
    report = ck.convert_(net, ck.Int8StaticConfig(observer="mse"))
    assert any(dst == "QuantMaxPool2d" for _, _, dst in report.converted)
    acc = training.evaluate(report.model, x_test, y_test)
    assert acc >= fp32 - 1.0, (acc, fp32)
    with ck.reference_mode():
        want = report.model(x_test[:16])
    assert torch.equal(report.model(x_test[:16]), want)


def test_unsupported_ops_run_in_float_and_are_reported(digits_data):
    class WithSigmoid(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.gate = nn.Sigmoid()
            self.fc = nn.Linear(8 * 32 * 32, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.gate(self.conv(x)), 1))

    x = digits_data[0][:32]
    net = WithSigmoid().eval()
    ck.calibrate(net, [x])
    report = ck.convert_(net, ck.Int8StaticConfig())
    assert ("gate", "Sigmoid", "no integer kernel; runs in float") in report.skipped
    assert torch.allclose(report.model(x), net(x), atol=0.15)
    assert "runs in float" in str(report)


def test_filter_fn_keeps_layers_in_float(calibrated_resnet):
    model, x_test, _, _ = calibrated_resnet
    report = ck.convert_(model, ck.Int8StaticConfig(), filter_fn=lambda m, name: name != "fc")
    assert ("fc", "Linear", "excluded by filter_fn") in report.skipped
    assert isinstance(report.model.fc, nn.Linear)
    assert report.model(x_test[:4]).shape == (4, 10)


def test_convert_without_calibration_is_refused():
    with pytest.raises(RuntimeError, match="run compress_kernels.calibrate\\(model, batches\\) first"):
        ck.convert_(nn.Sequential(nn.Conv2d(3, 4, 3)), ck.Int8StaticConfig())
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    ck.calibrate(net, [torch.randn(2, 3, 8, 8)])
    with pytest.raises(ValueError, match="observer must be one of"):
        ck.convert_(net, ck.Int8StaticConfig(observer="median"))


def test_quantconv2d_state_dict_round_trip_and_compile():
    conv, bn = nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2)
    bn.eval()
    q = ck.QuantConv2d.from_float(conv, bn, input_scale=0.05, input_zero_point=128, output_scale=0.04,
                                  output_zero_point=10, activation="relu")
    x = torch.randint(0, 256, (2, 8, 9, 9), dtype=torch.uint8)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    fresh = ck.QuantConv2d(8, 16, 3, 2, 1)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh(x), q(x))
    assert torch.equal(copy.deepcopy(q)(x), q(x))
    assert torch.equal(torch.compile(q, fullgraph=True)(x), q(x))
    # folded BN + fused ReLU approximate the float modules
    xf = (x.float() - 128) * 0.05
    want = torch.relu(bn(conv(xf))).detach()
    assert ((q(x).float() - 10) * 0.04 - want).abs().max().item() < 0.1
    assert "clamp=[10, 255]" in repr(q)


def test_quantadd_matches_float_addition_within_a_step():
    a = torch.randint(0, 256, (1000,), dtype=torch.uint8)
    b = torch.randint(0, 256, (1000,), dtype=torch.uint8)
    add = ck.QuantAdd.from_qparams((0.02, 100), (0.05, 30), (0.06, 90))
    y = add(a, b)
    want = (a.float() - 100) * 0.02 + (b.float() - 30) * 0.05
    got = (y.float() - 90) * 0.06
    inside = (want > -90 * 0.06) & (want < 165 * 0.06)
    assert (got - want)[inside].abs().max().item() <= 0.06 / 2 + 1e-6
    with ck.reference_mode():
        assert torch.equal(add(a, b), y)


def test_integer_pooling_rounding():
    q = torch.tensor([[[[1, 2], [2, 2]]]], dtype=torch.uint8)  # mean 1.75 -> 2; [1,2,1,2] -> 1.5 -> 2
    assert ck.QuantAvgPool2d()(q).item() == 2
    assert ck.QuantAvgPool2d()(torch.tensor([[[[1, 2], [1, 2]]]], dtype=torch.uint8)).item() == 2
    assert ck.QuantAvgPool2d()(torch.tensor([[[[-3, -2], [-3, -2]]]], dtype=torch.int8)).item() == -2  # -2.5 -> -2
