"""2:4 sparse linear (fp32 and int8) against dense peers, measured side by side in one run.

    python benchmarks/bench_sparse24.py [--quick] [--no-write] [--threads N] [--device cpu|cuda|all]
                                        [--isa auto|portable|avx2|avx512vnni|avx512vbmi]

A CPU run on a forced path (--isa other than auto) writes benchmarks/results/sparse24_<path>.md
(the 2:4 table only) instead of sparse24.md.

fp32: sparse24_linear (compressed values + metadata, no packing) vs dense F.linear fp32 (oneDNN /
MKL) on the same (pruned) weight. int8: sparse24_int8_linear (packed once with sparse24_int8_pack)
vs our dense int8_linear (packed once with int8_pack_weight), both uint8 in -> uint8 out with the
fused fixed-point requantization and per-channel multipliers. Bytes: compressed values + metadata
over the dense weight of the same dtype.

CUDA section (only where torch.cuda.is_available()): our mma.sp kernel (weight packed once with
sparse24_cuda_pack) vs torch.sparse.to_sparse_semi_structured with the cuSPARSELt and the CUTLASS
(SparseSemiStructuredTensor._FORCE_CUTLASS) backends and vs dense cuBLAS fp16 (F.linear), all
fp16 in / fp16 out on the same pruned weight; int8 2:4 (uint8 in, fused requantization, uint8
out) vs our dense int8_linear on the GPU. Timed with CUDA events (best of blocks of launches).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import compress_kernels as ck

from common import (
    add_device_argument,
    add_isa_argument,
    best_seconds,
    cuda_best_seconds,
    machine_line,
    markdown_table,
    results_name,
    run_cuda_section,
    write_result,
)

MS = [1, 8, 16, 64, 256, 1024]
KNS = [(1024, 1024), (2048, 2048), (4096, 4096)]


NOTES = """

Notes. Goals: fp32 2:4 >= 1.3x `F.linear` at M >= 64; int8 2:4 >= 1.2x `int8_linear`;
compressed bytes <= 56.25% of dense.

- fp32 (values + metadata = 53.1% of dense bytes), two kernels. Tasks of >= 16 rows run the rows
  kernel (`csrc/cpu/sparse24_f32_rows-inl.h`): x is transposed a k block of 128 at a time, and each
  stored value is broadcast once and multiplied with up to three vectors of 16 rows of x loaded
  from the k its metadata names (the address comes from the meta byte in general-purpose
  registers). Loads select x, so the FP pipes only do FMAs; the limit is the load ports (two 256-bit
  loads per cycle on Zen 4: 3 row vectors + 1 broadcast per 3 FMAs), about 75% of the FMA peak from
  L1. That gives 1.5-1.8x `F.linear` at M >= 64 (125-157 GFLOP/s dense-equivalent on one core,
  where oneDNN runs 70-100). Fewer rows run the shuffle kernel (`sparse24_f32_avx2-inl.h`, vectorized
  over the eight interleaved columns of a block: one `vpermilps` picks each column's x from its
  metadata byte, one FMA follows, no transposition); it needs one shuffle per FMA, and on Zen 4
  shuffles and FMAs share a pipe, so it tops out near 55% of the peak (it alone gave 1.1-1.3x at
  large M), but at M <= 8, where dense is bound by the weight stream, 2:4 reads half the bytes and
  gains 2.2-3.4x. Both follow the portable path's FMA order: bit-identical results.
