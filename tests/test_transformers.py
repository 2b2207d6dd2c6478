"""Static int8 and calibrated 2:4 on a Hugging Face BERT built from a config (no download).

torch.fx cannot trace BertModel (keyword inputs with None defaults), so calibrate falls back to
module-level hooks and every nn.Linear becomes a QuantLinearFloatIO. The model is random, with
initializer_range=0.2 instead of BERT's 0.02: at 0.02 the residual stream carries the embeddings
through almost unchanged, so any compression of the Linear layers looks lossless (cosine > 0.999
for magnitude 2:4); at 0.2 the layers change the representation, as trained ones do, and magnitude
2:4 falls to the cosine reported for trained encoders (about 0.56 here).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

import compress_kernels as ck
from compress_kernels.calibrated_prune import sparsegpt_24, wanda_mask_24
from compress_kernels.hooks_quant import HookCalibration
from compress_kernels.nn.float_io import QuantLinearFloatIO
from compress_kernels.prune import mask_2to4

VOCAB, HIDDEN, LAYERS, HEADS, INTERMEDIATE = 512, 64, 2, 4, 256
LINEARS = 6 * LAYERS + 1  # q, k, v, attention output, intermediate, output per layer; the pooler


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny matrices: one thread avoids OpenMP barrier costs on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def token_batch(generator, batch=8, tokens=32):
    ids = torch.randint(0, VOCAB, (batch, tokens), generator=generator)
    mask = torch.ones(batch, tokens, dtype=torch.long)
    mask[:, tokens - 5:] = 0  # padded tail
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def bert():
    """(model, calibration batches, evaluation batch, fp32 last_hidden_state)."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                     num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
                                     max_position_embeddings=64, initializer_range=0.2)
    model = transformers.BertModel(config).eval()
    g = torch.Generator().manual_seed(1)
    calibration = [token_batch(g) for _ in range(2)]
    evaluation = token_batch(g)
    with torch.no_grad():
        reference = model(**evaluation).last_hidden_state
    return model, calibration, evaluation, reference


def cosine(model, evaluation, reference) -> float:
    with torch.no_grad():
        out = model(**evaluation).last_hidden_state
    return F.cosine_similarity(out.flatten(), reference.flatten(), dim=0).item()


# ---------------------------------------------------------------- static int8 without tracing


def test_static_int8_bert_converts_every_linear_by_hooks(bert):
    model, calibration, evaluation, reference = bert
    model = copy.deepcopy(model)
    stats = ck.calibrate(model, calibration)
    assert isinstance(stats, HookCalibration)
    assert "torch.fx cannot trace the model (calibrate: BertModel.forward takes input_ids=None" in stats.fallback_reason
    report = ck.convert_(model, ck.Int8StaticConfig(observer="minmax"))
    assert len(report.converted) == LINEARS and report.skipped == []
    assert set(report.modes.values()) == {"hooks"} and len(report.modes) == LINEARS
    assert report.notes[0].startswith("module-level static int8 (hooks): torch.fx cannot trace the model")
    assert "encoder.layer.0.attention.self.query: Linear -> QuantLinearFloatIO [hooks]" in str(report)
    quantized = [m for m in report.model.modules() if isinstance(m, QuantLinearFloatIO)]
    assert len(quantized) == LINEARS and all(m.linear.mode == "static" for m in quantized)
    assert not any(isinstance(m, QuantLinearFloatIO) for m in model.modules())  # the original is left as it was
    # measured 0.9993 (minmax, 2 calibration batches of 8 x 32 tokens)
    assert cosine(report.model, evaluation, reference) >= 0.995


