"""int4_linear (group-wise int4 weights) against its peers, measured in the same run.

w4a8 (fp32 in, activations quantized per row to int8, exact int32 group sums) against our dynamic
int8 linear (quantize_rows + int8_linear_float on an int8_pack_weight: the same float-in float-out
semantics with 8-bit weights, twice the weight bytes). w4a16 with bf16 activations against
torch.ops.aten._weight_int4pack_mm_for_cpu (the same weights: same group size, zero offset) and
against bf16 F.linear on the dequantized weight. Ratios are peer time / our time (> 1: ours faster).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

import compress_kernels as ck
from compress_kernels import numerics

from common import best_seconds, machine_line, markdown_table, results_name, write_result


def bench_shape(m: int, k: int, n: int, group_size: int, min_run_time: float,
                interleaved: bool = False) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(n, k, generator=g) * 0.05
    x = torch.randn(m, k, generator=g)
    q4, scales, _ = numerics.quantize_weight_groupwise(weight, group_size)
    pack4 = ck.int4_pack(q4, scales, group_size)
    q8, s8 = numerics.quantize_weight(weight, per_channel=True)
    pack8 = ck.int8_pack_weight(q8)
    x_bf16 = x.bfloat16()

    def int8_dynamic():
        xq, xs = ck.quantize_rows(x)
        return ck.int8_linear_float(xq, 0, pack8, xs, s8, None)

    # torch's int4 weight-only kernel: w = (u - 8) * scale + zero with u = q + 8, zero = 0
    torch_pack = torch.ops.aten._convert_weight_to_int4pack_for_cpu((q4.int() + 8).contiguous(), 2)
    scale_zero = torch.stack([scales.T, torch.zeros_like(scales.T)], dim=-1).bfloat16().contiguous()
    w_bf16 = ck.reference.int4_dequantize(q4, scales, None, group_size).bfloat16()

    fns = {
        "w4a8": lambda: ck.int4_linear(x, pack4, None, "int8"),
        "int8": int8_dynamic,
        "w4a16": lambda: ck.int4_linear(x_bf16, pack4, None, "bf16"),
        "torch_int4": lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x_bf16, torch_pack, group_size, scale_zero),
        "bf16": lambda: F.linear(x_bf16, w_bf16),
    }
    if interleaved:
        return interleaved_best(fns, min_run_time)
    return {name: best_seconds(fn, min_run_time) for name, fn in fns.items()}


def interleaved_best(fns: dict, min_run_time: float) -> dict[str, float]:
    """The fastest single call of each function, the functions called in turn (one call each per round)
    for about min_run_time seconds per function: on a machine shared with other jobs, a contender
    never gets a quiet stretch the others miss."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    spent = 0.0
    rounds = 0
    while spent < min_run_time * len(fns) or rounds < 60:
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            best[name] = min(best[name], elapsed)
            spent += elapsed
        rounds += 1
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="K = N = 1024, short timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--group-sizes", default="32,128", help="comma-separated group sizes (32, 64, 128, 256)")
    parser.add_argument("--isa", choices=["auto", "portable", "avx2", "avx512vnni", "avx512vbmi", "amx"],
                        default="auto")
    parser.add_argument("--interleaved", action="store_true",
                        help="time the fastest single call of each contender, called in turn (for a loaded machine)")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/int4*.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.isa != "auto":
        ck.ops.cpu_isa(args.isa)
    size = 1024 if args.quick else 4096
    min_run_time = 0.05 if args.quick else 0.3
    group_sizes = [int(g) for g in args.group_sizes.split(",")]
    rows = []
    for group_size, m in tqdm([(g, m) for g in group_sizes for m in (1, 8, 16, 64, 256)], desc="int4_linear shapes"):
        t = bench_shape(m, size, size, group_size, min_run_time, args.interleaved)
        gop = 2 * m * size * size / 1e9
        rows.append([group_size, m, size, size, round(gop / t["w4a8"], 2), round(t["int8"] / t["w4a8"], 2),
                     round(gop / t["w4a16"], 2), round(t["torch_int4"] / t["w4a16"], 2),
                     round(t["bf16"] / t["w4a16"], 2)])
    command = "python benchmarks/bench_int4.py" + "".join(f" {a}" for a in sys.argv[1:])
    text = "\n".join([
        "### int4_linear (CPU)",
        "",
        f"{machine_line()}. Command: `{command}`. Symmetric weights, group size g. Times: "
        + ("the fastest single call of each contender, the contenders called in turn." if args.interleaved
           else "the fastest of repeated timed blocks."),
        "Ratios are peer time / our time (> 1 means ours is faster), measured in the same run. w4a8: fp32 in, "
        "per-row int8 activations, fp32 out, vs our dynamic int8 linear (quantize_rows + int8_linear_float, "
        "8-bit per-channel weights). w4a16: bf16 in and out, vs `torch.ops.aten._weight_int4pack_mm_for_cpu` "
        "(same weights and group size) and bf16 `F.linear` on the dequantized weight.",
        "",
        markdown_table(["g", "M", "K", "N", "w4a8 GOP/s", "w4a8 vs int8 dynamic", "w4a16 GOP/s", "w4a16 vs torch int4",
                        "w4a16 vs bf16 F.linear"], rows),
    ])
    print(text)
    if not args.no_write:
        name = results_name("int4", None if args.isa == "auto" else args.isa)
        if args.threads != 2:  # the goals are stated at 2 threads; other counts get their own file
            name += f"_{args.threads}thread"
        print(write_result(name, text + "\n"))


if __name__ == "__main__":
    main()
