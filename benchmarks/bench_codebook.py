"""Codebook (k-means weight sharing) linear and clustering against their peers, in one run.

    python benchmarks/bench_codebook.py [--quick] [--no-write] [--skip-cluster]

Kernels: codebook_linear (packed b-bit indices + fp32 codebook, lookup fused into the matmul) vs
F.linear fp32 on the same (dequantized) weight, and vs torchao's codebook prototype
(`torchao.prototype.quantization.codebook.CodebookQuantizedTensor`, which dequantizes the weight
and calls F.linear on every call) holding the same codes and codebook.
Clustering: compress_kernels.cluster.kmeans_1d vs scikit-learn KMeans (same k, SSE and time), and
the time to cluster every weight of a ResNet-18 (11M weights) at 4 bits.

CUDA section (only where torch.cuda.is_available(); `--device cuda|cpu|all`): codebook_linear at
batch 1 and 8 (the fused GEMV kernel) vs dense F.linear (cuBLAS GEMV) on the dequantized weight,
fp16 and fp32 x, K = N in {4096, 8192}; CUDA-event timing, best of blocks of back-to-back
launches. The goal: >= 3x dense fp16 at batch 1 for 4-bit.
"""

from __future__ import annotations

import argparse
import functools
import time
import warnings

import torch
import torch.nn.functional as F

import compress_kernels as ck

from common import (
    add_device_argument,
    best_seconds,
    machine_line,
    markdown_table,
    results_name,
    run_cuda_section,
    write_result,
)
from common import cuda_best_seconds as _cuda_best_seconds

# GEMV calls take microseconds: longer blocks keep the event overhead out of the figure.
cuda_best_seconds = functools.partial(_cuda_best_seconds, block=50)

warnings.filterwarnings("ignore", message=".*Skipping import of cpp extensions.*")
warnings.filterwarnings("ignore", message=".*index_reduce.*")

MS = [1, 8, 64, 256]
KNS = [(1024, 1024), (4096, 4096), (4096, 11008)]
BITS = [2, 3, 4]
ROUNDS = 3


def torchao_codebook(idx: torch.Tensor, codebook: torch.Tensor, bits: int):
    """A torchao CodebookQuantizedTensor with our codes and codebook (its own k-means takes minutes
    at these sizes); None when torchao's prototype is unavailable."""
    try:
        from torchao.dtypes.uintx.uintx_layout import UintxTensor
        from torchao.prototype.quantization.codebook import CodebookQuantizedTensor
    except Exception:  # noqa: BLE001 - torchao is optional
        return None
    n, k = idx.shape
    codes = UintxTensor.from_uint8(idx, dtype=getattr(torch, f"uint{bits}"))
    return CodebookQuantizedTensor(codes, codebook.view(-1, 1, 1), (1, 1), torch.ones(n, 1, 1), torch.Size([n, k]),
                                   dtype=torch.float32)


