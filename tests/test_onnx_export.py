"""ONNX export (compress_kernels.export.to_onnx) checked in ONNX Runtime: the exact form reproduces our
integers bit for bit (the digits ResNet-18 on every test image, a Linear stack, both roundings, int8
activations, per-tensor weights, a QAT model, windowed pools, random multipliers with left shifts and a
wrapping bias); the fast form (float requantization) keeps every top-1 and lands every output within one
step (on the digits ResNet about 81% of the outputs are equal: float requantization against gemmlowp's
double rounding moves an early output by a step now and then, and the step travels); codebook and 2:4
layers export dense with a warning; every refusal names what it refuses."""

import collections
import copy

import onnx
import onnxruntime as ort
import pytest
import torch
from test_export import images, int8_static_sparse24, qat_converted, seeded_cnn, seeded_mlp, static_int8
from torch import nn

import compress_kernels as ck
from compress_kernels.export import OnnxExportError, to_onnx
from compress_kernels.nn.integer import DeQuantize, Quantize


def run_onnx(path, *inputs) -> torch.Tensor:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    return torch.from_numpy(session.run(None, feeds)[0])


def exported(model, x, tmp_path, form, name="model"):
    path = tmp_path / f"{name}_{form}.onnx"
    report = to_onnx(model, (x,), path, form=form)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return run_onnx(path, x), report


def output_scale(model) -> float:
    return float([m for m in model.modules() if isinstance(m, DeQuantize)][-1].scale)


def step_histogram(ours: torch.Tensor, theirs: torch.Tensor, scale: float) -> dict[int, int]:
    """How many outputs differ by how many quantization steps (0: equal)."""
    steps = torch.round((theirs - ours) / scale).long().reshape(-1).tolist()
    return dict(sorted(collections.Counter(steps).items()))


@pytest.fixture(scope="module")
def digits_int8_resnet(digits_resnet):
    model, (x_train, _, x_test, _), _ = digits_resnet
    model = copy.deepcopy(model)
    ck.calibrate(model, [x_train[:64]])
    int_model = ck.convert_(model, ck.Int8StaticConfig()).model
    with torch.no_grad():
        ours = int_model(x_test)
    return int_model, x_test, ours


def test_exact_form_resnet18_equals_our_integers_on_every_digits_test_image(digits_int8_resnet, tmp_path):
    int_model, x_test, ours = digits_int8_resnet
    theirs, report = exported(int_model, x_test, tmp_path, "exact")
    differing = int((theirs != ours).sum())
    assert differing == 0, (f"{differing} of {ours.numel()} outputs differ; steps: "
                            f"{step_histogram(ours, theirs, output_scale(int_model))}")
    kinds = {what for _, what, _ in report.mapped}
    assert {"QuantConv2d", "QuantAdd", "QuantAvgPool2d", "QuantLinear", "Quantize", "DeQuantize"} <= kinds
    assert all("QLinear" not in ops and "QuantizeLinear" not in ops for _, _, ops in report.mapped)
    assert report.warnings == []


def test_fast_form_resnet18_keeps_every_top1_and_every_output_within_one_step(digits_int8_resnet, tmp_path):
    int_model, x_test, ours = digits_int8_resnet
    theirs, report = exported(int_model, x_test, tmp_path, "fast")
    histogram = step_histogram(ours, theirs, output_scale(int_model))
    equal = histogram.get(0, 0) / ours.numel()
    top1_moved = int((theirs.argmax(1) != ours.argmax(1)).sum())
    message = f"outputs equal: {equal:.2%}, top-1 changed on {top1_moved} images; steps of difference: {histogram}"
    assert top1_moved == 0 and set(histogram) <= {-1, 0, 1} and equal >= 0.75, message
    assert any("QLinearConv" in ops for _, _, ops in report.mapped)


class LinearStack(nn.Module):
    """A transformer's feed-forward Linear stack on [batch, tokens, features]: two blocks of Linear, ReLU,
    Linear with a residual addition, then a classifier head on the flattened tokens."""

    def __init__(self, features=32, hidden=96, tokens=4, classes=10):
        super().__init__()
        self.up1, self.down1 = nn.Linear(features, hidden), nn.Linear(hidden, features)
        self.up2, self.down2 = nn.Linear(features, hidden), nn.Linear(hidden, features)
        self.head = nn.Linear(features * tokens, classes)

    def forward(self, x):
        x = x + self.down1(torch.relu(self.up1(x)))
        x = x + self.down2(torch.relu(self.up2(x)))
        return self.head(x.flatten(1))


