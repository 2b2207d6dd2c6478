"""The codebook family on CUDA: pack / unpack exact against the CPU op; codebook_linear (GEMV for
M <= 8, decode + cuBLAS above) and codebook_conv2d (decode + cuDNN) within stated bounds of the
float64 reference for fp32, fp16 and bf16 x; opcheck and torch.compile on CUDA; modules moved with
.to("cuda"); autograd on CUDA tensors; the CUDA-only argument checks.

Tolerances (S = sum_k |x w| + |bias| in float64, y = the float64 reference):
  * fp32, any path: (K + 1) * 2^-24 * S, the dot-product bound for any summation order (the CUDA
    kernels sum in another order than the CPU's fmaf chain, so not bit for bit); conv2d: 4x that,
    for cuDNN's transform-based algorithms (Winograd), whose error is not a plain dot product's.
  * fp16 / bf16, GEMV (M <= 8): the fp32 bound plus the one rounding of the output, u * |y| (u =
    2^-11 fp16, 2^-8 bf16) and half an fp16 subnormal step.
  * fp16 / bf16, decode + cuBLAS / cuDNN (M > 8, conv2d): the weights and bias are rounded to x's
    dtype first (u * S) and cuBLAS may round partial sums to the dtype (another u * S), so
    2 u S + the fp32 bound + the output rounding.

The tests at the top need no GPU: they replay the kernels' index math (which lane reads which packed
word for which output row and k, the codebook staging bound, the pack kernel's inverse of the
layout) on the CPU against the packed tensors the CPU op writes."""

import copy

import pytest
import torch
import torch.nn.functional as F

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.testing import CODEBOOK_CONV_CASES, codebook_linear_case, rand_codebook, rand_idx, rand_x

OPS = torch.ops.compress_kernels
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEV = "cuda"
ALL_BITS = list(range(1, 9))
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
UNIT = {torch.float32: 0.0, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}  # unit roundoff


# ---------------------------------------------------------------- kernel index math, on the CPU

ROWS_PER_BLOCK, MAX_WARPS, COLS_PER_STEP = 16, 8, 8


def _run_length(c: int) -> int:
    """run_length() of codebook.cu: the largest divisor of c that is <= 8."""
    return next(d for d in range(8, 0, -1) if c % d == 0)


