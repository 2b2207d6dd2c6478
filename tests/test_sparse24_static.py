"""Integer-only layers on the int8 2:4 kernel (IntegerLayer.sparse24_, Int8StaticConfig(sparse24=True),
QATConfig(sparse24=True)): the same integers as the dense kernel and the int64 reference, with only the
compressed weight stored."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import compress_kernels as ck
from compress_kernels import study
from compress_kernels.nn import QuantLinear
from compress_kernels.nn._common import reference_mode
from compress_kernels.nn.conv import QuantConv2d
from compress_kernels.sparse24_layout import weight_from_rows, weight_rows
from compress_kernels.testing import ISAS, run_on_every_isa


def prune_24(weight: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The weight with two random entries of every group of four along K of weight_rows (a conv's
    input channels at one kernel tap) zeroed."""
    g = torch.Generator().manual_seed(seed)
    rows = weight_rows(weight.detach())
    w = rows.reshape(rows.shape[0], -1, 4)
    keep = torch.rand(w.shape, generator=g).argsort(-1)[..., :2]
    mask = torch.zeros(w.shape, dtype=torch.bool).scatter_(-1, keep, True)
    return weight_from_rows((w * mask).reshape(rows.shape), weight.shape).contiguous()


def sparse_conv(cin=8, cout=12, k=3, stride=1, padding=1, dilation=1, per_channel=True,
                dtype=torch.uint8, activation=None):
    torch.manual_seed(cin + cout + k)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation)
    conv.weight.data = prune_24(conv.weight)
    zp = 9 if dtype == torch.uint8 else -3
    return QuantConv2d.from_float(conv, input_scale=0.04, input_zero_point=zp, output_scale=0.08,
                                  output_zero_point=zp + 2, per_channel=per_channel, activation=activation,
                                  input_dtype=dtype, output_dtype=dtype)


def random_input(shape, dtype):
    lo, hi = (0, 255) if dtype == torch.uint8 else (-128, 127)
    return torch.randint(lo, hi + 1, shape, generator=torch.Generator().manual_seed(1)).to(dtype)


@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 2), (2, 3, 1)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_quant_conv2d_2to4_equals_dense_and_reference(stride, padding, dilation, dtype, per_channel):
    q = sparse_conv(stride=stride, padding=padding, dilation=dilation, per_channel=per_channel, dtype=dtype,
                    activation="relu")
    x = random_input((2, 8, 11, 9), dtype).contiguous(memory_format=torch.channels_last)
    dense = q(x)
    assert q.sparse24_() is q and q.sparse24
    got = q(x)
    with reference_mode():
        want = q(x)
    assert got.dtype == dtype and got.shape == dense.shape
    assert torch.equal(got, dense) and torch.equal(got, want)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert "sparsity=2:4" in repr(q)


@pytest.mark.parametrize("isa", ISAS)
def test_quant_conv2d_2to4_kernel_choice_gives_the_same_integers(isa):
    """2:4 mode runs the dense int8 conv on weight_q for a weight of at most DENSE_24_MAX_WEIGHT elements and
    on the AMX path, the int8 2:4 kernel otherwise: both give the reference's integers on every path."""
    x_small, x_large = (random_input((2, c, 10, 10), torch.uint8).contiguous(memory_format=torch.channels_last)
                        for c in (8, 64))
    small = sparse_conv(cin=8, cout=16).sparse24_()     # 1152 weights
    large = sparse_conv(cin=64, cout=64).sparse24_()    # 36864 weights
    assert small.weight_q.numel() <= QuantConv2d.DENSE_24_MAX_WEIGHT < large.weight_q.numel()
    with ck.force_cpu_isa(isa):
        assert small.sparse24_runs_dense()
        assert large.sparse24_runs_dense() == (isa == "amx")
        got = [small(x_small), large(x_large)]
    with reference_mode():
        want = [small(x_small), large(x_large)]
    assert all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("out_dtype", [torch.uint8, torch.int8])
def test_quant_linear_2to4_equals_dense_and_reference(out_dtype):
    torch.manual_seed(0)
    lin = nn.Linear(36, 20)
    lin.weight.data = prune_24(lin.weight)
    q = QuantLinear.from_float(lin, input_scale=0.03, input_zero_point=128, output_scale=0.05,
                               output_zero_point=0 if out_dtype == torch.int8 else 128, input_dtype=torch.uint8,
                               output_dtype=out_dtype)
    x = random_input((3, 5, 36), torch.uint8)
    dense = q(x)
    q.sparse24_()
    with reference_mode():
        want = q(x)
    assert torch.equal(q(x), dense) and torch.equal(q(x), want)
    assert "sparsity=2:4" in repr(q)


