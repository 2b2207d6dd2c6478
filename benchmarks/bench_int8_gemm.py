"""int8 GEMM / linear against its peers, measured side by side in one run.

    python benchmarks/bench_int8_gemm.py [--quick] [--no-write] [--device cpu|cuda|all] [--threads N]
                                         [--isa auto|portable|avx2|avx512vnni|avx512vbmi|amx] [--inductor]

    --quick      two shapes (M = 64 and 1 at K = N = 1024), short timing; never runs Inductor
    --no-write   print the tables only
    --device     which sections run: cpu, cuda (needs a GPU) or all (default: CUDA only where there is one)
    --threads N  torch threads of the CPU section (default: torch's choice); every contender uses them
    --isa        CPU kernel path of ours (default auto: the best this CPU has, amx on an Intel Xeon with AMX)
    --inductor   also time Inductor's bf16 linear (torch.compile, mode="max-autotune") on the shapes with
                 M >= 16; compiling takes minutes, so it is off by default and ignored with --quick

The written file holds the sections that ran, named by the CPU path (common.results_name):
benchmarks/results/int8_gemm_amx.md on the amx path (Intel Xeon with AMX), int8_gemm.md on
avx512vnni / avx512vbmi (the AMD Zen 4 tables) or without a CPU section, int8_gemm_<path>.md on
another path (e.g. avx2), so one machine's tables do not overwrite another's.

CPU peers, all measured in the same run on every machine: F.linear fp32 and bf16 (oneDNN / MKL; the
bf16 weight, bias and input are cast once, outside the timed call), torch.ops.quantized.linear
(prepacked, static uint8 -> uint8) under each quantized engine x86, fbgemm and onednn (an engine that
this torch build lacks is skipped), torch._int_mm (int8 -> int32), torch.ops.quantized.linear_dynamic
and torchao Int8DynamicActivationInt8WeightConfig (float -> float), and with --inductor the compiled
bf16 linear. Ours: int8_linear with a packed weight and the fused requantization epilogue, int8_gemm
(raw int32 out, packed weight), and the dynamic QuantLinear. Where the machine has AMX, the int8_linear
throughput is also given as a share of the AMX int8 limit measured at the start of the section
(ck.ops.amx_peak). The CUDA section compares against cuBLAS (torch._int_mm) and fp16 F.linear.
"""

from __future__ import annotations

import sys
import warnings

import torch
import torch.nn.functional as F
from tqdm import tqdm

import compress_kernels as ck

from common import (
    QUANTIZED_ENGINES,
    amx_limit_line,
    amx_limits,
    best_seconds,
    cpu_and_cuda_parser,
    cpu_command,
    cuda_best_seconds,
    error_line,
    failures_line,
    machine_line,
    markdown_table,
    per_quantized_engine,
    quantized_engine,
    run_cpu_and_cuda_sections,
)

warnings.filterwarnings("ignore", message=".*quantize_per.*deprecated.*")
warnings.filterwarnings("ignore", message=".*Skipping import of cpp extensions.*")

MS = [1, 8, 16, 64, 256, 1024]
KNS = [(1024, 1024), (2048, 2048), (4096, 4096)]


def torchao_dynamic(linear: torch.nn.Linear):
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except Exception:  # noqa: BLE001 - torchao is optional
        return None
    model = torch.nn.Sequential(linear)
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


def inductor_bf16_seconds(x_bf16, w_bf16, b_bf16, min_run_time: float) -> float:
    """Inductor's bf16 linear, compiled with mode="max-autotune" for this one shape (minutes)."""
    torch._dynamo.reset()  # a fresh compile per shape: no recompile limit, no dynamic-M kernel
    compiled = torch.compile(lambda x: F.linear(x, w_bf16, b_bf16), mode="max-autotune", dynamic=False)
    out = compiled(x_bf16)  # compiles and autotunes
    ref = F.linear(x_bf16, w_bf16, b_bf16)
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)
    return best_seconds(lambda: compiled(x_bf16), min_run_time)


