"""codebook_decode: the dense weight of a codebook pack in one pass, exactly the reference's
codebook_dequantize(codebook_unpack(...)) for every bit width, codebook groups and row / depth tails;
opcheck; its argument checks on CPU and on meta tensors; CodebookConv2d's dense path uses it."""

import pytest
import torch

import compress_kernels as ck
from compress_kernels import reference as ref

OPS = torch.ops.compress_kernels


def _case(n, k, bits, groups, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 1 << bits, (n, k), generator=g).to(torch.uint8)
    codebook = torch.randn(groups, 1 << bits, generator=g)
    return idx, ck.codebook_pack(idx, bits), codebook


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("n, k, groups", [(1, 1, 1), (16, 64, 2), (17, 33, 1), (48, 100, 3), (70, 9, 7)])
def test_decode_equals_the_reference(bits, n, k, groups):
    idx, packed, codebook = _case(n, k, bits, groups, seed=bits * 100 + n)
    got = ck.codebook_decode(packed, codebook, bits, k)
    assert got.dtype == torch.float32 and got.shape == (n, k)
    assert torch.equal(got, ref.codebook_dequantize(idx, codebook))


def test_decode_is_the_same_at_every_thread_count():
    idx, packed, codebook = _case(300, 700, 4, 3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ck.codebook_decode(packed, codebook, 4, 700)
        torch.set_num_threads(2)
        two = ck.codebook_decode(packed, codebook, 4, 700)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two) and torch.equal(one, ref.codebook_dequantize(idx, codebook))


def test_opcheck():
    _, packed, codebook = _case(20, 30, 3, 2)
    torch.library.opcheck(OPS.codebook_decode, (packed, codebook, 3, 30))


@pytest.mark.parametrize("args, message", [
    (lambda p, c: (p, c, 3, 30), r"codebook_decode: .*bits"),
    (lambda p, c: (p, c, 4, 31), r"codebook_decode: .*K"),
    (lambda p, c: (p, c[:, :8], 4, 30), r"codebook_decode: codebook must have 2\^bits = 16 entries per group"),
    (lambda p, c: (p, torch.zeros(3, 16), 4, 30), r"codebook_decode: the number of codebooks G=3 must divide the "
                                                  r"number of output rows N=20"),
    (lambda p, c: (p, c.double(), 4, 30), r"codebook_decode: codebook must be"),
    (lambda p, c: (p, c, 4, 0), r"codebook_decode: k must be > 0, got 0"),
])
def test_bad_arguments_are_refused_on_cpu_and_meta(args, message):
    _, packed, codebook = _case(20, 30, 4, 2)
    call = args(packed, codebook)
    with pytest.raises(RuntimeError, match=message):
        OPS.codebook_decode(*call)
    if call[2] == 4 and call[3] == 30 or call[1].shape[0] == 3:  # shape-only rules: the meta kernel gives them too
        with pytest.raises(RuntimeError, match=message):
            OPS.codebook_decode(call[0].to("meta"), call[1].to("meta"), call[2], call[3])


def test_dense_conv_path_computes_with_the_decoded_weight():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    layer = ck.nn.CodebookConv2d.from_float(conv, bits=4).eval()
    x = torch.randn(2, 8, 16, 16)
    assert layer.uses_dense_conv(x)
    with torch.no_grad():
        want = torch.nn.functional.conv2d(x, layer.dequantized_weight(), layer.bias, padding=1)
        assert torch.equal(layer(x), want)
    idx = layer.indices()
    want_w = ref.codebook_dequantize(idx, layer.effective_codebook())
    assert torch.equal(layer.dequantized_weight().reshape(16, -1), want_w)