def test_2to4_state_dict_stores_only_the_compressed_weight():
    q = sparse_conv().sparse24_()
    x = random_input((1, 8, 7, 7), torch.uint8)
    sd = q.state_dict()
    assert "weight_q" not in sd and sd["weight_values"].shape == (12, 36) and sd["weight_meta"].shape == (12, 9)
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = QuantConv2d(8, 12, 3, padding=1, sparse24=True)
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh.weight_q, q.weight_q) and torch.equal(fresh(x), q(x))
    # values + meta + scales: 36 + 9 of every 72 + ... bytes of the dense int8 weight
    assert study.stored_bytes(q) < study.stored_bytes(sparse_conv())
    with pytest.raises(ValueError, match=r"QuantConv2d at '<root>': load_state_dict: _extra_state\['sparse24'\] = "
                                         r"True: expected False as this module was built"):
        QuantConv2d(8, 12, 3, padding=1).load_state_dict(sd, strict=False)


def test_2to4_refusals_read_their_reason():
    torch.manual_seed(0)
    dense_weight = QuantConv2d.from_float(nn.Conv2d(8, 4, 1), input_scale=0.1, input_zero_point=0, output_scale=0.1,
                                          output_zero_point=0)
    assert dense_weight.sparse24_reason().startswith("the weight is not 2:4 along K (")
    with pytest.raises(ValueError, match=r"QuantConv2d.sparse24_: the weight is not 2:4 along K \("):
        dense_weight.sparse24_()
    stem = nn.Conv2d(3, 4, 3)
    stem.weight.data.zero_()
    q = QuantConv2d.from_float(stem, input_scale=0.1, input_zero_point=0, output_scale=0.1, output_zero_point=0)
    assert q.sparse24_reason() == "K = 27 is not a multiple of 4"
    grouped = nn.Conv2d(8, 8, 3, groups=2)
    grouped.weight.data.zero_()
    q = QuantConv2d.from_float(grouped, input_scale=0.1, input_zero_point=0, output_scale=0.1, output_zero_point=0)
    assert q.sparse24_reason() == "grouped convolution (groups=2)"
    with pytest.raises(ValueError, match="QuantConv2d: sparse24=True needs groups=1, got groups=2"):
        QuantConv2d(8, 8, 3, groups=2, sparse24=True)
    with pytest.raises(ValueError, match='QuantLinear: sparse24=True needs mode="static"'):
        QuantLinear(8, 8, mode="dynamic", sparse24=True)


def test_convert_static_with_2to4_gives_the_dense_integers(digits_resnet, digits_data):
    model, (x_train, _, x_test, _), _ = digits_resnet
    model = copy.deepcopy(model)
    ck.prune_(model, ck.PruneConfig(granularity="2:4")).remove()
    ck.calibrate(model, [x_train[i * 64:(i + 1) * 64] for i in range(2)])
    dense = ck.convert_(model, ck.Int8StaticConfig())
    sparse = ck.convert_(model, ck.Int8StaticConfig(sparse24=True))
    kinds = {name: kind for name, _, kind in sparse.converted}
    assert kinds["conv1"].endswith("(dense: K = 27 is not a multiple of 4)")
    assert kinds["layer1.0.conv1"].endswith("(2:4)") and kinds["fc"].endswith("(2:4)")
    layers = {n: k for n, k in kinds.items() if k.startswith(("QuantConv2d", "QuantLinear"))}
    assert len(layers) == 21 and all(k.endswith("(2:4)") for n, k in layers.items() if n != "conv1")
    x = x_test[:64]
    assert torch.equal(sparse.model(x), dense.model(x))
    assert study.stored_bytes(sparse.model) < 0.7 * study.stored_bytes(dense.model)


# ---------------------------------------------------------------- the op: sparse24_int8_conv2d