def bench_shape(m: int, k: int, n: int, min_run_time: float, inductor: bool = False,
                failures: dict[str, str] | None = None) -> dict[str, float]:
    torch.manual_seed(0)
    linear = torch.nn.Linear(k, n)
    x = torch.randn(m, k)
    w = linear.weight.detach()
    bias = linear.bias.detach()
    t: dict[str, float] = {}
    with torch.no_grad():
        t["fp32"] = best_seconds(lambda: F.linear(x, w, bias), min_run_time)
        x_bf16, w_bf16, b_bf16 = x.bfloat16(), w.bfloat16(), bias.bfloat16()  # cast once, not timed
        t["bf16"] = best_seconds(lambda: F.linear(x_bf16, w_bf16, b_bf16), min_run_time)

        # ours, static integer-only: uint8 in -> uint8 out, per-channel weights, fused requant
        q = ck.QuantLinear.from_float(linear, input_scale=0.05, input_zero_point=128, output_scale=0.1,
                                      output_zero_point=128)
        x_u8 = q.quantize_input(x)
        t["ours_static"] = best_seconds(lambda: q(x_u8), min_run_time)
        x_i8 = torch.randint(-128, 128, (m, k), dtype=torch.int8)
        t["ours_gemm"] = best_seconds(lambda: ck.int8_gemm(x_i8, q.packed_weight), min_run_time)
        qd = ck.QuantLinear.from_float(linear, dynamic=True)
        t["ours_dynamic"] = best_seconds(lambda: qd(x), min_run_time)

        w_i8 = q.weight_q
        w_t = w_i8.T  # [K, N] view, as _int_mm wants
        t["int_mm"] = best_seconds(lambda: torch._int_mm(x_i8, w_t), min_run_time)

        scales = q.weight_scale.double()
        w_q = torch.quantize_per_channel(w, scales, torch.zeros(n, dtype=torch.long), 0, torch.qint8)
        x_q = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)

        def time_engine(engine: str) -> float:
            packed = torch.ops.quantized.linear_prepack(w_q, bias)  # prepacked for this engine
            seconds = best_seconds(lambda: torch.ops.quantized.linear(x_q, packed, 0.1, 128), min_run_time)
            if engine == "fbgemm":
                # Exactness of the peer on this very input: ours is the exact integer result; fbgemm
                # requantizes in float (a difference of 1 is rounding), so a larger difference is an inexact
                # accumulator (its AVX2 kernel's vpmaddubsw saturates int16 pair sums of full-range uint8 x int8).
                diff = (torch.ops.quantized.linear(x_q, packed, 0.1, 128).int_repr().int() - q(x_u8).int()).abs()
                t["ao_off_pct"] = 100.0 * (diff > 1).float().mean().item()
            return seconds

        for engine, seconds in per_quantized_engine(time_engine, failures).items():
            t[f"ao_{engine}"] = seconds
        with quantized_engine("x86"):
            packed = torch.ops.quantized.linear_prepack(w_q, bias)
            t["ao_dynamic"] = best_seconds(lambda: torch.ops.quantized.linear_dynamic(x, packed), min_run_time)
        tao = torchao_dynamic(torch.nn.Linear(k, n).requires_grad_(False))
        if tao is not None:
            t["torchao_dynamic"] = best_seconds(lambda: tao(x), min_run_time)
        if inductor and m >= 16:
            try:
                t["inductor"] = inductor_bf16_seconds(x_bf16, w_bf16, b_bf16, min_run_time)
            except Exception as e:  # noqa: BLE001 - reported in the table's notes
                if failures is not None:
                    failures[f"Inductor M={m} K={k} N={n}"] = error_line(e)
    return t


# ---------------------------------------------------------------- CUDA section

CUDA_SHAPES = [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096), (8192, 4096, 4096), (4096, 11008, 4096),
               (16384, 1024, 4096)]  # (M, N, K)




def bench_cuda_shape(m: int, n: int, k: int, min_run_time: float) -> dict[str, float]:
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randint(-128, 128, (m, k), dtype=torch.int8, device=dev, generator=g)
    w = torch.randint(-127, 128, (n, k), dtype=torch.int8, device=dev, generator=g)
    bias = torch.randint(-(2**16), 2**16, (n,), dtype=torch.int32, device=dev, generator=g)
    packed = ck.int8_pack_weight(w)
    w_t = w.T  # [K, N] column-major view, as torch._int_mm wants
    m0, shift = ck.quantize_multiplier(1.0 / (k * 64))
    m0_i, shift_i = int(m0), int(shift)  # per tensor, passed by value
    m0_c, shift_c = ck.quantize_multiplier(torch.rand(n, dtype=torch.float64) / (k * 64) + 1e-6)
    m0_c, shift_c = m0_c.to(dev), shift_c.to(dev)
    x_h, w_h = x.half(), w.half()
    assert torch.equal(ck.int8_gemm(x, packed), torch._int_mm(x, w_t)), "int8_gemm differs from torch._int_mm"
    t: dict[str, float] = {}
    with torch.no_grad():
        t["ours_linear"] = cuda_best_seconds(
            lambda: ck.int8_linear(x, 0, packed, bias, m0_i, shift_i, 0, -128, 127, torch.int8), min_run_time)
        t["ours_linear_pc"] = cuda_best_seconds(
            lambda: ck.int8_linear(x, 0, packed, bias, m0_c, shift_c, 0, -128, 127, torch.int8), min_run_time)
        t["ours_gemm"] = cuda_best_seconds(lambda: ck.int8_gemm(x, packed), min_run_time)
        t["int_mm"] = cuda_best_seconds(lambda: torch._int_mm(x, w_t), min_run_time)
        # the unfused peer: cuBLAS int8 GEMM, bias add, then the same fixed-point requantization kernel
        t["int_mm_requant"] = cuda_best_seconds(
            lambda: ck.requantize(torch._int_mm(x, w_t) + bias, m0_i, shift_i, 0, -128, 127, torch.int8),
            min_run_time)
        t["fp16"] = cuda_best_seconds(lambda: F.linear(x_h, w_h), min_run_time)
    return t


