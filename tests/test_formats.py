"""Exact FP8 / FP4 encode and decode (compress_kernels.formats): bit for bit equal to torch's
float8_e4m3fn / float8_e5m2 casts on every code, on random inputs over many magnitudes and on the
edge inputs (subnormals, exact ties, max finite, overflow, NaN, +-Inf, -0); E2M1 against a
brute-force nearest-value search; every refused argument."""

import pytest
import torch

from compress_kernels import formats

FP8 = [("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)]
ALL_CODES = torch.arange(256, dtype=torch.uint8)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.float().view(torch.int32)


def torch_codes(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype).view(torch.uint8)


def finite_values(name):
    """Every finite value of the format, sorted, as float64 (the non-negative ones)."""
    v = formats.decode(torch.arange(1 << formats.FORMATS[name].bits, dtype=torch.uint8), name).double()
    return torch.unique(v[torch.isfinite(v) & (v >= 0)])


def edge_inputs(name) -> torch.Tensor:
    """Every value, every midpoint between neighbours (an exact tie in float32), the midpoints
    nudged one ulp either way, below the smallest subnormal, max finite and beyond, specials."""
    v = finite_values(name).float()
    mids = ((v[1:].double() + v[:-1].double()) / 2).float()
    assert torch.equal(mids.double(), (v[1:].double() + v[:-1].double()) / 2)  # exact ties
    top = formats.FORMATS[name].max_finite
    nudged = torch.cat([torch.nextafter(mids, torch.tensor(0.0)), torch.nextafter(mids, torch.tensor(1e9))])
    smallest = float(v[1])
    extra = torch.tensor([smallest / 2, smallest / 4, smallest * 0.75, 1e-45, 1e-38, top, top * 1.03, top * 1.0625,
                          top * 1.07, top * 1.125, top * 1.2, 3.0e38, float("inf"), float("nan"), 0.0])
    pos = torch.cat([v, mids, nudged, extra])
    return torch.cat([pos, -pos])


@pytest.mark.parametrize("name,dtype", FP8)
def test_decode_every_code_equals_torch(name, dtype):
    assert torch.equal(bits(formats.decode(ALL_CODES, name)), bits(ALL_CODES.view(dtype)))


@pytest.mark.parametrize("name,dtype", FP8)
def test_encode_round_trips_every_code(name, dtype):
    values = ALL_CODES.view(dtype).float()
    codes = formats.encode(values, name)
    assert torch.equal(codes, torch_codes(values, dtype))
    finite = torch.isfinite(values)
    # every finite and infinite code comes back as itself; NaN codes as the canonical NaN of their sign
    keep = ~torch.isnan(values)
    assert torch.equal(codes[keep], ALL_CODES[keep])
    assert finite.sum() == (254 if name == "e4m3" else 248)


@pytest.mark.parametrize("name,dtype", FP8)
@pytest.mark.parametrize("source", [torch.float32, torch.bfloat16, torch.float16])
def test_encode_random_over_magnitudes_equals_torch(name, dtype, source):
    g = torch.Generator().manual_seed(1)
    n = 60000
    x = torch.randn(n, generator=g) * torch.exp2(torch.randint(-40, 40, (n,), generator=g).float())
    x = x.to(source)
    assert torch.equal(formats.encode(x, name), torch_codes(x, dtype))


@pytest.mark.parametrize("name,dtype", FP8)
def test_encode_edge_inputs_equal_torch(name, dtype):
    x = edge_inputs(name)
    ours, theirs = formats.encode(x, name), torch_codes(x, dtype)
    assert torch.equal(ours, theirs), x[ours != theirs][:8]


def test_fp8_overflow_and_specials_as_documented():
    f = torch.tensor([448.0, 464.0, 464.0001, 1e6, float("inf"), -float("inf"), float("nan"), -0.0, 2.0**-10])
    assert formats.encode(f, "e4m3").tolist() == [0x7E, 0x7E, 0x7E, 0x7E, 0x7E, 0xFE, 0x7F, 0x80, 0x00]
    assert formats.encode(f, "e4m3", saturate=False).tolist() == [0x7E, 0x7E, 0x7F, 0x7F, 0x7F, 0xFF, 0x7F, 0x80, 0]
    g = torch.tensor([57344.0, 61439.0, 61440.0, float("inf"), -1e9, float("nan"), 2.0**-17, 2.0**-16 * 1.5])
    assert formats.encode(g, "e5m2").tolist() == [0x7B, 0x7B, 0x7C, 0x7C, 0xFC, 0x7F, 0x00, 0x02]
    assert formats.encode(g, "e5m2", saturate=True).tolist() == [0x7B, 0x7B, 0x7B, 0x7B, 0xFB, 0x7F, 0x00, 0x02]


def _nearest_even_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Brute force: the nearest of the 8 magnitudes, ties to the even code, saturating, sign kept."""
    values = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64)
    a = x.double().abs().clamp(max=6.0).unsqueeze(-1)
    dist = (a - values).abs()
    best = dist.min(-1, keepdim=True).values
    candidates = dist == best
    # among equal distances prefer an even code (code parity = mantissa bit)
    even = candidates & (torch.arange(8) % 2 == 0)
    code = torch.where(even.any(-1), even.int().argmax(-1), candidates.int().argmax(-1))
    return (code + 8 * torch.signbit(x).long()).to(torch.uint8)


def test_e2m1_values_and_rounding():
    assert formats.decode(torch.arange(16, dtype=torch.uint8), "e2m1").tolist() == [
        0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(20000, generator=g) * 3, edge_inputs("e2m1")[:-4], torch.tensor([7.0, -1e30])])
    x = x[~torch.isnan(x)]
    assert torch.equal(formats.encode(x, "e2m1"), _nearest_even_e2m1(x))
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, float("inf"), -float("inf")])
    assert formats.decode(formats.encode(ties, "e2m1"), "e2m1").tolist() == [0, 1, 1, 2, 2, 4, 4, 6, -6]


def test_e2m1_pack_unpack():
    codes = torch.randint(0, 16, (3, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    packed = formats.pack_e2m1(codes)
    assert packed.shape == (3, 5)
    assert packed[0, 0] == codes[0, 0] | (codes[0, 1] << 4)
    assert torch.equal(formats.unpack_e2m1(packed), codes)
    assert packed.view(torch.float4_e2m1fn_x2).shape == (3, 5)


def test_decode_table_is_exact_in_bfloat16():
    for name in formats.FORMATS:
        table = formats.decode_table(name)
        finite = torch.isfinite(table)
        assert torch.equal(table[finite].bfloat16().float(), table[finite])


def test_refused_arguments():
    with pytest.raises(ValueError, match=r"format must be one of \['e2m1', 'e4m3', 'e5m2'\], got 'e3m4'"):
        formats.encode(torch.ones(2), "e3m4")
    with pytest.raises(TypeError, match="x must be a floating-point tensor, got torch.int32"):
        formats.encode(torch.ones(2, dtype=torch.int32), "e4m3")
    with pytest.raises(TypeError, match="x has dtype torch.float64"):
        formats.encode(torch.ones(2, dtype=torch.float64), "e4m3")
    with pytest.raises(ValueError, match=r"holds NaN at index \(1,\); format 'e2m1' has no NaN code"):
        formats.encode(torch.tensor([1.0, float("nan")]), "e2m1")
    with pytest.raises(ValueError, match="'e2m1' has no Inf and no NaN, so overflow can only saturate"):
        formats.encode(torch.ones(2), "e2m1", saturate=False)
    with pytest.raises(TypeError, match="saturate must be None or a bool, got 1"):
        formats.encode(torch.ones(2), "e4m3", saturate=1)
    with pytest.raises(TypeError, match="codes must be a torch.uint8 tensor, got torch.int64"):
        formats.decode(torch.ones(2, dtype=torch.int64), "e4m3")
    with pytest.raises(ValueError, match="format 'e2m1' has 16 codes, got code 16"):
        formats.decode(torch.tensor([16], dtype=torch.uint8), "e2m1")
    with pytest.raises(ValueError, match=r"even last dimension, got dtype torch.uint8, shape \(3,\)"):
        formats.pack_e2m1(torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="packed must be torch.uint8, got torch.float32"):
        formats.unpack_e2m1(torch.zeros(3))
