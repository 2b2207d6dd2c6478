"""Drop-in modules that run compressed layers on the package's kernels."""

from .codebook import CodebookConv2d, CodebookLinear, codebook_size_report, finetune_codebooks
from .fake_quant import FakeQuantize
from .float_io import QATLinearFloatIO, QuantLinearFloatIO
from .int4 import Int4Linear
from .linear import QuantLinear
from .sparse import SparseConv2d, SparseLinear

__all__ = ["FakeQuantize", "CodebookConv2d", "CodebookLinear", "codebook_size_report", "finetune_codebooks",
           "Int4Linear", "QATLinearFloatIO", "QuantLinear", "QuantLinearFloatIO", "SparseConv2d", "SparseLinear"]
