"""NaN / +-Inf activations: per-row semantics of quantize_rows (every CPU path, kernel == reference),
dynamic QuantLinear and the int8 SparseLinear / SparseConv2d (a non-finite row is computed in float
like the float layer, and never changes another row's result)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.nn._common import reference_mode
from compress_kernels.testing import ISAS

NAN, INF = float("nan"), float("inf")


def bits(t: torch.Tensor) -> torch.Tensor:
    """fp32 as its int32 bit patterns: NaN compares equal to the same NaN, -0.0 differs from 0.0."""
    return t.contiguous().view(torch.int32)


def on_every_isa(fn):
    """fn() on every CPU path; asserts every tensor it returns is bit-identical across paths."""
    results = []
    for name in ISAS:
        with ck.force_cpu_isa(name):
            results.append(fn())
    for name, r in zip(ISAS[1:], results[1:]):
        for a, b in zip(results[0], r):
            assert torch.equal(a, b), f"{name} differs from the portable path"
    return results[0]


def bad_rows_batch(k: int, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    """A [9, k] batch with finite rows 0, 2, 4, 8 and non-finite rows 1 (NaN), 3 (+Inf), 5 (-Inf),
    6 (NaN and +Inf), 7 (+Inf and -Inf); bad values sit first, last and in the middle of the rows
    (the vector tails included). Row 3 also holds a huge finite value that must not leak into others."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(9, k, generator=g) * 3
    x[1, k // 2] = NAN
    x[3, k - 1] = INF
    if k > 1:
        x[3, 0] = 3e38
    x[5, 0] = -INF
    x[6, 0], x[6, k - 1] = NAN, INF
    x[7, k // 3] = INF
    if k > 1:
        x[7, k - 1] = -INF
    else:
        x[7, 0] = NAN
    x[8] = 0.0  # all-zero finite row: scale 1
    return x, [0, 2, 4, 8]


@pytest.mark.parametrize("k", [1, 7, 8, 13, 16, 33, 67, 128])
def test_quantize_rows_marks_nonfinite_rows(k):
    x, finite = bad_rows_batch(k)
    bad = [r for r in range(9) if r not in finite]
    q, s = on_every_isa(lambda: (ck.quantize_rows(x)[0], bits(ck.quantize_rows(x)[1])))
    rq, rs = ref.quantize_rows(x)
    assert torch.equal(q, rq) and torch.equal(s, bits(rs))  # kernel == reference, NaN bits included
    scale = s.view(torch.float32)
    assert torch.isnan(scale[bad]).all() and (q[bad] == 0).all()
    # the finite rows are bit for bit those of a batch without the bad rows
    fq, fs = ck.quantize_rows(x[finite].contiguous())
    assert torch.equal(q[finite], fq) and torch.equal(bits(scale[finite]), bits(fs))
    assert scale[finite[-1]] == 1.0  # the all-zero row


def test_quantize_rows_positive_inf_is_not_coded_as_minus_qmax():
    x = torch.tensor([[INF, 1.0, -2.0], [1.0, 2.0, 4.0]])
    for name in ISAS:
        with ck.force_cpu_isa(name):
            q, s = ck.quantize_rows(x)
            assert q[0].tolist() == [0, 0, 0] and torch.isnan(s[0]), name
            assert q[1].tolist() == [32, 64, 127] and s[1] == 4.0 / 127, name


def test_quantize_rows_largest_finite_and_subnormal_rows_stay_finite():
    tiny = torch.finfo(torch.float32).tiny / 4  # subnormal
    x = torch.tensor([[3.4028235e38, -1.0], [tiny, -tiny], [-0.0, 0.0]])
    q, s = on_every_isa(lambda: (ck.quantize_rows(x)[0], bits(ck.quantize_rows(x)[1])))
    rq, rs = ref.quantize_rows(x)
    assert torch.equal(q, rq) and torch.equal(s, bits(rs))
    assert torch.isfinite(s.view(torch.float32)).all()
    assert q[0].tolist() == [127, 0]


def test_int8_linear_float_nonfinite_row_is_all_nan():
    x, finite = bad_rows_batch(32)
    w = torch.randint(-127, 128, (12, 32), dtype=torch.int8)
    w_scale = torch.rand(12) + 0.01
    bias = torch.randn(12)

    def run():
        x_q, x_s = ck.quantize_rows(x)
        return (bits(ck.int8_linear_float(x_q, 0, ck.int8_pack_weight(w), x_s, w_scale, bias)),)

    (y,) = on_every_isa(run)
    y = y.view(torch.float32)
    bad = [r for r in range(9) if r not in finite]
    assert torch.isnan(y[bad]).all()
    rq, rs = ref.quantize_rows(x)
    assert torch.equal(bits(y), bits(ref.int8_linear_float(rq, 0, w, rs, w_scale, bias)))
    assert torch.isfinite(y[finite]).all()


def _linear_away_from_zero(k: int, n: int, seed: int = 0) -> nn.Linear:
    """Weights with |w| in [0.5, 1]: none quantizes to zero, so the float layer on the dequantized
    weight has exactly nn.Linear's non-finite pattern."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        sign = torch.randint(0, 2, (n, k), generator=g).float() * 2 - 1
        lin.weight.copy_(sign * (0.5 + 0.5 * torch.rand(n, k, generator=g)))
        lin.bias.copy_(torch.randn(n, generator=g))
    return lin


def assert_same_nonfinite_pattern(y: torch.Tensor, want: torch.Tensor):
    assert torch.equal(torch.isnan(y), torch.isnan(want))
    assert torch.equal(torch.isposinf(y), torch.isposinf(want))
    assert torch.equal(torch.isneginf(y), torch.isneginf(want))


@pytest.mark.parametrize("per_channel", [True, False])
def test_dynamic_quant_linear_nonfinite_rows(per_channel):
    lin = _linear_away_from_zero(40, 24)
    q = ck.QuantLinear.from_float(lin, dynamic=True, per_channel=per_channel)
    x, finite = bad_rows_batch(40, seed=1)
    x[3, 0] = 1.0  # keep row 3 a pure +Inf row (3e38 * w would overflow to Inf on its own)
    bad = [r for r in range(9) if r not in finite]

    (y,) = on_every_isa(lambda: (bits(q(x)),))
    y = y.view(torch.float32)
    # finite rows: bit for bit the batch without the bad rows
    assert torch.equal(bits(y[finite]), bits(q(x[finite])))
    # non-finite rows: exactly the float layer on the dequantized weight, nn.Linear's NaN / +-Inf pattern
    want = F.linear(x, q.dequantized_weight(), q.bias)[bad]
    assert torch.equal(bits(y[bad]), bits(want))
    with torch.no_grad():
        assert_same_nonfinite_pattern(y[bad], lin(x[bad]))
    assert torch.isnan(y[1]).all() and torch.isnan(y[6]).all()  # a NaN reaches every output
    sign = torch.sign(lin.weight[:, -1])  # row 3: +Inf at the last input
    assert torch.equal(torch.sign(y[3]), sign) and torch.isinf(y[3]).all()
    assert torch.equal(torch.sign(y[5]), -torch.sign(lin.weight[:, 0]))  # row 5: -Inf at the first input
    # the reference mode computes the same bits; leading dimensions are kept
    with reference_mode():
        assert torch.equal(bits(q(x)), bits(y))
    y3 = q(x.reshape(3, 3, 40))
    assert torch.equal(bits(y3.reshape(9, 24)), bits(y))


def test_dynamic_quant_linear_zero_weight_meets_inf_gives_nan():
    lin = _linear_away_from_zero(8, 4)
    with torch.no_grad():
        lin.weight[2, 5] = 0.0
    q = ck.QuantLinear.from_float(lin, dynamic=True)
    x = torch.zeros(2, 8)
    x[0, 5] = INF
    y = q(x)
    assert torch.isnan(y[0, 2]) and torch.isinf(y[0, [0, 1, 3]]).all() and torch.isfinite(y[1]).all()


def _sparse_linear(k: int, n: int) -> tuple[nn.Linear, "ck.SparseLinear"]:
    lin = _linear_away_from_zero(k, n, seed=2)
    with torch.no_grad():
        lin.weight.view(n, k // 4, 4)[..., 1::2] = 0  # 2:4: keep positions 0 and 2 of every group
    return lin, ck.SparseLinear.from_float(lin, int8=True)


def test_sparse_linear_int8_one_bad_row_does_not_poison_the_batch():
    lin, sl = _sparse_linear(64, 20)
    x, finite = bad_rows_batch(64, seed=3)
    x[3, 0] = 1.0  # row 3: a pure +Inf row
    bad = [r for r in range(9) if r not in finite]
    (y,) = on_every_isa(lambda: (bits(sl(x)),))
    y = y.view(torch.float32)
    assert torch.isfinite(y[finite]).all()
    assert torch.equal(bits(y[finite]), bits(sl(x[finite])))  # as if the bad rows were not there
    want = ref.sparse24_int8_dynamic_linear(x, sl.values, sl.meta, sl.weight_scale, sl.bias)
    assert torch.equal(bits(y), bits(want))
    with torch.no_grad():
        assert_same_nonfinite_pattern(y[bad], lin(x[bad]))  # pruned weights are zero in both
    # a huge finite value in a bad row does not set the scale of the others
    x2 = x.clone()
    x2[1, 0] = 3e38
    assert torch.equal(bits(sl(x2)[finite]), bits(y[finite]))
    # every row non-finite: all outputs from the float path
    all_bad = x[bad]
    assert torch.equal(bits(sl(all_bad)), bits(ref.sparse24_int8_dynamic_linear(all_bad, sl.values, sl.meta,
                                                                                 sl.weight_scale, sl.bias)))


def test_sparse_conv_int8_nonfinite_image_stays_in_its_image():
    torch.manual_seed(4)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    with torch.no_grad():
        w = conv.weight.permute(0, 2, 3, 1)  # groups of four input channels at one tap
        w.reshape(16, 3, 3, 2, 4)[..., 1::2] = 0
    sc = ck.SparseConv2d.from_float(conv, int8=True)
    x = torch.randn(3, 8, 6, 6)
    x[1, 2, 3, 4] = INF
    x[1, 0, 0, 0] = 1e30
    y = on_every_isa(lambda: (bits(sc(x)),))[0].view(torch.float32)
    good = torch.cat([x[:1], x[2:]])
    assert torch.equal(bits(torch.cat([y[:1], y[2:]])), bits(sc(good)))
    dense = ck.sparse24_layout.weight_from_rows(sc.dense_weight(), conv.weight.shape)
    assert torch.equal(bits(y[1]), bits(F.conv2d(x, dense, sc.bias, 1, 1)[1]))
    # the Inf reaches exactly the outputs whose window holds it
    assert (~torch.isfinite(y[1])).any() and torch.isfinite(y[1, :, 0, 0]).all()


def test_compiled_layers_keep_the_nonfinite_semantics():
    """Under torch.compile (fullgraph) the data-dependent float pass is a torch.cond: same bits."""
    lin = _linear_away_from_zero(40, 24)
    q = ck.QuantLinear.from_float(lin, dynamic=True)
    _, sl = _sparse_linear(40, 12)
    x, finite = bad_rows_batch(40, seed=5)
    for layer in (q, sl):
        compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
        assert torch.equal(bits(compiled(x)), bits(layer(x)))
        assert torch.equal(bits(compiled(x[finite])), bits(layer(x[finite])))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_quantize_rows_nonfinite_rows_cuda_matches_cpu():
    x, _ = bad_rows_batch(300)
    q, s = ck.quantize_rows(x)
    gq, gs = ck.quantize_rows(x.cuda())
    assert torch.equal(gq.cpu(), q) and torch.equal(bits(gs.cpu()), bits(s))
