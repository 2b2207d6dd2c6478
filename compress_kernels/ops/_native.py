"""The native library and the argument checks every op wrapper shares.

Loading compress_kernels._C registers the ops in torch.ops.compress_kernels; where it fails, NATIVE_ERROR
holds the error, a RuntimeWarning says so, `_lib()` raises, and no autograd formula is registered
(there is no op to attach it to).
"""

from __future__ import annotations

import operator
import warnings

import torch

try:
    from .. import _C  # noqa: F401  (loading it registers the ops)

    NATIVE_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    NATIVE_ERROR = exc
    warnings.warn(
        f"compress_kernels: the native extension compress_kernels._C failed to load ({exc}). "
        "Ops that need it will raise; rebuild with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )


def _lib():
    if NATIVE_ERROR is not None:
        raise RuntimeError(f"compress_kernels native ops are unavailable: {NATIVE_ERROR}")
    return torch.ops.compress_kernels


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# Integer arguments are checked before they reach the kernels: a float, a float tensor or a bool
# where an integer is meant is refused instead of being truncated (requantize(acc, 0.0123, 0) would
# otherwise run with m0 = 0 and return the zero point everywhere), and so are values outside int32.
_MULTIPLIER_HINT = ("; for a real multiplier r, quantize_multiplier(r) returns the (m0, shift) pair "
                    "(r ~= m0 * 2^(shift - 31))")


def _describe(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"a {v.dtype} tensor of shape {tuple(v.shape)}"
    return f"{type(v).__name__} {v!r}"


def _int32(v, name: str, op: str) -> torch.Tensor:
    """m0 / shift (a Python or NumPy integer, a sequence of them, or an integer tensor) as an int32
    tensor on v's device. TypeError for floats, float / complex tensors and bools (Python, NumPy or
    tensor); ValueError for values outside [-2^31, 2^31 - 1]. An int32 tensor passes unchanged."""
    if type(v) is int and INT32_MIN <= v <= INT32_MAX:  # the common per-tensor case, without a min / max pass
        return torch.tensor(v, dtype=torch.int32)
    hint = _MULTIPLIER_HINT if name.endswith(("m0", "shift")) else ""
    if isinstance(v, torch.Tensor):
        t = v
    else:
        if isinstance(v, (bool, float)):
            raise TypeError(f"{op}: {name} must be an integer (int32, or an integer tensor), got {_describe(v)}{hint}")
        try:
            t = torch.as_tensor(v)
        except (RuntimeError, TypeError, ValueError, OverflowError) as exc:  # e.g. an int beyond int64
            raise ValueError(f"{op}: {name} must hold int32 integers in [{INT32_MIN}, {INT32_MAX}], got {v!r} "
                             f"({exc})") from None
    if t.dtype == torch.int32:
        return t
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{op}: {name} must be an integer (int32, or an integer tensor), got {_describe(v)}{hint}")
    # (the range check reads the values: skipped while torch.compile traces, where they are symbolic)
    if t.numel() and not torch.compiler.is_compiling() and (int(t.min()) < INT32_MIN or int(t.max()) > INT32_MAX):
        raise ValueError(f"{op}: {name} must hold int32 integers in [{INT32_MIN}, {INT32_MAX}], got values in "
                         f"[{int(t.min())}, {int(t.max())}]")
    return t.to(torch.int32)


def _int_arg(v, name: str, op: str, lo: int = INT32_MIN, hi: int = INT32_MAX) -> int:
    """A scalar integer argument (zero point, qmin / qmax, shift amounts, conv geometry) as a Python
    int: a Python / NumPy integer or a one-element integer tensor. TypeError for floats (even
    integral ones such as 3.0), float tensors and bools; ValueError outside [lo, hi]."""
    if isinstance(v, bool) or (isinstance(v, torch.Tensor) and v.dtype == torch.bool):
        raise TypeError(f"{op}: {name} must be an integer, got {_describe(v)}")
    try:
        i = operator.index(v)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an integer, got {_describe(v)}") from None
    if not lo <= i <= hi:
        raise ValueError(f"{op}: {name} must be an integer in [{lo}, {hi}], got {i}")
    return i


def _int_pair(v, name: str, op: str) -> list[int]:
    """An int or a pair of ints (conv stride / padding / dilation / kernel size); the ops check the
    values against the geometry."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
        return [_int_arg(e, name, op) for e in v]
    i = _int_arg(v, name, op)
    return [i, i]