def test_float_io_layer_is_the_integer_kernel_between_quantize_and_dequantize():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    x = torch.randn(3, 5, 64)
    layer = QuantLinearFloatIO.from_float(linear, (0.03, 128), (0.05, 120))
    expected = ck.numerics.dequantize(layer.linear(ck.numerics.quantize(x, 0.03, 128, torch.uint8)), 0.05, 120)
    assert torch.equal(layer(x), expected)
    with ck.reference_mode():
        assert torch.equal(layer(x), expected)
    assert torch.allclose(layer(x), linear(x), atol=0.1)
    assert layer(x.double()).dtype == torch.float64
    copy_ = QuantLinearFloatIO.from_float(nn.Linear(64, 48), (1.0, 0), (1.0, 0))
    copy_.load_state_dict(layer.state_dict())
    assert torch.equal(copy_(x), layer(x))
    dynamic = ck.QuantLinear.from_float(linear, dynamic=True)
    with pytest.raises(ValueError, match=r"QuantLinearFloatIO: linear must be a static QuantLinear, got "
                                         r"mode='dynamic'"):
        QuantLinearFloatIO(layer.quantize, dynamic, layer.dequantize)
    with pytest.raises(ValueError, match=r"input_scale must be a finite positive float, got -1.0"):
        QuantLinearFloatIO.from_float(linear, (-1.0, 0), (0.05, 120))


def test_dynamic_int8_bert_still_works(bert):
    model, _, evaluation, reference = bert
    report = ck.convert_(model, ck.Int8DynamicConfig(), inplace=False)
    assert len(report.converted) == LINEARS
    assert cosine(report.model, evaluation, reference) >= 0.998  # measured 0.9997


# ---------------------------------------------------------------- capture modes and calibration batches


class KeywordInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.unused = nn.Linear(8, 8)
        self.shared = nn.Linear(8, 8)
        self.again = self.shared

    def forward(self, input_ids=None, attention_mask=None):
        x = self.again(self.shared(self.fc(input_ids)))
        return x if attention_mask is None else x * attention_mask


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, 8, generator=g) for _ in range(n)]


def test_traceable_model_keeps_fx_and_hooks_on_request():
    model = mlp()
    ck.calibrate(model, [(x, torch.zeros(4)) for x in batches()])  # (input, label) pairs feed the input
    report = ck.convert_(model, ck.Int8StaticConfig(observer="minmax"))
    assert set(report.modes.values()) == {"fx"} and report.notes == []
    with pytest.raises(ValueError, match=r'Int8StaticConfig\(capture="hooks"\) needs a model calibrated with hooks: '
                                         r'run compress_kernels.calibrate\(model, batches, capture="hooks"\) first '
                                         r"\(this model was calibrated through torch.fx\)"):
        ck.convert_(model, ck.Int8StaticConfig(capture="hooks"))
    ck.calibrate(model, batches(), capture="hooks")
    hooks = ck.convert_(model, ck.Int8StaticConfig(observer="minmax", capture="hooks"))
    assert hooks.modes == {"0": "hooks", "2": "hooks"} and hooks.notes == []
    x = batches(1)[0]
    assert torch.allclose(hooks.model(x), model(x), atol=0.05)
    with pytest.raises(ValueError, match=r'Int8StaticConfig\(capture="fx"\) needs a model calibrated through torch.fx, '
                                         r'but this one was calibrated with hooks; use capture="hooks" or "auto"'):
        ck.convert_(model, ck.Int8StaticConfig(capture="fx"))
    with pytest.raises(ValueError, match=r"Int8StaticConfig: capture must be one of \['auto', 'fx', 'hooks'\], got "
                                         r"'export'"):
        ck.Int8StaticConfig(capture="export")
    with pytest.raises(ValueError, match=r"calibrate: capture must be one of \['auto', 'fx', 'hooks'\], got 'trace'"):
        ck.calibrate(model, batches(), capture="trace")