def cuda_section(quick: bool) -> str:
    shapes = CUDA_SHAPES[:2] if quick else CUDA_SHAPES
    min_run_time = 0.05 if quick else 0.3
    rows = []
    for m, n, k in tqdm(shapes, desc="int8 GEMM shapes (CUDA)"):
        t = bench_cuda_shape(m, n, k, min_run_time)
        tops = 2.0 * m * n * k / 1e12
        rows.append([m, n, k, tops / t["ours_linear"], t["int_mm_requant"] / t["ours_linear"],
                     t["int_mm"] / t["ours_linear"], t["int_mm_requant"] / t["ours_linear_pc"],
                     tops / t["ours_gemm"], t["int_mm"] / t["ours_gemm"], t["fp16"] / t["ours_linear"]])
    headers = ["M", "N", "K", "int8_linear TOP/s", "vs _int_mm + requant", "vs _int_mm alone",
               "per-channel vs _int_mm + requant", "int8_gemm TOP/s", "gemm vs _int_mm", "vs fp16 F.linear"]
    props = torch.cuda.get_device_properties(0)
    return (f"### int8 GEMM / linear (CUDA)\n\n{props.name} ({props.multi_processor_count} SMs), torch "
            f"{torch.__version__}, CUDA {torch.version.cuda}. Command: `python benchmarks/bench_int8_gemm.py`.\n"
            "Ratios are peer time / our time (> 1: ours faster), CUDA-event timing of back-to-back calls, "
            "fastest block, same run. `int8_linear`: int8 x packed int8 weight, int32 bias, fused fixed-point "
            "requantization (double rounding, per-tensor multiplier by value; per-channel column: multipliers "
            "on the device) -> int8. Peers: `torch._int_mm` (cuBLAS int8 -> int32) followed by the bias add and "
            "`compress_kernels.requantize`, `torch._int_mm` alone, and `F.linear` in fp16 (cuBLAS). "
            "`int8_gemm`: raw int32 output vs `torch._int_mm`.\n\n" + markdown_table(headers, rows))


def main() -> None:
    parser = cpu_and_cuda_parser(__doc__, "two shapes, short timing (never runs Inductor)", "int8_gemm")
    parser.add_argument("--inductor", action="store_true",
                        help='also time torch.compile(bf16 F.linear, mode="max-autotune") for M >= 16 '
                             "(compiles for minutes; ignored with --quick)")
    args = parser.parse_args()
    inductor = args.inductor and not args.quick
    if args.inductor and args.quick:
        print("--inductor is ignored with --quick (compiling takes minutes)", file=sys.stderr)
    command = cpu_command("bench_int8_gemm.py", args) + (" --inductor" if inductor else "")
    run_cpu_and_cuda_sections(args, "int8_gemm", lambda: cpu_section(args.quick, command, inductor),
                              lambda: cuda_section(args.quick))