@pytest.fixture(scope="module")
def int8_linear_stack(digits_data):
    """The Linear stack on the digits images seen as 4 tokens of 32 features (8x8 digits, 2 channels)."""
    x_train, _, x_test, _ = digits_data
    tokens = lambda x: torch.nn.functional.avg_pool2d(x[:, :2], 4).reshape(len(x), 4, 32)  # noqa: E731
    torch.manual_seed(0)
    model = LinearStack().eval()
    ck.calibrate(model, [tokens(x_train[i:i + 64]) for i in range(0, 256, 64)])
    int_model = ck.convert_(model, ck.Int8StaticConfig()).model
    x = tokens(x_test)
    with torch.no_grad():
        return int_model, x, int_model(x)


def test_linear_stack_exact_and_fast(int8_linear_stack, tmp_path):
    int_model, x, ours = int8_linear_stack
    exact, _ = exported(int_model, x, tmp_path, "exact")
    assert torch.equal(exact, ours), f"{int((exact != ours).sum())} outputs differ"
    fast, _ = exported(int_model, x, tmp_path, "fast")
    scale = output_scale(int_model)
    histogram = step_histogram(ours, fast, scale)
    equal = histogram.get(0, 0) / ours.numel()
    # the stack is untrained: where our top two logits are within two steps a one-step move may swap them;
    # everywhere else the top-1 must stay
    top2 = ours.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2.5 * scale
    moved = int((fast.argmax(1) != ours.argmax(1))[clear].sum())
    assert moved == 0 and set(histogram) <= {-1, 0, 1} and equal >= 0.9, (
        f"equal {equal:.2%}, steps {histogram}, top-1 moved on {moved} of {int(clear.sum())} clear images")


@pytest.mark.parametrize("build", [
    lambda: static_int8(ck.Int8StaticConfig(rounding="single")),
    lambda: static_int8(ck.Int8StaticConfig(activation_dtype=torch.int8, per_channel=False)),
    lambda: static_int8(ck.Int8StaticConfig(activation_dtype=torch.int8, rounding="single", observer="minmax")),
    qat_converted,
], ids=["single_rounding", "int8_activations_per_tensor", "int8_single_minmax", "qat"])
def test_exact_form_every_integer_setting(build, tmp_path):
    model = build()
    x = images(32, seed=7)
    with torch.no_grad():
        ours = model(x)
    theirs, _ = exported(model, x, tmp_path, "exact")
    assert torch.equal(theirs, ours), f"{int((theirs != ours).sum())} of {ours.numel()} outputs differ"


