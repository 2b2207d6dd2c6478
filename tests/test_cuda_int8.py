"""The int8 family on CUDA: every op bit for bit equal to the CPU op (integers and the fp32 epilogue,
whose three IEEE operations are the same on both), opcheck and torch.compile on CUDA, modules
moved with .to("cuda"), and the CUDA-only argument checks.

The tests at the top need no GPU: they replay the CUDA kernel's shared-memory and tensor-core
fragment index math (csrc/cuda/int8_mma.cuh) on the CPU, on the packed weight the CPU op writes."""

import pytest
import torch

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.testing import int8_conv_case, rand_int

OPS = torch.ops.compress_kernels
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEV = "cuda"


# ---------------------------------------------------------------- kernel index math, on the CPU

TILE_M, TILE_N, TILE_K, B_STRIDE = 128, 128, 64, 24


def _stage_b(packed: torch.Tensor, n: int, k: int, tile_n0: int, k0: int) -> dict:
    """load_b: shared-memory words s_b[(blk, g, i)] of one k-tile, from the packed int32 buffer."""
    flat = packed.reshape(-1)
    words_k = (k + 3) // 4
    g0, s_b = k0 // 4, {}
    g_valid = min(16, words_k - g0)
    for blk in range(TILE_N // 16):
        first = tile_n0 + 16 * blk
        if first >= n:
            continue
        rows = min(16, n - first)
        src_block = first * words_k + g0 * rows
        for p in range(rows * 16):  # the 4-byte path; the 16-byte path copies the same words
            g, r = divmod(p, rows)
            s_b[(blk, g, r)] = int(flat[src_block + p]) if g < g_valid else 0
    return s_b


def _word_bytes(word: int) -> list[int]:
    return [((word >> (8 * j)) & 0xFF) - (256 if (word >> (8 * j)) & 0x80 else 0) for j in range(4)]


def _fragment_gemm(a: torch.Tensor, packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """The int32 product the kernel computes, assembled fragment by fragment: A words as ldmatrix
    delivers them, B words read from s_b, accumulators at their C-fragment positions."""
    m = a.shape[0]
    out = torch.zeros(m, n, dtype=torch.int64)
    for tile_n0 in range(0, n, TILE_N):
        for k0 in range(0, (k + TILE_K - 1) // TILE_K * TILE_K, TILE_K):
            s_b = _stage_b(packed, n, k, tile_n0, k0)
            s_a = torch.zeros(m, TILE_K, dtype=torch.int64)  # rows of the A tile, zero past k
            width = min(TILE_K, k - k0)
            s_a[:, :width] = a[:, k0:k0 + width].long()
            for warp_n in range(4):
                for nt in range(4):
                    blk, half = warp_n * 2 + nt // 2, nt % 2
                    for ks in range(TILE_K // 32):
                        for lane in range(32):
                            gid, tig = lane // 4, lane % 4
                            # b0 = B[4 tig .. +3][gid], b1 = B[16 + 4 tig .. +3][gid]
                            b0 = s_b.get((blk, ks * 8 + tig, half * 8 + gid), 0)
                            b1 = s_b.get((blk, ks * 8 + 4 + tig, half * 8 + gid), 0)
                            col = tile_n0 + blk * 16 + half * 8 + gid
                            if col >= n:
                                continue
                            # the column this lane's B words belong to must be weight row `col`
                            for j, word in ((0, b0), (1, b1)):
                                kk = k0 + ks * 32 + 16 * j + 4 * tig
                                wb = _word_bytes(word)
                                for e in range(4):
                                    out[:, col] += s_a[:, kk - k0 + e] * wb[e] if kk + e < k else 0
    return out


@pytest.mark.parametrize("m, n, k", [(3, 16, 64), (2, 21, 70), (2, 130, 129), (1, 5, 3)])
def test_fragment_index_math_rebuilds_the_product(m, n, k):
    a = rand_int(m, k, seed=m)
    w = rand_int(n, k, lo=-127, hi=127, seed=n)
    packed = ck.ops.packed_payload(ck.int8_pack_weight(w), "int8_pack_weight")  # what the kernel reads
    got = _fragment_gemm(a, packed, n, k)
    assert torch.equal(got, a.long() @ w.long().T)


def test_ldmatrix_lane_addresses_give_the_a_fragment():
    # ldmatrix.x4: lane l addresses row (l & 7) + 8 ((l >> 3) & 1), byte 16 (l >> 4) of the 16 x 32
    # tile; lane t receives word (row t / 4, bytes 4 (t % 4)) of matrix j in register j. The mma
    # wants a0 = A[gid][4 tig], a1 = A[gid + 8][4 tig], a2 = A[gid][16 + 4 tig], a3 = A[gid + 8][16 + 4 tig].
    matrices = {}
    for lane in range(32):
        j = lane >> 3
        matrices.setdefault(j, []).append(((lane & 7) + 8 * ((lane >> 3) & 1), 16 * (lane >> 4)))
    for t in range(32):
        gid, tig = t // 4, t % 4
        want = [(gid, 4 * tig), (gid + 8, 4 * tig), (gid, 16 + 4 * tig), (gid + 8, 16 + 4 * tig)]
        for j in range(4):
            row, byte = matrices[j][t // 4]
            assert (row, byte + 4 * (t % 4)) == want[j]


def test_shared_memory_fragment_loads_are_bank_conflict_free():
    # B: word (g, i) at g * 24 + i, lane reads g = 4 ks + tig (+ 4), i = 8 half + gid.
    assert len({(tig * B_STRIDE + gid) % 32 for tig in range(4) for gid in range(8)}) == 32
    # A: ldmatrix phase of 8 rows x 16 bytes at an 80-byte row stride covers 32 distinct banks.
    assert len({(r * 80 // 4 + w) % 32 for r in range(8) for w in range(4)}) == 32


def test_conv_depth_decomposition_keeps_chunks_inside_one_tap():
    # k = (kh * KW + kw) * Cg + c; a kVec chunk starting at a multiple of kVec stays in one tap when
    # kVec divides Cg (the condition int8_conv.cu uses to pick 16 / 4 / 1-byte copies).
    for cg in (1, 3, 4, 12, 16, 64):
        vec = 16 if cg % 16 == 0 else 4 if cg % 4 == 0 else 1
        for k in range(0, 9 * cg, vec):
            assert k // cg == (k + vec - 1) // cg


# ---------------------------------------------------------------- GPU: ops against the CPU ops

GEMM_SHAPES = [  # (M, N, K): tile tails in M (128) and N (128, blocks of 16), K tails (64, 16, 4)
    (1, 1, 1), (1, 64, 64), (2, 17, 3), (7, 63, 130), (13, 65, 131), (33, 200, 64), (129, 257, 1000),
    (300, 130, 67), (128, 128, 128), (256, 384, 4096), (5, 16, 2052),
]


def _cpu_and_cuda(fn, *args):
    """fn on the CPU arguments and on their CUDA copies (tensors only); returns (cpu, cuda-as-cpu)."""
    cuda_args = [a.to(DEV) if isinstance(a, torch.Tensor) else a for a in args]
    got = fn(*cuda_args)
    assert got.device.type == "cuda"
    return fn(*args), got.cpu()


@requires_cuda
@pytest.mark.parametrize("n, k", [(1, 1), (16, 4), (17, 5), (70, 131), (256, 1024)])
def test_pack_weight_gives_the_cpu_bytes(n, k):
    w = rand_int(n, k)
    want, got = _cpu_and_cuda(ck.int8_pack_weight, w)
    assert torch.equal(got, want)
    # a strided view packs the same
    wide = rand_int(n, k + 9)
    assert torch.equal(ck.int8_pack_weight(wide.to(DEV)[:, 3:3 + k]).cpu(), ck.int8_pack_weight(wide[:, 3:3 + k]))


@requires_cuda
@pytest.mark.parametrize("m, n, k", GEMM_SHAPES)
@pytest.mark.parametrize("x_dtype", [torch.int8, torch.uint8])
def test_int8_gemm_matches_cpu(m, n, k, x_dtype):
    lo, hi = ck.numerics.dtype_range(x_dtype)
    a = rand_int(m, k, lo=lo, hi=hi, dtype=x_dtype)
    b = rand_int(n, k)
    want = ck.int8_gemm(a, b)
    assert torch.equal(ck.int8_gemm(a.to(DEV), b.to(DEV)).cpu(), want)
    assert torch.equal(ck.int8_gemm(a.to(DEV), ck.int8_pack_weight(b).to(DEV)).cpu(), want)


@requires_cuda
@pytest.mark.parametrize("k", [64, 68, 67])  # 16-byte, 4-byte and 1-byte row copies
def test_int8_gemm_strided_and_misaligned_rows(k):
    big = rand_int(70, k + 21, seed=3)
    b = rand_int(40, k, seed=4)
    packed = ck.int8_pack_weight(b).to(DEV)
    for view in (lambda t: t[:, :k], lambda t: t[1:, 5:5 + k], lambda t: t[::2, 16:16 + k]):
        x = view(big)
        assert torch.equal(ck.int8_gemm(view(big.to(DEV)), packed).cpu(), ck.int8_gemm(x.contiguous(), b))


@requires_cuda
def test_extreme_values_do_not_overflow():
    k = 8192
    for xv, wv in [(-128, -128), (127, -128), (255, -128), (255, 127)]:
        dtype = torch.uint8 if xv == 255 else torch.int8
        a = torch.full((130, k), xv, dtype=torch.int64).to(dtype)
        b = torch.full((19, k), wv, dtype=torch.int8)
        assert torch.equal(ck.int8_gemm(a.to(DEV), b.to(DEV)).cpu(), ref.int8_gemm(a, b))


def _linear_case(m, n, k, x_dtype, per_channel, seed=0):
    lo, hi = ck.numerics.dtype_range(x_dtype)
    x = rand_int(m, k, lo=lo, hi=hi, dtype=x_dtype, seed=seed)
    w = rand_int(n, k, lo=-127, hi=127, seed=seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    b = torch.randint(-(2**20), 2**20, (n,), generator=g, dtype=torch.int32)
    real = (torch.rand(n if per_channel else 1, generator=g, dtype=torch.float64) + 0.05) / (k * 40)
    m0, shift = ck.quantize_multiplier(real)
    return x, w, b, m0, shift


OUTPUT_STAGES = [  # (out_dtype, zero point, qmin, qmax, rounding)
    (torch.int8, 3, -128, 127, "double"), (torch.uint8, 120, 120, 255, "double"), (torch.uint8, 0, 0, 255, "single"),
    (torch.int32, -5, -(2**31), 2**31 - 1, "double"), (torch.int32, 7, -(2**31), 2**31 - 1, "single"),
    (torch.int8, -128, -128, -100, "single"),
]


@requires_cuda
@pytest.mark.parametrize("m, n, k", [(2, 17, 3), (13, 65, 131), (129, 257, 1000), (300, 130, 64)])
@pytest.mark.parametrize("x_dtype, x_zp", [(torch.uint8, 0), (torch.uint8, 131), (torch.int8, -7), (torch.int8, 127)])
@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_linear_matches_cpu(m, n, k, x_dtype, x_zp, per_channel):
    x, w, b, m0, shift = _linear_case(m, n, k, x_dtype, per_channel)
    packed = ck.int8_pack_weight(w)
    xd, pd, bd = x.to(DEV), packed.to(DEV), b.to(DEV)
    for out_dtype, zp, qmin, qmax, rounding in OUTPUT_STAGES:
        want = ck.int8_linear(x, x_zp, packed, b, m0, shift, zp, qmin, qmax, out_dtype, rounding)
        # multipliers on the host (per tensor: passed by value) and on the device
        for mm, ss in ((m0, shift), (m0.to(DEV), shift.to(DEV))):
            got = ck.int8_linear(xd, x_zp, pd, bd, mm, ss, zp, qmin, qmax, out_dtype, rounding)
            assert got.dtype == out_dtype and torch.equal(got.cpu(), want), (out_dtype, zp, rounding)
    # raw weight, no bias, Python-int multiplier
    got = ck.int8_linear(xd, x_zp, w.to(DEV), None, int(m0.reshape(-1)[0]), int(shift.reshape(-1)[0]))
    assert torch.equal(got.cpu(), ck.int8_linear(x, x_zp, w, None, int(m0.reshape(-1)[0]), int(shift.reshape(-1)[0])))


@requires_cuda
def test_int8_linear_wraps_and_saturates_like_the_cpu():
    x = torch.full((2, 8), 255, dtype=torch.uint8)
    w = torch.full((3, 8), 127, dtype=torch.int8)
    b = torch.tensor([2**31 - 1, -(2**31), 0], dtype=torch.int32)
    for m0, shift in [(2**31 - 1, 30), (2**30, -31), (0, 0), (2**30, 0)]:
        for rounding in ("double", "single"):
            args = (0, w, b, m0, shift, 0, -(2**31), 2**31 - 1, torch.int32, rounding)
            want = ck.int8_linear(x, *args)
            got = ck.int8_linear(x.to(DEV), 0, w.to(DEV), b.to(DEV), m0, shift, 0, -(2**31), 2**31 - 1, torch.int32,
                                 rounding)
            assert torch.equal(got.cpu(), want)


@requires_cuda
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (7, 63, 130), (129, 257, 1000)])
@pytest.mark.parametrize("per_row, per_channel, bias", [(True, True, True), (False, False, False), (True, False, True)])
def test_int8_linear_float_matches_cpu(m, n, k, per_row, per_channel, bias):
    g = torch.Generator().manual_seed(5)
    x = rand_int(m, k, lo=-127, hi=127)
    w = rand_int(n, k, lo=-127, hi=127, seed=2)
    xs = torch.rand(m if per_row else 1, generator=g) / 100
    ws = torch.rand(n if per_channel else 1, generator=g) / 100
    bf = torch.randn(n, generator=g) if bias else None
    want, got = _cpu_and_cuda(ck.int8_linear_float, x, 3, ck.int8_pack_weight(w), xs, ws, bf)
    # (float(acc) * x_scale) * w_scale + bias, each rounded to fp32 on both devices: identical
    assert torch.equal(got, want)


@requires_cuda
@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 1000), (70, 4096), (5, 0)])
def test_quantize_rows_matches_cpu(rows, cols):
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows)) * 3
    if rows > 1 and cols > 0:
        x[1] = 0.0  # an all-zero row: scale 1
        x[0, 0] = 0.5 * (x[0].abs().max() / 127) * 3  # near a rounding tie
    for qmax in (127, 100):
        (wq, ws), (gq, gs) = [ck.quantize_rows(t, qmax) for t in (x, x.to(DEV))]
        assert torch.equal(gq.cpu(), wq) and torch.equal(gs.cpu(), ws)


EDGE_ACC = torch.tensor([0, 1, -1, 2**31 - 1, -(2**31), 2**30, -(2**30), 12345, -12345, 2**15, -(2**15) - 1],
                        dtype=torch.int32)


@requires_cuda
@pytest.mark.parametrize("rounding", ["double", "single"])
def test_requantize_matches_cpu_over_shifts(rounding):
    g = torch.Generator().manual_seed(0)
    acc = torch.cat([EDGE_ACC, torch.randint(-(2**31), 2**31 - 1, (4000,), generator=g, dtype=torch.int64).int()])
    acc = acc[: acc.numel() // 61 * 61].reshape(-1, 61)
    for shift in range(-31, 31):
        for m0 in (2**30, 2**31 - 1, 1518500250, 0):
            for out_dtype, zp, qmin, qmax in [(torch.int8, -3, -128, 127), (torch.uint8, 128, 0, 255),
                                              (torch.int32, 0, -(2**31), 2**31 - 1)]:
                want = ck.requantize(acc, m0, shift, zp, qmin, qmax, out_dtype, rounding)
                got = ck.requantize(acc.to(DEV), m0, shift, zp, qmin, qmax, out_dtype, rounding)
                assert torch.equal(got.cpu(), want), (shift, m0, out_dtype)
    # per channel (the last dimension), multipliers on the host or the device
    m0c, shiftc = ck.quantize_multiplier(torch.rand(61, generator=g, dtype=torch.float64) * 2.0**-10)
    want = ck.requantize(acc, m0c, shiftc, 5, -128, 127, torch.int8, rounding)
    for mm, ss in ((m0c, shiftc), (m0c.to(DEV), shiftc.to(DEV))):
        assert torch.equal(ck.requantize(acc.to(DEV), mm, ss, 5, -128, 127, torch.int8, rounding).cpu(), want)


CONV_CONFIGS = [  # (n, c, h, w, oc, k, stride, padding, dilation, groups)
    (1, 3, 8, 8, 16, 3, 1, 1, 1, 1),        # 3-channel stem: 1-byte gather
    (2, 16, 9, 7, 24, 3, 2, 1, 1, 1),       # 16-byte gather, stride 2, odd sizes
    (1, 8, 10, 10, 70, 3, 1, 2, 2, 1),      # 4-byte gather, dilation, N tail
    (2, 32, 6, 6, 32, 1, 1, 0, 1, 1),       # 1x1
    (1, 32, 7, 7, 16, 1, 2, 0, 1, 1),       # 1x1 stride 2
    (1, 12, 6, 6, 18, 3, 1, 1, 1, 3),       # grouped, Cg = 4, misaligned group bases in the pack
    (1, 48, 6, 6, 96, 3, 1, 1, 1, 3),       # grouped, Cg = 16
    (2, 16, 8, 8, 16, 3, 1, 1, 1, 16),      # depthwise
    (2, 64, 9, 9, 64, 3, 2, 1, 1, 64),      # depthwise stride 2
    (1, 8, 9, 9, 16, 5, 2, 2, 1, 8),        # channel multiplier 2 (grouped GEMM)
    (1, 5, 4, 6, 7, 2, (2, 1), (0, 1), (1, 2), 1),  # asymmetric stride / padding / dilation
    (3, 64, 14, 14, 128, 3, 1, 1, 1, 1),    # ResNet-like: several M tiles, depth 576
    (1, 130, 5, 5, 140, 3, 1, 1, 1, 1),     # C % 16 == 2: 1-byte gather, N and K tails
]


@requires_cuda
@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=lambda c: "x".join(map(str, c[:6])) + f"_g{c[-1]}")
@pytest.mark.parametrize("x_dtype, x_zp", [(torch.uint8, 0), (torch.uint8, 113), (torch.int8, -9)])
def test_int8_conv2d_matches_cpu(cfg, x_dtype, x_zp):
    n, c, h, w, oc, k, stride, padding, dilation, groups = cfg
    x, wt, b, m0, shift = int8_conv_case(n, c, h, w, oc, k, groups, x_dtype)
    packed = ck.int8_conv2d_pack_weight(wt, groups)
    assert torch.equal(ck.int8_conv2d_pack_weight(wt.to(DEV), groups).cpu(), packed)
    xd = x.to(DEV)
    for out_dtype, zp, qmin, qmax, rounding in OUTPUT_STAGES[:4]:
        want = ck.int8_conv2d(x, x_zp, wt, b, m0, shift, zp, qmin, qmax, out_dtype, stride, padding, dilation, groups,
                              rounding)
        for x_in, w_packed, mm in ((xd, None, m0), (xd.contiguous(memory_format=torch.channels_last),
                                                    packed.to(DEV), m0.to(DEV))):
            got = ck.int8_conv2d(x_in, x_zp, wt.to(DEV), b.to(DEV), mm, shift.to(DEV), zp, qmin, qmax, out_dtype,
                                 stride, padding, dilation, groups, rounding, w_packed=w_packed)
            assert got.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(got.cpu(), want), (out_dtype, rounding)


@requires_cuda
def test_int8_conv2d_padding_is_the_zero_point_and_per_tensor_no_bias():
    x = torch.full((1, 16, 5, 5), 77, dtype=torch.uint8)
    wt = rand_int(8, 16, 3, 3, lo=-127, hi=127)
    b = torch.arange(8, dtype=torch.int32) * 1000
    args = (77, wt, b, 2**30, -4, 0, -(2**31), 2**31 - 1, torch.int32, 1, 2)
    want = ck.int8_conv2d(x, *args)
    got = ck.int8_conv2d(x.to(DEV), 77, wt.to(DEV), b.to(DEV), *args[3:])
    assert torch.equal(got.cpu(), want)
    x2, wt2, _, m0, shift = int8_conv_case(2, 32, 7, 7, 40, 3, 1, torch.uint8, per_channel=False)
    want = ck.int8_conv2d(x2, 9, wt2, None, m0, shift, 4, 0, 255, torch.uint8, 1, 1)
    assert torch.equal(ck.int8_conv2d(x2.to(DEV), 9, wt2.to(DEV), None, m0, shift, 4, 0, 255, torch.uint8, 1, 1).cpu(),
                       want)


@requires_cuda
def test_empty_inputs():
    w = rand_int(8, 16)
    x = torch.zeros(0, 16, dtype=torch.uint8, device=DEV)
    assert ck.int8_linear(x, 0, w.to(DEV), None, 2**30, -8).shape == (0, 8)
    x = torch.zeros(0, 4, 6, 6, dtype=torch.uint8, device=DEV)
    y = ck.int8_conv2d(x, 0, rand_int(8, 4, 3, 3).to(DEV), None, 2**30, -8, padding=1)
    assert y.shape == (0, 8, 6, 6)


# ---------------------------------------------------------------- GPU: opcheck, compile, modules


@requires_cuda
def test_opcheck_on_cuda():
    x, w, b, m0, shift = _linear_case(9, 33, 70, torch.uint8, True)
    x, w, b, m0, shift = x.to(DEV), w.to(DEV), b.to(DEV), m0.to(DEV), shift.to(DEV)
    packed = OPS.int8_pack_weight(w)
    torch.library.opcheck(OPS.int8_pack_weight.default, (w,))
    torch.library.opcheck(OPS.int8_gemm.default, (x, packed))
    torch.library.opcheck(OPS.int8_linear.default, (x, 3, packed, b, m0, shift, 1, -128, 127, torch.int8, "single"))
    torch.library.opcheck(OPS.int8_linear_float.default,
                          (x, 3, packed, torch.rand(9, device=DEV), torch.rand(33, device=DEV), None))
    torch.library.opcheck(OPS.quantize_rows.default, (torch.randn(5, 40, device=DEV), 127))
    acc = torch.randint(-(2**20), 2**20, (4, 33), dtype=torch.int32, device=DEV)
    torch.library.opcheck(OPS.requantize.default, (acc, m0, shift, 2, -128, 127, torch.int8, "double"))
    xc, wt, bc, m0c, shiftc = int8_conv_case(2, 8, 6, 6, 16, 3, 1, torch.uint8)
    xc, wt, bc, m0c, shiftc = xc.to(DEV), wt.to(DEV), bc.to(DEV), m0c.to(DEV), shiftc.to(DEV)
    wp = OPS.int8_conv2d_pack_weight(wt, 1)
    torch.library.opcheck(OPS.int8_conv2d_pack_weight.default, (wt, 1))
    torch.library.opcheck(OPS.int8_conv2d.default, (xc, 5, wt, bc, m0c, shiftc, 1, -128, 127, torch.int8, [2, 2],
                                                     [1, 1], [1, 1], 1, "double", wp))


@requires_cuda
def test_compile_fullgraph_on_cuda():
    x, w, b, m0, shift = _linear_case(9, 33, 70, torch.uint8, True)
    x, b, m0, shift = x.to(DEV), b.to(DEV), m0.to(DEV), shift.to(DEV)
    packed = ck.int8_pack_weight(w).to(DEV)

    def f(x):
        y = ck.int8_linear(x, 3, packed, b, m0, shift, 1, -128, 127, torch.int32)
        return ck.requantize(y, m0, shift, 0, -128, 127, torch.int8)

    assert torch.equal(torch.compile(f, fullgraph=True)(x), f(x))
    xc, wt, bc, m0c, shiftc = int8_conv_case(2, 16, 6, 6, 16, 3, 1, torch.uint8)
    xc, wt, bc, m0c, shiftc = xc.to(DEV), wt.to(DEV), bc.to(DEV), m0c.to(DEV), shiftc.to(DEV)

    def g(xc):
        return ck.int8_conv2d(xc, 5, wt, bc, m0c, shiftc, 1, stride=2, padding=1)

    assert torch.equal(torch.compile(g, fullgraph=True)(xc), g(xc))


@requires_cuda
def test_modules_moved_to_cuda_give_the_cpu_integers():
    torch.manual_seed(0)
    lin = torch.nn.Linear(70, 33)
    q = ck.QuantLinear.from_float(lin, input_scale=0.05, input_zero_point=120, output_scale=0.04,
                                  output_zero_point=110)
    x_q = q.quantize_input(torch.randn(2, 7, 70) * 2)
    want = q(x_q)
    qd = q.to(DEV)
    assert qd.packed_weight.device.type == "cuda"
    assert torch.equal(qd(x_q.to(DEV)).cpu(), want)

    dyn = ck.QuantLinear.from_float(lin, dynamic=True)
    xf = torch.randn(5, 70)
    torch.testing.assert_close(dyn.to(DEV)(xf.to(DEV)).cpu(), dyn.cpu()(xf), rtol=0, atol=0)

    conv, bn = torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.BatchNorm2d(32)
    bn.eval()
    qc = ck.QuantConv2d.from_float(conv, bn, input_scale=0.05, input_zero_point=128, output_scale=0.04,
                                   output_zero_point=10, activation="relu")
    xc = torch.randint(0, 256, (2, 16, 9, 9), dtype=torch.uint8)
    want = qc(xc)
    assert torch.equal(qc.to(DEV)(xc.to(DEV)).cpu(), want)


# ---------------------------------------------------------------- GPU: argument checks


@requires_cuda
def test_cuda_only_checks():
    x = torch.zeros(4, 16, dtype=torch.uint8, device=DEV)
    w = torch.zeros(8, 16, dtype=torch.int8, device=DEV)
    with pytest.raises(RuntimeError, match=r"int8_linear: bias must be on cuda:\d like x, got cpu"):
        ck.int8_linear(x, 0, w, torch.zeros(8, dtype=torch.int32), 2**30, 0)
    with pytest.raises(RuntimeError, match=r"int8_gemm: x must be a CUDA tensor here, got cpu"):
        OPS.int8_gemm(x.cpu(), w)
    with pytest.raises(RuntimeError, match=r"int8_gemm: w must be on cuda:\d like x, got cpu"):
        OPS.int8_gemm(x, w.cpu())
    with pytest.raises(RuntimeError, match=r"int8_linear_float: x_scale must be on cuda:\d like x"):
        ck.int8_linear_float(x, 0, w, torch.ones(1), torch.ones(1, device=DEV))
    with pytest.raises(RuntimeError, match=r"requantize: acc must be a CUDA tensor here"):
        OPS.requantize(torch.zeros(3, dtype=torch.int32), torch.tensor([2**30], device=DEV),
                       torch.tensor([0], device=DEV), 0, -128, 127, torch.int8, "double")
    xc = torch.zeros(1, 16, 6, 6, dtype=torch.uint8, device=DEV)
    wt = torch.zeros(8, 16, 3, 3, dtype=torch.int8, device=DEV)
    with pytest.raises(RuntimeError, match=r"int8_conv2d: w_packed must be on cuda:\d like x, got cpu"):
        ck.int8_conv2d(xc, 0, wt, None, 2**30, 0, w_packed=ck.int8_conv2d_pack_weight(wt.cpu()))
    with pytest.raises(RuntimeError, match=r"int8_conv2d: w must be on cuda:\d like x, got cpu"):
        ck.int8_conv2d(xc, 0, wt.cpu(), None, 2**30, 0)
    with pytest.raises(RuntimeError, match=r"int8_conv2d: x must be a CUDA tensor here, got cpu"):
        ck.int8_conv2d(xc.cpu(), 0, wt, None, 2**30, 0)
    huge = torch.zeros(1, 1, 1, 1, dtype=torch.uint8, device=DEV).expand(1, 1, 65536, 32769)
    with pytest.raises(RuntimeError, match=r"int8_conv2d: an input plane of 65536x32769 with 1 channels is too large"):
        ck.int8_conv2d(huge, 0, torch.ones(1, 1, 1, 1, dtype=torch.int8, device=DEV), None, 2**30, 0)


@requires_cuda
def test_cuda_refuses_what_the_cpu_refuses():
    x = torch.zeros(4, 16, dtype=torch.uint8)
    w = torch.zeros(8, 16, dtype=torch.int8)
    cases = [
        ((x, 300, w, None, 2**30, 0), r"x_zero_point must be in \[0, 255\]"),
        ((x, 0, w, None, 2**30, 31), r"shift must be in \[-31, 30\]"),
        ((x, 0, w, None, -1, 0), r"m0 must be >= 0"),
        ((x, 0, w, None, 2**30, 0, 0, 10, 5), r"qmin must be <= qmax"),
        ((x, 0, w[:, :8], None, 2**30, 0), r"K mismatch"),
        ((x, 0, ck.int8_pack_weight(w[:, :8]), None, 2**30, 0),
         r"w is an int8_pack_weight \(N=\d+, K=8\), expected an int8_pack_weight for K=16"),
        ((x, 0, w, None, torch.full((3,), 2**30), torch.zeros(3, dtype=torch.int32)), r"per-channel\) elements"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            ck.int8_linear(*args)  # CPU
        dev_args = [a.to(DEV) if isinstance(a, torch.Tensor) and a.dtype != torch.int32 else a for a in args]
        dev_args[2] = args[2].to(DEV)
        with pytest.raises(RuntimeError, match=message):
            ck.int8_linear(*dev_args)
    k = 70000
    with pytest.raises(RuntimeError, match=r"could overflow the int32 accumulator"):
        ck.int8_gemm(torch.zeros(1, k, dtype=torch.uint8, device=DEV), torch.zeros(1, k, dtype=torch.int8, device=DEV))
    with pytest.raises(RuntimeError, match=r"rounding must be"):
        ck.requantize(torch.zeros(3, dtype=torch.int32, device=DEV), 2**30, 0, rounding="up")
    with pytest.raises(RuntimeError, match=r"out_dtype must be int8, uint8 or int32"):
        ck.requantize(torch.zeros(3, dtype=torch.int32, device=DEV), 2**30, 0, out_dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"qmax must be in \[1, 127\]"):
        ck.quantize_rows(torch.zeros(2, 3, device=DEV), 0)
    xc = torch.zeros(1, 16, 6, 6, dtype=torch.uint8, device=DEV)
    with pytest.raises(RuntimeError, match=r"x has 16 channels but w expects"):
        ck.int8_conv2d(xc, 0, torch.zeros(8, 8, 3, 3, dtype=torch.int8, device=DEV), None, 2**30, 0)
    with pytest.raises(RuntimeError, match=r"the output would be empty"):
        ck.int8_conv2d(xc, 0, torch.zeros(8, 16, 7, 7, dtype=torch.int8, device=DEV), None, 2**30, 0)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_multipliers_on_another_gpu_are_refused():
    x = torch.zeros(4, 16, dtype=torch.uint8, device="cuda:0")
    w = torch.zeros(8, 16, dtype=torch.int8, device="cuda:0")
    one = torch.tensor([2**30], dtype=torch.int32, device="cuda:1")
    zero = torch.tensor([0], dtype=torch.int32, device="cuda:1")
    with pytest.raises(RuntimeError, match=r"int8_linear: m0 must be a CPU tensor or on cuda:0 like x, got cuda:1"):
        ck.int8_linear(x, 0, w, None, one, torch.tensor([0], dtype=torch.int32))
    with pytest.raises(RuntimeError, match=r"int8_linear: shift must be a CPU tensor or on cuda:0 like x, got cuda:1"):
        ck.int8_linear(x, 0, w, None, torch.tensor([2**30], dtype=torch.int32), zero)
    # the ops run on x's device, whatever the current device is
    with torch.cuda.device(1):
        y = ck.int8_linear(x + 3, 0, w + 1, None, 2**30, -2)
    assert y.device == x.device and torch.equal(y.cpu(), ck.int8_linear(x.cpu() + 3, 0, w.cpu() + 1, None, 2**30, -2))