def bench_kernels(quick: bool) -> str:
    shapes = [(m, k, n) for (k, n) in KNS for m in MS]
    bits_list = BITS
    if quick:
        shapes, bits_list = [(1, 1024, 1024), (256, 1024, 1024)], [4]
    min_run_time = 0.05 if quick else 0.1
    rows = []
    g = torch.Generator().manual_seed(0)
    for k, n in dict.fromkeys((k, n) for _, k, n in shapes):
        for bits in bits_list:
            idx = torch.randint(0, 1 << bits, (n, k), generator=g, dtype=torch.int64).to(torch.uint8)
            codebook = torch.randn(1, 1 << bits, generator=g) * 0.02
            packed = ck.codebook_pack(idx, bits)
            w = ck.reference.codebook_dequantize(idx, codebook)
            bias = torch.randn(n, generator=g)
            ao = torchao_codebook(idx, codebook[0], bits)
            w_bf16, bias_bf16 = w.bfloat16(), bias.bfloat16()  # cast once, outside the timed calls
            for m in [m for m, kk, nn in shapes if (kk, nn) == (k, n)]:
                x = torch.randn(m, k, generator=g)
                x_bf16 = x.bfloat16()
                # Interleaved rounds, the best of each: on a shared machine the load drifts, and
                # alternating keeps ours and the peers under the same conditions.
                t_fp32 = t_bf16 = t_ours = t_ours_bf16 = t_ao = float("inf")
                with torch.no_grad():
                    for _ in range(ROUNDS):
                        t_fp32 = min(t_fp32, best_seconds(lambda: F.linear(x, w, bias), min_run_time))
                        t_bf16 = min(t_bf16, best_seconds(lambda: F.linear(x_bf16, w_bf16, bias_bf16), min_run_time))
                        t_ours = min(t_ours, best_seconds(
                            lambda: ck.codebook_linear(x, packed, codebook, bits, bias), min_run_time))
                        t_ours_bf16 = min(t_ours_bf16, best_seconds(
                            lambda: ck.codebook_linear(x_bf16, packed, codebook, bits, bias), min_run_time))
                        if ao is not None:
                            t_ao = min(t_ao, best_seconds(lambda: F.linear(x, ao, bias), min_run_time))
                if ao is None:
                    t_ao = float("nan")
                rows.append([m, k, n, bits, t_ours * 1e3, t_fp32 * 1e3, t_fp32 / t_ours, t_bf16 / t_ours, t_ao / t_ours,
                             2.0 * m * k * n / t_ours / 1e9, t_ours_bf16 * 1e3, t_bf16 * 1e3, t_bf16 / t_ours_bf16])
                print(rows[-1], flush=True)
    headers = ["M", "K", "N", "bits", "ours ms", "fp32 ms", "vs fp32", "vs bf16", "vs torchao codebook",
               "ours GFLOP/s", "ours bf16-x ms", "bf16 ms", "bf16-x vs bf16"]
    return ("### codebook_linear (CPU)\n\n"
            "Ratios are peer time / our time (> 1 means ours is faster), measured in the same run; times are "
            "the best of repeated timed blocks over 3 interleaved rounds. fp32: `F.linear` on the dequantized weight "
            "(MKL). bf16: `F.linear` with bf16 x, weight and bias (oneDNN; AMX where the CPU has it), cast once "
            "outside the timed calls: the peer of a user who runs the model in bf16 instead. torchao: "
            "`CodebookQuantizedTensor` with the same codes and codebook (dequantizes, then "
            "`F.linear`). Ours bf16-x: `codebook_linear` with the same bf16 x (the codebook rounded to bf16, fp32 "
            "sums, bf16 out; on AMX from 12 rows (4-bit) the weight decoded into bf16 tiles and `tdpbf16ps`, below "
            "that the "
            "fused fp32 kernel on widened x), against the same bf16 `F.linear`.\n\n"
            + markdown_table(headers, rows))


CUDA_KNS = [4096, 8192]
CUDA_MS = [1, 8]




def bench_cuda(quick: bool) -> str:
    dev = "cuda"
    kns, bits_list = ([4096], [4]) if quick else (CUDA_KNS, BITS)
    min_run_time = 0.05 if quick else 0.2
    rows = []
    g = torch.Generator().manual_seed(0)
    for kn in kns:
        k = n = kn
        for bits in bits_list:
            idx = torch.randint(0, 1 << bits, (n, k), generator=g, dtype=torch.int64).to(torch.uint8)
            codebook = (torch.randn(1, 1 << bits, generator=g) * 0.02).to(dev)
            packed = ck.codebook_pack(idx.to(dev), bits)
            w32 = ck.reference.codebook_dequantize(idx, codebook.cpu()).to(dev)
            w16 = w32.half()
            bias = torch.randn(n, generator=g).to(dev)
            bias16 = bias.half()
            for m in CUDA_MS:
                x16 = torch.randn(m, k, generator=g).to(dev, torch.float16)
                x32 = x16.float()
                t = dict.fromkeys(["ours16", "dense16", "ours32", "dense32"], float("inf"))
                with torch.no_grad():
                    for _ in range(ROUNDS):  # interleaved, as in the CPU section
                        t["dense16"] = min(t["dense16"], cuda_best_seconds(lambda: F.linear(x16, w16, bias16),
                                                                           min_run_time))
                        t["ours16"] = min(t["ours16"], cuda_best_seconds(
                            lambda: ck.codebook_linear(x16, packed, codebook, bits, bias), min_run_time))
                        t["dense32"] = min(t["dense32"], cuda_best_seconds(lambda: F.linear(x32, w32, bias),
                                                                           min_run_time))
                        t["ours32"] = min(t["ours32"], cuda_best_seconds(
                            lambda: ck.codebook_linear(x32, packed, codebook, bits, bias), min_run_time))
                index_gbs = packed.numel() * 4 / t["ours16"] / 1e9
                rows.append([m, k, n, bits, t["ours16"] * 1e6, t["dense16"] * 1e6, t["dense16"] / t["ours16"],
                             t["ours32"] * 1e6, t["dense32"] * 1e6, t["dense32"] / t["ours32"], index_gbs])
                print(rows[-1], flush=True)
    props = torch.cuda.get_device_properties(0)
    headers = ["M", "K", "N", "bits", "ours fp16 us", "dense fp16 us", "vs fp16", "ours fp32 us", "dense fp32 us",
               "vs fp32", "ours index GB/s"]
    return (f"### codebook_linear (CUDA)\n\n{props.name}, torch {torch.__version__}, CUDA {torch.version.cuda}. "
            "Command: `python benchmarks/bench_codebook.py --device cuda`.\n"
            "Ratios are peer time / our time (> 1 means ours is faster), measured in the same run with CUDA events "
            "(best of blocks of 50 launches, 3 interleaved rounds). Ours: codebook_linear (the fused GEMV kernel at "
            "these batch sizes; fp32 codebook, output in x's dtype). Dense: `F.linear` (cuBLAS) on the dequantized "
            "weight in x's dtype. Index GB/s: packed index bytes / our fp16 time.\n\n"
            + markdown_table(headers, rows))