class PoolingNet(nn.Module):
    """Windowed average pool, a padded max pool with ceil_mode, ReLU6 and a grouped conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.grouped = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.relu6 = nn.ReLU6()
        self.avgpool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 3 * 3, 5)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.conv(x)))
        x = self.avgpool(self.relu6(self.grouped(x)))
        return self.fc(torch.flatten(x, 1))


def test_exact_form_pools_relu6_and_grouped_dilated_conv(tmp_path):
    torch.manual_seed(0)
    model = PoolingNet().eval()
    ck.calibrate(model, [images(16, seed) for seed in (3, 4)])
    int_model = ck.convert_(model, ck.Int8StaticConfig()).model
    x = images(16, seed=5)
    with torch.no_grad():
        ours = int_model(x)
    theirs, report = exported(int_model, x, tmp_path, "exact")
    assert torch.equal(theirs, ours)
    assert {"QuantMaxPool2d", "QuantAvgPool2d"} <= {what for _, what, _ in report.mapped}


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_exact_requantization_on_random_multipliers_left_shifts_and_a_wrapping_bias(rounding, tmp_path):
    """A QuantLinear with int32 outputs (no clamp but int32's), multipliers from 2^-20 to 2^6 (left shifts,
    the saturating left shift) and biases near the int32 limits (the wrapping accumulator)."""
    gen = torch.Generator().manual_seed(3)
    layer = ck.QuantLinear.from_float(nn.Linear(48, 64), input_scale=0.02, input_zero_point=131,
                                      output_scale=0.01, output_zero_point=0, output_dtype=torch.int32,
                                      rounding=rounding)
    real = torch.exp2(torch.empty(64, dtype=torch.float64).uniform_(-20, 6, generator=gen))
    m0, shift = ck.quantize_multiplier(real)
    layer.m0.copy_(m0)
    layer.shift.copy_(shift)
    layer.bias_q.copy_(torch.randint(2**31 - 2**21, 2**31 - 1, (64,), generator=gen, dtype=torch.int32)
                       * torch.where(torch.arange(64) % 2 == 0, 1, -1).int())
    layer.weight_q.copy_(torch.randint(-127, 128, (64, 48), generator=gen, dtype=torch.int8))
    layer._repack()
    model = nn.Sequential(Quantize(0.02, 131, torch.uint8), layer)
    x = torch.randn(256, 48, generator=gen) * 2
    with torch.no_grad():
        ours = model(x)
    with ck.reference_mode(), torch.no_grad():
        assert torch.equal(model(x), ours)  # the kernel is the reference here too
    theirs, _ = exported(model, x, tmp_path, "exact")
    assert theirs.dtype == torch.int32
    assert torch.equal(theirs, ours), f"{int((theirs != ours).sum())} of {ours.numel()} outputs differ"
    assert (shift > 0).any() and (ours.abs() > 2**30).any()  # the left-shift and large-value paths ran


def test_2to4_integer_layers_export_dense_with_a_warning(tmp_path):
    model = int8_static_sparse24()
    x = images(16, seed=6)
    with torch.no_grad():
        ours = model(x)
    theirs, report = exported(model, x, tmp_path, "exact")
    assert torch.equal(theirs, ours)
    assert any("(2:4)" in what for _, what, _ in report.mapped)
    assert any("2:4" in w and "dense int8 weight" in w for w in report.warnings)


@pytest.mark.parametrize("config, warning", [(ck.CodebookConfig(bits=4), "decoded fp32 weight"),
                                             (ck.Sparse24Config(prune=True), "dense fp32 weight")],
                         ids=["codebook", "sparse24_fp32"])
def test_float_compressed_layers_export_dense_within_fp32_rounding(config, warning, tmp_path):
    model = ck.convert_(seeded_cnn(), config).model
    x = images(16, seed=8)
    with torch.no_grad():
        ours = model(x)
    theirs, report = exported(model, x, tmp_path, "exact")
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    converted = {"CodebookConv2d", "CodebookLinear"} if isinstance(config, ck.CodebookConfig) else {
        "SparseConv2d", "SparseLinear"}
    assert converted <= {what for _, what, _ in report.mapped}
    assert report.warnings and all(warning in w for w in report.warnings)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("build, match", [
    (lambda: ck.convert_(seeded_mlp(), ck.Int8DynamicConfig()).model,
     r"node '_0', module '0' \(QuantLinear\): a dynamic int8 layer"),
    (lambda: ck.convert_(seeded_mlp(), ck.Sparse24Config(prune=True, int8=True)).model,
     r"module '0' \(SparseLinear\): a 2:4 int8 layer"),
    (lambda: nn.Sequential(nn.Linear(32, 32), nn.Sigmoid()),
     r"node '_1', module '1' \(Sigmoid\): has no ONNX mapping"),
], ids=["dynamic_int8", "sparse24_int8", "sigmoid"])
def test_unmapped_modules_are_refused_by_name(build, match, tmp_path):
    with pytest.raises(OnnxExportError, match=match):
        to_onnx(build(), (torch.randn(4, 32),), tmp_path / "m.onnx")


def test_a_float_op_left_in_an_integer_model_is_refused_by_name(tmp_path):
    class WithSigmoid(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 8)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    model = WithSigmoid().eval()
    ck.calibrate(model, [torch.randn(16, 32)])
    report = ck.convert_(model, ck.Int8StaticConfig())
    assert [name for name, _, _ in report.skipped] == ["act"]  # runs in float between DeQuantize / Quantize
    with pytest.raises(OnnxExportError, match=r"node 'act', module 'act' \(Sigmoid\): has no ONNX mapping"):
        to_onnx(report.model, (torch.randn(4, 32),), tmp_path / "m.onnx")


def test_bad_arguments_are_refused(tmp_path):
    model, x = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 4)), images(2)
    with pytest.raises(ValueError, match=r'form must be "exact" or "fast", got \'quick\''):
        to_onnx(model, (x,), tmp_path / "m.onnx", form="quick")
    with pytest.raises(ValueError, match=r"opset must be an int in \[13, \d+\].*got 11"):
        to_onnx(model, (x,), tmp_path / "m.onnx", opset=11)
    with pytest.raises(ValueError, match=r"opset must be an int.*got 17.0"):
        to_onnx(model, (x,), tmp_path / "m.onnx", opset=17.0)
    with pytest.raises(TypeError, match="example_inputs must be a non-empty tuple of tensors.*got Tensor"):
        to_onnx(model, x, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"example_inputs\[0\] must be a float32, uint8 or int8 tensor.*float64"):
        to_onnx(model, (x.double(),), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
        to_onnx(lambda t: t, (x,), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="path must be a file path, got int"):
        to_onnx(model, (x,), 3)


def test_untraceable_models_and_batch_reshapes_are_refused(tmp_path):
    class DataDependent(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(OnnxExportError, match="torch.fx cannot trace DataDependent"):
        to_onnx(DataDependent(), (torch.randn(2, 3),), tmp_path / "m.onnx")

    class BatchReshape(nn.Module):
        def forward(self, x):
            return x.reshape(-1)

    with pytest.raises(OnnxExportError, match=r"node 'reshape'.*reshapes \(2, 3\) to \(6,\): only reshapes that keep "
                                              "the batch dimension"):
        to_onnx(BatchReshape(), (torch.randn(2, 3),), tmp_path / "m.onnx")

    class TupleOfNumbers(nn.Module):
        def forward(self, x):
            return x, 3

    with pytest.raises(OnnxExportError, match="output 1 is 3: only tensors"):
        to_onnx(TupleOfNumbers(), (torch.randn(2, 3),), tmp_path / "m.onnx")


def test_fast_form_refuses_int32_outputs(tmp_path):
    layer = ck.QuantLinear.from_float(nn.Linear(8, 4), input_scale=0.1, input_zero_point=0, output_scale=0.1,
                                      output_zero_point=0, output_dtype=torch.int32)
    model = nn.Sequential(Quantize(0.1, 0, torch.uint8), layer)
    with pytest.raises(OnnxExportError, match=r"module '1' \(QuantLinear\): the fast form writes uint8 / int8 "
                                              r"outputs, this layer's is torch.int32; use form=\"exact\""):
        to_onnx(model, (torch.randn(2, 8),), tmp_path / "m.onnx", form="fast")
    to_onnx(model, (torch.randn(2, 8),), tmp_path / "m.onnx")  # the exact form writes int32
    x = torch.randn(5, 8)
    assert torch.equal(run_onnx(tmp_path / "m.onnx", x), model(x))


class TwoInputs(nn.Module):
    def forward(self, x, y):
        return x + y


class ReadsBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("offset", torch.ones(3))

    def forward(self, x):
        return x + self.offset


class DoubleOutput(nn.Module):
    def forward(self, x):
        return torch.flatten(x, 1).double()


@pytest.mark.parametrize("model, x, match", [
    (TwoInputs(), torch.randn(2, 3), r"the model takes 2 input\(s\) \(x, y\), example_inputs holds 1"),
    (ReadsBuffer(), torch.randn(2, 3), r"node 'offset', get_attr offset: reads a parameter or buffer directly"),
    (nn.Sequential(nn.MaxPool2d(2, return_indices=True)), torch.randn(2, 3, 4, 4),
     r"module '0' \(MaxPool2d\): return_indices=True has no mapping"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, padding="same")), torch.randn(2, 3, 4, 4),
     r"module '0' \(Conv2d\): only numeric zero padding"),
    (DoubleOutput(), torch.randn(2, 3), r"has no ONNX mapping"),
], ids=["too_few_example_inputs", "get_attr", "maxpool_indices", "conv_padding_same", "double_cast"])
def test_graph_forms_without_a_mapping_are_refused(model, x, match, tmp_path):
    with pytest.raises(OnnxExportError, match=match):
        to_onnx(model, (x,), tmp_path / "m.onnx")
