"""2:4 sparse on CUDA: the padded CUTLASS pack and the mma.sp fragment / metadata index math (run
everywhere, through a Python model of the PTX fragments), then the CUDA ops against the CPU op and
the reference (GPU only): int8 bit-exact, fp16 / bf16 within a stated tolerance, PyTorch's own
semi-structured tensors fed directly, opcheck, torch.compile, bad input, modules after .to("cuda")."""

import pytest
import torch

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels import sparse24_layout as layout
from compress_kernels.testing import random_24

OPS = torch.ops.compress_kernels
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ---------------------------------------------------------------- the padded CUTLASS pack (any device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("n, k", [(1, 4), (7, 12), (32, 64), (33, 100), (64, 128), (40, 36)])
def test_cuda_pack_pads_and_decodes_with_torch(dtype, n, k):
    from torch.sparse import _semi_structured_conversions as tconv

    w = random_24(n, k, dtype, seed=n + k)
    values, meta = ck.sparse24_compress(w)
    vp, mp = ck.ops.sparse24_cuda_pack(values, meta, dtype)
    rows, kmult = layout.CUTLASS_ROW_MULTIPLE[dtype], layout.CUTLASS_K_MULTIPLE[dtype]
    np_, kp = -(-n // rows) * rows, -(-k // kmult) * kmult
    assert vp.dtype == dtype and vp.shape == (np_, kp // 2)
    assert mp.dtype == (torch.int32 if dtype == torch.int8 else torch.int16)
    assert mp.shape == (np_, kp // (32 if dtype == torch.int8 else 16))
    # PyTorch's CUTLASS decoder reads it as the zero-padded weight.
    dense = tconv.sparse_semi_structured_to_dense_cutlass(vp, mp)
    assert torch.equal(dense, torch.nn.functional.pad(w, (0, kp - k, 0, np_ - n)))
    # The padded groups are positions 0 and 1 (valid for mma.sp::ordered_metadata), values zero.
    v2, m2 = ck.ops.sparse24_from_cutlass(vp, mp)
    assert torch.equal(v2[:n, : k // 2], values)
    assert torch.equal(m2[:n, : k // 8], meta[:, : k // 8])
    assert (m2[n:] == 0x44).all() and (m2[:, (k + 7) // 8:] == 0x44).all()
    if (k // 4) % 2:
        assert torch.equal(m2[:n, k // 8], meta[:, k // 8] | 0x40)


def test_cuda_pack_default_dtypes_and_refusals():
    values, meta = ck.sparse24_compress(random_24(8, 16))
    assert ck.ops.sparse24_cuda_pack(values, meta)[0].dtype == torch.float16
    assert ck.ops.sparse24_cuda_pack(values.bfloat16(), meta)[0].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="int8 values pack as int8"):
        ck.ops.sparse24_cuda_pack(values, meta, torch.int8)
    with pytest.raises(ValueError, match="dtype must be float16, bfloat16 or int8"):
        ck.ops.sparse24_cuda_pack(values, meta, torch.float32)
    with pytest.raises(ValueError, match=r"meta must have shape \(8, 2\)"):
        ck.ops.sparse24_cuda_pack(values, meta[:, :1])
    with pytest.raises(ValueError, match="uint8 meta"):
        ck.ops.sparse24_cuda_pack(values, meta.to(torch.int16))


def test_cusparselt_converters_need_cuda():
    values, meta = ck.sparse24_compress(random_24(32, 64, torch.float16))
    with pytest.raises(ValueError, match="produced by the library on a CUDA device"):
        ck.ops.sparse24_to_cusparselt(values, meta)
    with pytest.raises(ValueError, match="packed must be a CUDA tensor"):
        ck.ops.sparse24_from_cusparselt(values, (32, 64))


# ---------------------------------------------------------------- the kernel's index math, on the host
#
# A Python model of what csrc/cuda/sparse24.cu does for one warp tile, with the mma.sp semantics
# of the PTX ISA (fragment tables of mma.sp.m16n8k32 .f16 and mma.sp.m16n8k64 .s8; the sparsity
# selector picks the thread pair (f16) or all threads (s8) of each quad that supply metadata).


def _ldmatrix_x4(tile_bytes, row_of_lane, chunk_of_lane):
    """ldmatrix.x4 .b16 from a byte tile: matrix i takes its 8 row addresses from lanes 8i .. 8i + 7;
    lane 4g + t receives bytes 4t .. 4t + 3 of row g of every matrix (register i = matrix i)."""
    regs = [[None] * 4 for _ in range(32)]
    for i in range(4):
        rows = [(row_of_lane(8 * i + r), chunk_of_lane(8 * i + r)) for r in range(8)]
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            row, chunk = rows[g]
            regs[lane][i] = tile_bytes[row, 16 * chunk + 4 * t: 16 * chunk + 4 * t + 4]
    return regs


def _mma_sp(a, b, e, sel, kind):
    """D[16, 8] = A_dense @ B of one mma.sp from per-lane registers (4-byte tensors), per the PTX ISA."""
    esize = 2 if kind == "f16" else 1
    kdim = 32 if kind == "f16" else 64
    vals_per_reg = 4 // esize  # kept values per A register: one group (f16) or two (s8)
    dense = torch.zeros(16, kdim, dtype=torch.float64)
    bmat = torch.zeros(kdim, 8, dtype=torch.float64)
    dt = torch.float16 if kind == "f16" else torch.int8
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for reg in range(4):
            row = g + 8 * (reg & 1)
            vals = a[lane][reg].view(dt).double()
            first_group = (t * 4 + 16 * (reg >> 1)) // 4 if kind == "f16" else (t * 8 + 32 * (reg >> 1)) // 4
            for s in range(vals_per_reg):
                grp = first_group + s // 2
                # metadata of (row, grp): which thread of the quad holds it, which bits
                if kind == "f16":
                    holder, word_bits = 4 * g + 2 * sel + grp // 4, 16 * (row >= 8) + 4 * (grp % 4)
                else:
                    holder = 4 * g + (row >= 8) + 2 * (grp // 8)
                    word_bits = 4 * (grp % 8)
                nib = (int(e[holder]) >> word_bits) & 15
                pos = (nib >> (2 * (s % 2))) & 3
                dense[row, 4 * grp + pos] = vals[s]
        for reg in range(4):
            vals = b[lane][reg].view(dt).double()
            for s in range(4 // esize):
                kk = (8 * reg + 2 * t + s) if kind == "f16" else (16 * reg + 4 * t + s)
                bmat[kk, g] = vals[s]
    return dense @ bmat


def _meta_words(mp):
    return mp.contiguous().view(torch.int32).reshape(-1)


@pytest.mark.parametrize("kind", ["f16", "s8"])
def test_fragment_and_metadata_index_math(kind):
    # One warp's 64 x 32 (n x m) tile at k-step 0 .. 1 of a padded weight: the A / B / metadata
    # registers are read exactly as the kernel does (swizzled shared memory, ldmatrix patterns,
    # metadata word = lane of a chunk), multiplied with the PTX semantics, and compared with W x^T.
    dtype = torch.float16 if kind == "f16" else torch.int8
    n, k, m = 64, 128 if kind == "f16" else 256, 32
    w = random_24(n, k, dtype, seed=5)
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(m, k, generator=g).half() if kind == "f16"
         else torch.randint(-128, 128, (m, k), generator=g).to(torch.int8))
    values, meta = ck.sparse24_compress(w)
    vp, mp = ck.ops.sparse24_cuda_pack(values, meta, dtype)
    words = _meta_words(mp)
    kstep = 32 if kind == "f16" else 64
    meta_rows = 32 if kind == "f16" else 16
    want = w.double() @ x.double().T  # [n, m]
    got = torch.zeros(n, m, dtype=torch.float64)
    vbytes = vp.contiguous().view(torch.uint8).reshape(n, -1)  # compressed bytes per row
    xbytes = x.contiguous().view(torch.uint8).reshape(m, -1)
    for stage in range(k // (2 * kstep)):
        # shared memory as the kernel fills it: x rows of 128 bytes, W rows of 64 bytes, swizzled
        sx = torch.zeros(m, 128, dtype=torch.uint8)
        sw = torch.zeros(n, 64, dtype=torch.uint8)
        for r in range(m):
            for c in range(8):
                p = c ^ (r & 7)
                sx[r, 16 * p: 16 * p + 16] = xbytes[r, stage * 128 + 16 * c: stage * 128 + 16 * c + 16]
        for r in range(n):
            for c in range(4):
                p = c ^ ((r >> 1) & 3)
                sw[r, 16 * p: 16 * p + 16] = vbytes[r, stage * 64 + 16 * c: stage * 64 + 16 * c + 16]
        for s in range(2):
            kblock = stage * 2 + s
            for i in range(4):  # m16 tiles of the warp
                a = _ldmatrix_x4(sw, lambda ln, i=i: i * 16 + (ln & 15),
                                 lambda ln, i=i, s=s: (s * 2 + (ln >> 4)) ^ (((i * 16 + (ln & 15)) >> 1) & 3))
                chunk = kblock * (n // meta_rows) + (i * 16) // meta_rows
                e = [int(words[32 * chunk + lane]) & 0xFFFFFFFF for lane in range(32)]
                sel = (i % 2) if kind == "f16" else 0
                for j in range(4):  # n8 tiles (x rows)
                    b = _ldmatrix_x4(sx, lambda ln, j=j: j * 8 + (ln & 7),
                                     lambda ln, j=j, s=s: (s * 4 + (ln >> 3)) ^ ((j * 8 + (ln & 7)) & 7))
                    got[16 * i: 16 * i + 16, 8 * j: 8 * j + 8] += _mma_sp(a, b, e, sel, kind)
    assert torch.allclose(got, want, rtol=0, atol=1e-6 * want.abs().max().item() + 1e-9)


# ---------------------------------------------------------------- GPU: layout ops


def _cuda(t):
    return t.cuda() if isinstance(t, torch.Tensor) else t


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.float64])
@pytest.mark.parametrize("n, k", [(1, 4), (5, 12), (33, 64), (7, 260)])
def test_cuda_compress_decompress_match_cpu(dtype, n, k):
    for keep in (0, 1, 2):
        w = random_24(n, k, dtype, seed=keep, keep=keep)
        values, meta = ck.sparse24_compress(w)
        vc, mc = ck.sparse24_compress(w.cuda())
        assert torch.equal(vc.cpu(), values) and torch.equal(mc.cpu(), meta)
        assert torch.equal(ck.sparse24_decompress(vc, mc).cpu(), w)
    neg = torch.tensor([[-0.0, 1.0, -0.0, 2.0]], dtype=torch.float32 if dtype == torch.int8 else dtype)
    assert ck.sparse24_compress(neg.cuda())[0].cpu().tolist() == [[1.0, 2.0]]


@needs_gpu
def test_cuda_layout_messages():
    with pytest.raises(RuntimeError, match=r"not 2:4 sparse: row 1, columns 4..7"):
        ck.sparse24_compress(torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 0]]).cuda())
    with pytest.raises(RuntimeError, match="K .* must be a positive multiple of 4"):
        ck.sparse24_compress(torch.ones(2, 6).cuda())
    values, meta = ck.sparse24_compress(random_24(2, 12).cuda())
    bad = meta.clone()
    bad[1, 0] = 0x11  # group 0 of row 1: positions 1, 0
    with pytest.raises(RuntimeError, match="row 1, group 0 has a nibble"):
        ck.sparse24_decompress(values, bad)
    bad = meta.clone()
    bad[0, 1] |= 0x40  # the unused padding nibble (K % 8 == 4)
    with pytest.raises(RuntimeError, match="non-zero padding nibble"):
        ck.sparse24_decompress(values, bad)
    with pytest.raises(RuntimeError, match=r"meta must have shape \[2, 2\]"):
        ck.sparse24_decompress(values, meta[:, :1])
    with pytest.raises(RuntimeError, match="w must be an integer, float16"):
        ck.sparse24_compress(torch.ones(2, 4, dtype=torch.bool).cuda())


# ---------------------------------------------------------------- GPU: matmuls

SHAPES = [(1, 32, 64), (3, 7, 12), (17, 33, 100), (64, 128, 4096), (130, 96, 36), (257, 256, 512), (1000, 320, 1024)]


def _fp_case(m, n, k, dtype, seed=0):
    w = random_24(n, k, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(m, k, generator=g)
    b = torch.randn(n, generator=g)
    # The weight and x as the tensor cores see them (rounded to dtype), the reference in fp64.
    w = w.to(dtype).float()
    x = x.to(dtype).float()
    return x, w, b


@needs_gpu
@pytest.mark.parametrize("m, n, k", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_sparse24_linear_matches_reference(m, n, k, dtype):
    x, w, b = _fp_case(m, n, k, dtype, seed=m + n)
    values, meta = ck.sparse24_compress(w)
    want = ref.sparse24_linear(x, values, meta, b)  # fp64
    vp, mp = ck.ops.sparse24_cuda_pack(values, meta, dtype)
    bp = torch.nn.functional.pad(b, (0, vp.shape[0] - n))
    # Tolerance: products are exact, fp32 accumulation error <= ~k * 2^-24 * sum|w x|, then one
    # rounding of the output to dtype (2^-11 fp16, 2^-8 bf16 relative).
    out_eps = 2.0**-11 if dtype == torch.float16 else 2.0**-8
    mag = x.abs().double() @ w.abs().double().T + b.abs().double()
    for xin, out_dtype, eps in [(x.to(dtype), dtype, out_eps), (x, torch.float32, 0.0)]:
        y = ck.sparse24_linear(xin.cuda(), vp.cuda(), mp.cuda(), bp.cuda())
        assert y.dtype == out_dtype and y.shape == (m, vp.shape[0])
        assert (y[:, n:] == bp[n:].to(out_dtype).cuda()).all()  # padded rows: zero weight + bias
        err = (y[:, :n].double().cpu() - want).abs()
        assert (err <= (k * 2.0**-23 + eps) * mag + 1e-6).all(), (dtype, out_dtype, err.max().item())
    # our uint8 layout through the wrapper: packed per call, sliced to N
    y = ck.sparse24_linear(x.to(dtype).cuda(), values.cuda(), meta.cuda(), b.cuda())
    assert y.shape == (m, n)
    assert torch.equal(y, ck.sparse24_linear(x.to(dtype).cuda(), vp.cuda(), mp.cuda(), bp.cuda())[:, :n])


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_sparse24_linear_strided_and_unaligned_x(dtype):
    x, w, b = _fp_case(50, 64, 100, dtype)  # K % 8 == 4: the element-wise x path
    values, meta = ck.sparse24_compress(w)
    vp, mp = (t.cuda() for t in ck.ops.sparse24_cuda_pack(values, meta, dtype))
    xc = x.to(dtype).cuda()
    want = ck.sparse24_linear(xc, vp, mp, None)
    wide = torch.zeros(50, 136, dtype=dtype, device="cuda")
    wide[:, 3:103] = xc
    assert torch.equal(ck.sparse24_linear(wide[:, 3:103], vp, mp, None), want)  # row stride 136, offset 3
    x2, w2, _ = _fp_case(70, 64, 256, dtype)
    v2, m2 = ck.sparse24_compress(w2)
    vp2, mp2 = (t.cuda() for t in ck.ops.sparse24_cuda_pack(v2, m2, dtype))
    xc2 = x2.to(dtype).cuda()
    want2 = ck.sparse24_linear(xc2, vp2, mp2, None)
    assert torch.equal(ck.sparse24_linear(xc2.t().contiguous().t(), vp2, mp2, None), want2)  # column-major x


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_sparse24_reads_torch_semi_structured_tensors(dtype):
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    n, k, m = 256, 512, 64
    w = random_24(n, k, seed=9).to(dtype).cuda()
    x = torch.randn(m, k, device="cuda").to(dtype)
    old = SparseSemiStructuredTensor._FORCE_CUTLASS
    SparseSemiStructuredTensor._FORCE_CUTLASS = True
    try:
        ws = to_sparse_semi_structured(w)
        theirs = torch.nn.functional.linear(x, ws)
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = old
    ours = ck.sparse24_linear(x, ws.packed, ws.meta, None)  # their packed / meta, fed directly
    values, meta = ck.sparse24_compress(w)
    vp, mp = ck.ops.sparse24_cuda_pack(values, meta, dtype)
    assert torch.equal(ck.sparse24_linear(x, vp, mp, None), ours)  # our pack: the same bits
    assert torch.allclose(ours.float(), theirs.float(), rtol=2e-2, atol=2e-2)
    assert torch.allclose(ours.float(), x.float() @ w.float().T, rtol=2e-2, atol=2e-2)


def _int8_case(m, n, k, x_dtype, per_channel, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = random_24(n, k, torch.int8, seed=seed)
    lo, hi = (-128, 128) if x_dtype == torch.int8 else (0, 256)
    x = torch.randint(lo, hi, (m, k), generator=g).to(x_dtype)
    b = torch.randint(-5000, 5000, (n,), generator=g, dtype=torch.int32)
    scale = torch.rand(n if per_channel else 1, generator=g, dtype=torch.float64) * 1e-3 + 1e-5
    m0, shift = ck.quantize_multiplier(scale)
    return x, w, b, m0, shift


@needs_gpu
@pytest.mark.parametrize("m, n, k", SHAPES)
@pytest.mark.parametrize("x_dtype, x_zp", [(torch.int8, 0), (torch.int8, -7), (torch.uint8, 128), (torch.uint8, 0)])
def test_cuda_sparse24_int8_linear_is_bit_exact(m, n, k, x_dtype, x_zp):
    x, w, b, m0, shift = _int8_case(m, n, k, x_dtype, per_channel=(m % 2 == 1), seed=m + k)
    values, meta = ck.sparse24_compress(w)
    vp, mp = (t.cuda() for t in ck.ops.sparse24_cuda_pack(values, meta, torch.int8))
    rows = vp.shape[0]

    def pad(t):
        return torch.nn.functional.pad(t, (0, rows - n)) if t.numel() == n and n > 1 else t

    for out_dtype, zp, qmin, qmax, rounding, bias in [
        (torch.int8, 3, -128, 127, "double", b), (torch.uint8, 120, 120, 255, "single", b),
        (torch.int32, -5, -(2**31), 2**31 - 1, "double", None),
    ]:
        want = ck.sparse24_int8_linear(x, x_zp, values, meta, bias, m0, shift, zp, qmin, qmax, out_dtype, rounding)
        got = ck.sparse24_int8_linear(x.cuda(), x_zp, vp, mp, None if bias is None else pad(bias).cuda(),
                                      pad(m0), pad(shift), zp, qmin, qmax, out_dtype, rounding)
        assert got.shape == (m, rows)
        assert torch.equal(got[:, :n].cpu(), want), (out_dtype, rounding)
        # the wrapper with our layout on CUDA: packed per call, sliced
        got2 = ck.sparse24_int8_linear(x.cuda(), x_zp, values.cuda(), meta.cuda(),
                                       None if bias is None else bias.cuda(), m0, shift, zp, qmin, qmax, out_dtype,
                                       rounding)
        assert torch.equal(got2.cpu(), want)


@needs_gpu
def test_cuda_sparse24_int8_accumulator_extremes():
    m, n, k = 9, 16, 4096
    w = torch.where(torch.arange(k) % 4 < 2, torch.tensor(-127), torch.tensor(0)).repeat(n, 1).to(torch.int8)
    x = torch.full((m, k), 255, dtype=torch.uint8)
    values, meta = ck.sparse24_compress(w)
    vp, mp = (t.cuda() for t in ck.ops.sparse24_cuda_pack(values, meta, torch.int8))
    for zp in (0, 255):
        want = ck.sparse24_int8_linear(x, zp, values, meta, None, 1 << 30, 1, 0, -(2**31), 2**31 - 1, torch.int32)
        got = ck.sparse24_int8_linear(x.cuda(), zp, vp, mp, None, 1 << 30, 1, 0, -(2**31), 2**31 - 1, torch.int32)
        assert torch.equal(got.cpu(), want)


# ---------------------------------------------------------------- GPU: opcheck, compile, messages


def _gpu_fp_args(dtype=torch.float16):
    x, w, b = _fp_case(20, 64, 96, dtype)
    values, meta = ck.sparse24_compress(w)
    vp, mp = ck.ops.sparse24_cuda_pack(values, meta, dtype)
    return x.to(dtype).cuda(), vp.cuda(), mp.cuda(), b.cuda()


def _gpu_int8_args():
    x, w, b, m0, shift = _int8_case(20, 32, 128, torch.uint8, per_channel=True)
    values, meta = ck.sparse24_compress(w)
    vp, mp = ck.ops.sparse24_cuda_pack(values, meta, torch.int8)
    return x.cuda(), vp.cuda(), mp.cuda(), b.cuda(), m0, shift


@needs_gpu
def test_cuda_opcheck():
    w = random_24(33, 64)
    values, meta = ck.sparse24_compress(w)
    torch.library.opcheck(OPS.sparse24_compress, (w.cuda(),))
    torch.library.opcheck(OPS.sparse24_decompress, (values.cuda(), meta.cuda()))
    x, vp, mp, b = _gpu_fp_args()
    torch.library.opcheck(OPS.sparse24_linear, (x, vp, mp, b))
    torch.library.opcheck(OPS.sparse24_linear, (x.float(), vp, mp, None))
    xq, vq, mq, bq, m0, shift = _gpu_int8_args()
    torch.library.opcheck(OPS.sparse24_int8_linear, (xq, 3, vq, mq, bq, m0, shift, 1, -128, 127, torch.int8, "double"))


@needs_gpu
def test_cuda_torch_compile_fullgraph():
    x, vp, mp, b = _gpu_fp_args(torch.bfloat16)
    xq, vq, mq, bq, m0, shift = _gpu_int8_args()
    m0, shift = m0.cuda(), shift.cuda()  # every input on the GPU (the op also takes host multipliers)

    def f(x, xq):
        return (ck.sparse24_linear(x, vp, mp, b),
                ck.sparse24_int8_linear(xq, 3, vq, mq, bq, m0, shift, 0, -128, 127, torch.int8))

    want = f(x, xq)
    got = torch.compile(f, fullgraph=True)(x, xq)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@needs_gpu
def test_cuda_bad_input_messages():
    x, vp, mp, b = _gpu_fp_args()
    values, meta = ck.sparse24_compress(random_24(64, 96).cuda())
    with pytest.raises(RuntimeError, match="meta must be the CUTLASS-layout Short metadata"):
        OPS.sparse24_linear(x, values.half(), meta, None)
    with pytest.raises(RuntimeError, match="values must be float16 or bfloat16"):
        OPS.sparse24_linear(x.float(), values, meta, None)
    with pytest.raises(RuntimeError, match="x must be Half like values, or float32"):
        OPS.sparse24_linear(x.bfloat16(), vp, mp, None)
    with pytest.raises(RuntimeError, match=r"needs N % 32 == 0 and K % 32 == 0"):
        OPS.sparse24_linear(x, vp[:16], mp[:16], None)
    with pytest.raises(RuntimeError, match=r"meta must have shape \[64, 6\]"):
        OPS.sparse24_linear(x, vp, mp[:, :4], None)
    with pytest.raises(RuntimeError, match="K mismatch: x has K=64 but the weight holds K=96"):
        OPS.sparse24_linear(x[:, :64], vp, mp, None)
    with pytest.raises(RuntimeError, match=r"bias must have shape \[64\]"):
        OPS.sparse24_linear(x, vp, mp, b[:3])
    with pytest.raises(RuntimeError, match="bias must be a floating-point tensor"):
        OPS.sparse24_linear(x, vp, mp, b.int())
    with pytest.raises(RuntimeError, match="must be on cuda"):
        OPS.sparse24_linear(x, vp, mp.cpu(), None)
    with pytest.raises(RuntimeError, match="values must have at least one column"):
        OPS.sparse24_linear(x, vp[:, :0], mp[:, :0], None)
    v4, m4 = ck.ops.sparse24_cuda_pack(*ck.sparse24_compress(random_24(32, 4)), torch.float16)
    with pytest.raises(RuntimeError, match="x may have at most 8388480 rows on CUDA, got 8388481"):
        OPS.sparse24_linear(torch.zeros(8388481, 4, dtype=torch.float16, device="cuda"), v4.cuda(), m4.cuda(), None)
    xq, vq, mq, bq, m0, shift = _gpu_int8_args()
    with pytest.raises(RuntimeError, match="meta must be the CUTLASS-layout Int metadata"):
        OPS.sparse24_int8_linear(xq, 0, vq, mq.view(torch.int16), None, m0, shift, 0, -128, 127, torch.int8)
    with pytest.raises(RuntimeError, match=r"needs N % 16 == 0 and K % 64 == 0"):
        OPS.sparse24_int8_linear(xq, 0, vq[:8], mq[:8], None, m0[:8], shift[:8], 0, -128, 127, torch.int8)
    with pytest.raises(RuntimeError, match="x must be int8 or uint8"):
        OPS.sparse24_int8_linear(xq.float(), 0, vq, mq, None, m0, shift, 0, -128, 127, torch.int8)
    with pytest.raises(RuntimeError, match="m0 and shift must have 1 .per-tensor. or 32"):
        OPS.sparse24_int8_linear(xq, 0, vq, mq, None, m0[:3], shift[:3], 0, -128, 127, torch.int8)
    with pytest.raises(RuntimeError, match=r"bias must have shape \[32\]"):
        OPS.sparse24_int8_linear(xq, 0, vq, mq, bq[:3], m0, shift, 0, -128, 127, torch.int8)
    with pytest.raises(RuntimeError, match="values must be Char"):
        OPS.sparse24_int8_linear(xq, 0, vq.half(), mq, None, m0, shift, 0, -128, 127, torch.int8)
    with pytest.raises(RuntimeError, match="could overflow the int32 accumulator"):
        k = 65856  # the first multiple of 64 above the largest safe depth (65793)
        OPS.sparse24_int8_linear(torch.zeros(1, k, dtype=torch.uint8, device="cuda"), 0,
                                 torch.zeros(16, k // 2, dtype=torch.int8, device="cuda"),
                                 torch.zeros(16, k // 32, dtype=torch.int32, device="cuda"), None, m0[:1], shift[:1],
                                 0, -128, 127, torch.int8)


# ---------------------------------------------------------------- GPU: modules and cuSPARSELt


@needs_gpu
@pytest.mark.parametrize("int8", [False, True])
def test_sparse_modules_after_to_cuda(int8):
    from compress_kernels.nn.sparse import SparseConv2d, SparseLinear
    from compress_kernels.sparse24_layout import weight_from_rows

    torch.manual_seed(0)
    lin = torch.nn.Linear(100, 40)
    lin.weight.data = random_24(40, 100, seed=1)
    m = SparseLinear.from_float(lin, int8=int8)
    x = torch.randn(2, 5, 100)
    want = m(x)
    m.cuda()
    assert m.packed.is_cuda and m.packed_meta.dtype == (torch.int32 if int8 else torch.int16)
    got = m(x.cuda()).cpu()
    assert got.shape == want.shape
    # fp32 module on the fp16 tensor cores: weights and inputs rounded to fp16.
    assert torch.allclose(got, want, rtol=2e-2, atol=2e-2) if not int8 else torch.equal(got, want)
    m.cpu()
    assert torch.equal(m(x), want)  # back on the CPU: the CPU packing again
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    # 2:4 along K of weight_rows: groups of four input channels at each kernel tap
    conv.weight.data = weight_from_rows(random_24(8, 36, seed=2), (8, 4, 3, 3)).contiguous()
    mc = SparseConv2d.from_float(conv, int8=int8)
    xi = torch.randn(2, 4, 6, 6)
    want = mc(xi)
    got = mc.cuda()(xi.cuda()).cpu()
    assert torch.allclose(got, want, rtol=2e-2, atol=2e-2) if not int8 else torch.equal(got, want)


@needs_gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not torch.backends.cusparselt.is_available(),
                    reason="needs cuSPARSELt on a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int8])
def test_cusparselt_round_trip(dtype):
    w = random_24(64, 128, dtype, seed=4).cuda()
    values, meta = ck.sparse24_compress(w)
    packed = ck.ops.sparse24_to_cusparselt(values, meta)
    assert torch.equal(packed, torch._cslt_compress(w))
    v2, m2 = ck.ops.sparse24_from_cusparselt(packed, (64, 128))
    assert torch.equal(ck.sparse24_decompress(v2, m2), w)


def test_sparse_module_device_moves_on_cpu():
    from compress_kernels.nn.sparse import SparseLinear

    lin = torch.nn.Linear(16, 8)
    lin.weight.data = random_24(8, 16, seed=3)
    m = SparseLinear.from_float(lin)
    x = torch.randn(3, 16)
    want, state = m(x), m.state_dict()
    m.to("meta")  # nothing to pack on the meta device
    assert m.values.is_meta
    m.to_empty(device="cpu")  # uninitialized buffers: not packable, forward refuses
    with pytest.raises(RuntimeError, match="the weight is not packed .* load a state dict first"):
        m(x)
    m.load_state_dict(state)
    assert torch.equal(m(x), want)
    assert torch.equal(m.double().float()(x), want)  # a dtype round trip repacks the fp32 layout
