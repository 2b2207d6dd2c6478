"""Timing and table helpers shared by the microbenchmarks (nothing runs on import).

Times come from torch.utils.benchmark (which warms up and picks the repeat count): best_seconds, the
fastest of repeated timed blocks, is the figure the tables use, because on a shared machine other
processes only ever add time; median_seconds is there for latency reports. Every comparison is a
ratio against a peer measured in the same run.

Also: machine_line (CPU model, cores, threads, torch version, CPU kernel path and whether AMX was used,
from ck.cpu_isa_report), amx_limits / amx_limit_line (the AMX register-only limit of this run,
ck.ops.amx_peak; nothing without AMX), results_name (the results file of a CPU path: <family>_amx on
Intel AMX, <family> on the AMD Zen 4 AVX-512 paths, <family>_<path> otherwise), and
per_quantized_engine (a torch.ops.quantized peer timed under each engine x86, fbgemm and onednn), and
the command-line pieces the scripts share (add_device_argument, add_isa_argument, cpu_command,
run_cuda_section, run_cpu_and_cuda_sections).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time

import torch
from torch.utils import benchmark


def median_seconds(fn, min_run_time: float = 0.2) -> float:
    """Median wall time of fn() in seconds."""
    fn()  # warm-up (first-call allocation, lazy packing of peers)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def best_seconds(fn, min_run_time: float = 0.2) -> float:
    """Fastest per-call time of fn() over repeated timed blocks, in seconds. On this shared 2-core
    machine other processes only ever add time, so the minimum is the repeatable figure."""
    fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return min(timer.blocked_autorange(min_run_time=min_run_time).times)


def cpu_seconds(fn, min_run_time: float = 0.5, min_calls: int = 10, clock=time.thread_time) -> float:
    """Fastest single call of fn() in CPU time (the calling thread's by default; time.process_time for the
    whole process): with one torch thread, the call's compute time without the time spent waiting for a
    core while other jobs load the machine (wall time counts their time slices too)."""
    fn()
    best, spent, calls = float("inf"), 0.0, 0
    while calls < min_calls or spent < min_run_time:
        start = clock()
        fn()
        seconds = clock() - start
        best, spent, calls = min(best, seconds), spent + seconds, calls + 1
    return best


def cuda_best_seconds(fn, min_run_time: float = 0.2, block: int = 20, min_blocks: int = 3) -> float:
    """Fastest per-call GPU time of fn() over blocks of `block` back-to-back calls, each block timed
    with a pair of CUDA events (a kernel of a few microseconds timed one call per event pair would
    measure the launch overhead); at least `min_blocks` blocks and `min_run_time` seconds in all,
    after three warm-up calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    best, elapsed, blocks = float("inf"), 0.0, 0
    while blocks < min_blocks or elapsed < min_run_time:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(block):
            fn()
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
        best, elapsed, blocks = min(best, seconds / block), elapsed + seconds, blocks + 1
    return best