- int8 (values + metadata = 62.5% of dense int8 bytes; the 56.25% goal is the fp16 figure and
  cannot be met by int8 with 2-bit indices: a 4-bit pattern per group of four int8 is 25% on top of
  the 50% of values, and even a 3-bit pattern code would be 59.4%). One `vpshufb` (gathers each
  column's four x bytes out of eight) and one `vpdpbusd` per eight k where dense needs two
  `vpdpbusd`. The packed weight is 80 bytes per 16 columns x 8 k (the 16 metadata bytes ride with
  the 64 value bytes and are expanded into shuffle controls in registers, once per task for tasks
  of more than one 8-row tile), so the weight held in memory is 62.5% of dense int8, not 100%.
  The controls cost two vector ops per 16 columns and 8 k with AVX-512 VBMI (two broadcast loads,
  `vpmultishiftqb` picks the four 2-bit fields, one ternary-logic op; the avx512vbmi path, Ice Lake
  / Zen 4 and newer) and seven without
  (shifts and ORs; the avx512vnni path, for Cascade Lake, which lacks VBMI). At M >= 64 the shuffle
  + dot product pair gives 1.3-1.42x. At M = 8 it gives 1.21-1.26x: a zmm `vpshufb` and a
  `vpdpbusd` issue at about 0.74 pairs per cycle together (a microbenchmark on this core; each
  alone runs at 1 per cycle), so 2:4 is at most ~1.5x dense's two dot products at 1 per cycle,
  and the control expansion is shared by only 8 rows. Done in line, the expansion cost 30% (the
  shuffles waited for it: 0.50 pairs per cycle in an isolated tile, 0.73 with the controls
  preloaded, for timing only) and M = 8 ran at 1.03-1.1x; expanding one pair ahead (software
  pipelining) recovers most of it (0.60 pairs per cycle). M = 1 (weight-stream bound): 1.22-1.5x.
  The seven-op expansion of the avx512vnni path gives 0.93-1.21x at M <= 8 and 1.24-1.42x at
  M >= 64 (table `sparse24_avx512vnni`).
- bf16 (`sparse24_linear` with bf16 x; AVX-512 VBMI + BF16, Zen 4 / Sapphire Rapids): vectorized over
  16 columns like int8: per group of four k one `vpshufb` picks each column's two bf16 x and one
  `vdpbf16ps` adds both products, where dense bf16 needs two `vdpbf16ps`. The semantics are
  vdpbf16ps' own (the second product first, denormals flushed), which the portable path emulates
  bit for bit (checked against the instruction on random data with denormals, infinities, NaN);
  `reference.sparse24_bf16_linear` is the exact model. It pays most where dense bf16 is bound by
  the weight stream: M = 1 4.4-9.3x, M = 8 2.0-2.5x; at M >= 64, where oneDNN's bf16 runs at ~95% of
  the vdpbf16ps peak, the shuffle + dot product pair gives 1.1-1.2x (the controls are expanded once
  per task there; per 8-row tile they cost 15%). x86's FTZ flushes exactly the sums vdpbf16ps
  flushes (tininess after rounding: -2^-126 + 2^-150 -> -0, -2^-126 + 2^-151 -> -2^-126; 0
  differences in 30M random and near-2^-126 cases), so CPUs without AVX512_BF16 run the same bits
  with fp32 FMAs under MXCSR FTZ + DAZ (the AVX2 path, `vpermps` picks x, 8 rows x 8 columns:
  26-90 GFLOP/s dense-equivalent here, 0.9-1.1x oneDNN's fp32 F.linear at M >= 64).
  On AMX (Sapphire Rapids and later) oneDNN's bf16 F.linear runs on the tile unit, ~10x the vdpbf16ps
  peak; from 8 rows the bf16 2:4 linear there expands each 64-column panel once per task into dense
  bf16 tiles and runs `tdpbf16ps` (sparse24.h, "bf16 on tiles": within the stated bound of the exact
  sum, not the vector model's bits).
- 2:4 conv2d (`sparse24_int8_conv2d`, `sparse24_conv2d`, second table): the groups of four are input channels at
  one kernel tap (NVIDIA's convention), so an input row is kh x kw runs of C contiguous NHWC bytes;
  rows are gathered by memcpy a 256 KB chunk at a time into a per-thread buffer and multiplied by
  the whole weight. int8: 1.16-1.40x our dense int8 implicit-GEMM conv on ResNet-18 layers, batch
  32 and 1. fp32 (the rows kernel on the gathered rows): 1.1-1.3x oneDNN's conv at batch 32,
  which runs at 105-136 GFLOP/s there, and 1.2-1.65x at batch 1.
  (Grouping along PyTorch's flattening order, (channel, kernel row, kernel column), as this package
  first did, makes the gather a byte scatter with stride kh x kw: the same conv then ran at 0.54-0.64x.)
- AVX2 (no AVX-512; table `sparse24_avx2`, forced on the same Zen 4, so its fp32 peer is still
  oneDNN's AVX-512 F.linear and its bf16 peer oneDNN's AVX512_BF16 kernel, which the bf16 emulation
  reaches 0.37-0.46x of at M >= 64): fp32 runs the same two kernels on ymm (rows kernel: 2 columns x 4
  vectors of 8 rows in the 16 registers; transposes avoid `vmaskmovps` for whole vectors, a
  microcoded store on AMD that cost 20%): 1.18-1.47x at M >= 64 (across runs), 1.9-3.6x at M <= 8. int8 is exact
  without vpdpbusd: x widened to int16, one `vpshufb` + one `vpmaddwd` per 4 columns and 8 k,
  against 2 `vpmaddwd` for dense. That is 0.88-1.03x our dense AVX2 int8_linear at M >= 64; at M <= 8
  the per-task lookup of the 8-byte shuffle controls (a 256-entry table per meta byte) is not shared
  by enough rows and 2:4 is slower than dense (0.26-0.88x): on AVX2, int8 2:4 saves memory, not time.
  It replaced the portable loop (0.03x).
- The tables are single-threaded (`--threads 1`): on a shared 2-core VM a descheduled second thread
  stalls every OpenMP barrier. On a quiet machine both scale to 2 threads: at M >= 64, fp32 2:4
  243-312 GFLOP/s dense-equivalent, 1.56-2.43x F.linear; int8 2:4 1.0-1.2 TOP/s, 1.23-1.41x
  int8_linear; at M = 1, 4.1-6.2x (fp32) and 1.19-1.84x (int8) (`python benchmarks/bench_sparse24.py
  --threads 2 --no-write`).
"""


def random_24_mask(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    keep = torch.rand(n, k // 4, 4, generator=generator).argsort(-1)[..., :2]
    return torch.zeros(n, k // 4, 4, dtype=torch.bool).scatter_(-1, keep, True).reshape(n, k)


def bench_shape(m: int, k: int, n: int, min_run_time: float) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(n, k, generator=g) * random_24_mask(n, k, g)
    bias = torch.randn(n, generator=g)
    x = torch.randn(m, k, generator=g)
    values, meta = ck.sparse24_compress(w)
    t: dict[str, float] = {}
    with torch.no_grad():
        t["dense_fp32"] = best_seconds(lambda: F.linear(x, w, bias), min_run_time)
        packed = ck.sparse24_f32_pack(values, meta)
        t["sparse_fp32"] = best_seconds(lambda: ck.sparse24_linear(x, packed, meta, bias), min_run_time)

        w_q = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int64).to(torch.int8) * random_24_mask(n, k, g)
        w_q = w_q.to(torch.int8)
        v_q, meta_q = ck.sparse24_compress(w_q)
        packed_sparse = ck.sparse24_int8_pack(v_q, meta_q)
        packed_dense = ck.int8_pack_weight(w_q)
        x_q = torch.randint(0, 256, (m, k), generator=g, dtype=torch.int64).to(torch.uint8)
        b_q = torch.randint(-1000, 1000, (n,), generator=g, dtype=torch.int32)
        m0, shift = ck.quantize_multiplier(torch.full((n,), 1.0 / (k * 60), dtype=torch.float64))
        t["dense_int8"] = best_seconds(
            lambda: ck.int8_linear(x_q, 128, packed_dense, b_q, m0, shift, 128, 0, 255, torch.uint8), min_run_time)
        t["sparse_int8"] = best_seconds(
            lambda: ck.sparse24_int8_linear(x_q, 128, packed_sparse, meta_q, b_q, m0, shift, 128, 0, 255,
                                            torch.uint8), min_run_time)
        if ck.ops.cpu_bf16_path() != "portable":  # (the portable emulation is a scalar loop: not timed)
            x_b, w_b, bias_b = x.bfloat16(), w.bfloat16(), bias.bfloat16()
            packed_b = ck.sparse24_bf16_pack(values.bfloat16(), meta)
            t["dense_bf16"] = best_seconds(lambda: F.linear(x_b, w_b, bias_b), min_run_time)
            t["sparse_bf16"] = best_seconds(lambda: ck.sparse24_linear(x_b, packed_b, meta, bias_b), min_run_time)
    t["bytes_fp32"] = (values.numel() * 4 + meta.numel()) / (w.numel() * 4)
    t["bytes_int8"] = (v_q.numel() + meta_q.numel()) / w_q.numel()
    return t


CUDA_MS = [16, 256, 1024, 4096, 8192]
CUDA_KNS = [(4096, 4096), (8192, 8192), (4096, 16384)]




def bench_cuda_shape(m: int, k: int, n: int, min_run_time: float) -> dict[str, float]:
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    dev = "cuda"
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(n, k, generator=g) * random_24_mask(n, k, g)).half().to(dev)
    x = torch.randn(m, k, generator=g).half().to(dev)
    values, meta = ck.sparse24_compress(w)
    vp, mp = ck.ops.sparse24_cuda_pack(values, meta, torch.float16)
    t: dict[str, float] = {}
    with torch.no_grad():
        t["ours_fp16"] = cuda_best_seconds(lambda: ck.sparse24_linear(x, vp, mp, None), min_run_time)
        t["cublas_fp16"] = cuda_best_seconds(lambda: F.linear(x, w), min_run_time)
        old = SparseSemiStructuredTensor._FORCE_CUTLASS
        for backend, force in (("cusparselt", False), ("cutlass", True)):
            SparseSemiStructuredTensor._FORCE_CUTLASS = force
            try:
                ws = to_sparse_semi_structured(w)
                t[backend] = cuda_best_seconds(lambda ws=ws: F.linear(x, ws), min_run_time)
            except (RuntimeError, NotImplementedError) as exc:  # e.g. a torch built without cuSPARSELt
                print(f"  {backend}: unavailable ({exc})")
                t[backend] = float("nan")
            finally:
                SparseSemiStructuredTensor._FORCE_CUTLASS = old

        w_q = (torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int64)
               * random_24_mask(n, k, g)).to(torch.int8)
        v_q, meta_q = ck.sparse24_compress(w_q)
        vq, mq = (tt.to(dev) for tt in ck.ops.sparse24_cuda_pack(v_q, meta_q, torch.int8))
        x_q = torch.randint(0, 256, (m, k), generator=g, dtype=torch.int64).to(torch.uint8).to(dev)
        b_q = torch.randint(-1000, 1000, (n,), generator=g, dtype=torch.int32).to(dev)
        m0, shift = ck.quantize_multiplier(torch.full((n,), 1.0 / (k * 60), dtype=torch.float64))
        t["ours_int8"] = cuda_best_seconds(
            lambda: ck.sparse24_int8_linear(x_q, 128, vq, mq, b_q, m0, shift, 128, 0, 255, torch.uint8), min_run_time)
        try:
            packed_dense = ck.int8_pack_weight(w_q).to(dev)
            t["dense_int8"] = cuda_best_seconds(
                lambda: ck.int8_linear(x_q, 128, packed_dense, b_q, m0, shift, 128, 0, 255, torch.uint8), min_run_time)
        except (RuntimeError, NotImplementedError) as exc:  # no CUDA int8_linear in this build
            print(f"  dense int8_linear on CUDA: unavailable ({exc})")
            t["dense_int8"] = float("nan")
    return t


def cuda_section(quick: bool) -> str:
    shapes = [(m, k, n) for (k, n) in CUDA_KNS for m in CUDA_MS]
    if quick:
        shapes = [(1024, 4096, 4096), (4096, 8192, 8192)]
    min_run_time = 0.05 if quick else 0.3
    rows = []
    for m, k, n in shapes:
        t = bench_cuda_shape(m, k, n, min_run_time)
        tflop = 2.0 * m * k * n / 1e12
        rows.append([m, k, n, tflop / t["ours_fp16"], t["cusparselt"] / t["ours_fp16"], t["cutlass"] / t["ours_fp16"],
                     t["cublas_fp16"] / t["ours_fp16"], tflop / t["ours_int8"], t["dense_int8"] / t["ours_int8"]])
        print(rows[-1], flush=True)
    props = torch.cuda.get_device_properties(0)
    headers = ["M", "K", "N", "fp16 2:4 dense-equiv TFLOP/s", "vs cuSPARSELt", "vs CUTLASS (torch)",
               "vs cuBLAS fp16 dense", "int8 2:4 dense-equiv TOP/s", "int8 2:4 vs int8_linear"]
    return (f"### 2:4 sparse linear (CUDA)\n\n{props.name}, torch {torch.__version__}, CUDA {torch.version.cuda}. "
            "Command: `python benchmarks/bench_sparse24.py --device cuda`.\n"
            "Ratios are peer time / our time (> 1 means ours is faster), same run, CUDA events. fp16: "
            "`sparse24_linear` (mma.sp, CUTLASS-layout weight packed once) vs `F.linear` on "
            "`to_sparse_semi_structured(w)` (cuSPARSELt, and CUTLASS via `_FORCE_CUTLASS`) and vs dense "
            "`F.linear` fp16 (cuBLAS). int8: `sparse24_int8_linear` vs our dense `int8_linear`, uint8 -> uint8 with "
            "the fused requantization.\n\n" + markdown_table(headers, rows))


CONV_SHAPES = [  # (batch, in_channels, height = width, out_channels, kernel, stride): CIFAR ResNet-18 layers
    (32, 64, 32, 64, 3, 1), (32, 128, 16, 128, 3, 1), (32, 256, 8, 256, 3, 1), (32, 512, 4, 512, 3, 1),
    (32, 64, 32, 128, 3, 2), (1, 64, 32, 64, 3, 1), (1, 256, 8, 256, 3, 1), (1, 512, 4, 512, 3, 1),
]


def bench_int8_conv(min_run_time: float, quick: bool) -> str:
    """sparse24_int8_conv2d vs our dense int8_conv2d (implicit GEMM, NHWC), uint8 -> uint8 with the
    fused requantization, and sparse24_conv2d vs F.conv2d fp32 (oneDNN, channels_last); weights 2:4
    along the input channels of each kernel tap, packed once."""
    from compress_kernels.sparse24_layout import weight_rows

    rows = []
    for n, c, hw, oc, k, stride in (CONV_SHAPES[:2] if quick else CONV_SHAPES):
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n, c, hw, hw), generator=g, dtype=torch.int64).to(torch.uint8)
        x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randint(-127, 128, (oc, c, k, k), generator=g, dtype=torch.int64).float()
        w = (w * ck.prune.mask_2to4(w)).to(torch.int8)
        values, meta = ck.sparse24_compress(weight_rows(w).contiguous())
        packed_sparse, packed_dense = ck.sparse24_int8_pack(values, meta), ck.int8_conv2d_pack_weight(w)
        m0, shift = ck.quantize_multiplier(torch.full((oc,), 1.0 / (c * k * k * 60), dtype=torch.float64))
        t_dense = best_seconds(lambda: ck.int8_conv2d(x, 128, w, None, m0, shift, 128, 0, 255, torch.uint8, stride, 1,
                                                      w_packed=packed_dense), min_run_time)
        t_sparse = best_seconds(lambda: ck.sparse24_int8_conv2d(x, 128, packed_sparse, meta, None, m0, shift, 128, 0,
                                                                255, torch.uint8, k, stride, 1), min_run_time)
        xf = torch.randn(n, c, hw, hw, generator=g).contiguous(memory_format=torch.channels_last)
        wf = torch.randn(oc, c, k, k, generator=g)
        wf = (wf * ck.prune.mask_2to4(wf)).contiguous(memory_format=torch.channels_last)
        vf, mf = ck.sparse24_compress(weight_rows(wf).contiguous())
        packed_f = ck.sparse24_f32_pack(vf, mf)
        with torch.no_grad():
            t_conv = best_seconds(lambda: F.conv2d(xf, wf, None, stride, 1), min_run_time)
            t_sconv = best_seconds(lambda: ck.sparse24_conv2d(xf, packed_f, mf, None, k, stride, 1), min_run_time)
        oh = (hw + 2 - k) // stride + 1
        gop = 2.0 * n * oh * oh * oc * c * k * k / 1e9
        rows.append([n, c, hw, oc, f"{k}x{k}/{stride}", gop / t_dense, gop / t_sparse, t_dense / t_sparse,
                     gop / t_conv, gop / t_sconv, t_conv / t_sconv])
        print(rows[-1], flush=True)
    return ("\n\n#### 2:4 conv2d (ResNet-18 CIFAR layer shapes)\n\n"
            "int8: `sparse24_int8_conv2d` (input rows gathered a chunk at a time, the int8 2:4 kernel) vs our dense "
            "`int8_conv2d` (implicit GEMM on NHWC), both uint8 -> uint8 with the fused requantization, packed once. "
            "fp32: `sparse24_conv2d` (the same gather, the fp32 2:4 kernel) vs `F.conv2d` fp32 (oneDNN, "
            "channels_last). Ratios = dense time / 2:4 time; GOP/s count the dense multiply-adds.\n\n"
            + markdown_table(["N", "C", "H=W", "OC", "kernel/stride", "dense int8 GOP/s", "int8 2:4 GOP/s",
                              "int8 2:4 vs dense", "F.conv2d GFLOP/s", "fp32 2:4 GFLOP/s", "fp32 2:4 vs F.conv2d"],
                             rows))


def bench_channel_pruning(min_run_time: float) -> str:
    """Latency of ResNet-18 (CIFAR form) before / after removing 30% of every basic block's inner
    channels (prune_channels_), exact and rounded to multiples of 16 channels, fp32 F.conv2d."""
    from compress_kernels import prune
    from compress_kernels.study import models

    rows = []
    for width, batch in [(16, 256), (64, 32)]:
        torch.manual_seed(0)
        dense = models.resnet18_cifar(width=width).eval()
        x = torch.randn(batch, 3, 32, 32)
        t_dense = best_seconds(lambda: dense(x), min_run_time)
        for multiple_of in (1, 16):
            pruned = models.resnet18_cifar(width=width).eval()
            pruned.load_state_dict(dense.state_dict())
            prune.prune_channels_(pruned, 0.3, multiple_of=multiple_of)
            params = sum(p.numel() for p in pruned.parameters()) / sum(p.numel() for p in dense.parameters())
            with torch.no_grad():
                t = best_seconds(lambda: pruned(x), min_run_time)
            rows.append([width, batch, multiple_of, f"{100 * params:.1f}%", t_dense / t])
    return ("\n\n#### Structured channel pruning (30% of the inner channels of every basic block)\n\n"
            "Speed-up = dense latency / pruned latency (ordinary fp32 convolutions, same run). "
            "oneDNN's AVX-512 convolutions work on blocks of 16 channels, so kept counts that are not "
            "multiples of 16 (11 of 16, 45 of 64) save little; `multiple_of=16` rounds them.\n\n"
            + markdown_table(["width", "batch", "multiple_of", "params kept", "speed-up"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two shapes, short timing")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/sparse24.md")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    add_isa_argument(parser, "CPU kernel path of our kernels (2:4 and the dense int8_linear peer; F.linear is oneDNN)")
    parser.add_argument("--channels-only", action="store_true", help="only the channel-pruning speed-up table")
    add_device_argument(parser)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU (torch.cuda.is_available() is False)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shapes = [(m, k, n) for (k, n) in KNS for m in MS]
    if args.quick:
        shapes = [(64, 1024, 1024), (256, 2048, 2048)]
    min_run_time = 0.05 if args.quick else 0.3
    if args.channels_only:
        print(bench_channel_pruning(min_run_time))
        return
    run_cuda_section(parser, args, lambda: cuda_section(args.quick), "sparse24_cuda", not args.no_write)
    if args.device == "cuda":
        return
    rows = []
    with ck.force_cpu_isa(args.isa):
        cpu_isa = ck.ops.cpu_isa()
        for m, k, n in shapes:
            t = bench_shape(m, k, n, min_run_time)
            dense_gflop = 2.0 * m * k * n / 1e9
            bf16 = ([dense_gflop / t["sparse_bf16"], t["dense_bf16"] / t["sparse_bf16"]] if "sparse_bf16" in t
                    else ["-", "-"])
            rows.append([m, k, n, dense_gflop / t["sparse_fp32"], t["dense_fp32"] / t["sparse_fp32"],
                         dense_gflop / t["sparse_int8"], t["dense_int8"] / t["sparse_int8"], *bf16,
                         f"{100 * t['bytes_fp32']:.2f}%", f"{100 * t['bytes_int8']:.2f}%"])
            print(rows[-1], flush=True)
        machine = machine_line()
    headers = ["M", "K", "N", "fp32 2:4 dense-equiv GFLOP/s", "fp32 2:4 vs F.linear",
               "int8 2:4 dense-equiv GOP/s", "int8 2:4 vs int8_linear", "bf16 2:4 dense-equiv GFLOP/s",
               "bf16 2:4 vs F.linear bf16", "fp32 bytes", "int8 bytes"]
    command = "python benchmarks/bench_sparse24.py" + (f" --threads {args.threads}" if args.threads else "") + (
        f" --isa {args.isa}" if args.isa != "auto" else "")
    text = (f"### 2:4 sparse linear (CPU)\n\n{machine}. Command: `{command}`.\n"
            "Ratios are dense peer time / our 2:4 time (> 1 means 2:4 is faster), measured in the same run. "
            "fp32: `sparse24_linear` vs `F.linear` fp32 on the same pruned weight. int8: "
            "`sparse24_int8_linear` (packed) vs our dense `int8_linear` (packed), uint8 -> uint8 with the fused "
            "requantization. bf16: `sparse24_linear` on bf16 x with `sparse24_bf16_pack` vs `F.linear` bf16 (oneDNN), "
            "bf16 in and out (`ck.ops.cpu_bf16_path()`: the vdpbf16ps kernel on the avx512vbmi path of a CPU with "
            "AVX512_BF16, else the AVX2 emulation). Bytes: values + metadata over the dense "
            "weight of the same dtype.\n\n"
            + markdown_table(headers, rows))
    with ck.force_cpu_isa(args.isa):
        text += bench_int8_conv(min_run_time, args.quick)
    forced = args.isa != "auto"
    if not forced:
        with torch.no_grad():
            text += bench_channel_pruning(min_run_time)
        if not args.quick and cpu_isa != "amx":  # the notes are about the Zen 4 kernels
            text += NOTES
    print(text)
    if not args.no_write:
        name = results_name("sparse24", cpu_isa)
        if forced and name == "sparse24":  # a forced AVX-512 path on the AMD machine keeps its own file
            name = f"sparse24_{cpu_isa}"
        print("wrote", write_result(name, text))


if __name__ == "__main__":
    main()