def test_hooks_report_says_why_layers_are_skipped():
    model = KeywordInputs()
    ck.calibrate(model, [{"input_ids": x, "attention_mask": torch.ones(4, 8)} for x in batches()])
    report = ck.convert_(model, ck.Int8StaticConfig(observer="minmax"), filter_fn=lambda m, name: name != "fc")
    assert report.converted == [("shared", "Linear", "QuantLinearFloatIO"),
                                ("again", "Linear", "QuantLinearFloatIO (the same module as 'shared')")]
    assert report.model.again is report.model.shared
    assert report.skipped == [("fc", "Linear", "excluded by filter_fn"),
                              ("unused", "Linear", "never called while calibrating: no activation statistics")]
    x = batches(1)[0]
    assert torch.allclose(report.model(input_ids=x), model(input_ids=x), atol=0.05)
    again = ck.convert_(copy.deepcopy(model), ck.Int8StaticConfig(observer="minmax"))  # statistics kept by path
    assert [name for name, _, _ in again.converted] == ["fc", "shared", "again"]
    assert torch.equal(again.model.shared(x), report.model.shared(x))
    with pytest.raises(ValueError, match=r'convert_: Int8StaticConfig\(capture="fx"\) needs a model calibrated '
                                         r"through torch.fx, but this one was calibrated with hooks \(torch.fx cannot "
                                         r"trace the model \(calibrate: KeywordInputs.forward takes input_ids=None"):
        ck.convert_(model, ck.Int8StaticConfig(capture="fx"))


def test_bad_calibration_batches_are_refused_with_the_reason():
    model = KeywordInputs()
    with pytest.raises(TypeError, match=r"calibrate: batch 1 has type int \(3\): expected a tensor \(the single "
                                        r"input\), a tuple / list of positional inputs .* or a dict of keyword inputs"):
        ck.calibrate(model, [batches(1)[0], 3])
    with pytest.raises(TypeError, match=r"calibrate: batch 0 is an empty tuple: expected a tensor"):
        ck.calibrate(model, [()])
    with pytest.raises(TypeError, match=r"calibrate: batch 0 is a dict with non-string key 0: keyword inputs need the "
                                        r"names of KeywordInputs.forward's parameters as keys"):
        ck.calibrate(model, [{0: batches(1)[0]}])
    with pytest.raises(TypeError, match=r"calibrate: batch 0 \(input_ids=, token_type_ids=\) does not fit "
                                        r"KeywordInputs.forward\(input_ids=None, attention_mask=None\): got an "
                                        r"unexpected keyword argument 'token_type_ids'"):
        ck.calibrate(model, [{"input_ids": batches(1)[0], "token_type_ids": batches(1)[0]}])
    with pytest.raises(TypeError, match=r"calibrate: batches must be an iterable of batches \(e.g. a list or a "
                                        r"DataLoader\), got one Tensor: wrap a single batch in a list, \[batch\]"):
        ck.calibrate(model, batches(1)[0])
    with pytest.raises(ValueError, match=r"calibrate: batches is empty: at least one calibration batch is needed"):
        ck.calibrate(model, [])
    with pytest.raises(ValueError, match=r"calibrate: batches is empty"):
        ck.calibrate(mlp(), [], capture="fx")
    with pytest.raises(TypeError, match=r"calibrate: batch 0 \(input_ids=\) does not fit Sequential.forward\(input\): "
                                        r"missing a required argument: 'input'"):
        ck.calibrate(mlp(), [{"input_ids": batches(1)[0]}])


# ---------------------------------------------------------------- Wanda and SparseGPT 2:4


def groups_of_four_nonzeros(w: torch.Tensor) -> torch.Tensor:
    return (w != 0).reshape(w.shape[0], -1, 4).sum(-1)


