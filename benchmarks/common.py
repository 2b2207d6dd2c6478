"""Timing and table helpers shared by the microbenchmarks (nothing runs on import).

Times come from torch.utils.benchmark (which warms up and picks the repeat count): best_seconds, the
fastest of repeated timed blocks, is the figure the tables use, because on a shared machine other
processes only ever add time; median_seconds is there for latency reports. Every comparison is a
ratio against a peer measured in the same run.
"""

from __future__ import annotations

import os
import platform

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


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from compress_kernels import ops

    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"CPU kernel path {ops.cpu_isa()}")


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