def bench_cluster(quick: bool) -> str:
    from compress_kernels import cluster

    lines = ["### k-means clustering of weights (1-D)\n"]
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        KMeans = None
    g = torch.Generator().manual_seed(0)
    rows = []
    sizes = [20_000, 200_000] if quick else [20_000, 200_000, 1_000_000]
    for size in sizes:
        # a trained-weight-like distribution: a narrow bulk with heavy tails
        values = torch.randn(size, generator=g) * 0.02 + torch.randn(size, generator=g).pow(3) * 0.005
        for bits in (2, 4, 6):
            t0 = time.perf_counter()
            cb, labels = cluster.kmeans_1d(values, 1 << bits, seed=0)
            t_ours = time.perf_counter() - t0
            sse_ours = float(((values - cb[labels.long()]) ** 2).double().sum())
            if KMeans is not None:
                t0 = time.perf_counter()
                km = KMeans(n_clusters=1 << bits, n_init=1, random_state=0).fit(values.double().view(-1, 1).numpy())
                t_sk = time.perf_counter() - t0
                sse_sk = float(km.inertia_)
            else:
                t_sk = sse_sk = float("nan")
            rows.append([size, bits, t_ours * 1e3, t_sk * 1e3, t_sk / t_ours, sse_ours / sse_sk])
            print(rows[-1], flush=True)
    lines.append("scikit-learn `KMeans(n_clusters=2^bits, n_init=1)` (k-means++ init, Lloyd) vs "
                 "`cluster.kmeans_1d` (k-means++ on a fine histogram, Lloyd on the histogram, exact polish):\n")
    lines.append(markdown_table(["weights", "bits", "ours ms", "sklearn ms", "speed-up", "SSE ours / sklearn"], rows))

    from compress_kernels.study.models import resnet18_cifar

    model = resnet18_cifar(num_classes=10, width=64)
    layers = [mod for mod in model.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    total = sum(mod.weight.numel() for mod in layers)
    t0 = time.perf_counter()
    for mod in layers:
        cluster.cluster_weight(mod.weight.detach(), bits=4)
    t_all = time.perf_counter() - t0
    lines.append(f"\nResNet-18 (width 64, {total / 1e6:.1f}M conv/linear weights, {len(layers)} layers), one 4-bit "
                 f"codebook per layer: **{t_all:.2f} s** in total.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few shapes, short timing")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/codebook.md")
    parser.add_argument("--skip-cluster", action="store_true", help="kernels only")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for ours and the peers alike (0: torch's default)")
    add_device_argument(parser)
    args = parser.parse_args()
    run_cuda_section(parser, args, lambda: bench_cuda(args.quick), "codebook_cuda", not args.no_write)
    if args.device == "cuda":
        return
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_codebook.py" + (f" --threads {args.threads}" if args.threads > 0 else "")
    parts = [f"{machine_line()}. Command: `{command}`.\n", bench_kernels(args.quick)]
    if not args.skip_cluster:
        parts.append(bench_cluster(args.quick))
    text = "\n\n".join(parts)
    print(text)
    if not args.no_write:
        print("wrote", write_result(results_name("codebook", ck.ops.cpu_isa()), text))


if __name__ == "__main__":
    main()
