"""Drop-in modules that run compressed layers on the package's kernels."""

from .linear import QuantLinear

__all__ = ["QuantLinear"]
