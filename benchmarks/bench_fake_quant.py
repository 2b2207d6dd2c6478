"""Fused fake quantization vs PyTorch's fake-quant ops and vs a plain memory copy.

For each size (fp32 elements) and granularity (per tensor; per channel = [256, n / 256] along axis 0,
a weight's layout) it times, in the same run:
  - STE forward + backward through autograd: compress_kernels.fake_quant vs
    torch.fake_quantize_per_tensor_affine / torch.fake_quantize_per_channel_affine;
  - LSQ forward + backward (scale and zero point require grad): fake_quant vs
    torch._fake_quantize_learnable_per_tensor_affine / _per_channel_affine (grad_factor 1.0 both);
  - observer forward: fake_quant_observe vs torch.fused_moving_avg_obs_fake_quant (per_row for
    per channel);
  - dst.copy_(src) of the same n elements. Forward + backward moves 5n elements (read x, write y;
    read grad, read x, write grad_x), 2.5 copies' worth; "% of copy" = 2.5 * t_copy / t_ours.

Allocation: a 64 MB output fresh from glibc is a new mmap that page-faults on first touch, which
costs more than the kernel (every op here, PyTorch's included, runs at ~2 GB/s that way). By default
the benchmark sets glibc's mmap / trim thresholds (mallopt) so freed blocks are reused, as a
long-running training process reaches; --fresh-pages measures the default allocator. The setting
applies to every contender alike.

CUDA section (only where torch.cuda.is_available(); `--device cpu|cuda|all`): the same contenders
on GPU tensors, where fake_quant / fake_quant_observe run their Triton kernels
(compress_kernels/triton_kernels.py), timed with CUDA events (best of blocks of back-to-back
calls); "% of copy" as above against a device-to-device copy_. The goal: >= 70% of copy.

    python benchmarks/bench_fake_quant.py [--sizes 1M,16M,64M] [--threads N] [--write] [--fresh-pages]
                                          [--device cpu|cuda|all]
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    add_device_argument,
    cuda_best_seconds,
    machine_line,
    markdown_table,
    run_cuda_section,
    write_result,
)
from compress_kernels import ops  # noqa: E402

CHANNELS = 256
QMIN, QMAX = -128, 127


def reuse_freed_memory() -> bool:
    """glibc: serve large blocks from the heap and keep freed memory (M_MMAP_THRESHOLD = 1 GiB,
    M_TRIM_THRESHOLD = 2 GiB), so an op's output does not page-fault a fresh mapping per call."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, (1 << 31) - 1))


