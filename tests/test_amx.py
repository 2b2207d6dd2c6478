"""The AMX tier: detection and its report, the emulated tile model, and the AMX int8 GEMM's tails
(row tiles of 16, K chunks of 64, column blocks of 16) checked bit for bit against the reference on
every path, the real tiles included where the CPU has them."""

import pytest
import torch

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.testing import ISAS, run_on_every_isa

HAS_AMX = "amx" in ISAS


def test_report_names_the_path_and_why_amx_is_not_used():
    report = ck.cpu_isa_report()
    assert report.startswith("detected ")
    if HAS_AMX:
        assert "detected amx" in report and "AMX not used" not in report
    else:
        assert "AMX not used: " in report
    with ck.force_cpu_isa("amx_emulated"):
        assert ck.ops.cpu_isa() == "amx_emulated"
        assert "active amx_emulated" in ck.cpu_isa_report()
    with ck.force_cpu_isa("portable"):  # any named path ends the emulation
        assert ck.ops.cpu_isa() == "portable"


@pytest.mark.skipif(HAS_AMX, reason="this CPU has AMX")
def test_amx_is_refused_where_the_cpu_lacks_it():
    with pytest.raises(RuntimeError, match="this CPU lacks amx .*AMX not used: "):
        with ck.force_cpu_isa("amx"):
            pass


def test_amx_peak():
    with pytest.raises(RuntimeError, match='kind must be "int8" or "bf16", got "fp8"'):
        ck.ops.amx_peak("fp8")
    with pytest.raises(RuntimeError, match="seconds must be in"):
        ck.ops.amx_peak("int8", 0.0)
    if HAS_AMX:
        assert ck.ops.amx_peak("int8", 0.01) > 1e11
        assert ck.ops.amx_peak("bf16", 0.01) > 5e10
    else:
        with pytest.raises(RuntimeError, match="has no AMX"):
            ck.ops.amx_peak("int8", 0.01)


# m: one partial row tile (9: the smallest m on AMX), whole tiles, a pair plus a partial tile;
# n: a partial column block alone, one whole block, an odd number of blocks, a partial last panel;
# k: below one group of four, a partial group, whole and partial 64-byte chunks.
@pytest.mark.parametrize("m", [9, 16, 33, 77])
@pytest.mark.parametrize("n", [5, 16, 48, 70])
@pytest.mark.parametrize("k", [3, 64, 100, 257])
@pytest.mark.parametrize("x_dtype", [torch.uint8, torch.int8])
def test_amx_int8_gemm_tails(m, n, k, x_dtype):
    torch.manual_seed(m * 1000 + n * 10 + k)
    lo, hi = (0, 256) if x_dtype == torch.uint8 else (-128, 128)
    x = torch.randint(lo, hi, (m, k), dtype=torch.int16).to(x_dtype)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    assert torch.equal(run_on_every_isa(ck.int8_gemm, x, ck.int8_pack_weight(w)), ref.int8_gemm(x, w))


def test_amx_int8_linear_epilogues_with_row_stride_and_large_chunks():
    """Requantized and float outputs through the AMX block pipeline (each block's output stage is
    written during the next block's K steps) with a row stride != k and chunks of x over 1 MB."""
    torch.manual_seed(1)
    m, n, k = 600, 200, 2100
    wide = torch.randint(0, 256, (m, k + 60), dtype=torch.int16).to(torch.uint8)
    x = wide[:, 30:30 + k]
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    b = torch.randint(-(2**20), 2**20, (n,), dtype=torch.int32)
    m0 = torch.randint(2**29, 2**30, (n,), dtype=torch.int32)
    shift = torch.randint(-12, -8, (n,), dtype=torch.int32)
    packed = ck.int8_pack_weight(w)
    want = ref.int8_linear(x, 7, w, b, m0, shift, 3, -128, 127, torch.int8)
    assert torch.equal(run_on_every_isa(ck.int8_linear, x, 7, packed, b, m0, shift, 3), want)
    xs = torch.rand(m) + 0.5
    ws = torch.rand(n) * 0.01
    bias = torch.randn(n)
    want_f = ref.int8_linear_float(x, 7, w, xs, ws, bias)
    assert torch.equal(run_on_every_isa(ck.int8_linear_float, x, 7, packed, xs, ws, bias), want_f)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_amx_results_do_not_depend_on_threads(threads):
    torch.manual_seed(2)
    x = torch.randint(-128, 128, (130, 300), dtype=torch.int8)
    w = torch.randint(-128, 128, (90, 300), dtype=torch.int8)
    want = ref.int8_gemm(x, w)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert torch.equal(run_on_every_isa(ck.int8_gemm, x, ck.int8_pack_weight(w)), want)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("batch,cin,cout,kernel,stride,size", [(2, 16, 24, 3, 1, 9), (1, 8, 40, 3, 2, 12),
                                                               (3, 32, 17, 1, 1, 7)])
