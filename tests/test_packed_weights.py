"""Packed weights know what they are: every pack op writes the header of
csrc/include/ck/packed_header.h and every op that reads a pack validates it. A slice, truncation,
partial or corrupted copy, another family's pack, a pack for another shape, an old header-less pack
or a wrong view must be refused with a message that says what was passed and what was expected;
a valid pack gives exactly the reference result."""

from __future__ import annotations

import copy
import io
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compress_kernels as ck
from compress_kernels import ops
from compress_kernels import reference as ref
from compress_kernels.testing import run_on_every_isa

OPS = torch.ops.compress_kernels
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAGIC = 0x4B504B43
FAMILIES = ops.PACKED_FAMILIES
ARTICLE = {f: ("an" if f.startswith(("int8", "int4")) else "a") for f in FAMILIES}


@dataclass
class Case:
    family: str
    op: str           # the op that reads the pack, as its messages name it
    arg: str          # the pack's argument name in those messages
    pack: torch.Tensor
    run: Callable[[torch.Tensor], torch.Tensor]  # the op on a (possibly damaged) pack
    want: torch.Tensor                           # the exact result of a valid pack
    n: int
    k: int
    param: int


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sparse_weight(n: int, k: int, dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    """A 2:4 sparse [n, k] weight: two random non-zeros kept in every group of four."""
    if dtype == torch.int8:
        w = torch.randint(-127, 128, (n, k), generator=g).to(torch.int8)
    else:
        w = torch.randn(n, k, generator=g).to(dtype)
    keep = torch.rand(n, k // 4, 4, generator=g).argsort(-1) < 2
    return torch.where(keep.reshape(n, k), w, torch.zeros((), dtype=dtype))


def make_case(family: str, n: int, k: int, param: int = 0, seed: int = 0) -> Case:
    g = _gen(seed)
    m = 3
    if family == "int8_pack_weight":
        w = torch.randint(-127, 128, (n, k), generator=g).to(torch.int8)
        x = torch.randint(-128, 128, (m, k), generator=g).to(torch.int8)
        return Case(family, "int8_gemm", "w", ck.int8_pack_weight(w), lambda p: ck.int8_gemm(x, p),
                    ref.int8_gemm(x, w), n, k, 0)
    if family == "int8_conv2d_pack_weight":
        groups = param
        kh = kw = 1
        cg = k  # depth = C/groups * KH * KW with a 1x1 kernel
        w = torch.randint(-127, 128, (n, cg, kh, kw), generator=g).to(torch.int8)
        x = torch.randint(-128, 128, (2, cg * groups, 3, 3), generator=g).to(torch.int8)
        m0, shift = torch.tensor([1 << 30], dtype=torch.int32), torch.tensor([1], dtype=torch.int32)

        def run(p, w=w, x=x):
            return ck.int8_conv2d(x, 0, w, None, m0, shift, 0, INT32_MIN, INT32_MAX, torch.int32, groups=groups,
                                  w_packed=p)

        want = ref.int8_conv2d(x, 0, w, None, m0, shift, 0, INT32_MIN, INT32_MAX, torch.int32, groups=groups)
        return Case(family, "int8_conv2d", "w_packed", ck.int8_conv2d_pack_weight(w, groups), run, want, n, k, groups)
    if family == "codebook_pack":
        bits = param
        idx = torch.randint(0, 1 << bits, (n, k), generator=g)
        x = torch.randn(m, k, generator=g)
        cb = torch.randn(1, 1 << bits, generator=g)
        packed = ck.codebook_pack(idx, bits)
        # The fp32 kernel is deterministic: the result of the untouched pack is the exact one (the
        # kernel itself is checked against reference.codebook_linear in test_codebook.py).
        want = ck.codebook_linear(x, packed.clone(), cb, bits)
        return Case(family, "codebook_linear", "packed_idx", packed, lambda p: ck.codebook_linear(x, p, cb, bits),
                    want, n, k, bits)
    if family == "int4_pack":
        group_size = param or 32
        k = -(-k // group_size) * group_size  # whole groups
        w = torch.randint(-8, 8, (n, k), generator=g).to(torch.int8)
        scales = torch.rand(n, k // group_size, generator=g) + 0.5
        x = torch.randn(m, k, generator=g)
        want = ref.int4_linear_w4a8(x, w, scales, None, group_size)
        return Case(family, "int4_linear", "w_packed", ck.int4_pack(w, scales, group_size),
                    lambda p: ck.int4_linear(x, p), want, n, k, group_size)
    if family == "sparse24_f32_pack":
        values, meta = ck.sparse24_compress(_sparse_weight(n, k, torch.float32, g))
        x = torch.randn(m, k, generator=g)
        want = ck.sparse24_linear(x, values, meta)  # the unpacked path: same bits (test_sparse24.py)
        return Case(family, "sparse24_linear", "values", ck.sparse24_f32_pack(values, meta),
                    lambda p: ck.sparse24_linear(x, p, meta), want, n, k, 0)
    if family == "sparse24_bf16_pack":
        values, meta = ck.sparse24_compress(_sparse_weight(n, k, torch.bfloat16, g))
        x = torch.randn(m, k, generator=g).to(torch.bfloat16)
        want = ref.sparse24_bf16_linear(x, values, meta)
        return Case(family, "sparse24_linear", "values", ck.sparse24_bf16_pack(values, meta),
                    lambda p: ck.sparse24_linear(x, p, meta), want, n, k, 0)
    assert family == "sparse24_int8_pack"
    values, meta = ck.sparse24_compress(_sparse_weight(n, k, torch.int8, g))
    x = torch.randint(-128, 128, (m, k), generator=g).to(torch.int8)
    one, zero = torch.tensor([1 << 30], dtype=torch.int32), torch.tensor([1], dtype=torch.int32)
    want = ref.sparse24_int8_linear(x, 0, values, meta, None, one, zero, 0, INT32_MIN, INT32_MAX, torch.int32)

    def run(p):
        return ck.sparse24_int8_linear(x, 0, p, meta, None, one, zero, 0, INT32_MIN, INT32_MAX, torch.int32)

    return Case(family, "sparse24_int8_linear", "values", ck.sparse24_int8_pack(values, meta), run, want, n, k, 0)


DEFAULT_PARAM = {"int8_conv2d_pack_weight": 2, "codebook_pack": 3}


def default_case(family: str, seed: int = 0) -> Case:
    return make_case(family, 32, 24, DEFAULT_PARAM.get(family, 0), seed)


def header(pack: torch.Tensor) -> list[int]:
    """The 8 header words of a pack, as int32."""
    raw = pack.detach().contiguous().view(-1).view(torch.uint8)[:32].numpy().tobytes()
    return list(struct.unpack("<8i", raw))


def fnv1a(words: list[int]) -> int:
    """The check value of ck/packed_header.h: FNV-1a over the little-endian bytes of words 0..6."""
    h = 2166136261
    for byte in struct.pack("<7i", *words[:7]):
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return struct.unpack("<i", struct.pack("<I", h))[0]


def with_header(pack: torch.Tensor, words: list[int]) -> torch.Tensor:
    """A copy of pack with its first 8 header words replaced."""
    out = pack.clone()
    out.view(-1).view(torch.uint8)[:32] = torch.frombuffer(bytearray(struct.pack("<8i", *words)), dtype=torch.uint8)
    return out


def refused(case: Case, pack, pattern: str):
    with pytest.raises(RuntimeError, match=pattern):
        case.run(pack)


def no_header(case: Case) -> str:
    return (rf"{case.op}: {case.arg} is not a packed weight of any family \(no header; packed by an older "
            rf"layout version, sliced, or not packed at all\): repack it with {case.family}")


# ---------------------------------------------------------------- the header itself


@pytest.mark.parametrize("family", FAMILIES)
def test_valid_pack_is_exact_on_every_isa(family):
    case = default_case(family)
    assert torch.equal(run_on_every_isa(case.run, case.pack), case.want)


@pytest.mark.parametrize("family", FAMILIES)
def test_header_words(family):
    case = default_case(family)
    words = header(case.pack)
    assert words[0] == MAGIC and words[1] == FAMILIES.index(family) + 1 and words[2] == 1
    assert words[3:6] == [case.n, case.k, case.param]
    assert words[6] == ops.packed_payload(case.pack, family).numel()
    assert words[7] == fnv1a(words)
    assert tuple(case.pack.shape) == ops.packed_shape(family, case.n, case.k, case.param)
    if case.pack.dim() == 2:
        rows = case.pack.shape[0] - case.n
        assert rows * case.pack.shape[1] % 16 == 0  # the payload starts 64-byte aligned
        assert ops.packed_n(family, case.pack.shape) == case.n
        assert not case.pack.view(-1)[8:rows * case.pack.shape[1]].any()  # the rest of the header rows is zero
    else:
        assert ops.packed_payload(case.pack, family).data_ptr() - case.pack.data_ptr() == 64


def test_payload_is_the_unchanged_layout():
    idx = torch.randint(0, 8, (20, 37), generator=_gen(1))
    packed = ck.codebook_pack(idx, 3)
    assert torch.equal(ops.packed_payload(packed, "codebook_pack"), ref.codebook_pack(idx, 3))
    w = torch.randint(-127, 128, (20, 9), generator=_gen(2)).to(torch.int8)
    trailer = ops.packed_payload(ck.int8_pack_weight(w), "int8_pack_weight").flatten()[-40:]
    assert torch.equal(trailer[:20], w.int().sum(1)) and torch.equal(trailer[20:], torch.full((20,), 9))


# ---------------------------------------------------------------- slices, truncation, copies


@pytest.mark.parametrize("family", FAMILIES)
def test_row_slices_are_refused(family):
    case = default_case(family)
    p = case.pack
    refused(case, p[1:], rf"{case.op}: {case.arg} is a view at storage offset \d+ into a larger tensor "
                         rf"\(a slice of a packed weight\?\): pass the whole tensor {family} returned")
    contradicts = rf"{case.op}: {case.arg} \(.* of shape \[.*\]\) contradicts its header: {ARTICLE[family]} {family} "
    refused(case, p[:-1], contradicts)
    refused(case, p[1:].clone(), no_header(case))  # the header is gone: the first payload word leads


@pytest.mark.parametrize("family", FAMILIES)
def test_column_slices_and_non_contiguous_packs_are_refused(family):
    case = default_case(family)
    p = case.pack
    pattern = rf"{case.op}: (packed )?{case.arg} must be contiguous \(as {family} returns it\)"
    if p.dim() == 2:
        refused(case, p[:, :-1], pattern)
        refused(case, p.t().contiguous().t(), pattern)  # same values, column-major
        refused(case, p[:, 1:].contiguous(), no_header(case))
    else:
        strided = torch.empty(2 * p.numel(), dtype=p.dtype)[::2]
        strided.copy_(p)
        refused(case, strided, pattern)
        refused(case, p[1::2].contiguous(), no_header(case))


@pytest.mark.parametrize("family", FAMILIES)
def test_truncated_copies_are_refused(family):
    case = default_case(family)
    p = case.pack
    refused(case, p[:-1].clone(), rf"contradicts its header: {ARTICLE[family]} {family} \(.*\) is .* of shape")
    tiny = p.view(-1)[:3].clone() if p.dim() == 1 else p.view(-1)[:3].clone().view(1, 3)
    refused(case, tiny, no_header(case) + r" \(it holds \d+ bytes, fewer than the 32-byte header\)")


@pytest.mark.parametrize("family", FAMILIES)
def test_old_header_less_pack_is_refused(family):
    case = default_case(family)
    old = ops.packed_payload(case.pack, family).clone()  # what the pack op returned before headers
    refused(case, old, no_header(case))


# ---------------------------------------------------------------- another family, another shape


def _dtype_refusal(case: Case, other: torch.Tensor) -> str | None:
    """The message of an op whose argument routing refuses `other` by dtype / rank before reading a
    header; None when the op reads the header."""
    if case.family == "int8_pack_weight" and other.dtype != torch.int32:
        return r"int8_gemm: w must be int8 \[N, K\] or a packed int32 weight from int8_pack_weight, got"
    if case.family == "int8_conv2d_pack_weight" and other.dtype != torch.int32:
        return r"int8_conv2d: w_packed must be Int, got"
    if case.family == "sparse24_f32_pack" and other.dim() != 1:
        return r"sparse24_linear: values must be float32 \[N, K/2\] or sparse24_f32_pack's packed tensor, got Int"
    if case.family == "sparse24_bf16_pack" and other.dim() != 1:
        return r"sparse24_linear: values must be bf16 \[N, K/2\] or sparse24_bf16_pack's packed tensor \(with bf16 x\)"
    if case.family == "sparse24_int8_pack" and other.dim() != 1:
        return r"sparse24_int8_linear: values must be int8 \[N, K/2\] or an int32 packed weight from sparse24_int8_pack"
    return None


@pytest.mark.parametrize("other_family", FAMILIES)
@pytest.mark.parametrize("family", FAMILIES)
def test_another_familys_pack_is_refused(family, other_family):
    if family == other_family:
        return
    case = default_case(family)
    other = default_case(other_family, seed=1)
    pattern = _dtype_refusal(case, other.pack)
    if pattern is None:
        params = {"codebook_pack": rf"bits={other.param}, ", "int8_conv2d_pack_weight": rf"groups={other.param}, ",
                  "int4_pack": rf"group_size={other.param}, symmetric, "}
        pattern = (rf"{case.op}: {case.arg} is {ARTICLE[other_family]} {other_family} "
                   rf"\({params.get(other_family, '')}N={other.n}, K={other.k}\), expected "
                   rf"{ARTICLE[family]} {family}( for |$)")
    refused(case, other.pack, pattern)


def test_int8_pack_for_another_k_with_the_same_word_count():
    case = make_case("int8_pack_weight", 16, 64)
    other = ck.int8_pack_weight(torch.ones(16, 63, dtype=torch.int8))  # ceil(63 / 4) = ceil(64 / 4)
    assert other.shape == case.pack.shape
    refused(case, other, r"int8_gemm: w is an int8_pack_weight \(N=16, K=63\), expected an int8_pack_weight for "
                         r"K=64 \(from x\)")
    x = torch.zeros(2, 64, dtype=torch.int8)
    with pytest.raises(RuntimeError, match=r"int8_linear: w is an int8_pack_weight \(N=16, K=63\), expected"):
        ck.int8_linear(x, 0, other, None, 1 << 30, 1)
    with pytest.raises(RuntimeError, match=r"int8_linear_float: w is an int8_pack_weight \(N=16, K=63\)"):
        ck.int8_linear_float(x, 0, other, torch.ones(1), torch.ones(1))


def test_codebook_pack_for_another_k_or_bits():
    case = make_case("codebook_pack", 16, 40, 4)
    other_k = ck.codebook_pack(torch.zeros(16, 33, dtype=torch.long), 4)  # 5 words per row like K=40
    assert other_k.shape == case.pack.shape
    refused(case, other_k, r"codebook_linear: packed_idx is a codebook_pack \(bits=4, N=16, K=33\), expected a "
                           r"codebook_pack for bits=4, K=40 \(from x\)")
    other_bits = ck.codebook_pack(torch.zeros(16, 40, dtype=torch.long), 3)
    refused(case, other_bits, r"codebook_linear: packed_idx is a codebook_pack \(bits=3, N=16, K=40\), expected a "
                              r"codebook_pack for bits=4, K=40")
    with pytest.raises(RuntimeError, match=r"codebook_unpack: packed_idx is a codebook_pack \(bits=4, N=16, K=40\), "
                                           r"expected a codebook_pack for bits=4, K=39 \(from the k argument\)"):
        ck.codebook_unpack(case.pack, 4, 39)
    with pytest.raises(RuntimeError, match=r"codebook_unpack: packed_idx is a codebook_pack \(bits=4, N=16, K=40\), "
                                           r"expected a codebook_pack for bits=2, K=40"):
        ck.codebook_unpack(case.pack, 2, 40)


def test_codebook_conv2d_checks_the_depth_from_the_header():
    packed = ck.codebook_pack(torch.zeros(16, 3 * 3 * 3, dtype=torch.long), 2)
    x, cb = torch.zeros(1, 4, 5, 5), torch.zeros(1, 4)
    with pytest.raises(RuntimeError, match=r"codebook_conv2d: packed_idx is a codebook_pack \(bits=2, N=16, K=27\), "
                                           r"expected a codebook_pack for bits=2, K=36 \(from x and kernel_size"):
        ck.codebook_conv2d(x, packed, cb, 2, None, 3)
    with pytest.raises(RuntimeError, match=r"codebook_conv2d: packed_idx is not a packed weight of any family"):
        ck.codebook_conv2d(x[:, :3], ops.packed_payload(packed, "codebook_pack").clone(), cb, 2, None, 3)
    assert ck.codebook_conv2d(x[:, :3], packed, cb, 2, None, 3).shape == (1, 16, 3, 3)


@pytest.mark.parametrize("family", ["sparse24_f32_pack", "sparse24_bf16_pack", "sparse24_int8_pack"])
def test_sparse24_pack_for_another_n_or_k(family):
    case = make_case(family, 32, 24)
    other_n = make_case(family, 16, 24, seed=3).pack
    refused(case, other_n, rf"{case.op}: meta of shape \[32, 3\] does not belong to the packed weight \(N=16, K=24\)")
    other_k = make_case(family, 32, 16, seed=3).pack
    refused(case, other_k, rf"{case.op}: meta of shape \[32, 3\] does not belong to the packed weight \(N=32, K=16\)")
    same_meta_other_k = make_case(family, 32, 20, seed=3).pack  # meta of K=20 and K=24 both have 3 columns
    refused(case, same_meta_other_k, rf"{case.op}: K mismatch: x has K=24 but the weight holds K=20")


def test_int8_conv2d_w_packed_for_another_weight():
    case = make_case("int8_conv2d_pack_weight", 32, 8, 2)
    refused(case, make_case("int8_conv2d_pack_weight", 32, 8, 4).pack,
            r"int8_conv2d: w_packed is an int8_conv2d_pack_weight \(groups=4, N=32, K=8\), expected an "
            r"int8_conv2d_pack_weight for groups=2, N=32 \(from w\), K=8 \(from w: C/groups \* KH \* KW\)")
    refused(case, make_case("int8_conv2d_pack_weight", 16, 8, 2).pack,
            r"int8_conv2d_pack_weight \(groups=2, N=16, K=8\), expected .* N=32 \(from w\)")
    refused(case, ck.int8_pack_weight(torch.ones(32, 8, dtype=torch.int8)),
            r"int8_conv2d: w_packed is an int8_pack_weight \(N=32, K=8\), expected an int8_conv2d_pack_weight")


def test_int8_conv2d_depthwise_validates_w_packed_too():
    w = torch.ones(4, 1, 3, 3, dtype=torch.int8)
    x = torch.zeros(1, 4, 5, 5, dtype=torch.int8)
    good = ck.int8_conv2d_pack_weight(w, 4)
    args = (x, 0, w, None, 1 << 30, 1, 0, -128, 127, torch.int8)
    assert torch.equal(ck.int8_conv2d(*args, groups=4, w_packed=good), ck.int8_conv2d(*args, groups=4))
    with pytest.raises(RuntimeError, match=r"int8_conv2d: w_packed is an int8_pack_weight \(N=4, K=9\)"):
        ck.int8_conv2d(*args, groups=4, w_packed=ck.int8_pack_weight(w.view(4, 9)))


# ---------------------------------------------------------------- corrupted headers


@pytest.mark.parametrize("word", range(8))
@pytest.mark.parametrize("family", FAMILIES)
def test_a_flipped_header_bit_is_refused(family, word):
    case = default_case(family)
    for bit in (0, 7, 16, 31):
        words = header(case.pack)
        words[word] ^= -(1 << 31) if bit == 31 else 1 << bit
        damaged = with_header(case.pack, words)
        pattern = no_header(case) if word == 0 else rf"{case.op}: the header of {case.arg} is corrupted \(check value"
        refused(case, damaged, pattern)


@pytest.mark.parametrize("family", FAMILIES)
def test_consistent_but_wrong_headers_are_refused(family):
    """Headers with a valid check value that still do not describe the tensor (a forged or future
    header): every check behind the check value reads them."""
    case = default_case(family)

    def forged(index, value):
        words = header(case.pack)
        words[index] = value
        words[7] = fnv1a(words)
        return with_header(case.pack, words)

    refused(case, forged(2, 2), rf"{case.op}: {case.arg} was packed by layout version 2; this build reads "
                                rf"version 1: repack it with {family}")
    refused(case, forged(1, 9), rf"{case.op}: {case.arg} has a header of unknown family 9")
    refused(case, forged(3, -1), rf"{case.op}: the header of {case.arg} describes an impossible {family} \(N=-1")
    refused(case, forged(6, header(case.pack)[6] + 1),
            rf"{case.op}: the header of {case.arg} records a payload of \d+ elements, {ARTICLE[family]} {family}")


@pytest.mark.parametrize("family", ["sparse24_f32_pack", "sparse24_bf16_pack", "sparse24_int8_pack"])
def test_sparse24_trailer_contradicting_the_header_is_refused(family):
    case = default_case(family)
    damaged = case.pack.clone()
    words = damaged.view(torch.int32)
    words[-2] += 4  # the K of the payload's trailer
    refused(case, damaged, rf"{case.op}: the trailer of the {family} payload \(N=0, K=0\) contradicts its header "
                           rf"\(N=32, K=24\)")


# ---------------------------------------------------------------- wrong dtypes


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_dtype_views_are_refused(family):
    case = default_case(family)
    p = case.pack
    other_dtype = {torch.int32: torch.float32, torch.float32: torch.int32, torch.bfloat16: torch.float16}[p.dtype]
    view = p.view(other_dtype)  # the same bytes: a valid header of the right family, the wrong dtype
    names = {torch.int32: "Int", torch.float32: "Float", torch.bfloat16: "BFloat16", torch.float16: "Half"}
    pattern = _dtype_refusal(case, view) or (
        rf"{case.op}: {case.arg} must be {names[p.dtype]}, got {names[other_dtype]}")
    refused(case, view, pattern)
    converted = p.double()  # a dtype no family packs into: refused before any header is read
    refused(case, converted,
            _dtype_refusal(case, converted) or rf"{case.op}: {case.arg} must be {names[p.dtype]}, got Double")


# ---------------------------------------------------------------- property: refused or exact


def _mutate(pack: torch.Tensor, kind: str, a: int, b: int, word: int, bit: int) -> torch.Tensor:
    flat = pack.view(-1)
    if kind == "row_slice":
        lo, hi = sorted((a % (pack.shape[0] + 1), b % (pack.shape[0] + 1)))
        return pack[lo:hi]
    if kind == "row_slice_copy":
        lo, hi = sorted((a % (pack.shape[0] + 1), b % (pack.shape[0] + 1)))
        return pack[lo:hi].clone()
    if kind == "truncate":
        return flat[: a % (flat.numel() + 1)].clone() if pack.dim() == 1 else pack[: a % (pack.shape[0] + 1)].clone()
    if kind == "column_slice" and pack.dim() == 2:
        lo, hi = sorted((a % (pack.shape[1] + 1), b % (pack.shape[1] + 1)))
        return pack[:, lo:hi].clone()
    words = header(pack)
    words[word] ^= -(1 << 31) if bit == 31 else 1 << bit
    return with_header(pack, words)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=st.sampled_from(FAMILIES), n=st.integers(1, 3).map(lambda v: 16 * v), k=st.integers(1, 6),
       kind=st.sampled_from(["row_slice", "row_slice_copy", "truncate", "column_slice", "header_bit"]),
       a=st.integers(0, 10**6), b=st.integers(0, 10**6), word=st.integers(0, 7), bit=st.integers(0, 31),
       param=st.integers(1, 8), seed=st.integers(0, 3))
def test_property_damaged_packs_are_refused_or_exact(family, n, k, kind, a, b, word, bit, param, seed):
    k = 4 * k  # 2:4 needs K % 4 == 0; the other families take it too
    if family == "int8_conv2d_pack_weight":
        param = 1 + param % 2
    elif family != "codebook_pack":
        param = 0
    case = make_case(family, n, k, param, seed)
    damaged = _mutate(case.pack, kind, a, b, word, bit)
    try:
        got = case.run(damaged)
    except RuntimeError as err:
        assert re.match(rf"{case.op}: ", str(err)), str(err)
        return
    assert torch.equal(got, case.want), f"{kind} of a {family} gave a wrong result"


# ---------------------------------------------------------------- serialization, copies, modules


@pytest.mark.parametrize("family", FAMILIES)
def test_packs_survive_save_load_and_deepcopy(family):
    case = default_case(family)
    buffer = io.BytesIO()
    torch.save({"pack": case.pack}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["pack"]
    assert torch.equal(case.run(loaded), case.want)
    assert torch.equal(case.run(copy.deepcopy(case.pack)), case.want)


def test_codebook_module_refuses_an_old_state_dict_at_load():
    layer = ck.CodebookLinear.from_float(torch.nn.Linear(40, 32), bits=4)
    state = layer.state_dict()
    old = dict(state, packed_idx=ops.packed_payload(state["packed_idx"], "codebook_pack").clone())
    fresh = ck.CodebookLinear(40, 32, bits=4)
    with pytest.raises(RuntimeError, match=r"CodebookLinear.load_state_dict: packed_idx has shape \[32, 5\], expected "
                                           r"\[48, 5\] \(codebook_pack of 32 x 40 4-bit indices with its header "
                                           r"rows\): it was saved by an older packed layout without a header"):
        fresh.load_state_dict(old)
    with pytest.raises(RuntimeError, match=r"packed_idx has shape \[46, 5\], expected \[48, 5\] .*: it does not "
                                           r"belong to this layer"):
        fresh.load_state_dict(dict(state, packed_idx=state["packed_idx"][:-2]))
    fresh.load_state_dict(state)
    x = torch.randn(4, 40)
    assert torch.equal(fresh(x), layer(x))


def test_codebook_module_refuses_a_foreign_pack_at_the_first_call():
    layer = ck.CodebookLinear.from_float(torch.nn.Linear(40, 32), bits=4)
    state = layer.state_dict()
    state["packed_idx"] = with_header(state["packed_idx"], [0] * 8)
    fresh = ck.CodebookLinear(40, 32, bits=4)
    fresh.load_state_dict(state)  # right shape: the header is read where the op reads the pack
    with pytest.raises(RuntimeError, match=r"codebook_linear: packed_idx is not a packed weight of any family"):
        fresh(torch.randn(2, 40))
    with pytest.raises(RuntimeError, match=r"codebook_linear: packed_idx is not a packed weight of any family"):
        ck.CodebookLinear(40, 32, bits=4)(torch.randn(2, 40))  # never clustered: no header yet


# ---------------------------------------------------------------- the size ops and fake kernels


def test_packed_shape_and_packed_n_ops():
    # header rows = 16 / gcd(words per row, 16); 1-D packs: a 64-byte header
    assert ops.packed_shape("int8_pack_weight", 20, 8) == (4 + 20, 4)
    assert ops.packed_shape("codebook_pack", 5, 64, 4) == (2 + 5, 8)
    assert ops.packed_shape("codebook_pack", 5, 128, 4) == (1 + 5, 16)
    assert ops.packed_shape("int8_conv2d_pack_weight", 6, 9, 3) == (16 + 6, 5)
    assert ops.packed_shape("sparse24_int8_pack", 16, 8) == (16 + 20 + 16 + 2,)
    assert ops.packed_shape("sparse24_bf16_pack", 16, 8) == (32 + 72 + 4,)
    assert ops.packed_shape("sparse24_f32_pack", 8, 8) == (16 + 8 * 4 + 2 * 1 + 2,)  # values, meta, K and N
    assert ops.packed_n("codebook_pack", [21, 16]) == 20
    with pytest.raises(RuntimeError, match=r"packed_shape: family must be the name of a pack op .*, got \"int8\""):
        OPS.packed_shape("int8", 1, 1, 0)
    with pytest.raises(RuntimeError, match=r"packed_shape: codebook_pack needs N > 0 and K > 0, got N=0, K=4"):
        OPS.packed_shape("codebook_pack", 0, 4, 2)
    with pytest.raises(RuntimeError, match=r"packed_shape: codebook_pack needs bits in \[1, 8\], got 9"):
        OPS.packed_shape("codebook_pack", 1, 4, 9)
    with pytest.raises(RuntimeError, match=r"packed_shape: int8_conv2d_pack_weight needs groups >= 1 dividing N=6, "
                                           r"got groups=4"):
        OPS.packed_shape("int8_conv2d_pack_weight", 6, 4, 4)
    with pytest.raises(RuntimeError, match=r"packed_shape: int8_pack_weight has no family parameter \(pass 0\), got 2"):
        OPS.packed_shape("int8_pack_weight", 6, 4, 2)
    with pytest.raises(RuntimeError, match=r"packed_shape: sparse24_f32_pack needs K a multiple of 4 \(2:4 groups\), "
                                           r"got K=6"):
        OPS.packed_shape("sparse24_f32_pack", 6, 6, 0)
    with pytest.raises(RuntimeError,
                       match=r"packed_shape: int8_pack_weight records N and K as int32, got N=4294967296"):
        OPS.packed_shape("int8_pack_weight", 2**32, 4, 0)
    with pytest.raises(RuntimeError, match=r"packed_shape: the int8_pack_weight payload of N=1048576, K=16384 would "
                                           r"hold \d+ elements, more than the 2\^31 - 1 its header records"):
        OPS.packed_shape("int8_pack_weight", 2**20, 2**14, 0)
    with pytest.raises(RuntimeError, match=r"packed_n: sparse24_int8_pack is a 1-D pack; the ops take its N from "
                                           r"their meta argument"):
        OPS.packed_n("sparse24_int8_pack", [100])
    with pytest.raises(RuntimeError, match=r"packed_n: a codebook_pack is 2-D with at least one word per row, got "
                                           r"shape \[100\]"):
        OPS.packed_n("codebook_pack", [100])
    with pytest.raises(RuntimeError, match=r"packed_n: shape \[16, 1\] has no row after the 16 header rows of a "
                                           r"codebook_pack"):
        OPS.packed_n("codebook_pack", [16, 1])
    with pytest.raises(RuntimeError, match=r"packed_n: family must be the name of a pack op"):
        OPS.packed_n("codebook", [16, 1])


@pytest.mark.parametrize("family", FAMILIES)
def test_fake_kernels_give_the_real_shapes(family):
    case = default_case(family)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_pack = mode.from_tensor(case.pack)
        fake_out = case.run(fake_pack)
    assert fake_out.shape == case.want.shape and fake_out.dtype == case.want.dtype


def test_fake_pack_ops_give_the_real_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    w = torch.ones(20, 9, dtype=torch.int8)
    w4 = torch.ones(6, 3, 3, 1, dtype=torch.int8)
    idx = torch.zeros(20, 37, dtype=torch.long)
    values, meta = ck.sparse24_compress(torch.zeros(24, 16))
    real = [ck.int8_pack_weight(w), ck.int8_conv2d_pack_weight(w4, 3), ck.codebook_pack(idx, 3),
            ck.sparse24_f32_pack(values, meta), ck.sparse24_bf16_pack(values.bfloat16(), meta),
            ck.sparse24_int8_pack(values.to(torch.int8), meta)]
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = [OPS.int8_pack_weight(w), OPS.int8_conv2d_pack_weight(w4, 3), OPS.codebook_pack(idx, 3),
                OPS.sparse24_f32_pack(values, meta), OPS.sparse24_bf16_pack(values.bfloat16(), meta),
                OPS.sparse24_int8_pack(values.to(torch.int8), meta)]
    for r, f in zip(real, fake):
        assert r.shape == f.shape and r.dtype == f.dtype


def test_compiled_consumers_with_packs():
    w = torch.randint(-127, 128, (20, 12), generator=_gen(5)).to(torch.int8)
    packed = ck.int8_pack_weight(w)

    def f(x, p):
        return ck.int8_gemm(x, p) + 1

    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    for m in (3, 5):
        x = torch.randint(-128, 128, (m, 12), generator=_gen(m)).to(torch.int8)
        assert torch.equal(compiled(x, packed), ref.int8_gemm(x, w) + 1)