def best_seconds(fn, min_run_time: float) -> float:
    """Fastest single call of fn() over at least 8 calls and min_run_time seconds (after a warm-up
    call). Single calls rather than blocks: an occasional call that page-faults fresh memory or
    loses its thread to another job only ever adds time, and the minimum skips it."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 8 or (time.perf_counter() - start < min_run_time and len(times) < 1000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1], 1)
    return int(float(text.rstrip("KMG")) * mult)


def fwd_bwd(fn, leaves, grad):
    """fn() through autograd and backward(grad), clearing the leaves' grads first (so backward
    writes them instead of accumulating, the same for every contender)."""
    def run():
        for t in leaves:
            t.grad = None
        fn().backward(grad)
    return run


def measure(n: int, per_channel: bool, min_run_time: float, device: str = "cpu") -> dict:
    """Seconds of each contender on n fp32 elements on `device` ("cpu": ours = the C++ kernels, fastest of
    single calls; "cuda": ours = the Triton kernels, CUDA-event timing). The operands are drawn on the CPU and
    moved, so both devices see the same numbers; the per-tensor torch ops take Python scalars, converted once
    here, not per call."""
    timed = best_seconds if device == "cpu" else cuda_best_seconds
    g = torch.Generator().manual_seed(0)
    shape = (CHANNELS, n // CHANNELS) if per_channel else (n,)
    axis = 0 if per_channel else None
    c = CHANNELS if per_channel else 1
    x0 = (torch.randn(shape, generator=g) * 2).to(device)
    grad = torch.randn(shape, generator=g).to(device)
    scale = (torch.rand(c, generator=g) * 0.02 + 0.01).to(device)
    zp = torch.randint(-10, 10, (c,), generator=g, dtype=torch.int32).to(device)
    x = x0.clone().requires_grad_()
    s_l, z_l = scale.clone().requires_grad_(), zp.float().requires_grad_()
    dst = torch.empty_like(x0)
    t = {"copy": timed(lambda: dst.copy_(x0), min_run_time)}
    t["ours_ste"] = timed(fwd_bwd(lambda: ops.fake_quant(x, scale, zp, QMIN, QMAX, axis), [x], grad), min_run_time)
    if per_channel:
        torch_ste = lambda: torch.fake_quantize_per_channel_affine(x, scale, zp, 0, QMIN, QMAX)  # noqa: E731
        torch_lsq = lambda: torch._fake_quantize_learnable_per_channel_affine(  # noqa: E731
            x, s_l, z_l, 0, QMIN, QMAX, 1.0)
    else:
        s0, z0 = float(scale), int(zp)
        torch_ste = lambda: torch.fake_quantize_per_tensor_affine(x, s0, z0, QMIN, QMAX)  # noqa: E731
        torch_lsq = lambda: torch._fake_quantize_learnable_per_tensor_affine(  # noqa: E731
            x, s_l, z_l, QMIN, QMAX, 1.0)
    t["torch_ste"] = timed(fwd_bwd(torch_ste, [x], grad), min_run_time)
    t["ours_lsq"] = timed(
        fwd_bwd(lambda: ops.fake_quant(x, s_l, z_l, QMIN, QMAX, axis, grad_factor=1.0), [x, s_l, z_l], grad),
        min_run_time)
    t["torch_lsq"] = timed(fwd_bwd(torch_lsq, [x, s_l, z_l], grad), min_run_time)
    rmin, rmax = torch.full((c,), math.inf, device=device), torch.full((c,), -math.inf, device=device)
    t["ours_obs"] = timed(lambda: ops.fake_quant_observe(x0, rmin, rmax, 0.01, 0, 255, False, axis), min_run_time)
    on = torch.ones(1, dtype=torch.long, device=device)
    tmin, tmax = torch.full((c,), math.inf, device=device), torch.full((c,), -math.inf, device=device)
    ts, tz = torch.ones(c, device=device), torch.zeros(c, dtype=torch.int32, device=device)
    t["torch_obs"] = timed(lambda: torch.fused_moving_avg_obs_fake_quant(
        x0, on, on, tmin if per_channel else tmin[0], tmax if per_channel else tmax[0], ts, tz, 0.01, 0, 255, 0,
        per_channel), min_run_time)
    return t


HEADERS = ["elements", "granularity", "ours fwd+bwd ms", "ours GB/s", "% of copy",
           "x vs torch STE", "x vs torch LSQ", "x vs fused obs", "copy GB/s"]


def table_rows(sizes: list[int], min_run_time: float, device: str) -> list[list]:
    """One row of HEADERS per size and granularity (per tensor, then per channel), each printed as it is
    measured."""
    rows = []
    for n in sizes:
        for per_channel in (False, True):
            t = measure(n, per_channel, min_run_time, device)
            moved = 5 * n * 4  # bytes of a forward + backward
            rows.append([
                f"{n / 2**20:g}M", "per-channel" if per_channel else "per-tensor",
                t["ours_ste"] * 1e3, moved / t["ours_ste"] / 1e9, 100 * 2.5 * t["copy"] / t["ours_ste"],
                t["torch_ste"] / t["ours_ste"], t["torch_lsq"] / t["ours_lsq"], t["torch_obs"] / t["ours_obs"],
                2 * n * 4 / t["copy"] / 1e9,
            ])
            print(rows[-1], flush=True)
    return rows


def cuda_section(sizes: list[int], min_run_time: float, command: str) -> str:
    rows = table_rows(sizes, min_run_time, "cuda")
    props = torch.cuda.get_device_properties(0)
    return "\n".join([
        "# fake_quant on CUDA (Triton): forward + backward vs PyTorch and vs copy",
        "",
        f"{props.name}, torch {torch.__version__}, CUDA {torch.version.cuda}. fp32; per channel = [256, n/256] "
        "along axis 0. Columns as in the CPU table: % of copy = 2.5 * t(dst.copy_(src), device to device) / "
        "t(ours fwd+bwd); speedups = t(torch op) / t(ours), the same run. CUDA events, best of blocks of 10 calls.",
        "",
        markdown_table(HEADERS, rows),
        "",
        f"Command: `{command}`",
    ])


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1M,16M,64M", help="fp32 element counts, e.g. 1M,16M,64M")
    parser.add_argument("--min-run-time", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--fresh-pages", action="store_true", help="keep glibc's default allocation policy")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/fake_quant.md")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    command = "python benchmarks/bench_fake_quant.py --device cuda --write" + (
        f" --sizes {args.sizes}" if args.sizes != "1M,16M,64M" else "")
    cuda_text = run_cuda_section(parser, args, lambda: cuda_section(sizes, args.min_run_time, command),
                                 "fake_quant_cuda", args.write)
    if args.device == "cuda":
        return cuda_text
    reused = False if args.fresh_pages else reuse_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = table_rows(sizes, args.min_run_time, "cpu")
    text = "\n".join([
        "# fake_quant: forward + backward vs PyTorch and vs copy",
        "",
        f"Machine: {machine_line()}. fp32; per channel = [256, n/256] along axis 0. Allocation: "
        + ("freed memory reused (mallopt)" if reused else "glibc default (fresh pages per output)") + ".",
        "Columns: our STE forward + backward time and bandwidth (5n * 4 bytes moved); % of copy = "
        "2.5 * t(dst.copy_(src) of n elements) / t(ours); speedups = t(torch op) / t(ours) for STE "
        "(torch.fake_quantize_per_tensor/per_channel_affine), LSQ (torch._fake_quantize_learnable_*, "
        "fwd+bwd with scale and zero-point grads) and the observer forward "
        "(torch.fused_moving_avg_obs_fake_quant vs fake_quant_observe). Fastest of repeated single calls.",
        "",
        markdown_table(HEADERS, rows),
        "",
        "Command: `python benchmarks/bench_fake_quant.py --write" + (" --fresh-pages" if args.fresh_pages else "")
        + (f" --sizes {args.sizes}" if args.sizes != "1M,16M,64M" else "")
        + (f" --threads {args.threads}" if args.threads else "") + "`",
        "",
        "On this shared 2-core machine other jobs deschedule one of two worker threads now and then, and every "
        "parallel region then waits for it (a 4 MB copy took 4 ms instead of 0.1 ms under load): runs with "
        "`--threads 1` give the repeatable ratios; all contenders always run with the same thread count.",
    ])
    print(text)
    if args.write:
        # one table per CPU tier: the AVX-512 figures of another machine are not overwritten by an AVX2 run
        isa = ops.cpu_isa()
        print("wrote", write_result("fake_quant" if isa.startswith("avx512") else f"fake_quant_{isa}", text))
    return text


if __name__ == "__main__":
    main()