def test_amx_int8_conv2d(batch, cin, cout, kernel, stride, size):
    torch.manual_seed(3)
    x = torch.randint(0, 256, (batch, cin, size, size), dtype=torch.int16).to(torch.uint8)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randint(-128, 128, (cout, cin, kernel, kernel), dtype=torch.int8)
    b = torch.randint(-1000, 1000, (cout,), dtype=torch.int32)
    m0 = torch.full((cout,), 2**30, dtype=torch.int32)
    shift = torch.full((cout,), -10, dtype=torch.int32)
    args = (x, 100, w, b, m0, shift, 120, 0, 255, torch.uint8)
    kwargs = dict(stride=stride, padding=kernel // 2)
    want = ref.int8_conv2d(*args, **kwargs)
    got = run_on_every_isa(lambda: ck.int8_conv2d(*args, **kwargs))
    assert torch.equal(got, want)


def _random_24(n, k, gen):
    """An int8 [n, k] weight with every group of four holding at most two non-zeros, at random
    positions (each of the six patterns, also fewer non-zeros)."""
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=gen)
    keep = torch.zeros(n, k // 4, 4, dtype=torch.bool)
    order = torch.rand(n, k // 4, 4, generator=gen).argsort(-1)[..., :2]
    keep.scatter_(-1, order, True)
    return w * keep.reshape(n, k).to(torch.int8)


# k % 8 == 4 (a last group without a pair), k % 64 != 0 (a tile tail), partial column blocks.
@pytest.mark.parametrize("m", [9, 40])
@pytest.mark.parametrize("n", [5, 16, 70])
@pytest.mark.parametrize("k", [4, 12, 64, 100, 200])
@pytest.mark.parametrize("x_dtype", [torch.uint8, torch.int8])
def test_amx_sparse24_int8_expands_every_pattern(m, n, k, x_dtype):
    gen = torch.Generator().manual_seed(m + n + k)
    lo, hi = (0, 256) if x_dtype == torch.uint8 else (-128, 128)
    x = torch.randint(lo, hi, (m, k), dtype=torch.int16, generator=gen).to(x_dtype)
    w = _random_24(n, k, gen)
    values, meta = ck.sparse24_compress(w)
    packed = ck.sparse24_int8_pack(values, meta)
    b = torch.randint(-5000, 5000, (n,), dtype=torch.int32, generator=gen)
    m0 = torch.randint(2**29, 2**30, (n,), dtype=torch.int32, generator=gen)
    shift = torch.full((n,), -8, dtype=torch.int32)
    zp = 0 if x_dtype == torch.int8 else 77
    want = ref.int8_linear(x, zp, w, b, m0, shift, 3, -128, 127, torch.int8)
    got = run_on_every_isa(ck.sparse24_int8_linear, x, zp, packed, meta, b, m0, shift, 3, -128, 127, torch.int8)
    assert torch.equal(got, want)


# The direct AMX conv (stride 1, groups 1, C % 64 == 0, at least half of the padded grid is output)
# for the stride-1 shapes here: taps read in place from a padded copy of the input, the padding's
# rows and columns computed and dropped; the strided shapes next to them take the gathered rows.
@pytest.mark.parametrize("batch,cin,cout,kernel,stride,padding,dilation,size", [
    (2, 64, 24, 3, 1, 1, 1, 9), (1, 128, 70, 3, 1, 2, 2, 12), (3, 64, 16, 5, 1, 0, 1, 16),
    (2, 64, 33, (1, 3), 1, (0, 1), 1, 6), (2, 64, 40, 3, 2, 1, 1, 16), (1, 64, 20, 1, 2, 0, 1, 12),
    (2, 128, 17, 3, (2, 1), 1, 1, 10), (1, 64, 16, 3, 3, 1, 1, 17)])
@pytest.mark.parametrize("x_dtype", [torch.uint8, torch.int8])
def test_amx_direct_int8_conv2d(batch, cin, cout, kernel, stride, padding, dilation, size, x_dtype):
    torch.manual_seed(4)
    kh, kw = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    lo, hi, zp = (0, 256, 100) if x_dtype == torch.uint8 else (-128, 128, -3)
    x = torch.randint(lo, hi, (batch, cin, size, size), dtype=torch.int16).to(x_dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randint(-128, 128, (cout, cin, kh, kw), dtype=torch.int8)
    b = torch.randint(-1000, 1000, (cout,), dtype=torch.int32)
    m0 = torch.randint(2**29, 2**30, (cout,), dtype=torch.int32)
    shift = torch.full((cout,), -12, dtype=torch.int32)
    args = (x, zp, w, b, m0, shift, 5, -128, 127, torch.int8)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    want = ref.int8_conv2d(*args, **kwargs)
    got = run_on_every_isa(lambda: ck.int8_conv2d(*args, **kwargs))
    assert torch.equal(got, want)


@pytest.mark.filterwarnings("ignore:.*quantize_per.*deprecated")
def test_amx_alongside_onednn_tiles():
    """oneDNN (bf16 F.linear, int8 quantized.linear under the onednn engine) uses the tile unit with
    its own tile configuration on the same threads; every AMX call here loads its own configuration
    first, so results stay exact when the two interleave."""
    torch.manual_seed(5)
    x = torch.randint(0, 256, (40, 300), dtype=torch.int16).to(torch.uint8)
    w = torch.randint(-128, 128, (70, 300), dtype=torch.int8)
    packed = ck.int8_pack_weight(w)
    want = ref.int8_gemm(x, w)
    xf, wf = torch.randn(64, 256, dtype=torch.bfloat16), torch.randn(96, 256, dtype=torch.bfloat16)
    previous = torch.backends.quantized.engine
    try:
        if "onednn" in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = "onednn"
        w_q = torch.quantize_per_tensor(torch.randn(32, 64), 0.05, 0, torch.qint8)
        prepacked = torch.ops.quantized.linear_prepack(w_q, None)
        x_q = torch.quantize_per_tensor(torch.rand(48, 64), 0.01, 0, torch.quint8)
        for isa in [name for name in ISAS if name.startswith("amx")]:
            with ck.force_cpu_isa(isa):
                for _ in range(3):
                    torch.nn.functional.linear(xf, wf)
                    assert torch.equal(ck.int8_gemm(x, packed), want)
                    torch.ops.quantized.linear(x_q, prepacked, 0.1, 0)
                    assert torch.equal(ck.int8_gemm(x, packed), want)
    finally:
        torch.backends.quantized.engine = previous
