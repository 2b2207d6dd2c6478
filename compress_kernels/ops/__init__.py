"""Typed Python entry points for every op in torch.ops.compress_kernels, one module per family, each
wrapper with its autograd registration beside it: packed (pack headers and shapes), requantize, int8,
int4, codebook, sparse24, fake_quant, isa (the CPU path); _native loads the library and holds the
argument checks the wrappers share. The fake (meta) kernels that torch.compile and torch.export run
are C++ (csrc/ops/meta.cpp) and call the same argument checks as the CPU and CUDA kernels.

The schemas live in csrc/ops/registration.cpp; the spec of each op is the function of the same name
in compress_kernels.reference.
"""

from __future__ import annotations

from . import codebook as _codebook_family
from . import fake_quant as _fake_quant_family
from . import int4 as _int4_family
from . import int8 as _int8_family
from . import isa as _isa_family
from . import packed as _packed_family
from . import requantize as _requantize_family
from . import sparse24 as _sparse24_family
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
from .codebook import *  # noqa: F403 - the names in its __all__
from .codebook import (
    _codebook_dense as _codebook_dense,
)
from .codebook import (
    _codebook_grad as _codebook_grad,
)
from .fake_quant import *  # noqa: F403
from .fake_quant import (
    _ObservedFakeQuant as _ObservedFakeQuant,
)
from .fake_quant import (
    _qparam_tensor as _qparam_tensor,
)
from .int4 import *  # noqa: F403
from .int8 import *  # noqa: F403
from .isa import *  # noqa: F403
from .packed import *  # noqa: F403
from .requantize import *  # noqa: F403
from .sparse24 import *  # noqa: F403
from .sparse24 import (
    _pad_rows as _pad_rows,
)

# The public names: the library's constants and each family module's __all__ (every name there is imported
# above); the private helpers above stay importable from here for the modules and tests that use them.
__all__ = [
    "INT32_MAX", "INT32_MIN", "NATIVE_ERROR",
    *_codebook_family.__all__, *_fake_quant_family.__all__, *_int4_family.__all__,
    *_int8_family.__all__, *_isa_family.__all__,
    *_packed_family.__all__, *_requantize_family.__all__, *_sparse24_family.__all__,
]