def _conv_case(n, c, h, w, oc, k, x_dtype, per_channel, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = (0, 255) if x_dtype == torch.uint8 else (-128, 127)
    x = torch.randint(lo, hi + 1, (n, c, h, w), generator=g).to(x_dtype)
    weight = prune_24(torch.randint(-127, 128, (oc, c, k, k), generator=g).float(), seed).to(torch.int8)
    values, meta = ck.sparse24_compress(weight_rows(weight).contiguous())
    bias = torch.randint(-5000, 5000, (oc,), generator=g, dtype=torch.int32)
    scales = torch.rand(oc if per_channel else 1, generator=g, dtype=torch.float64) * 1e-3 + 1e-4
    m0, shift = ck.quantize_multiplier(scales)
    return x, weight, values, meta, bias, m0, shift


@pytest.mark.parametrize("n, c, h, w, oc, k, stride, padding, dilation", [
    (2, 8, 9, 11, 12, 3, 1, 1, 1), (1, 4, 7, 7, 5, 3, 2, 0, 1), (3, 16, 6, 5, 17, 1, 1, 0, 1),
    (1, 8, 10, 10, 8, 3, 1, 2, 2), (2, 12, 8, 8, 33, 5, (2, 1), (2, 1), 1), (1, 4, 5, 5, 3, 3, 3, 3, (1, 2)),
    (2, 4, 64, 64, 6, 3, 1, 1, 1),  # 8192 rows of K = 36: several chunks of gathered patches
])
@pytest.mark.parametrize("x_dtype", [torch.uint8, torch.int8])
def test_sparse24_int8_conv2d_matches_reference(n, c, h, w, oc, k, stride, padding, dilation, x_dtype):
    from compress_kernels import reference

    x, weight, values, meta, bias, m0, shift = _conv_case(n, c, h, w, oc, k, x_dtype, per_channel=oc % 2 == 1)
    zp = 7 if x_dtype == torch.uint8 else -9  # a negative int8 zero point pads with its two's complement byte
    out_dtype = torch.int8 if x_dtype == torch.int8 else torch.uint8
    args = (bias, m0, shift, 3, -128 if out_dtype == torch.int8 else 0, 127 if out_dtype == torch.int8 else 255,
            out_dtype)
    want = reference.int8_conv2d(x, zp, weight, *args, stride=stride, padding=padding, dilation=dilation)
    packed = ck.sparse24_int8_pack(values, meta)
    got = run_on_every_isa(ck.sparse24_int8_conv2d, x, zp, packed, meta, *args, kernel_size=k, stride=stride,
                           padding=padding, dilation=dilation)
    assert torch.equal(got, want)
    assert got.is_contiguous(memory_format=torch.channels_last)
    nchw = ck.sparse24_int8_conv2d(x.contiguous(), zp, values, meta, *args, kernel_size=k, stride=stride,
                                   padding=padding, dilation=dilation)  # unpacked values, NCHW input
    assert torch.equal(nchw, want)


def test_sparse24_int8_conv2d_threads_and_opcheck():
    x, weight, values, meta, bias, m0, shift = _conv_case(2, 8, 40, 40, 16, 3, torch.uint8, per_channel=True)
    packed = ck.sparse24_int8_pack(values, meta)
    call = lambda: ck.sparse24_int8_conv2d(x, 5, packed, meta, bias, m0, shift, 0, 0, 255, torch.uint8,  # noqa: E731
                                           kernel_size=3, padding=1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = call()
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(call(), one)
    torch.library.opcheck(torch.ops.compress_kernels.sparse24_int8_conv2d,
                          (x[:1, :, :9, :9], 5, packed, meta, bias, m0, shift, 0, 0, 255, torch.uint8, [3, 3],
                           [1, 1], [1, 1], [1, 1]))


def test_sparse24_int8_conv2d_refusals_read_their_reason():
    x, weight, values, meta, bias, m0, shift = _conv_case(1, 4, 6, 6, 8, 3, torch.uint8, per_channel=False)
    rest = (bias, m0, shift, 0, 0, 255, torch.uint8)
    with pytest.raises(RuntimeError, match=r"K mismatch: the conv \(kh \* kw \* in_channels\) has K=16 but the weight "
                                           r"holds K=36"):
        ck.sparse24_int8_conv2d(x, 0, values, meta, *rest, kernel_size=2)
    with pytest.raises(RuntimeError, match=r"stride must be two integers >= 1, got \[0, 1\]"):
        ck.sparse24_int8_conv2d(x, 0, values, meta, *rest, kernel_size=3, stride=(0, 1))
    with pytest.raises(RuntimeError, match=r"padding must be two integers >= 0"):
        ck.sparse24_int8_conv2d(x, 0, values, meta, *rest, kernel_size=3, padding=-1)
    with pytest.raises(RuntimeError, match=r"the kernel \(3x3, dilation \[4, 4\]\) does not fit the padded input"):
        ck.sparse24_int8_conv2d(x, 0, values, meta, *rest, kernel_size=3, dilation=4)
    with pytest.raises(RuntimeError, match="sparse24_int8_conv2d: x must be 4-D"):
        ck.sparse24_int8_conv2d(x[0], 0, values, meta, *rest, kernel_size=3)
    with pytest.raises(RuntimeError, match="sparse24_int8_conv2d: x must be int8 or uint8"):
        ck.sparse24_int8_conv2d(x.float(), 0, values, meta, *rest, kernel_size=3)


# ---------------------------------------------------------------- the op: sparse24_conv2d (fp32)


def _gathered_rows(x, k, stride, padding, dilation):
    """[N * OH * OW, KH * KW * C] rows of x in the K order of weight_rows (kernel row, column, channel)."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = [(v, v) if isinstance(v, int) else v for v in (stride, padding, dilation)]
    xp = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    patches = xp.unfold(2, (k - 1) * dh + 1, sh).unfold(3, (k - 1) * dw + 1, sw)[..., ::dh, ::dw]
    oh, ow = patches.shape[2], patches.shape[3]
    return patches.permute(0, 2, 3, 4, 5, 1).reshape(n * oh * ow, k * k * c), oh, ow


@pytest.mark.parametrize("n, c, h, w, oc, k, stride, padding, dilation", [
    (2, 8, 9, 11, 12, 3, 1, 1, 1), (1, 4, 7, 7, 5, 3, 2, 0, 1), (3, 16, 6, 5, 17, 1, 1, 0, 1),
    (1, 8, 10, 10, 8, 3, 1, 2, 2), (2, 12, 8, 8, 33, 5, (2, 1), (2, 1), 1),
    (2, 16, 40, 40, 8, 3, 1, 1, 1),  # 3200 rows of K = 144: several chunks of gathered rows
])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse24_conv2d_equals_the_linear_kernel_on_gathered_rows(n, c, h, w, oc, k, stride, padding, dilation,
                                                                   bias):
    g = torch.Generator().manual_seed(oc)
    x = torch.randn(n, c, h, w, generator=g)
    weight = prune_24(torch.randn(oc, c, k, k, generator=g))
    b = torch.randn(oc, generator=g) if bias else None
    values, meta = ck.sparse24_compress(weight_rows(weight).contiguous())
    packed = ck.sparse24_f32_pack(values, meta)
    got = run_on_every_isa(ck.sparse24_conv2d, x.contiguous(memory_format=torch.channels_last), packed, meta, b,
                           kernel_size=k, stride=stride, padding=padding, dilation=dilation)
    rows, oh, ow = _gathered_rows(x, k, stride, padding, dilation)
    want = ck.sparse24_linear(rows.contiguous(), packed, meta, b).reshape(n, oh, ow, oc).permute(0, 3, 1, 2)
    assert torch.equal(got, want)  # the same fused multiply-adds in the same order
    assert got.is_contiguous(memory_format=torch.channels_last)
    ref = torch.nn.functional.conv2d(x, weight, b, stride, padding, dilation)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(ck.sparse24_conv2d(x, values, meta, b, k, stride, padding, dilation), got)  # NCHW, unpacked


def test_sparse24_conv2d_opcheck_and_refusals():
    x = torch.randn(1, 4, 6, 6)
    weight = prune_24(torch.randn(8, 4, 3, 3))
    values, meta = ck.sparse24_compress(weight_rows(weight).contiguous())
    packed = ck.sparse24_f32_pack(values, meta)
    torch.library.opcheck(torch.ops.compress_kernels.sparse24_conv2d, (x, packed, meta, None, [3, 3], [1, 1], [1, 1],
                                                                       [1, 1]))
    with pytest.raises(RuntimeError, match=r"sparse24_conv2d: K mismatch: the conv \(kh \* kw \* in_channels\) has "
                                           r"K=16 but the weight holds K=36"):
        ck.sparse24_conv2d(x, packed, meta, None, kernel_size=2)
    with pytest.raises(RuntimeError, match=r"sparse24_conv2d: the kernel \(3x3, dilation \[1, 1\]\) does not fit"):
        ck.sparse24_conv2d(x[:, :, :2, :2], packed, meta, None, kernel_size=3, stride=3)
    with pytest.raises(RuntimeError, match="sparse24_conv2d: x must be Float"):
        ck.sparse24_conv2d(x.double(), packed, meta, None, kernel_size=3)
    with pytest.raises(RuntimeError, match="sparse24_conv2d: kernel_size must be two integers >= 1, got \\[0, 3\\]"):
        ck.sparse24_conv2d(x, packed, meta, None, kernel_size=(0, 3))