def test_calibrated_24_keeps_bert_far_closer_than_magnitude(bert):
    model, calibration, evaluation, reference = bert
    measured = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        extra = {} if method == "magnitude" else {"calibration": calibration}
        report = ck.convert_(model, ck.Sparse24Config(prune=True, method=method, **extra), inplace=False)
        assert len(report.converted) == LINEARS and report.skipped == []
        for layer in report.model.modules():
            if isinstance(layer, ck.SparseLinear):  # exactly two non-zeros in every group of four
                assert torch.equal(groups_of_four_nonzeros(layer.dense_weight()), torch.full(
                    (layer.out_features, layer.in_features // 4), 2))
        measured[method] = cosine(report.model, evaluation, reference)
    assert isinstance(model.encoder.layer[0].attention.self.query, nn.Linear)  # inplace=False: untouched
    # measured: magnitude 0.564, wanda 0.762, sparsegpt 0.895 (sequential, 2 batches of 8 x 32 tokens)
    assert measured["magnitude"] < 0.65
    assert measured["wanda"] >= 0.72
    assert measured["sparsegpt"] >= 0.85


def test_sparsegpt_with_an_identity_hessian_is_magnitude_pruning():
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    pruned = sparsegpt_24(w, torch.eye(32), block_size=8)
    assert torch.equal(pruned, w * mask_2to4(w))  # no correlation between inputs: nothing to compensate


def test_sparsegpt_reduces_the_layer_output_error():
    torch.manual_seed(0)
    mixing = torch.randn(32, 32) / 4 + torch.eye(32)
    x = (torch.randn(512, 32) @ mixing) * torch.exp(torch.randn(32))  # correlated inputs of unequal size
    w = torch.randn(24, 32)
    errors = {}
    for name, pruned in (("magnitude", w * mask_2to4(w)),
                         ("wanda", w * wanda_mask_24(w, x.norm(dim=0))),
                         ("sparsegpt", sparsegpt_24(w, x.T.double() @ x.double(), block_size=16))):
        assert torch.equal(groups_of_four_nonzeros(pruned), torch.full((24, 8), 2))
        errors[name] = ((x @ w.T - x @ pruned.T).norm() / (x @ w.T).norm()).item()
    # measured relative output errors: magnitude 0.349, wanda 0.193, sparsegpt 0.168
    assert errors["wanda"] < 0.7 * errors["magnitude"]
    assert errors["sparsegpt"] < 0.9 * errors["wanda"]


def test_wanda_keeps_the_inputs_with_large_activations():
    torch.manual_seed(0)
    w = torch.randn(8, 16)
    assert torch.equal(wanda_mask_24(w, torch.ones(16)), mask_2to4(w))
    norms = torch.ones(16)
    norms[5] = 1e4
    assert wanda_mask_24(w, norms)[:, 5].all()
    with pytest.raises(ValueError, match=r"wanda_mask_24: weight must be \[N, K\] and input_norms \[K\], got "
                                         r"\(8, 16\) and \(15,\)"):
        wanda_mask_24(w, torch.ones(15))


def test_sparsegpt_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"sparsegpt_24: K = 6 is not a multiple of 4"):
        sparsegpt_24(torch.randn(4, 6), torch.eye(6))
    with pytest.raises(ValueError, match=r"sparsegpt_24: hessian must be \[8, 8\], got \(4, 4\)"):
        sparsegpt_24(torch.randn(4, 8), torch.eye(4))
    with pytest.raises(ValueError, match=r"sparsegpt_24: block_size must be a positive multiple of 4, got 6"):
        sparsegpt_24(torch.randn(4, 8), torch.eye(8), block_size=6)


def test_calibrated_24_skips_convolutions_and_needs_every_layer_called():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 8))
    data = [torch.randn(2, 4, 6, 6)]
    report = ck.convert_(model, ck.Sparse24Config(prune=True, method="wanda", calibration=data), inplace=False)
    assert [name for name, _, _ in report.converted] == ["2"]
    assert report.skipped == [("0", "Conv2d", "method='wanda' scores nn.Linear inputs only; this Conv2d is not 2:4 "
                                              '(prune it first, or convert it with method="magnitude")')]
    with pytest.raises(ValueError, match=r'Sparse24Config\(method="sparsegpt"\): layer \'unused\' is never called by '
                                         r"the calibration batches: its inputs cannot be observed \(exclude it with "
                                         r"filter_fn\)"):
        ck.convert_(KeywordInputs(), ck.Sparse24Config(prune=True, method="sparsegpt",
                                                       calibration=[{"input_ids": batches(1)[0]}]))
    bad = batches(1)[0]
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"Sparse24Config: the calibration inputs of layer '0' hold NaN or infinite "
                                         r"values: check the calibration batches"):
        ck.convert_(mlp(), ck.Sparse24Config(prune=True, method="wanda", calibration=[bad]))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"prune": True, "method": "obs"}, ValueError,
     r"Sparse24Config: method must be one of \['magnitude', 'wanda', 'sparsegpt'\], got 'obs'"),
    ({"method": "wanda", "calibration": [torch.zeros(1)]}, ValueError,
     r"Sparse24Config: method='wanda' is a pruning criterion: it needs prune=True"),
    ({"prune": True, "method": "sparsegpt"}, TypeError,
     r"Sparse24Config: method='sparsegpt' needs calibration, a non-empty list or tuple of batches \(it is run once "
     r"per layer with sequential=True\), got NoneType"),
    ({"prune": True, "method": "wanda", "calibration": (x for x in [torch.zeros(1)])}, TypeError,
     r"needs calibration, a non-empty list or tuple of batches .*got generator"),
    ({"prune": True, "method": "wanda", "calibration": [torch.zeros(1), "text"]}, TypeError,
     r"Sparse24Config: calibration\[1\] is a str: expected a tensor, a tuple / list of positional inputs or a dict"),
    ({"prune": True, "calibration": [torch.zeros(1)]}, ValueError,
     r'Sparse24Config: calibration is read only by method="wanda" or "sparsegpt"; method="magnitude" needs no data'),
    ({"block_size": 6}, ValueError, r"Sparse24Config: block_size must be a multiple of 4 \(whole groups of four\), "
                                    r"got 6"),
    ({"damp": -0.1}, ValueError, r"Sparse24Config: damp must be a number in \[0, 1\], got -0.1"),
    ({"sequential": 1}, TypeError, r"Sparse24Config: sequential must be a bool \(True or False\), got 1"),
])
def test_sparse24_config_checks_its_fields(kwargs, error, message):
    with pytest.raises(error, match=message):
        ck.Sparse24Config(**kwargs)


