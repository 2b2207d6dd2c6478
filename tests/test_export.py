"""Every converted model type leaves Python through torch.export: export.export, export.save, and
export.load in a fresh interpreter that imports this checkout's compress_kernels gives outputs equal
bit for bit to the converted model's (integers and floats alike: the loaded program calls the same
compress_kernels ops, whose fake kernels let torch.export trace them, so it runs the same kernels)."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import compress_kernels as ck

CHECKOUT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ck.__file__)))


class ResidualCNN(nn.Module):
    """A small CNN with every part the integer converter maps: Conv2d + BatchNorm2d (+ ReLU), a
    residual addition written in forward, max-pool, a strided 1x1 downsample, global average pool,
    flatten and Linear. Channel counts are multiples of 4 so the 2:4 conversions take every layer
    after the 3-channel stem."""

    def __init__(self, width=8, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 1, stride=2, bias=False), nn.BatchNorm2d(2 * width))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.pool(self.stem(x))
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = torch.relu(out + x)
        out = torch.relu(self.down(out))
        return self.fc(torch.flatten(self.avgpool(out), 1))


def seeded_cnn() -> ResidualCNN:
    torch.manual_seed(0)
    model = ResidualCNN()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding changes the weights
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def seeded_mlp() -> nn.Sequential:
    """A transformer block's feed-forward stack: Linear, ReLU, Linear."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32)).eval()


def images(n=4, seed=2):
    return torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(seed))


def static_int8(config):
    model = seeded_cnn()
    ck.calibrate(model, [images(8, seed) for seed in (10, 11)])
    return ck.convert_(model, config).model


def int8_static():
    return static_int8(ck.Int8StaticConfig())


def int8_static_int8_single_per_tensor():
    return static_int8(ck.Int8StaticConfig(activation_dtype=torch.int8, rounding="single", per_channel=False))


def int8_static_sparse24():
    model = seeded_cnn()
    ck.prune_(model, ck.PruneConfig(granularity="2:4")).remove()
    ck.calibrate(model, [images(8, seed) for seed in (10, 11)])
    return ck.convert_(model, ck.Int8StaticConfig(sparse24=True)).model


def qat_converted():
    qat = ck.prepare_qat_(seeded_cnn(), ck.QATConfig())
    qat.train()
    with torch.no_grad():  # observe a few batches (no optimizer step needed for the export property)
        for seed in (10, 11):
            qat(images(8, seed))
    ck.freeze_qat_(qat)
    return ck.convert_(qat).model


def module_swap(model, config):
    return ck.convert_(model, config).model


# name -> (build the converted model, its example input, ops its exported graph must call)
MODEL_TYPES = {
    "int8_static": (int8_static, images, {"int8_conv2d", "int8_linear", "int8_add"}),
    "int8_static_int8_single_per_tensor": (int8_static_int8_single_per_tensor, images,
                                           {"int8_conv2d", "int8_linear", "int8_add"}),
    "int8_static_sparse24": (int8_static_sparse24, images, {"sparse24_int8_conv2d", "int8_add"}),
    "qat_converted": (qat_converted, images, {"int8_conv2d", "int8_linear", "int8_add"}),
    "int8_dynamic": (lambda: module_swap(seeded_mlp(), ck.Int8DynamicConfig()), lambda: torch.randn(5, 32),
                     {"quantize_rows", "int8_linear_float"}),
    # its convs are small enough that CodebookConv2d decodes the packed weight per call (codebook_decode)
    # and runs the dense conv: the program still holds only the packed indices and the codebooks
    "codebook_cnn": (lambda: module_swap(seeded_cnn(), ck.CodebookConfig(bits=4)), images,
                     {"codebook_decode", "codebook_linear"}),
    "codebook_mlp": (lambda: module_swap(seeded_mlp(), ck.CodebookConfig(bits=3)), lambda: torch.randn(5, 32),
                     {"codebook_linear"}),
    "sparse24_fp32": (lambda: module_swap(seeded_cnn(), ck.Sparse24Config(prune=True)), images,
                      {"sparse24_conv2d", "sparse24_linear"}),
    "sparse24_int8": (lambda: module_swap(seeded_cnn(), ck.Sparse24Config(prune=True, int8=True)), images,
                      {"sparse24_int8_conv2d", "sparse24_int8_linear"}),
    "sparse24_int8_mlp": (lambda: module_swap(seeded_mlp(), ck.Sparse24Config(prune=True, int8=True)),
                          lambda: torch.randn(5, 32), {"sparse24_int8_linear"}),
    "int4_w4a8": (lambda: module_swap(seeded_mlp(), ck.Int4WeightConfig(group_size=32)), lambda: torch.randn(5, 32),
                  {"int4_linear"}),
    "int4_w4a16": (lambda: module_swap(seeded_mlp(), ck.Int4WeightConfig(group_size=32, activation="bf16")),
                   lambda: torch.randn(5, 32), {"int4_linear"}),
    "int4_conv_w4a8": (lambda: module_swap(seeded_cnn(), ck.Int4WeightConfig(group_size=32, conv2d=True)), images,
                       {"int4_linear"}),
}