def cpu_section(quick: bool, command: str = "python benchmarks/bench_int8_gemm.py", inductor: bool = False) -> str:
    shapes = [(m, k, n) for (k, n) in KNS for m in MS]
    if quick:
        shapes = [(64, 1024, 1024), (1, 1024, 1024)]
    min_run_time = 0.05 if quick else 0.3
    amx = amx_limits()  # measured once, before the shapes, on the threads every contender uses
    failures: dict[str, str] = {}
    rows = []
    for m, k, n in tqdm(shapes, desc="int8 GEMM shapes"):
        t = bench_shape(m, k, n, min_run_time, inductor, failures)
        gop = 2.0 * m * k * n / 1e9
        ours = t["ours_static"]

        def vs(key: str, mine: float = ours):
            return t[key] / mine if key in t else "n/a"

        ao = [t[f"ao_{e}"] for e in QUANTIZED_ENGINES if f"ao_{e}" in t]
        row = [m, k, n, gop / ours]
        if amx is not None:
            row.append(100.0 * gop * 1e9 / ours / amx[0])
        row += [vs("fp32"), vs("bf16")] + [vs(f"ao_{e}") for e in QUANTIZED_ENGINES]
        row.append(min(ao) / ours if ao else "n/a")
        if inductor:
            row.append("-" if m < 16 else vs("inductor") if "inductor" in t else "failed")
        row += [gop / t["ours_gemm"], vs("int_mm", t["ours_gemm"]),
                vs("fp32", t["ours_dynamic"]), vs("bf16", t["ours_dynamic"]), vs("ao_dynamic", t["ours_dynamic"]),
                vs("torchao_dynamic", t["ours_dynamic"]), t.get("ao_off_pct", "n/a")]
        rows.append(row)
    headers = ["M", "K", "N", "int8_linear GOP/s"] + (["% of AMX limit"] if amx is not None else [])
    headers += ["vs fp32", "vs bf16"] + [f"vs ao {e}" for e in QUANTIZED_ENGINES] + ["vs best ao"]
    headers += ["vs Inductor bf16"] if inductor else []
    headers += ["int8_gemm GOP/s", "gemm vs _int_mm", "dynamic vs fp32", "dynamic vs bf16", "dynamic vs ao dynamic",
                "dynamic vs torchao", "ao % off by > 1"]
    limit = amx_limit_line(amx)
    prose = (
        f"### int8 GEMM / linear (CPU)\n\n{machine_line()}. " + (f"{limit}. " if limit else "")
        + f"Command: `{command}`.\n"
        "Every `vs` column is peer time / our time, both measured in this run on the same input and threads: "
        "> 1 means ours is faster, < 1 means the peer is.\n"
        "`int8_linear`: our packed int8 weight (per-channel scales), uint8 in -> uint8 out with the fused "
        "fixed-point requantization. Its peers: `F.linear` in fp32 (`vs fp32`) and in bf16 (`vs bf16`; oneDNN, on "
        "AMX where the CPU has it; weight, bias and input cast to bf16 once, outside the timed call), and "
        "`torch.ops.quantized.linear` prepacked with the same static uint8 -> uint8 semantics under each quantized "
        "engine, x86, fbgemm and onednn (`vs ao <engine>`; `vs best ao` is against the fastest of them on that "
        "shape; n/a: engine missing from this torch build or failed)"
        + ("; Inductor's bf16 linear, `torch.compile(lambda x: F.linear(x, w_bf16, b_bf16), mode=\"max-autotune\")` "
           "compiled per shape for M >= 16 (`vs Inductor bf16`; - where not measured, failed where it did not "
           "compile)"
           if inductor else "") + ". "
        + ("`% of AMX limit`: int8_linear ops/s (2 * M * K * N per call) over the AMX int8 limit above. "
           if amx else "")
        + "`int8_gemm`: int8 x int8 -> int32 with a packed weight vs `torch._int_mm`. "
        "dynamic: our dynamic QuantLinear, float -> float with per-row activation quantization, vs `F.linear` fp32 "
        "and bf16, `torch.ops.quantized.linear_dynamic` (x86 engine) and torchao "
        "`Int8DynamicActivationInt8WeightConfig` (n/a: torchao not installed). `ao % off by > 1`: share of the "
        "fbgemm outputs that differ from ours (the exact integer result) by more than the 1 that its float "
        "requantization may round differently, on the same input.\n\n"
        + markdown_table(headers, rows))
    prose += failures_line(failures)
    if amx and not quick:
        prose += AMX_NOTES
    return prose


AMX_NOTES = """

#### Where the cycles go on AMX (Sapphire Rapids class, measured with single-purpose microbenchmarks)

- The register-only loop (4 accumulator tiles, no loads) runs at the limit above. With four tile loads
  per four `tdpbusd` (2 x 2 accumulator tiles, the most the 8 tiles allow) the loop still reaches
  the limit while all operands sit in L1, but only 45-50% of it once A and B stream from L2: every
  `tdpbusd` needs 1 KB of operands and L2 delivers about 48 B per cycle. oneDNN is bound the same way.
- Two blockings that move an operand into L1 were measured and not kept: K passes with the
  accumulators stored between them (0.85-0.95x) and x packed into compact 1 KB tiles once per chunk
  (0.75-0.85x at K = N = 1024).
- The fixed-point output stage (exact gemmlowp double rounding, about 20 vector ops per 16 outputs) is
  the other cost: it is written a few rows per K step of the next block, so it overlaps the tile
  unit, and its per-channel constants are prepared once per block. With K <= 1024 each output gets
  too few multiply-adds to hide it fully: int8_gemm (int32 out) runs 1.2-1.6x faster than int8_linear
  there, while oneDNN requantizes in fp32. That is the gap at K = 1024.
- M <= 8 stays on the VNNI kernel (a tile row of 16 would be half padding), except M = 8 with a weight
  of at most 4 MiB, where the tiles win; the rule is in `int8_gemm_uses_amx`.
"""


if __name__ == "__main__":
    main()