def _gemv_reads(packed: torch.Tensor, n: int, aligned: bool = True) -> dict:
    """{(row, word column): word} as codebook_gemv_kernel's lanes load them: per CTA (16 rows),
    warps = clamp(ceil(kw / 8), 1, 8); full aligned blocks: step t of warp t % warps, lane l reads
    uint4 number 32t + l of the block = words 4(32t + l) .. + 3, column 8t + l/4, rows 4(l%4) + s;
    otherwise lane l reads row l % 16 of column 2t + l/16 at g * rows + i. Asserts that no (row,
    column) is read twice."""
    flat = [w & 0xFFFFFFFF for w in packed.reshape(-1).tolist()]
    kw = packed.shape[1]
    warps = min(max((kw + COLS_PER_STEP - 1) // COLS_PER_STEP, 1), MAX_WARPS)
    seen = {}
    for blk in range((n + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        r0 = ROWS_PER_BLOCK * blk
        rows = min(ROWS_PER_BLOCK, n - r0)
        base = r0 * kw
        for warp in range(warps):
            if rows == ROWS_PER_BLOCK and aligned:
                for t in range(warp, (kw + COLS_PER_STEP - 1) // COLS_PER_STEP, warps):
                    for lane in range(32):
                        g = COLS_PER_STEP * t + lane // 4
                        if g >= kw:
                            continue
                        for s in range(4):
                            key = (r0 + 4 * (lane % 4) + s, g)
                            assert key not in seen
                            seen[key] = flat[base + 4 * (32 * t + lane) + s]
            else:
                for t in range(warp, (kw + 1) // 2, warps):
                    for lane in range(32):
                        i, g = lane % 16, 2 * t + lane // 16
                        if i < rows and g < kw:
                            assert (r0 + i, g) not in seen
                            seen[(r0 + i, g)] = flat[base + g * rows + i]
    return seen


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("n, k, groups", [(16, 64, 1), (48, 300, 3), (37, 33, 37), (130, 100, 2), (5, 9, 1)])
@pytest.mark.parametrize("aligned", [True, False])
def test_gemv_lane_mapping_decodes_the_weight(bits, n, k, groups, aligned):
    idx = rand_idx(n, k, bits, seed=n + k)
    cb = rand_codebook(groups, bits)
    packed = ck.ops.packed_payload(ck.codebook_pack(idx, bits), "codebook_pack")  # what the kernel reads
    reads = _gemv_reads(packed, n, aligned)
    c, kw = 32 // bits, packed.shape[1]
    assert len(reads) == n * kw  # every word read exactly once
    group_rows = n // groups
    w = torch.full((n, k), float("nan"))
    for (r, g), word in reads.items():
        for j in range(min(c, k - g * c)):  # accumulate_column: slots past k skipped
            w[r, g * c + j] = cb[r // group_rows, (word >> (j * bits)) & ((1 << bits) - 1)]
    assert torch.equal(w, ref.codebook_dequantize(idx, cb))


@pytest.mark.parametrize("n, groups", [(16, 1), (16, 16), (48, 3), (130, 2), (130, 65), (37, 37), (96, 32), (90, 6)])
def test_gemv_codebook_staging_bound(n, groups):
    """The launcher's shared-memory size, min(15 // group_rows + 2, 16, G) codebooks, covers every
    block's g_hi - g_lo + 1, and the slot offsets stay inside it."""
    group_rows = n // groups
    staged = min(15 // group_rows + 2, 16, groups)
    for r0 in range(0, n, ROWS_PER_BLOCK):
        rows = min(ROWS_PER_BLOCK, n - r0)
        g_lo, g_hi = r0 // group_rows, (r0 + rows - 1) // group_rows
        assert g_hi - g_lo + 1 <= staged
        assert all(0 <= (r // group_rows - g_lo) < staged for r in range(r0, r0 + rows))


@pytest.mark.parametrize("bits", ALL_BITS)
def test_x_runs_tile_a_word_column(bits):
    """accumulate_column reads x in runs of run_length(c) elements; the runs tile the c indices of a
    word and start at multiples of the run, so (rows 16-byte aligned) a run's loads are aligned to
    the widest of 16 / 8 / 4 / element bytes that divides the run's bytes."""
    c = 32 // bits
    run = _run_length(c)
    assert c % run == 0 and 1 <= run <= 8
    for elem in (4, 2):
        nbytes = run * elem
        vec = 16 if nbytes % 16 == 0 else 8 if nbytes % 8 == 0 else 4 if nbytes % 4 == 0 else elem
        for g in range(7):
            for q in range(c // run):
                assert ((g * c + q * run) * elem) % vec == 0


@pytest.mark.parametrize("n, k, bits", [(1, 1, 1), (17, 33, 3), (40, 100, 5), (16, 7, 8), (33, 257, 2)])
def test_pack_kernel_inverts_the_layout(n, k, bits):
    """codebook_pack_kernel: flat word q -> block b = q // (16 kw), column g = (q - 16 b kw) // rows,
    row 16 b + remainder, whose word_offset (ck/bitpack.h) is q again; packing idx that way gives
    the CPU op's tensor."""
    idx = rand_idx(n, k, bits, seed=3)
    c = 32 // bits
    kw = (k + c - 1) // c
    words = []
    for q in range(n * kw):
        b = q // (ROWS_PER_BLOCK * kw)
        in_block = q - b * ROWS_PER_BLOCK * kw
        rows = min(ROWS_PER_BLOCK, n - ROWS_PER_BLOCK * b)
        g = in_block // rows
        r = ROWS_PER_BLOCK * b + in_block - g * rows
        assert ROWS_PER_BLOCK * b * kw + g * rows + (r - ROWS_PER_BLOCK * b) == q
        word = 0
        for j in range(min(c, k - g * c)):
            word |= int(idx[r, g * c + j]) << (j * bits)
        words.append(word - (1 << 32) if word >= 1 << 31 else word)
    payload = ck.ops.packed_payload(ck.codebook_pack(idx, bits), "codebook_pack")  # past the header rows
    assert torch.equal(torch.tensor(words, dtype=torch.int32).view(n, kw), payload)


# ---------------------------------------------------------------- GPU: helpers


def bound(x, w, bias, dtype, dense_path):
    """Allowed |got - y| (see the module docstring); x, w, bias on the CPU."""
    k = x.shape[-1]
    s = x.double().abs() @ w.double().abs().T
    if bias is not None:
        s = s + bias.double().abs()
    y = x.double() @ w.double().T + (bias.double() if bias is not None else 0)
    u = UNIT[dtype]
    tol = (k + 1) * 2.0**-24 * s + u * y.abs() + (2.0**-25 if dtype == torch.float16 else 1e-30)
    if dense_path:
        tol = tol + 2 * u * s
    return y, tol


def assert_within(got, want, tol):
    err = (got.double().cpu() - want).abs()
    worst = int(err.argmax())
    assert bool((err <= tol).all()), f"max error {err.max().item():.3g} (allowed there {tol.flatten()[worst]:.3g})"


# ---------------------------------------------------------------- GPU: pack / unpack


@requires_cuda
@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("n, k", [(1, 1), (3, 7), (16, 32), (17, 33), (40, 100), (33, 257)])
def test_cuda_pack_unpack_equal_cpu(bits, n, k):
    idx = rand_idx(n, k, bits, seed=bits * 100 + n)
    packed = ck.codebook_pack(idx.to(DEV), bits)
    assert packed.device.type == "cuda" and packed.dtype == torch.int32
    assert torch.equal(packed.cpu(), ck.codebook_pack(idx, bits))
    assert torch.equal(ck.codebook_unpack(packed, bits, k).cpu(), idx)
    for dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        assert torch.equal(ck.codebook_pack(idx.to(DEV, dtype), bits), packed)


# ---------------------------------------------------------------- GPU: codebook_linear

LINEAR_SHAPES = [  # (N, K, G): N % 16 tails, K % (32 // bits) tails, groups crossing 16-row blocks
    (64, 64, 1), (80, 37, 5), (130, 100, 2), (48, 257, 6), (17, 3, 17),
]


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 3, 8, 9, 64])
@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("n, k, groups", LINEAR_SHAPES)
def test_cuda_linear_matches_reference(dtype, m, bits, n, k, groups):
    x, idx, cb, bias = codebook_linear_case(m, n, k, groups, bits, seed=m + n + k + bits)
    x = x.to(dtype)
    w = ref.codebook_dequantize(idx, cb)
    packed = ck.codebook_pack(idx, bits).to(DEV)
    for b in (bias, None):
        got = ck.codebook_linear(x.to(DEV), packed, cb.to(DEV), bits, None if b is None else b.to(DEV))
        assert got.dtype == dtype and got.shape == (m, n) and got.device.type == "cuda"
        want, tol = bound(x, w, b, dtype, dense_path=m > 8)
        assert_within(got, want, tol)


@requires_cuda
@pytest.mark.parametrize("m", [1, 8, 64])
def test_cuda_linear_fp32_close_to_cpu_op(m):
    x, idx, cb, bias = codebook_linear_case(m, 200, 1000, 4, 4, seed=5)
    packed = ck.codebook_pack(idx, 4)
    cpu = ck.codebook_linear(x, packed, cb, 4, bias)
    got = ck.codebook_linear(x.to(DEV), packed.to(DEV), cb.to(DEV), 4, bias.to(DEV))
    _, tol = bound(x, ref.codebook_dequantize(idx, cb), bias, torch.float32, False)
    assert_within(got, cpu.double(), 2 * tol)  # both within tol of the exact result


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_linear_strided_misaligned_and_large_depth(dtype):
    x, idx, cb, bias = codebook_linear_case(4, 32, 4099, 1, 3, seed=11)
    x = x.to(dtype)
    packed, cbd, bd = ck.codebook_pack(idx, 3).to(DEV), cb.to(DEV), bias.to(DEV)
    xd = x.to(DEV)
    want = ck.codebook_linear(xd, packed, cbd, 3, bd)
    y, tol = bound(x, ref.codebook_dequantize(idx, cb), bias, dtype, False)
    assert_within(want, y, tol)
    misaligned = torch.zeros(4, 5001, dtype=dtype, device=DEV)  # base off by one element, odd row stride
    misaligned[:, 1:4100] = xd
    strided = torch.zeros(4, 5000, dtype=dtype, device=DEV)  # aligned rows, stride != K: read in place
    strided[:, :4099] = xd
    for view in (misaligned[:, 1:4100], strided[:, :4099], xd.T.contiguous().T, misaligned[:1, 1:4100]):
        got = ck.codebook_linear(view, packed, cbd, 3, bd)
        assert torch.equal(got, want[: view.shape[0]])
    # a packed tensor whose base is 4 but not 16-byte aligned is a view into a larger tensor: refused
    # (a pack is its own allocation, so its payload past the header rows is 64-byte aligned)
    n_words = packed.numel()
    buf = torch.zeros(n_words + 1, dtype=torch.int32, device=DEV)
    buf[1:] = packed.reshape(-1)
    shifted = buf[1:].view(packed.shape)
    assert shifted.data_ptr() % 16 != 0
    with pytest.raises(RuntimeError, match="codebook_linear: packed_idx is a view at storage offset 1"):
        ck.codebook_linear(x.to(DEV), shifted, cbd, 3, bd)


@requires_cuda
def test_cuda_linear_is_deterministic_and_rows_independent():
    x, idx, cb, bias = codebook_linear_case(8, 4096, 4096, 1, 4, seed=13)
    args = (ck.codebook_pack(idx, 4).to(DEV), cb.to(DEV), 4, bias.to(DEV))
    xd = x.to(DEV)
    first = ck.codebook_linear(xd, *args)
    assert torch.equal(ck.codebook_linear(xd, *args), first)
    # the GEMV's order per output does not depend on the batch size (M = 1 .. 8)
    assert torch.equal(ck.codebook_linear(xd[2:3], *args), first[2:3])
    assert torch.equal(ck.codebook_linear(xd[:5], *args), first[:5])


@requires_cuda
def test_cuda_linear_with_zero_rows():
    x, idx, cb, bias = codebook_linear_case(1, 20, 10, 1, 2)
    out = ck.codebook_linear(x[:0].to(DEV), ck.codebook_pack(idx, 2).to(DEV), cb.to(DEV), 2, bias.to(DEV))
    assert out.shape == (0, 20) and out.device.type == "cuda"


# ---------------------------------------------------------------- GPU: codebook_conv2d



@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", [1, 3, 4, 6, 8])
@pytest.mark.parametrize("case", CODEBOOK_CONV_CASES)
def test_cuda_conv2d_matches_reference(dtype, bits, case):
    b, c, h, w, c_out, kernel, stride, padding, dilation, groups, n_cb = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rand_x(b, c, h, w, seed=bits).to(dtype)
    idx = rand_idx(c_out, c // groups * kh * kw, bits, seed=bits + 1).view(c_out, c // groups, kh, kw)
    cb, bias = rand_codebook(n_cb, bits), rand_x(c_out, seed=5)
    packed = ck.codebook_pack(idx.reshape(c_out, -1), bits).to(DEV)
    for xd in (x.to(DEV), x.to(DEV).contiguous(memory_format=torch.channels_last)):
        got = ck.codebook_conv2d(xd, packed, cb.to(DEV), bits, bias.to(DEV), (kh, kw), stride, padding, dilation,
                                 groups)
        want = ref.codebook_conv2d(x.float(), idx, cb, bias, stride, padding, dilation, groups)
        assert got.shape == want.shape and got.dtype == dtype and got.is_contiguous()
        wd = ref.codebook_dequantize(idx, cb).double()
        exact = F.conv2d(x.double(), wd, bias.double(), stride, padding, dilation, groups)
        s = F.conv2d(x.double().abs(), wd.abs(), bias.double().abs(), stride, padding, dilation, groups)
        depth = c // groups * kh * kw
        u = UNIT[dtype]
        tol = 4 * (depth + 1) * 2.0**-24 * s + 2 * u * s + u * exact.abs() + 2.0**-25
        assert_within(got, exact, tol)


# ---------------------------------------------------------------- GPU: opcheck / compile / autograd


def _cuda_sample(m, dtype=torch.float32, bits=4):
    x, idx, cb, bias = codebook_linear_case(m, 40, 50, 2, bits)
    return x.to(DEV, dtype), ck.codebook_pack(idx, bits).to(DEV), cb.to(DEV), bits, bias.to(DEV)


@requires_cuda
def test_cuda_opcheck():
    idx = rand_idx(40, 50, 4).to(DEV)
    torch.library.opcheck(OPS.codebook_pack, (idx, 4))
    torch.library.opcheck(OPS.codebook_unpack, (ck.codebook_pack(idx, 4), 4, 50))
    for m, dtype in ((1, torch.float32), (6, torch.float16), (16, torch.float32), (16, torch.bfloat16)):
        x, packed, cb, bits, bias = _cuda_sample(m, dtype)
        torch.library.opcheck(OPS.codebook_linear, (x, packed, cb, bits, bias))
    x, packed, cb, bits, _ = _cuda_sample(3)
    torch.library.opcheck(OPS.codebook_linear, (x.requires_grad_(), packed, cb.requires_grad_(), bits, None))
    xc = rand_x(2, 4, 7, 7).to(DEV)
    pc = ck.codebook_pack(rand_idx(32, 2 * 9, 3), 3).to(DEV)
    args = (xc, pc, rand_codebook(2, 3).to(DEV), 3, rand_x(32).to(DEV), [3, 3], [2, 2], [1, 1], [1, 1], 2)
    torch.library.opcheck(OPS.codebook_conv2d, args)


@requires_cuda
def test_cuda_compile_fullgraph():
    for m in (1, 16):
        x, packed, cb, bits, bias = _cuda_sample(m)
        f = torch.compile(lambda x: torch.relu(ck.codebook_linear(x, packed, cb, bits, bias)), fullgraph=True)
        assert torch.equal(f(x), torch.relu(ck.codebook_linear(x, packed, cb, bits, bias)))
    xi = rand_x(1, 3, 6, 6).to(DEV)
    pc = ck.codebook_pack(rand_idx(16, 27, 2), 2).to(DEV)
    cbc = rand_codebook(1, 2).to(DEV)
    g = torch.compile(lambda x: ck.codebook_conv2d(x, pc, cbc, 2, None, 3, 1, 1) * 2, fullgraph=True)
    assert torch.equal(g(xi), ck.codebook_conv2d(xi, pc, cbc, 2, None, 3, 1, 1) * 2)


@requires_cuda
@pytest.mark.parametrize("m", [7, 40])
def test_cuda_linear_gradients_equal_cpu_op(m):
    bits = 3
    x, idx, cb, bias = codebook_linear_case(m, 40, 30, 4, bits, seed=21)
    packed = ck.codebook_pack(idx, bits)
    grad_y = rand_x(m, 40, seed=22)
    grads = []
    for dev in ("cpu", DEV):
        leaves = [t.to(dev).clone().requires_grad_() for t in (x, cb, bias)]
        ck.codebook_linear(leaves[0], packed.to(dev), leaves[1], bits, leaves[2]).backward(grad_y.to(dev))
        grads.append([t.grad.cpu() for t in leaves])
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_backward_runs(dtype):
    bits = 4
    x, packed, cb, _, bias = _cuda_sample(5, dtype, bits)
    x.requires_grad_(), cb.requires_grad_(), bias.requires_grad_()
    ck.codebook_linear(x, packed, cb, bits, bias).float().square().sum().backward()
    assert x.grad.dtype == dtype and cb.grad.dtype == torch.float32 and bias.grad.dtype == torch.float32
    assert bool(torch.isfinite(cb.grad).all())
    xc = rand_x(2, 4, 6, 6, seed=31).to(DEV, dtype).requires_grad_()
    pc = ck.codebook_pack(rand_idx(32, 18, bits), bits).to(DEV)
    cbc = rand_codebook(2, bits).to(DEV).requires_grad_()
    ck.codebook_conv2d(xc, pc, cbc, bits, None, 3, 2, 1, 1, 2).float().sum().backward()
    assert xc.grad.dtype == dtype and cbc.grad.dtype == torch.float32


@requires_cuda
def test_cuda_conv2d_gradients_equal_cpu_op():
    bits, c_out, groups = 4, 32, 2
    x = rand_x(2, 4, 6, 6, seed=31)
    packed = ck.codebook_pack(rand_idx(c_out, 18, bits, seed=32), bits)
    cb, bias = rand_codebook(4, bits, seed=33), rand_x(c_out, seed=34)
    grads = []
    for dev in ("cpu", DEV):
        leaves = [t.to(dev).clone().requires_grad_() for t in (x, cb, bias)]
        y = ck.codebook_conv2d(leaves[0], packed.to(dev), leaves[1], bits, leaves[2], 3, 2, 1, 1, groups)
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # the backward is aten's convolution
            y.backward(rand_x(*y.shape, seed=35).to(dev))
        grads.append([t.grad.cpu() for t in leaves])
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- GPU: modules


@requires_cuda
@pytest.mark.parametrize("granularity, group_size", [("layer", None), ("group", 16)])
def test_cuda_codebook_linear_module_equals_cpu(granularity, group_size):
    torch.manual_seed(0)
    q = ck.CodebookLinear.from_float(torch.nn.Linear(70, 48), bits=3, granularity=granularity,
                                     group_size=group_size).eval()
    qd = copy.deepcopy(q).to(DEV)
    assert qd.packed_idx.device.type == "cuda" and torch.equal(qd.packed_idx.cpu(), q.packed_idx)
    w, b = q.dequantized_weight(), q.bias.detach()
    for shape in ((1, 70), (2, 5, 70)):
        x = rand_x(*shape)
        with torch.no_grad():
            got, cpu = qd(x.to(DEV)), q(x)
        _, tol = bound(x.reshape(-1, 70), w, b, torch.float32, False)
        assert_within(got.reshape(-1, 48), cpu.reshape(-1, 48).double(), 2 * tol)


@requires_cuda
def test_cuda_codebook_conv2d_module_equals_cpu():
    torch.manual_seed(0)
    q = ck.CodebookConv2d.from_float(torch.nn.Conv2d(8, 32, 3, stride=2, padding=1, groups=2), bits=4).eval()
    qd = copy.deepcopy(q).to(DEV)
    x = rand_x(2, 8, 9, 9)
    with torch.no_grad():
        got, cpu = qd(x.to(DEV)), q(x)
    torch.testing.assert_close(got.cpu(), cpu, rtol=1e-5, atol=1e-5)
    qd.train()  # training path: F.conv2d on the reconstructed weight (TF32 off for the comparison)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        torch.testing.assert_close(qd(x.to(DEV)).detach().cpu(), cpu, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- GPU: argument checks


@requires_cuda
def test_cuda_bad_arguments():
    x, packed, cb, bits, bias = _cuda_sample(2)
    with pytest.raises(RuntimeError, match="codebook_linear: x must be Float, Half or BFloat16 on CUDA, got Double"):
        ck.codebook_linear(x.double(), packed, cb, bits, bias)
    with pytest.raises(RuntimeError, match="codebook_linear: x must be a CUDA tensor here, got cpu"):
        ck.codebook_linear(x.cpu(), packed, cb, bits, bias)
    with pytest.raises(RuntimeError, match="codebook_linear: packed_idx must be on cuda:0 like x, got cpu"):
        ck.codebook_linear(x, packed.cpu(), cb, bits, bias)
    with pytest.raises(RuntimeError, match="codebook_linear: codebook must be on cuda:0 like x, got cpu"):
        ck.codebook_linear(x, packed, cb.cpu(), bits, bias)
    with pytest.raises(RuntimeError, match="codebook_linear: bias must be on cuda:0 like x, got cpu"):
        ck.codebook_linear(x, packed, cb, bits, bias.cpu())
    # the checks shared with the CPU glue give the same messages on CUDA
    with pytest.raises(RuntimeError, match=r"codebook_linear: the header of packed_idx is corrupted"):
        ck.codebook_linear(x, packed[:, :6].contiguous(), cb, bits, bias)
    with pytest.raises(RuntimeError, match=r"codebook_linear: packed_idx is a codebook_pack \(bits=4, N=40, K=50\), "
                                           r"expected a codebook_pack for bits=4, K=49 \(from x\)"):
        ck.codebook_linear(x[:, :49], packed, cb, bits, bias)
    with pytest.raises(RuntimeError, match="the number of codebooks G=3 must divide the number of output rows N=40"):
        ck.codebook_linear(x, packed, torch.zeros(3, 16, device=DEV), bits, bias)
    with pytest.raises(RuntimeError, match=r"codebook_pack: idx values must be in \[0, 3\] for bits=2"):
        ck.codebook_pack(torch.full((2, 3), 7, device=DEV), 2)
    with pytest.raises(RuntimeError, match="codebook_unpack: k must be > 0, got 0"):
        ck.codebook_unpack(packed, bits, 0)
    xc = rand_x(1, 4, 6, 6).to(DEV)
    pc = ck.codebook_pack(rand_idx(16, 36, 2), 2).to(DEV)
    cbc = rand_codebook(1, 2).to(DEV)
    with pytest.raises(RuntimeError, match="codebook_conv2d: x must be Float, Half or BFloat16 on CUDA, got Int"):
        ck.codebook_conv2d(xc.int(), pc, cbc, 2, None, 3)
    with pytest.raises(RuntimeError, match="codebook_conv2d: x must be a CUDA tensor here, got cpu"):
        ck.codebook_conv2d(xc.cpu(), pc, cbc, 2, None, 3)
    with pytest.raises(RuntimeError, match="codebook_conv2d: groups=3 must be >= 1 and divide the input channels C=4"):
        ck.codebook_conv2d(xc, pc, cbc, 2, None, 3, groups=3)
