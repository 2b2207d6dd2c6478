"""2:4 sparse linear (fp32 and int8) against dense peers, measured side by side in one run.

    python benchmarks/bench_sparse24.py [--quick] [--no-write] [--threads N]

fp32: sparse24_linear (compressed values + metadata, no packing) vs dense F.linear fp32 (oneDNN /
MKL) on the same (pruned) weight. int8: sparse24_int8_linear (packed once with sparse24_int8_pack)
vs our dense int8_linear (packed once with int8_pack_weight), both uint8 in -> uint8 out with the
fused fixed-point requantization and per-channel multipliers. Bytes: compressed values + metadata
over the dense weight of the same dtype.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import compress_kernels as ck
from common import best_seconds, machine_line, markdown_table, write_result

MS = [1, 8, 64, 256, 1024]
KNS = [(1024, 1024), (2048, 2048), (4096, 4096)]


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
    t["bytes_fp32"] = (values.numel() * 4 + meta.numel()) / (w.numel() * 4)
    t["bytes_int8"] = (v_q.numel() + meta_q.numel()) / w_q.numel()
    return t


def bench_channel_pruning(min_run_time: float) -> str:
    """Latency of ResNet-18 (CIFAR form) before / after removing 30% of every basic block's inner
    channels (prune_channels_), exact and rounded to multiples of 16 channels, fp32 F.conv2d."""
    from compress_kernels import models, prune

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
    parser.add_argument("--channels-only", action="store_true", help="only the channel-pruning speed-up table")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shapes = [(m, k, n) for (k, n) in KNS for m in MS]
    if args.quick:
        shapes = [(64, 1024, 1024), (256, 2048, 2048)]
    min_run_time = 0.05 if args.quick else 0.3
    if args.channels_only:
        print(bench_channel_pruning(min_run_time))
        return
    rows = []
    for m, k, n in shapes:
        t = bench_shape(m, k, n, min_run_time)
        dense_gflop = 2.0 * m * k * n / 1e9
        rows.append([m, k, n, dense_gflop / t["sparse_fp32"], t["dense_fp32"] / t["sparse_fp32"],
                     dense_gflop / t["sparse_int8"], t["dense_int8"] / t["sparse_int8"],
                     f"{100 * t['bytes_fp32']:.2f}%", f"{100 * t['bytes_int8']:.2f}%"])
        print(rows[-1], flush=True)
    headers = ["M", "K", "N", "fp32 2:4 dense-equiv GFLOP/s", "fp32 2:4 vs F.linear",
               "int8 2:4 dense-equiv GOP/s", "int8 2:4 vs int8_linear", "fp32 bytes", "int8 bytes"]
    command = "python benchmarks/bench_sparse24.py" + (f" --threads {args.threads}" if args.threads else "")
    text = (f"### 2:4 sparse linear (CPU)\n\n{machine_line()}. Command: `{command}`.\n"
            "Ratios are dense peer time / our 2:4 time (> 1 means 2:4 is faster), measured in the same run. "
            "fp32: `sparse24_linear` vs `F.linear` fp32 on the same pruned weight. int8: "
            "`sparse24_int8_linear` (packed) vs our dense `int8_linear` (packed), uint8 -> uint8 with the fused "
            "requantization. Bytes: values + metadata over the dense weight of the same dtype.\n\n"
            + markdown_table(headers, rows))
    with torch.no_grad():
        text += bench_channel_pruning(min_run_time)
    print(text)
    if not args.no_write:
        print("wrote", write_result("sparse24", text))


if __name__ == "__main__":
    main()
