"""compress_kernels: real kernels for model compression (integer-only int8 with fixed-point
requantization, group-wise int4 weights, k-means codebooks, 2:4 sparsity, fused fake-quant) and the
modules that put them into trained models."""

from . import (
    adaround,
    calibrated_prune,
    cluster,
    convert,
    export,
    formats,
    hooks_quant,
    lowbit,
    mixed,
    nn,
    numerics,
    ops,
    prune,
    reference,
    study,
)
from .adaround import AdaRoundConfig
from .convert import (
    CodebookConfig,
    ConversionReport,
    Fp8WeightConfig,
    Int4WeightConfig,
    Int8DynamicConfig,
    Sparse24Config,
    convert_,
)
from .export import OnnxExportError, OnnxExportReport, to_onnx
from .mixed import ChannelPruneConfig, MixedConversionReport
from .nn import (
    CodebookConv2d,
    CodebookLinear,
    Fp8WeightConv2d,
    Fp8WeightLinear,
    Int4Conv2d,
    Int4Linear,
    QuantLinear,
    SparseConv2d,
    SparseLinear,
)
from .nn._common import reference_mode
from .nn.conv import QuantConv2d
from .nn.fake_quant import FakeQuantize, WeightFakeQuantize
from .nn.float_io import QuantLinearFloatIO
from .nn.integer import DeQuantize, QuantAdd, QuantAvgPool2d, Quantize, QuantMaxPool2d, QuantReLU
from .ops import (
    codebook_conv2d,
    codebook_decode,
    codebook_linear,
    codebook_pack,
    codebook_unpack,
    cpu_isa,
    cpu_isa_report,
    fake_quant,
    fake_quant_backward,
    fake_quant_observe,
    force_cpu_isa,
    int4_linear,
    int4_pack,
    int4_unpack,
    int8_conv2d,
    int8_conv2d_pack_weight,
    int8_gemm,
    int8_linear,
    int8_linear_dequant,
    int8_linear_float,
    int8_pack_weight,
    quantize_multiplier,
    quantize_per_tensor,
    quantize_rows,
    requantize,
    sparse24_bf16_pack,
    sparse24_compress,
    sparse24_conv2d,
    sparse24_decompress,
    sparse24_f32_pack,
    sparse24_int8_conv2d,
    sparse24_int8_linear,
    sparse24_int8_pack,
    sparse24_linear,
)
from .prune import PruneConfig, prune_
from .qat import QATConfig, broadcast_qat_state_, freeze_qat_, prepare_qat_, qat_exact_mode, qat_mismatch_report
from .sensitivity import Assignment, SensitivityTable, assign, kl_divergence, sensitivity
from .static_quant import Int8StaticConfig, calibrate

# The demo application's parts, also reachable from the top as before they moved into
# compress_kernels.study: ck.data, ck.models and ck.training are the modules
# compress_kernels.study.data, .models and .training (the same objects).
from .study import data, models, training

__version__ = "0.1.0"

# Grouped by purpose; sorted within each group.
__all__ = [
    # submodules
    "adaround",
    "calibrated_prune",
    "cluster",
    "convert",
    "export",
    "formats",
    "hooks_quant",
    "lowbit",
    "mixed",
    "nn",
    "numerics",
    "ops",
    "prune",
    "reference",
    # the CPU path the kernels run on
    "cpu_isa",
    "cpu_isa_report",
    "force_cpu_isa",
    # fixed-point requantization and int8 GEMM / conv ops
    "int8_conv2d",
    "int8_conv2d_pack_weight",
    "int8_gemm",
    "int8_linear",
    "int8_linear_dequant",
    "int8_linear_float",
    "int8_pack_weight",
    "quantize_multiplier",
    "quantize_per_tensor",
    "quantize_rows",
    "requantize",
    # group-wise int4 weight ops
    "int4_linear",
    "int4_pack",
    "int4_unpack",
    # k-means codebook ops
    "codebook_conv2d",
    "codebook_decode",
    "codebook_linear",
    "codebook_pack",
    "codebook_unpack",
    # 2:4 sparse ops
    "sparse24_bf16_pack",
    "sparse24_compress",
    "sparse24_conv2d",
    "sparse24_decompress",
    "sparse24_f32_pack",
    "sparse24_int8_conv2d",
    "sparse24_int8_linear",
    "sparse24_int8_pack",
    "sparse24_linear",
    # fused fake-quant ops
    "fake_quant",
    "fake_quant_backward",
    "fake_quant_observe",
    # drop-in modules: integer-only, dynamic int8, int4 weights, codebook, 2:4, weight-only fp8, fake-quant
    "CodebookConv2d",
    "CodebookLinear",
    "DeQuantize",
    "FakeQuantize",
    "Fp8WeightConv2d",
    "Fp8WeightLinear",
    "Int4Conv2d",
    "Int4Linear",
    "QuantAdd",
    "QuantAvgPool2d",
    "QuantConv2d",
    "QuantLinear",
    "QuantLinearFloatIO",
    "QuantMaxPool2d",
    "QuantReLU",
    "Quantize",
    "SparseConv2d",
    "SparseLinear",
    "WeightFakeQuantize",
    # conversion of trained models (post-training)
    "AdaRoundConfig",
    "ChannelPruneConfig",
    "CodebookConfig",
    "ConversionReport",
    "Fp8WeightConfig",
    "Int4WeightConfig",
    "Int8DynamicConfig",
    "Int8StaticConfig",
    "MixedConversionReport",
    "Sparse24Config",
    "calibrate",
    "convert_",
    "reference_mode",
    # quantization-aware training
    "QATConfig",
    "broadcast_qat_state_",
    "freeze_qat_",
    "prepare_qat_",
    "qat_exact_mode",
    "qat_mismatch_report",
    # leaving Python: ONNX export (torch.export needs nothing extra)
    "OnnxExportError",
    "OnnxExportReport",
    "to_onnx",
    # pruning
    "PruneConfig",
    "prune_",
    # which layer to compress how: per-layer sensitivity and mixed assignment under a budget
    "Assignment",
    "SensitivityTable",
    "assign",
    "kl_divergence",
    "sensitivity",
    # the demo application (compress_kernels.study) and its parts
    "data",
    "models",
    "study",
    "training",
]
