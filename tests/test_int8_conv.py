"""int8 conv2d: exact against the reference on every ISA path, layout, stride / padding / dilation /
groups (depthwise included), the 1x1 fast path and the packed weight; opcheck, compile, bad input."""

import pytest
import torch

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.testing import int8_conv_case, run_on_every_isa

OPS = torch.ops.compress_kernels


CONFIGS = [  # (n, c, h, w, oc, k, stride, padding, dilation, groups)
    (1, 3, 8, 8, 16, 3, 1, 1, 1, 1),      # 3-channel stem
    (2, 16, 9, 7, 24, 3, 2, 1, 1, 1),     # stride 2, odd sizes
    (1, 8, 10, 10, 70, 3, 1, 2, 2, 1),    # dilation, N tail (70 = 64 + 6)
    (2, 32, 6, 6, 32, 1, 1, 0, 1, 1),     # 1x1 fast path
    (1, 32, 7, 7, 16, 1, 2, 0, 1, 1),     # 1x1 stride 2 (ResNet downsample)
    (1, 12, 6, 6, 18, 3, 1, 1, 1, 3),     # grouped
    (2, 16, 8, 8, 16, 3, 1, 1, 1, 16),    # depthwise
    (1, 8, 9, 9, 16, 5, 2, 2, 1, 8),      # channel multiplier 2 (grouped GEMM path)
    (1, 5, 4, 6, 7, 2, (2, 1), (0, 1), (1, 2), 1),  # asymmetric stride / padding / dilation
    # narrow direct AMX conv (C < 64, stride 1, >= 1024 output pixels): a kernel row's KW * C bytes read as
    # 64-byte tile chunks
    (1, 8, 32, 32, 8, 3, 1, 1, 1, 1),     # ResNet-18 width 8, layer1 (one chunk per kernel row)
    (1, 3, 32, 32, 8, 3, 1, 1, 1, 1),     # width-8 stem (K = 27 in three 64-byte chunks)
    (1, 32, 34, 34, 20, 3, 1, 1, (2, 1), 1),  # 96-byte kernel rows (two chunks), dilated rows
    (2, 8, 12, 12, 8, 3, 1, 1, 1, 1),     # below 1024 output pixels: gathered
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "x".join(map(str, c[:6])) + f"_g{c[-1]}")
@pytest.mark.parametrize("x_dtype, x_zp", [(torch.uint8, 0), (torch.uint8, 113), (torch.int8, -9)])
def test_matches_reference(cfg, x_dtype, x_zp):
    n, c, h, w, oc, k, stride, padding, dilation, groups = cfg
    x, wt, b, m0, shift = int8_conv_case(n, c, h, w, oc, k, groups, x_dtype)
    for out_dtype, zp, qmin, qmax, rounding in [(torch.int8, 3, -128, 127, "double"),
                                                (torch.uint8, 50, 50, 255, "single")]:
        want = ref.int8_conv2d(x, x_zp, wt, b, m0, shift, zp, qmin, qmax, out_dtype, stride, padding, dilation, groups,
                               rounding)
        got = run_on_every_isa(ck.int8_conv2d, x, x_zp, wt, b, m0, shift, zp, qmin, qmax, out_dtype, stride, padding,
                               dilation, groups, rounding)
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(got, want)


def test_padding_is_filled_with_the_zero_point():
    # All-zero-point input: every tap (inside or padding) contributes exactly zero, so the output is
    # requant(bias) everywhere, borders included.
    x = torch.full((1, 4, 5, 5), 77, dtype=torch.uint8)
    wt = torch.randint(-127, 128, (8, 4, 3, 3), dtype=torch.int8)
    b = torch.arange(8, dtype=torch.int32) * 1000
    y = ck.int8_conv2d(x, 77, wt, b, 2**30, -4, 0, -(2**31), 2**31 - 1, torch.int32, 1, 2)
    per_channel = ref.requantize(b, torch.tensor([2**30]), torch.tensor([-4]), 0, -(2**31), 2**31 - 1, torch.int32)
    assert per_channel[2].item() == 63  # 2000 / 32 = 62.5 rounds away from zero
    assert torch.equal(y, per_channel[None, :, None, None].expand_as(y))


def test_packed_weight_channels_last_and_threads_agree():
    x, wt, b, m0, shift = int8_conv_case(3, 24, 11, 11, 40, 3, groups=2)
    packed = ck.int8_conv2d_pack_weight(wt, 2)
    want = ref.int8_conv2d(x, 7, wt, b, m0, shift, 0, -128, 127, torch.int8, 1, 1, 1, 2)
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for xx in (x, x.contiguous(memory_format=torch.channels_last)):
                got = ck.int8_conv2d(xx, 7, wt, b, m0, shift, 0, -128, 127, torch.int8, 1, 1, 1, 2, w_packed=packed)
                assert torch.equal(got, want)
    finally:
        torch.set_num_threads(old)


