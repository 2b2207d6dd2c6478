"""Drop-in modules that run compressed layers on the package's kernels."""

from .fake_quant import FakeQuantize  # issue 6
from .linear import QuantLinear
from .sparse import SparseConv2d, SparseLinear  # issue 5

__all__ = ["FakeQuantize", "QuantLinear", "SparseConv2d", "SparseLinear"]
