"""compress_kernels: real kernels for model compression (integer-only int8 with fixed-point
requantization, k-means codebooks, 2:4 sparsity, fused fake-quant) and the modules that put them
into trained models."""

from . import convert, nn, numerics, ops, reference
from .convert import ConversionReport, Int8DynamicConfig, convert_
from .nn import QuantLinear
from .static_quant import Int8StaticConfig, calibrate  # issue 3
from .nn.conv import QuantConv2d  # issue 3
from .nn.integer import DeQuantize, QuantAdd, QuantAvgPool2d, QuantMaxPool2d, Quantize, QuantReLU  # issue 3
from .nn._common import reference_mode  # issue 3
from . import models  # noqa: E402  issue 3
from .ops import codebook_conv2d, codebook_linear, codebook_pack, codebook_unpack  # issue 4
from . import cluster  # noqa: E402  issue 4
from .convert import CodebookConfig  # issue 4
from .nn import CodebookConv2d, CodebookLinear  # issue 4
from .ops import fake_quant, fake_quant_backward, fake_quant_observe  # issue 6
from .qat import QATConfig, broadcast_qat_state_, freeze_qat_, prepare_qat_, qat_exact_mode, qat_mismatch_report  # issue 6
from .nn.fake_quant import FakeQuantize  # issue 6
from . import prune  # issue 5
from .convert import Sparse24Config  # issue 5
from .nn import SparseConv2d, SparseLinear  # issue 5
from .prune import PruneConfig, prune_  # issue 5
from .ops import sparse24_bf16_pack, sparse24_compress, sparse24_conv2d, sparse24_decompress, sparse24_f32_pack, sparse24_int8_conv2d, sparse24_int8_linear, sparse24_int8_pack, sparse24_linear  # issue 5
from .ops import (
    cpu_isa,
    cpu_isa_report,
    force_cpu_isa,
    int8_conv2d,
    int8_conv2d_pack_weight,
    int8_gemm,
    int8_linear,
    int8_linear_float,
    int8_pack_weight,
    quantize_multiplier,
    quantize_rows,
    requantize,
)

__version__ = "0.1.0"

__all__ = [
    "Int8StaticConfig", "calibrate", "QuantConv2d", "DeQuantize", "QuantAdd", "QuantAvgPool2d", "QuantMaxPool2d", "Quantize", "QuantReLU", "reference_mode", "models",  # issue 3
    "codebook_conv2d", "codebook_linear", "codebook_pack", "codebook_unpack",  # issue 4
    "fake_quant", "fake_quant_backward", "fake_quant_observe",  # issue 6
    "QATConfig", "broadcast_qat_state_", "freeze_qat_", "prepare_qat_", "qat_exact_mode", "qat_mismatch_report", "FakeQuantize",  # issue 6
    "cluster", "CodebookConfig", "CodebookConv2d", "CodebookLinear",  # issue 4
    "prune", "PruneConfig", "prune_", "Sparse24Config", "SparseConv2d", "SparseLinear",  # issue 5
    "sparse24_bf16_pack", "sparse24_compress", "sparse24_conv2d", "sparse24_decompress", "sparse24_f32_pack", "sparse24_int8_conv2d", "sparse24_int8_linear", "sparse24_int8_pack", "sparse24_linear",  # issue 5
    "ConversionReport",
    "Int8DynamicConfig",
    "convert_",
    "QuantLinear",
    "cpu_isa",
    "cpu_isa_report",
    "force_cpu_isa",
    "int8_conv2d",
    "int8_conv2d_pack_weight",
    "int8_gemm",
    "int8_linear",
    "int8_linear_float",
    "int8_pack_weight",
    "nn",
    "numerics",
    "ops",
    "quantize_multiplier",
    "quantize_rows",
    "reference",
    "requantize",
]