# Run in a fresh interpreter: load every saved program, run it on its saved input, save the output.
FRESH_PROCESS = textwrap.dedent("""
    import sys, torch
    import compress_kernels  # registers the ops the programs call
    folder, names = sys.argv[1], sys.argv[2:]
    assert compress_kernels.__file__.startswith("{root}"), compress_kernels.__file__  # this checkout's package
    for name in names:
        program = torch.export.load(f"{{folder}}/{{name}}.pt2")
        x = torch.load(f"{{folder}}/{{name}}.input.pt")
        with torch.no_grad():
            torch.save(program.module()(x), f"{{folder}}/{{name}}.output.pt")
""")


def called_ops(program: torch.export.ExportedProgram) -> set[str]:
    return {node.target.name().split("::")[1].split(".")[0] for node in program.graph.nodes
            if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
            and node.target.namespace == "compress_kernels"}


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Exports and saves every model type, then loads and runs them all in one fresh process.
    Returns {name: (expected output, loaded program's output, ops the exported graph calls)}."""
    folder = tmp_path_factory.mktemp("exported")
    expected, ops_called = {}, {}
    for name, (build, make_input, _) in MODEL_TYPES.items():
        torch.manual_seed(0)
        model = build()
        x = make_input()
        with torch.no_grad():
            expected[name] = model(x)
        program = torch.export.export(model, (x,))
        ops_called[name] = called_ops(program)
        torch.export.save(program, str(folder / f"{name}.pt2"))
        torch.save(x, folder / f"{name}.input.pt")
    env = dict(os.environ, PYTHONPATH=CHECKOUT_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    script = FRESH_PROCESS.format(root=os.path.join(CHECKOUT_ROOT, "compress_kernels"))
    done = subprocess.run([sys.executable, "-c", script, str(folder), *MODEL_TYPES], env=env, cwd=str(folder),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the fresh process failed:\n{done.stdout}\n{done.stderr}"
    return {name: (expected[name], torch.load(folder / f"{name}.output.pt"), ops_called[name])
            for name in MODEL_TYPES}


@pytest.mark.parametrize("name", list(MODEL_TYPES))
def test_fresh_process_round_trip_gives_identical_outputs(round_trip, name):
    expected, loaded, _ = round_trip[name]
    assert loaded.dtype == expected.dtype and loaded.shape == expected.shape
    differing = int((loaded != expected).sum())
    assert differing == 0, f"{name}: {differing} of {expected.numel()} outputs differ after the round trip"


@pytest.mark.parametrize("name", list(MODEL_TYPES))
def test_exported_graph_calls_the_compressed_kernels(round_trip, name):
    """The exported program runs the integer / codebook / 2:4 kernels, not a float decomposition."""
    _, _, ops_called = round_trip[name]
    required = MODEL_TYPES[name][2]
    assert required <= ops_called, f"{name}: the exported graph calls {sorted(ops_called)}, expected {sorted(required)}"


@pytest.mark.parametrize("config", [ck.CodebookConfig(bits=2), ck.Sparse24Config(prune=True), ck.Int8DynamicConfig()],
                         ids=lambda c: type(c).__name__)
def test_swapped_modules_keep_the_models_train_eval_mode(config):
    """An evaluated model converts into evaluation-mode modules (torch.export traces with grad enabled, and a
    CodebookConv2d in training mode would then run its dense float training forward); a training model keeps
    training-mode modules."""
    for training in (False, True):
        model = seeded_cnn().train(training)
        swapped = [model.get_submodule(name) for name, _, _ in ck.convert_(model, config).converted]
        assert swapped and all(m.training is training for m in swapped), (training, [m.training for m in swapped])