def cpuinfo_field(name: str) -> str:
    """The first `name` field of /proc/cpuinfo ("model name", "vendor_id"), "" where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def amx_usage() -> str:
    """Whether our kernels ran on the AMX tiles, and if not why, from ck.cpu_isa_report() (one line:
    "detected <path>, active <path>[; AMX not used: <reason>][; avx512bf16]")."""
    import compress_kernels as ck

    report = ck.cpu_isa_report()
    fields = [f.strip() for f in report.split(";")]
    active = fields[0].split("active", 1)[1].strip() if "active" in fields[0] else ck.ops.cpu_isa()
    refusal = next((f for f in fields if f.startswith("AMX not used")), "")
    if active == "amx":
        return "AMX tile kernels used"
    if active == "amx_emulated":
        return "AMX not used (amx_emulated: the scalar model of the tile unit, a correctness path)"
    if refusal:
        return refusal  # "AMX not used: <why>" (CPU, OS or the Linux tile-data permission)
    if fields[0].startswith("detected amx"):
        return f"AMX not used (the CPU has AMX; path {active} forced)"
    return "AMX not used"


def machine_line() -> str:
    """CPU model, cores, torch threads, torch version, the CPU kernel path ours ran and whether it
    used AMX (call it inside the force_cpu_isa block of the run it describes)."""
    import compress_kernels as ck

    return (f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"CPU kernel path {ck.ops.cpu_isa()}, {amx_usage()} (`cpu_isa_report`: {ck.cpu_isa_report()})")


def amx_limits(seconds: float = 0.2) -> tuple[float, float] | None:
    """(int8 ops/s, bf16 FLOP/s) of the AMX register-only loop on all torch threads, measured now
    (ck.ops.amx_peak); None on a machine without AMX."""
    from compress_kernels import ops

    try:
        return ops.amx_peak("int8", seconds), ops.amx_peak("bf16", seconds)
    except RuntimeError:
        return None


def amx_limit_line(limits: tuple[float, float] | None = None) -> str:
    """"AMX limit measured in this run: X int8 TOP/s, Y bf16 TFLOP/s on N threads", or "" where there
    is no AMX. Pass limits already measured by amx_limits() to avoid timing the loop twice."""
    if limits is None:
        limits = amx_limits()
    if limits is None:
        return ""
    int8, bf16 = limits
    return (f"AMX limit measured in this run: {int8 / 1e12:.1f} int8 TOP/s, {bf16 / 1e12:.1f} bf16 TFLOP/s "
            f"on {torch.get_num_threads()} threads")


def cpu_vendor() -> str:
    """vendor_id of /proc/cpuinfo ("GenuineIntel", "AuthenticAMD"), "" where there is none."""
    return cpuinfo_field("vendor_id")


def failures_line(failures: dict) -> str:
    """The sentence under a table naming the peers that failed in the run ("" when none did)."""
    if not failures:
        return ""
    return "\n\nPeers that failed in this run: " + "; ".join(f"{k}: {v}" for k, v in failures.items()) + "."


def results_name(family: str, cpu_isa: str | None) -> str:
    """Results file name (benchmarks/results/<name>.md) of a run on CPU path cpu_isa, so that a run on
    one machine or path never overwrites the tables of another: on an Intel CPU, <family>_amx for the
    amx path and <family>_amx_<path> for any other (all in the Intel section of RESULTS.md); elsewhere
    (the AMD machines) <family> for "avx512vnni" / "avx512vbmi" / None (no CPU section) and
    <family>_<path> for any other path (e.g. _avx2, _portable)."""
    if cpu_isa == "amx":
        return f"{family}_amx"
    if cpu_vendor() == "GenuineIntel":
        return f"{family}_amx_{cpu_isa}" if cpu_isa else f"{family}_amx"
    if cpu_isa in (None, "avx512vnni", "avx512vbmi"):
        return family
    return f"{family}_{cpu_isa}"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, text: str) -> str:
    """Writes benchmarks/results/<name>.md (assembled into RESULTS.md by run_all.py)."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.md")
    with open(path, "w") as f:
        f.write(text.rstrip() + "\n")
    return path


# ---------------------------------------------------------------- quantized-engine peers

QUANTIZED_ENGINES = ("x86", "fbgemm", "onednn")


def error_line(e: BaseException) -> str:
    """The exception's type and the first line of its message, for a table's notes."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


@contextlib.contextmanager
def quantized_engine(engine: str):
    """Runs the body with torch.backends.quantized.engine = engine, restoring the previous engine."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def per_quantized_engine(time_engine, failures: dict[str, str] | None = None) -> dict[str, float]:
    """{engine: time_engine(engine)} for the x86, fbgemm and onednn engines of torch.ops.quantized,
    each called under its own torch.backends.quantized.engine (so time_engine prepacks per engine);
    an engine not in torch.backends.quantized.supported_engines is skipped, one that raises is left
    out with its error in failures[engine]. The engine in use before is restored afterwards."""
    times: dict[str, float] = {}
    for engine in QUANTIZED_ENGINES:
        if engine not in torch.backends.quantized.supported_engines:
            continue
        try:
            with quantized_engine(engine):
                times[engine] = time_engine(engine)
        except Exception as e:  # noqa: BLE001 - a peer that fails is reported, not fatal
            if failures is not None:
                failures.setdefault(engine, error_line(e))
    return times


