"""Typed Python entry points for every op in torch.ops.compress_kernels, one module per family, each
wrapper with its autograd registration beside it: packed (pack headers and shapes), requantize, int8,
int4, codebook, sparse24, fake_quant, isa (the CPU path); _native loads the library and holds the
argument checks the wrappers share. The fake (meta) kernels that torch.compile and torch.export run
are C++ (csrc/ops/meta.cpp) and call the same argument checks as the CPU and CUDA kernels.

The schemas live in csrc/ops/registration.cpp; the spec of each op is the function of the same name
in compress_kernels.reference.
"""

from __future__ import annotations

from ._native import (
    INT32_MAX,
    INT32_MIN,
    NATIVE_ERROR,
)
from ._native import (
    _describe as _describe,
)
from ._native import (
    _int32 as _int32,
)
from ._native import (
    _int_arg as _int_arg,
)
from ._native import (
    _int_pair as _int_pair,
)
from ._native import (
    _lib as _lib,
)
from .codebook import (
    _codebook_dense as _codebook_dense,
)
from .codebook import (
    _codebook_grad as _codebook_grad,
)
from .codebook import (
    codebook_conv2d,
    codebook_linear,
    codebook_pack,
    codebook_unpack,
    codebook_words_per_row,
)
from .fake_quant import (
    _ObservedFakeQuant as _ObservedFakeQuant,
)
from .fake_quant import (
    _qparam_tensor as _qparam_tensor,
)
from .fake_quant import (
    fake_quant,
    fake_quant_backward,
    fake_quant_observe,
)
from .int4 import (
    INT4_ACTIVATIONS,
    int4_linear,
    int4_pack,
    int4_pack_param,
    int4_unpack,
)
from .int8 import (
    int8_conv2d,
    int8_conv2d_pack_weight,
    int8_gemm,
    int8_linear,
    int8_linear_float,
    int8_pack_weight,
    quantize_rows,
)
from .isa import (
    amx_peak,
    cpu_bf16_path,
    cpu_isa,
    cpu_isa_report,
    force_cpu_isa,
)
from .packed import (
    PACKED_FAMILIES,
    packed_n,
    packed_payload,
    packed_shape,
)
from .requantize import (
    int8_add,
    quantize_multiplier,
    requantize,
)
from .sparse24 import (
    _pad_rows as _pad_rows,
)
from .sparse24 import (
    sparse24_bf16_pack,
    sparse24_compress,
    sparse24_conv2d,
    sparse24_cuda_pack,
    sparse24_decompress,
    sparse24_f32_pack,
    sparse24_from_cusparselt,
    sparse24_from_cutlass,
    sparse24_int8_conv2d,
    sparse24_int8_linear,
    sparse24_int8_pack,
    sparse24_linear,
    sparse24_to_cusparselt,
    sparse24_to_cutlass,
)

# The public names; the private helpers above stay importable from here for the modules and tests that use them.
__all__ = [
    "INT32_MAX",
    "INT4_ACTIVATIONS",
    "INT32_MIN",
    "NATIVE_ERROR",
    "PACKED_FAMILIES",
    "amx_peak",
    "codebook_conv2d",
    "codebook_linear",
    "codebook_pack",
    "codebook_unpack",
    "codebook_words_per_row",
    "cpu_bf16_path",
    "cpu_isa",
    "cpu_isa_report",
    "fake_quant",
    "fake_quant_backward",
    "fake_quant_observe",
    "force_cpu_isa",
    "int4_linear",
    "int4_pack",
    "int4_pack_param",
    "int4_unpack",
    "int8_add",
    "int8_conv2d",
    "int8_conv2d_pack_weight",
    "int8_gemm",
    "int8_linear",
    "int8_linear_float",
    "int8_pack_weight",
    "packed_n",
    "packed_payload",
    "packed_shape",
    "quantize_multiplier",
    "quantize_rows",
    "requantize",
    "sparse24_bf16_pack",
    "sparse24_compress",
    "sparse24_conv2d",
    "sparse24_cuda_pack",
    "sparse24_decompress",
    "sparse24_f32_pack",
    "sparse24_from_cusparselt",
    "sparse24_from_cutlass",
    "sparse24_int8_conv2d",
    "sparse24_int8_linear",
    "sparse24_int8_pack",
    "sparse24_linear",
    "sparse24_to_cusparselt",
    "sparse24_to_cutlass",
]
