"""Drop-in modules that run compressed layers on the package's kernels."""

from .codebook import CodebookConv2d, CodebookLinear, codebook_size_report, finetune_codebooks
from .fake_quant import FakeQuantize, WeightFakeQuantize
from .float_io import QATLinearFloatIO, QuantLinearFloatIO
from .fp8 import Fp8WeightConv2d, Fp8WeightLinear
from .int4 import Int4Linear
from .int4_conv import Int4Conv2d
from .linear import QuantLinear
from .sparse import SparseConv2d, SparseLinear

__all__ = ["FakeQuantize", "CodebookConv2d", "CodebookLinear", "codebook_size_report", "finetune_codebooks",
           "Fp8WeightConv2d", "Fp8WeightLinear", "Int4Conv2d", "Int4Linear", "QATLinearFloatIO", "QuantLinear",
           "QuantLinearFloatIO", "SparseConv2d", "SparseLinear", "WeightFakeQuantize"]
