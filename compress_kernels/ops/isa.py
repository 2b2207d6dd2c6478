"""The CPU instruction-set path the kernels run on: query it, force one (tests, benchmarks), and the
AMX peak the benchmarks report against."""

from __future__ import annotations

import contextlib

from ._native import _lib

__all__ = ["amx_peak", "cpu_bf16_path", "cpu_isa", "cpu_isa_report", "force_cpu_isa"]


def cpu_isa() -> str:
    """The CPU instruction-set path the kernels use now: "amx", "avx512vbmi", "avx512vnni", "avx2",
    "portable", or "amx_emulated" (the AMX kernels on a scalar model of the tile instructions, every
    other family on the best non-AMX path; for tests)."""
    return _lib()._cpu_isa("")


def cpu_isa_report() -> str:
    """One line: the CPU path detected and active, and when AMX is not used, why (CPU, OS or the
    Linux tile-data permission)."""
    return _lib()._cpu_isa_report()


def cpu_bf16_path() -> str:
    """The kernel bf16 ops (sparse24_linear with bf16 x) run now: "avx512bf16" (vdpbf16ps, path
    avx512vbmi on a CPU with AVX512_BF16: Zen 4, Sapphire Rapids), "avx2" (fp32 FMAs under FTZ/DAZ,
    any AVX2 CPU) or "portable"; all give the same bits."""
    return _lib()._cpu_bf16_path()


def amx_peak(kind: str = "int8", seconds: float = 0.2) -> float:
    """The AMX limit of this machine now, in operations per second on all torch threads: a
    register-only loop of tdpbssd ("int8") or tdpbf16ps ("bf16") on four accumulator tiles. Raises
    where the CPU path has no AMX. Benchmarks report kernels as a share of it."""
    return _lib()._amx_peak(kind, seconds)


@contextlib.contextmanager
def force_cpu_isa(isa: str):
    """Run the body on one CPU path ("portable", "avx2", "avx512vnni", "avx512vbmi", "amx",
    "amx_emulated" or "auto"); every path computes bit-identical results, so this is for tests and
    benchmarks."""
    previous = cpu_isa()
    _lib()._cpu_isa(isa)
    try:
        yield
    finally:
        _lib()._cpu_isa(previous)