def test_per_tensor_multiplier_and_no_bias():
    x, wt, _, m0, shift = int8_conv_case(1, 8, 6, 6, 20, 3, per_channel=False)
    want = ref.int8_conv2d(x, 3, wt, None, m0, shift, 0, 0, 255, torch.uint8, 1, 1)
    assert torch.equal(run_on_every_isa(ck.int8_conv2d, x, 3, wt, None, m0, shift, 0, 0, 255, torch.uint8, 1, 1), want)


def _conv(**kw):
    args = dict(x=torch.zeros(1, 4, 6, 6, dtype=torch.uint8), x_zp=0, w=torch.zeros(8, 4, 3, 3, dtype=torch.int8),
                bias=None, m0=2**30, shift=-8, stride=1, padding=1, dilation=1, groups=1, w_packed=None)
    args.update(kw)
    return ck.int8_conv2d(args["x"], args["x_zp"], args["w"], args["bias"], args["m0"], args["shift"], 0, -128, 127,
                          torch.int8, args["stride"], args["padding"], args["dilation"], args["groups"],
                          w_packed=args["w_packed"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=torch.zeros(1, 4, 6, 6)), "x must be int8 or uint8, got Float"),
    (dict(x=torch.zeros(4, 6, 6, dtype=torch.uint8)), "x must be 4-D, got 3-D"),
    (dict(w=torch.zeros(8, 4, 3, 3)), "w must be Char, got Float"),
    (dict(w=torch.zeros(8, 4, 3, dtype=torch.int8)), "w must be 4-D, got 3-D"),
    (dict(w=torch.zeros(8, 3, 3, 3, dtype=torch.int8)), "x has 4 channels but w expects 3 x groups=1 = 3"),
    (dict(groups=3), "out channels\\) must be a positive multiple of groups=3"),
    (dict(groups=0), "groups must be >= 1, got 0"),
    (dict(stride=0), "stride must be >= 1"),
    (dict(dilation=(1, 0)), "dilation must be >= 1"),
    (dict(padding=-1), "padding must be >= 0"),
    (dict(padding=0, dilation=4), "the output would be empty"),
    (dict(x_zp=300), "x_zero_point must be in \\[0, 255\\]"),
    (dict(bias=torch.zeros(8)), "bias must be Int, got Float"),
    (dict(bias=torch.zeros(7, dtype=torch.int32)), "bias must have shape \\[8\\]"),
    (dict(m0=[2**30] * 3, shift=[0] * 3), "must have 1 \\(per-tensor\\) or 8 \\(per-channel\\) elements, got 3"),
    (dict(w_packed=torch.zeros(8, 5, dtype=torch.int32)), "w_packed is not a packed weight of any family \\(no header"),
])
def test_refuses(kwargs, message):
    with pytest.raises(RuntimeError, match=message):
        _conv(**kwargs)


def test_depth_overflow_is_refused():
    with pytest.raises(RuntimeError, match="could overflow the int32 accumulator"):
        ck.int8_conv2d_pack_weight(torch.zeros(1, 8000, 3, 3, dtype=torch.int8))


def test_empty_batch():
    assert _conv(x=torch.zeros(0, 4, 6, 6, dtype=torch.uint8)).shape == (0, 8, 6, 6)


def test_opcheck_and_compile():
    x, wt, b, m0, shift = int8_conv_case(2, 8, 6, 6, 16, 3)
    packed = ck.int8_conv2d_pack_weight(wt)
    torch.library.opcheck(OPS.int8_conv2d_pack_weight.default, (wt, 1))
    torch.library.opcheck(OPS.int8_conv2d.default, (x, 5, wt, b, m0, shift, 1, -128, 127, torch.int8, [2, 2], [1, 1],
                                                     [1, 1], 1, "double", packed))
    torch.library.opcheck(OPS.int8_conv2d.default, (x, 5, wt[:, :1].contiguous().repeat(1, 1, 1, 1)[:8], None,
                                                     m0[:1].clone(), shift[:1].clone(), 0, 0, 255, torch.uint8,
                                                     [1, 1], [0, 0], [1, 1], 8, "single", None))

    def f(x, packed):
        return ck.int8_conv2d(x, 5, wt, b, m0, shift, 1, stride=2, padding=1, w_packed=packed)

    assert torch.equal(torch.compile(f, fullgraph=True)(x, packed), f(x, packed))
