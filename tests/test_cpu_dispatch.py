"""The CPU kernel dispatch (csrc/cpu/dispatch.h): which tier's kernels every family runs on each
CPU path (every tier gives the same bits, so no other test sees a wrong fallback), and the source
layout the mechanism relies on: tier files named for their tier and compiled for it, one kernel
table per tier file, -inl.h headers only in tier translation units."""

import pathlib
import re

import torch

import compress_kernels as ck
from compress_kernels import ops
from compress_kernels.testing import ISAS

CPU_SOURCES = pathlib.Path(__file__).resolve().parent.parent / "csrc" / "cpu"

# The CPU features each tier's translation units may be compiled for (their #pragma GCC target).
_AVX2 = {"avx2", "fma", "f16c"}
_VNNI = _AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni"}
_VBMI = _VNNI | {"avx512vbmi"}
TIER_TARGETS = {
    "avx2": _AVX2,
    "avx512vnni": _VNNI,
    "avx512vbmi": _VBMI,
    "avx512bf16": _VBMI | {"avx512bf16"},
    "amx": _VBMI | {"amx-tile", "amx-int8", "amx-bf16"},
}
# Tiers whose translation units have no target pragma.
UNTARGETED_TIERS = {"amx_emulated"}


def kernel_tiers() -> dict:
    return dict(entry.split("=") for entry in torch.ops.compress_kernels._cpu_kernel_tiers())


def expected_kernel_tiers(isa: str) -> dict:
    """The rules of dispatch.h, written out per family: a family runs its kernel of the highest
    enabled tier it has one for."""
    # amx_emulated runs every non-AMX family on the best non-AMX path of this CPU.
    non_amx = [name for name in ISAS if name not in ("amx", "amx_emulated")][-1]
    path = non_amx if isa == "amx_emulated" else isa
    has_avx512bf16 = "; avx512bf16" in ck.cpu_isa_report()
    # requantize, quantize_rows, codebook, fake_quant and fp32 2:4 top out at the VNNI tier.
    vnni_family = path if path in ("portable", "avx2") else "avx512vnni"
    # int8 2:4 has a VBMI kernel, which the AMX path uses when the plan does not take the tiles.
    int8_24 = path if path in ("portable", "avx2", "avx512vnni") else "avx512vbmi"
    if has_avx512bf16 and path in ("avx512vbmi", "amx"):
        bf16 = "avx512bf16"
    else:
        bf16 = "portable" if path == "portable" else "avx2"
    tiles = isa if isa in ("amx", "amx_emulated") else None
    return {
        "requantize": vnni_family,
        "quantize_rows": vnni_family,
        "int8_gemm": tiles or vnni_family,
        "int8_gemm_vector": vnni_family,
        "codebook": vnni_family,
        "fake_quant": vnni_family,
        "sparse24_f32": vnni_family,
        "sparse24_int8": tiles or int8_24,
        "sparse24_int8_vector": int8_24,
        "sparse24_bf16": bf16,
        "int4_w4a8": tiles or vnni_family,
        "int4_w4a8_vector": vnni_family,
        "int4_f32": tiles or ("portable" if path in ("portable", "avx2") else "avx512vnni"),
        "int4_f32_vector": "portable" if path in ("portable", "avx2") else "avx512vnni",
    }


def test_every_family_runs_the_tier_of_its_fallback_order(isa):
    assert kernel_tiers() == expected_kernel_tiers(isa)


def test_bf16_path_is_the_bf16_family_tier(isa):
    assert ops.cpu_bf16_path() == kernel_tiers()["sparse24_bf16"]


def test_amx_emulation_keeps_the_best_non_amx_tier_for_other_families():
    with ck.force_cpu_isa("amx_emulated"):
        emulated = kernel_tiers()
    best_non_amx = [name for name in ISAS if name not in ("amx", "amx_emulated")][-1]
    with ck.force_cpu_isa(best_non_amx):
        native = kernel_tiers()
    for family, tier in emulated.items():
        if family in ("int8_gemm", "sparse24_int8", "int4_w4a8", "int4_f32"):  # the families with AMX kernels
            assert tier == "amx_emulated"
        else:
            assert tier == native[family], family


def _target_features(source: str):
    match = re.search(r'#pragma GCC target\("([^"]+)"\)', source)
    return None if match is None else set(match.group(1).split(","))


def _tier_of(path: pathlib.Path):
    stem = path.name[: -len(".cpp")]
    for tier in sorted(set(TIER_TARGETS) | UNTARGETED_TIERS, key=len, reverse=True):
        if stem.endswith("_" + tier):
            return tier
    return None


def test_tier_files_are_compiled_for_their_tier_and_define_its_tables():
    tier_files = 0
    for path in sorted(CPU_SOURCES.glob("*.cpp")):
        source = path.read_text()
        tier = _tier_of(path)
        features = _target_features(source)
        if tier is None:
            assert features is None, f"{path.name} has a target pragma but no tier suffix"
            continue
        tier_files += 1
        if tier in UNTARGETED_TIERS:
            assert features is None, f"{path.name}: the {tier} tier has no target flags"
        else:
            assert features is not None, f"{path.name}: no #pragma GCC target"
            assert features <= TIER_TARGETS[tier], f"{path.name}: {sorted(features - TIER_TARGETS[tier])} beyond {tier}"
        tables = re.findall(r"^const \w+Kernels (\w+) = ", source, flags=re.M)
        assert tables, f"{path.name} defines no kernel table"
        for table in tables:
            assert table.endswith("_kernels_" + tier), f"{path.name}: table {table} is not named for {tier}"
    assert tier_files >= 18  # 18 today: a glob that finds none must not pass


def test_inl_headers_name_their_includers_and_are_included_only_by_tier_units():
    headers = sorted(CPU_SOURCES.glob("*-inl.h"))
    assert len(headers) >= 10
    units = sorted(CPU_SOURCES.glob("*.cpp")) + sorted(CPU_SOURCES.glob("*.h"))
    for header in headers:
        includers = {u.name for u in units if f'#include "{header.name}"' in u.read_text()}
        first_line = header.read_text().split("\n", 1)[0]
        assert first_line.startswith("// Included by "), header.name
        # the first sentence of the leading comment (clang-format may wrap it over several lines)
        comment = " ".join(line[2:].strip() for line in header.read_text().split("\n") if line.startswith("//"))
        first_sentence = re.split(r"\.(?:\s|$)", comment, maxsplit=1)[0]
        named = set(re.findall(r"[\w-]+(?:\.cpp|-inl\.h)", first_sentence))
        assert named == includers, f"{header.name}: first line names {sorted(named)}, included by {sorted(includers)}"
        for name in includers:
            assert name.endswith("-inl.h") or _tier_of(CPU_SOURCES / name) is not None, (
                f"{header.name} is included by {name}, which is not a tier translation unit"
            )
    for header in sorted(CPU_SOURCES.glob("*.h")):
        if not header.name.endswith("-inl.h"):
            assert "<immintrin.h>" not in header.read_text(), f"{header.name} uses intrinsics: name it -inl.h"