# ---------------------------------------------------------------- quantization-aware training without tracing


def test_qat_bert_by_module_swap_converts_exactly(bert):
    model, calibration, evaluation, reference = bert
    student = copy.deepcopy(model)
    qat = ck.prepare_qat_(student)  # torch.fx cannot trace BertModel: module-level QAT, in place
    assert qat is student
    layers = [m for m in qat.modules() if isinstance(m, ck.nn.QATLinearFloatIO)]
    assert len(layers) == LINEARS
    for module in qat.modules():  # a deterministic distillation: no dropout
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    qat.train()
    optimizer = torch.optim.Adam(qat.parameters(), lr=1e-4)
    with torch.no_grad():
        targets = [model(**batch).last_hidden_state for batch in calibration]
    for _ in range(3):  # distil the fp32 encoder into the fake-quantized one
        for batch, target in zip(calibration, targets):
            loss = F.mse_loss(qat(**batch).last_hidden_state, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    ck.freeze_qat_(qat)
    qat.eval()
    report = ck.convert_(qat)
    assert len(report.converted) == LINEARS and set(report.modes.values()) == {"hooks"}
    integer = report.model
    assert sum(isinstance(m, QuantLinearFloatIO) for m in integer.modules()) == LINEARS
    with torch.no_grad():
        converted = integer(**evaluation).last_hidden_state
        with ck.qat_exact_mode(qat):  # the int64 reference inside each layer
            exact = qat(**evaluation).last_hidden_state
        with ck.qat_exact_mode(qat, use_kernels=True):
            exact_kernels = qat(**evaluation).last_hidden_state
        fake = qat(**evaluation).last_hidden_state
    assert torch.equal(converted, exact) and torch.equal(converted, exact_kernels)
    # measured: integer model vs fp32 0.9992, fake-quant simulation vs integer model 0.9996
    assert F.cosine_similarity(converted.flatten(), reference.flatten(), dim=0) >= 0.998
    assert F.cosine_similarity(fake.flatten(), converted.flatten(), dim=0) >= 0.999
    with pytest.raises(ValueError, match=r"calibrate: the model is already a QAT graph \(returned by prepare_qat_\)"):
        ck.calibrate(qat, calibration)
    with pytest.raises(ValueError, match=r"qat_mismatch_report: the model was prepared module by module"):
        ck.qat_mismatch_report(qat, calibration)
    with pytest.raises(ValueError, match=r"prepare_qat_: capture must be one of \['auto', 'fx', 'hooks'\], got 'x'"):
        ck.prepare_qat_(copy.deepcopy(model), capture="x")


# ---------------------------------------------------------------- SmoothQuant


def test_smoothing_migrates_outlier_channels_into_the_weight():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64))
    outliers = torch.ones(64)
    outliers[:4] = 60.0
    with torch.no_grad():  # outlier inputs meet small weights (as behind a LayerNorm gain of a trained transformer)
        model[0].weight[:, :4] /= 60.0
    g = torch.Generator().manual_seed(1)
    data = [torch.randn(32, 64, generator=g) * outliers for _ in range(3)]
    x = torch.randn(64, 64, generator=g) * outliers
    with torch.no_grad():
        reference = model(x)
    ck.calibrate(model, data, capture="hooks")
    measured = {}
    for alpha in (None, 0.5):
        report = ck.convert_(model, ck.Int8StaticConfig(observer="minmax", smooth_alpha=alpha))
        with torch.no_grad():
            measured[alpha] = F.cosine_similarity(report.model(x).flatten(), reference.flatten(), dim=0).item()
    assert report.converted == [("0", "Linear", "QuantLinearFloatIO (smoothed, alpha=0.5)")]
    layer = report.model[0]
    assert torch.allclose(layer.linear.dequantized_weight() * layer.input_multiplier, model[0].weight, rtol=0.02,
                          atol=2e-3)  # W * s stored, 1 / s applied to the input
    # measured: 0.920 without smoothing (the four outlier channels set the input step), 0.99990 with alpha=0.5
    assert measured[None] < 0.95
    assert measured[0.5] >= 0.999
    with pytest.raises(ValueError, match=r'Int8StaticConfig: smooth_alpha needs observer="minmax" \(the smoothed '
                                         r"input's range is computed exactly from per-channel ranges; the 'mse' "
                                         r"observer saw the input before smoothing\), got observer='mse'"):
        ck.Int8StaticConfig(smooth_alpha=0.5)
    with pytest.raises(ValueError, match=r"Int8StaticConfig: smooth_alpha must be a number in \[0, 1\] \(or None: no "
                                         r"smoothing\), got 1.5"):
        ck.Int8StaticConfig(observer="minmax", smooth_alpha=1.5)
    ck.calibrate(model, data)  # traced
    with pytest.raises(ValueError, match=r"convert_: Int8StaticConfig\(smooth_alpha=...\) is applied by the module-"
                                         r'level conversion .*calibrate with capture="hooks"'):
        ck.convert_(model, ck.Int8StaticConfig(observer="minmax", smooth_alpha=0.5))
    with pytest.raises(ValueError, match=r"QuantLinearFloatIO: input_multiplier must hold 64 finite values \(one per "
                                         r"input feature\), got shape \(63,\)"):
        QuantLinearFloatIO(layer.quantize, layer.linear, layer.dequantize, torch.ones(63))