# ---------------------------------------------------------------- command line

CPU_ISAS = ("auto", "portable", "avx2", "avx512vnni", "avx512vbmi", "amx")


def add_device_argument(parser: argparse.ArgumentParser,
                        help: str = "which sections to run (all runs the CUDA section only where there is a GPU)"):
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all", help=help)


def add_isa_argument(parser: argparse.ArgumentParser,
                     help: str = "CPU kernel path of ours (default: the best this CPU has)"):
    parser.add_argument("--isa", choices=CPU_ISAS, default="auto", help=help)


def cpu_and_cuda_parser(doc: str, quick_help: str, family: str) -> argparse.ArgumentParser:
    """The options of a script with a CPU and a CUDA section written to one results file (see
    run_cpu_and_cuda_sections): --quick, --no-write, --device, --threads and --isa."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--no-write", action="store_true", help=f"do not write benchmarks/results/{family}*.md")
    add_device_argument(parser, "which sections to run (cuda needs a GPU; all runs CUDA only where there is one)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for the CPU section (default: torch's choice); every contender uses it")
    add_isa_argument(parser)
    return parser


def model_parser(doc: str, threads: int = 0) -> argparse.ArgumentParser:
    """The options of a whole-model benchmark: --quick (short timing), --no-write (no results file) and
    --threads (torch threads for every contender; 0: torch's choice)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--threads", type=int, default=threads)
    return parser


def cpu_command(script: str, args: argparse.Namespace) -> str:
    """The command line that reruns the CPU section of benchmarks/<script> as args asked for it (--threads,
    --isa and --quick written only where they differ from the defaults)."""
    return (f"python benchmarks/{script} --device cpu" + (f" --threads {args.threads}" if args.threads else "")
            + (f" --isa {args.isa}" if args.isa != "auto" else "") + (" --quick" if args.quick else ""))


def run_cuda_section(parser: argparse.ArgumentParser, args: argparse.Namespace, section, name: str,
                     write: bool) -> str | None:
    """The CUDA section of a script whose CPU and CUDA results go to separate files: refuses --device cuda
    without a GPU (parser.error); where args.device is "cuda", or "all" on a machine with a GPU, prints
    section() and, when write, writes it as benchmarks/results/<name>.md and returns it; None otherwise."""
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU (torch.cuda.is_available() is False)")
    if not (args.device == "cuda" or (args.device == "all" and torch.cuda.is_available())):
        return None
    text = section()
    print(text)
    if write:
        print("wrote", write_result(name, text))
    return text


def run_cpu_and_cuda_sections(args: argparse.Namespace, family: str, cpu_section, cuda_section) -> None:
    """The sections of a script that writes CPU and CUDA results to one file: cpu_section() under
    torch.set_num_threads(args.threads) (where given) and ck.force_cpu_isa(args.isa) for --device cpu / all,
    cuda_section() for --device cuda, or all where there is a GPU; prints them and, unless args.no_write, writes
    them as benchmarks/results/<results_name(family, path)>.md, one file per CPU path, so the AMX, AVX-512 and
    AVX2 machines keep their own tables."""
    import compress_kernels as ck

    sections = []
    cpu_isa = None
    if args.device in ("cpu", "all"):
        if args.threads:
            torch.set_num_threads(args.threads)
        with ck.force_cpu_isa(args.isa):
            cpu_isa = ck.ops.cpu_isa()
            sections.append(cpu_section())
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        sections.append(cuda_section())
    text = "\n\n".join(sections)
    print(text)
    if not args.no_write:
        print("wrote", write_result(results_name(family, cpu_isa), text))
