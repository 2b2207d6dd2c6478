"""The fake (meta) kernels run the kernels' own argument checks.

torch.compile, torch.export and meta tensors run the C++ Meta kernels of csrc/ops/meta.cpp, which
call the same check functions as the CPU glue. Every bad call below is refused on the CPU and, with
the same message, on meta tensors, under FakeTensorMode and inside a compiled function; every good
call gives the CPU op's output shape, dtype and strides on meta. Checks that read values (packed
headers, multiplier values, index ranges, the 2:4 pattern) need data and run only where it exists.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import compress_kernels as ck
from compress_kernels.testing import rand_codebook, rand_idx, rand_int, random_24

OPS = torch.ops.compress_kernels


def _i32(v):
    return torch.tensor(v, dtype=torch.int32)


M0, SHIFT = _i32(1 << 30), _i32(0)
X = rand_int(4, 64)
W = rand_int(32, 64, seed=3)
W_PACKED = ck.int8_pack_weight(W)
XU = rand_int(4, 64, lo=0, hi=255, dtype=torch.uint8)
XF = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
IMG = rand_int(2, 16, 8, 8)
CONV_W = rand_int(8, 16, 3, 3, seed=4)
IDX = rand_idx(32, 64, 4)
CB_PACKED = ck.codebook_pack(IDX, 4)
CODEBOOK = rand_codebook(1, 4)
VALUES, META = ck.sparse24_compress(random_24(32, 64))
S24_PACKED = ck.sparse24_f32_pack(VALUES, META)
VALUES_I8, META_I8 = ck.sparse24_compress(random_24(32, 64).mul(10).round().to(torch.int8))
S24_I8_PACKED = ck.sparse24_int8_pack(VALUES_I8, META_I8)
S24_CONV_VALUES, S24_CONV_META = ck.sparse24_compress(random_24(8, 16 * 9))
SCALE, ZP = torch.tensor(0.1), torch.tensor(0, dtype=torch.int32)
W4 = rand_int(32, 64, lo=-8, hi=7, seed=5)
W4_SCALES = torch.full((32, 2), 0.05)
W4_PACKED = ck.int4_pack(W4, W4_SCALES, 32)


def _linear(x, w, **kw):
    args = dict(bias=None, m0=M0, shift=SHIFT, out_zero_point=0, qmin=-128, qmax=127, out_dtype=torch.int8,
                rounding="double")
    args.update(kw)
    return OPS.int8_linear(x, 0, w, args["bias"], args["m0"], args["shift"], args["out_zero_point"], args["qmin"],
                           args["qmax"], args["out_dtype"], args["rounding"])


def _conv(x, w, **kw):
    args = dict(bias=None, m0=M0, shift=SHIFT, stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1,
                w_packed=None, out_dtype=torch.int8)
    args.update(kw)
    return OPS.int8_conv2d(x, 0, w, args["bias"], args["m0"], args["shift"], 0, -128, 127, args["out_dtype"],
                           args["stride"], args["padding"], args["dilation"], args["groups"], "double",
                           args["w_packed"])


def _s24_int8(x, values, meta, **kw):
    args = dict(bias=None, m0=M0, shift=SHIFT, out_dtype=torch.int8)
    args.update(kw)
    return OPS.sparse24_int8_linear(x, 0, values, meta, args["bias"], args["m0"], args["shift"], 0, -128, 127,
                                    args["out_dtype"], "double")


# (id, call, args[, kwargs[, meta message]]): call(*args) is refused on the CPU with a message the fake
# kernels must repeat. Where the CPU reads the refusal from a pack's header, a tensor without data
# is refused from its shape instead, with the message given last.
BAD = [
    ("int8_gemm K mismatch", OPS.int8_gemm, (rand_int(4, 60), W)),
    ("int8_gemm float x", OPS.int8_gemm, (XF, W_PACKED)),
    ("int8_gemm 1-D x", OPS.int8_gemm, (rand_int(64), W)),
    ("int8_gemm float w", OPS.int8_gemm, (X, W.float())),
    ("int8_gemm zero-width x", OPS.int8_gemm, (rand_int(4, 0), W)),
    ("int8_pack_weight float", OPS.int8_pack_weight, (W.float(),)),
    ("int8_pack_weight empty", OPS.int8_pack_weight, (rand_int(0, 64),)),
    ("int8_linear per-channel m0 of the wrong size", _linear, (X, W_PACKED), dict(m0=_i32([1 << 30] * 3),
                                                                                  shift=_i32([0] * 3))),
    ("int8_linear float m0", _linear, (X, W), dict(m0=torch.tensor(0.5))),
    ("int8_linear qmin > qmax", _linear, (X, W), dict(qmin=5, qmax=4)),
    ("int8_linear bias of the wrong size", _linear, (X, W), dict(bias=torch.zeros(3, dtype=torch.int32))),
    ("int8_linear float bias", _linear, (X, W), dict(bias=torch.zeros(32))),
    ("int8_linear bad rounding", _linear, (X, W), dict(rounding="up")),
    ("int8_linear out_dtype float", _linear, (X, W), dict(out_dtype=torch.float32)),
    ("int8_linear x_zero_point out of range", lambda x, w: OPS.int8_linear(x, 300, w, None, M0, SHIFT, 0, -128, 127,
                                                                          torch.int8, "double"), (XU, W)),
    ("int8_linear_float x_scale of the wrong size",
     lambda x, w: OPS.int8_linear_float(x, 0, w, torch.ones(3), torch.ones(1), None), (X, W)),
    ("int8_linear_float int w_scale",
     lambda x, w: OPS.int8_linear_float(x, 0, w, torch.ones(1), torch.ones(1, dtype=torch.int32), None), (X, W)),
    ("quantize_rows int x", OPS.quantize_rows, (X, 127)),
    ("quantize_rows qmax 0", OPS.quantize_rows, (XF, 0)),
    ("requantize float acc", lambda acc: OPS.requantize(acc, M0, SHIFT, 0, -128, 127, torch.int8, "double"),
     (torch.zeros(4, 8),)),
    ("requantize per-channel of the wrong size",
     lambda acc: OPS.requantize(acc, _i32([1 << 30] * 3), _i32([0] * 3), 0, -128, 127, torch.int8, "double"),
     (torch.zeros(4, 8, dtype=torch.int32),)),
    ("quantize_multiplier int", OPS.quantize_multiplier, (torch.tensor([1, 2]),)),
    ("int8_add shapes differ",
     lambda a, b: OPS.int8_add(a, 0, M0, SHIFT, b, 0, M0, SHIFT, M0, SHIFT, 0, -128, 127, torch.int8, 20),
     (rand_int(4, 8), rand_int(4, 9))),
    ("int8_add left_shift 30",
     lambda a, b: OPS.int8_add(a, 0, M0, SHIFT, b, 0, M0, SHIFT, M0, SHIFT, 0, -128, 127, torch.int8, 30),
     (rand_int(4, 8), rand_int(4, 8))),
    ("int8_add two-element multiplier",
     lambda a, b: OPS.int8_add(a, 0, _i32([1, 2]), _i32([0, 0]), b, 0, M0, SHIFT, M0, SHIFT, 0, -128, 127,
                               torch.int8, 20), (rand_int(4, 8), rand_int(4, 8))),
    ("int8_conv2d channels mismatch", _conv, (rand_int(2, 8, 8, 8), CONV_W)),
    ("int8_conv2d kernel larger than the input", _conv, (rand_int(2, 16, 2, 2), CONV_W), dict(padding=[0, 0])),
    ("int8_conv2d stride 0", _conv, (IMG, CONV_W), dict(stride=[0, 1])),
    ("int8_conv2d groups not dividing", _conv, (IMG, rand_int(6, 16, 3, 3)), dict(groups=4)),
    ("int8_conv2d w_packed of another weight", _conv, (IMG, CONV_W),
     dict(w_packed=ck.int8_conv2d_pack_weight(rand_int(8, 16, 1, 1))),
     r"int8_conv2d: w_packed has rows of 6 words, an int8_conv2d_pack_weight for groups=1, N=8 (from w), K=144 "
     r"(from w: C/groups * KH * KW) has rows of 38 (a pack for another K?)"),
    ("int8_conv2d_pack_weight 2-D", OPS.int8_conv2d_pack_weight, (W, 1)),
    ("int4_pack group size 16", OPS.int4_pack, (W4, W4_SCALES, 16, None)),
    ("int4_pack K not a multiple of the group size", OPS.int4_pack, (W4[:, :48], W4_SCALES, 32, None)),
    ("int4_pack scales of the wrong shape", OPS.int4_pack, (W4, W4_SCALES[:, :1], 32, None)),
    ("int4_pack float zero points", OPS.int4_pack, (W4, W4_SCALES, 32, W4_SCALES)),
    ("int4_linear bad activation", OPS.int4_linear, (XF, W4_PACKED, None, "int4")),
    ("int4_linear bf16 activation with fp32 x", OPS.int4_linear, (XF, W4_PACKED, None, "bf16")),
    ("int4_linear K mismatch", OPS.int4_linear, (torch.randn(4, 96), W4_PACKED, None, "int8"), {},
     "int4_linear: w_packed has rows of 10 words, which no int4_pack for K=96 (from x) has (a pack for another K?)"),
    ("int4_linear bias of the wrong size", OPS.int4_linear, (XF, W4_PACKED, torch.zeros(3), "fp32")),
    ("codebook_pack bits 0", OPS.codebook_pack, (IDX, 0)),
    ("codebook_pack float idx", OPS.codebook_pack, (IDX.float(), 4)),
    ("codebook_unpack k 0", OPS.codebook_unpack, (CB_PACKED, 4, 0)),
    ("codebook_linear bits 0", OPS.codebook_linear, (XF, CB_PACKED, CODEBOOK, 0, None)),
    ("codebook_linear int x", OPS.codebook_linear, (X, CB_PACKED, CODEBOOK, 4, None)),
    ("codebook_linear K mismatch", OPS.codebook_linear, (torch.randn(4, 40), CB_PACKED, CODEBOOK, 4, None), {},
     "codebook_linear: packed_idx has rows of 8 words, a codebook_pack for bits=4, K=40 (from x) has rows of 5"),
    ("codebook_linear codebook of 2-bit entries", OPS.codebook_linear, (XF, CB_PACKED, rand_codebook(1, 2), 4, None)),
    ("codebook_linear bias of the wrong size", OPS.codebook_linear, (XF, CB_PACKED, CODEBOOK, 4, torch.zeros(3))),
    ("codebook_linear int8 pack", OPS.codebook_linear, (XF, W_PACKED, CODEBOOK, 4, None), {},
     "codebook_linear: packed_idx has rows of 18 words, a codebook_pack for bits=4, K=64 (from x) has rows of 8"),
    ("codebook_conv2d depth mismatch",
     lambda x, p, c: OPS.codebook_conv2d(x, p, c, 4, None, [3, 3], [1], [1], [1], 1),
     (torch.randn(2, 8, 6, 6), CB_PACKED, CODEBOOK),
     {}, "codebook_conv2d: packed_idx has rows of 8 words, a codebook_pack for bits=4, K=72 (from x and kernel_size: "
         "C/groups * kh * kw) has rows of 9 (a pack for another K?)"),
    ("sparse24_compress K not a multiple of 4", OPS.sparse24_compress, (torch.zeros(8, 6),)),
    ("sparse24_decompress meta of the wrong shape", OPS.sparse24_decompress, (VALUES, META[:, :3])),
    ("sparse24_f32_pack int values", OPS.sparse24_f32_pack, (VALUES_I8, META_I8)),
    ("sparse24_linear K mismatch", OPS.sparse24_linear, (torch.randn(4, 60), S24_PACKED, META, None), {},
     "sparse24_linear: values has 1106 elements, a sparse24_f32_pack for N=32 (from meta), K=60 (from x) has 1042"),
    ("sparse24_linear int x", OPS.sparse24_linear, (X, S24_PACKED, META, None)),
    ("sparse24_linear meta of another weight", OPS.sparse24_linear, (XF, S24_PACKED, META[:16], None), {},
     "sparse24_linear: values has 1106 elements, a sparse24_f32_pack for N=16 (from meta), K=64 (from x) has 562"),
    ("sparse24_linear dense values K mismatch", OPS.sparse24_linear, (torch.randn(4, 60), VALUES, META, None)),
    ("sparse24_linear int8 pack", OPS.sparse24_linear, (XF, S24_I8_PACKED, META_I8, None), {},
     "sparse24_linear: values must be Float, got Int"),
    ("sparse24_linear bias of the wrong size", OPS.sparse24_linear, (XF, VALUES, META, torch.zeros(3))),
    ("sparse24_int8_linear float x", _s24_int8, (XF, S24_I8_PACKED, META_I8)),
    # (a pack for K=60 has the length of one for K=64: only the header, on the CPU, tells them apart)
    ("sparse24_int8_linear K mismatch", _s24_int8, (rand_int(4, 32), S24_I8_PACKED, META_I8), {},
     "sparse24_int8_linear: values has 370 elements, a sparse24_int8_pack for N=32 (from meta), K=32 (from x) has 210"),
    ("sparse24_int8_linear per-channel of the wrong size", _s24_int8, (X, VALUES_I8, META_I8),
     dict(m0=_i32([1 << 30] * 3), shift=_i32([0] * 3))),
    ("sparse24_conv2d kernel larger than the input",
     lambda x: OPS.sparse24_conv2d(x, S24_CONV_VALUES, S24_CONV_META, None, [3, 3], [1, 1], [0, 0], [1, 1]),
     (torch.randn(2, 16, 2, 2),)),
    ("sparse24_conv2d depth mismatch",
     lambda x: OPS.sparse24_conv2d(x, S24_CONV_VALUES, S24_CONV_META, None, [3, 3], [1, 1], [1, 1], [1, 1]),
     (torch.randn(2, 8, 6, 6),)),
    ("fake_quant int x", lambda x: OPS.fake_quant(x, SCALE, ZP, -128, 127, None, None, None), (X,)),
    ("fake_quant qmin >= qmax", lambda x: OPS.fake_quant(x, SCALE, ZP, 5, 5, None, None, None), (XF,)),
    ("fake_quant axis out of range", lambda x: OPS.fake_quant(x, SCALE, ZP, -128, 127, 3, None, None), (XF,)),
    ("fake_quant per-channel scale of the wrong size",
     lambda x: OPS.fake_quant(x, torch.ones(3), torch.zeros(3, dtype=torch.int32), -128, 127, 1, None, None), (XF,)),
    ("fake_quant mask of the wrong shape",
     lambda x: OPS.fake_quant(x, SCALE, ZP, -128, 127, None, torch.ones(3, dtype=torch.bool), None), (XF,)),
    ("fake_quant grad_factor 0", lambda x: OPS.fake_quant(x, SCALE, ZP, -128, 127, None, None, 0.0), (XF,)),
    ("fake_quant_backward grad of the wrong shape",
     lambda g, x: OPS.fake_quant_backward(g, x, SCALE, ZP, -128, 127, None, None, None, True, True),
     (torch.ones(3), XF)),
    ("fake_quant_observe momentum 0",
     lambda x: OPS.fake_quant_observe(x, torch.tensor(float("inf")), torch.tensor(float("-inf")), 0.0, 0, 255, False,
                                      None, None), (XF,)),
    ("fake_quant_observe running_min of the wrong size",
     lambda x: OPS.fake_quant_observe(x, torch.ones(3), torch.ones(3), 0.1, 0, 255, False, None, None), (XF,)),
]


def _case(entry):
    name, fn, args = entry[:3]
    kwargs = entry[3] if len(entry) > 3 else {}
    return pytest.param(fn, args, kwargs, id=name)


def _bad_case(entry):
    name, fn, args = entry[:3]
    kwargs = entry[3] if len(entry) > 3 else {}
    meta_message = entry[4] if len(entry) > 4 else None
    return pytest.param(fn, args, kwargs, meta_message, id=name)


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    return value


def _cpu_message(fn, args, kwargs) -> str:
    with pytest.raises(RuntimeError) as info:
        fn(*args, **kwargs)
    return str(info.value).splitlines()[0]


@pytest.mark.parametrize("fn,args,kwargs,meta_message", [_bad_case(e) for e in BAD])
def test_meta_tensors_refuse_what_the_cpu_refuses(fn, args, kwargs, meta_message):
    message = meta_message or _cpu_message(fn, args, kwargs)
    meta_args, meta_kwargs = _to(args, "meta"), _to(kwargs, "meta")
    assert all(a.is_meta for a in (*meta_args, *meta_kwargs.values()) if isinstance(a, torch.Tensor))
    with pytest.raises(RuntimeError, match=re.escape(message)):
        fn(*meta_args, **meta_kwargs)


@pytest.mark.parametrize("fn,args,kwargs,meta_message", [_bad_case(e) for e in BAD])
def test_fake_tensors_refuse_what_the_cpu_refuses(fn, args, kwargs, meta_message):
    message = meta_message or _cpu_message(fn, args, kwargs)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake_args = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
    fake_kwargs = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    with mode, pytest.raises(RuntimeError, match=re.escape(message)):
        fn(*fake_args, **fake_kwargs)


def test_compiled_int8_gemm_refuses_a_k_mismatch_with_the_kernels_words():
    f = torch.compile(lambda a, b: ck.int8_gemm(a, b), fullgraph=True, dynamic=True)
    assert torch.equal(f(X, W_PACKED), ck.int8_gemm(X, W_PACKED))
    with pytest.raises(Exception, match=r"int8_gemm: w has rows of 18 words, an int8_pack_weight for K=60 \(from x\) "
                                        r"has rows of 17 \(a pack for another K\?\)"):
        f(rand_int(4, 60), W_PACKED)
    with pytest.raises(Exception, match="int8_gemm: x must be int8 or uint8, got Float"):
        f(XF, W_PACKED)


def test_compiled_codebook_linear_refuses_bits_0():
    f = torch.compile(lambda x, p, c: ck.codebook_linear(x, p, c, 0), fullgraph=True)
    with pytest.raises(Exception, match=r"codebook_linear: bits must be in \[1, 8\], got 0"):
        f(XF, CB_PACKED, CODEBOOK)


# (id, call, args): good calls whose meta output must match the CPU output's metadata.
GOOD = [
    ("int8_gemm packed", OPS.int8_gemm, (X, W_PACKED)),
    ("int8_gemm raw", OPS.int8_gemm, (XU, W)),
    ("int8_pack_weight", OPS.int8_pack_weight, (W,)),
    ("int8_linear", _linear, (X, W_PACKED)),
    ("int8_linear int32 out", _linear, (X, W), dict(out_dtype=torch.int32, qmin=-(2**31), qmax=2**31 - 1)),
    ("int8_linear_float", lambda x, w: OPS.int8_linear_float(x, 0, w, torch.ones(4), torch.ones(32), None), (X, W)),
    ("quantize_rows", OPS.quantize_rows, (XF, 127)),
    ("requantize", lambda acc: OPS.requantize(acc, M0, SHIFT, 0, 0, 255, torch.uint8, "single"),
     (torch.zeros(3, 5, 8, dtype=torch.int32),)),
    ("quantize_multiplier", OPS.quantize_multiplier, (torch.tensor([0.25, 0.5], dtype=torch.float64),)),
    ("int8_add channels_last",
     lambda a, b: OPS.int8_add(a, 0, M0, SHIFT, b, 0, M0, SHIFT, M0, SHIFT, 0, -128, 127, torch.int8, 20),
     (IMG.to(memory_format=torch.channels_last), IMG.to(memory_format=torch.channels_last))),
    ("int8_conv2d", _conv, (IMG, CONV_W)),
    ("int8_conv2d strided packed", _conv, (IMG, CONV_W),
     dict(stride=[2, 2], w_packed=ck.int8_conv2d_pack_weight(CONV_W))),
    ("int8_conv2d depthwise", _conv, (IMG, rand_int(16, 1, 3, 3)), dict(groups=16)),
    ("int8_conv2d_pack_weight", OPS.int8_conv2d_pack_weight, (rand_int(8, 4, 3, 3), 2)),
    ("int4_pack", OPS.int4_pack, (W4, W4_SCALES, 32, None)),
    ("int4_pack asymmetric", OPS.int4_pack, (W4, W4_SCALES[:, :1], 64, torch.zeros(32, 1, dtype=torch.int8))),
    ("int4_linear w4a8", OPS.int4_linear, (XF, W4_PACKED, torch.zeros(32), "int8")),
    ("int4_linear w4a16 bf16", OPS.int4_linear, (XF.bfloat16(), W4_PACKED, None, "bf16")),
    ("codebook_pack", OPS.codebook_pack, (IDX, 4)),
    ("codebook_unpack", OPS.codebook_unpack, (CB_PACKED, 4, 64)),
    ("codebook_linear", OPS.codebook_linear, (XF, CB_PACKED, CODEBOOK, 4, torch.zeros(32))),
    ("codebook_conv2d",
     lambda x, p, c: OPS.codebook_conv2d(x, p, c, 4, None, [3, 3], [2], [1], [1], 1),
     (torch.randn(2, 4, 7, 7), ck.codebook_pack(rand_idx(32, 36, 4), 4), CODEBOOK)),
    ("sparse24_compress", OPS.sparse24_compress, (random_24(8, 16),)),
    ("sparse24_decompress", OPS.sparse24_decompress, (VALUES, META)),
    ("sparse24_f32_pack", OPS.sparse24_f32_pack, (VALUES, META)),
    ("sparse24_bf16_pack", OPS.sparse24_bf16_pack, (VALUES.bfloat16(), META)),
    ("sparse24_int8_pack", OPS.sparse24_int8_pack, (VALUES_I8, META_I8)),
    ("sparse24_linear fp32", OPS.sparse24_linear, (XF, S24_PACKED, META, torch.zeros(32))),
    ("sparse24_linear bf16", OPS.sparse24_linear, (XF.bfloat16(), VALUES.bfloat16(), META, None)),
    ("sparse24_int8_linear", _s24_int8, (X, S24_I8_PACKED, META_I8)),
    ("sparse24_conv2d",
     lambda x: OPS.sparse24_conv2d(x, S24_CONV_VALUES, S24_CONV_META, None, [3, 3], [1, 1], [1, 1], [1, 1]),
     (torch.randn(2, 16, 6, 6),)),
    ("fake_quant per channel",
     lambda x: OPS.fake_quant(x, torch.ones(64), torch.zeros(64, dtype=torch.int32), -128, 127, 1, None, None), (XF,)),
    ("fake_quant_backward",
     lambda g, x, s, z: OPS.fake_quant_backward(g, x, s, z, -128, 127, None, None, None, True, True),
     (torch.ones(4, 64), XF, SCALE, ZP.float())),
    ("fake_quant_observe",
     lambda x: OPS.fake_quant_observe(x, torch.tensor(float("inf")), torch.tensor(float("-inf")), 0.1, 0, 255, False,
                                      None, None), (XF,)),
]


def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


@pytest.mark.parametrize("fn,args,kwargs", [_case(e) for e in GOOD])
def test_meta_outputs_match_the_cpu_outputs(fn, args, kwargs):
    real = _flat(fn(*args, **kwargs))
    fake = _flat(fn(*_to(args, "meta"), **_to(kwargs, "meta")))
    assert len(real) == len(fake)
    for r, f in zip(real, fake):
        assert f.device.type == "meta"
        assert (f.shape, f.dtype, f.stride()) == (r.shape, r.dtype, r.stride())


def test_sparse24_int8_conv2d_meta_matches_the_cpu():
    values, meta = ck.sparse24_compress(random_24(8, 16 * 9).mul(10).round().to(torch.int8))
    packed = ck.sparse24_int8_pack(values, meta)

    def call(x, v, m):
        return OPS.sparse24_int8_conv2d(x, 0, v, m, None, M0, SHIFT, 0, -128, 127, torch.int8, [3, 3], [1, 1], [1, 1],
                                        [1, 1], "double")

    real = call(IMG, packed, meta)
    fake = call(IMG.to("meta"), packed.to("meta"), meta.to("meta"))
    assert (fake.shape, fake.dtype, fake.stride()) == (real.shape, real.dtype, real.stride())
    x_other_depth = rand_int(2, 8, 8, 8)
    with pytest.raises(RuntimeError, match=r"sparse24_int8_conv2d: K mismatch: the conv \(kh \* kw \* in_channels\) "
                                           r"has K=72 but the weight holds K=144"):
        call(x_other_depth, packed, meta)
    with pytest.raises(RuntimeError, match=r"sparse24_int8_conv2d: values has 386 elements, a sparse24_int8_pack "
                                           r"for N=8 \(from meta\), K=72 \(from the conv \(kh \* kw \* "
                                           r"in_channels\)\) has "):
        call(x_other_depth.to("meta"), packed.to("meta"), meta.to("meta"))
