"""SparseLinear / SparseConv2d: 2:4 semi-structured sparse layers on the sparse24 kernels.

The state dict holds the compressed weight (values [N, K/2] + metadata uint8 [N, ceil(K/8)], layout
in csrc/include/ck/sparse24.h), the bias and, for int8, the per-channel weight scales; the kernel
layout (sparse24_f32_pack / sparse24_int8_pack on the CPU, the CUTLASS layout of
ops.sparse24_cuda_pack on CUDA: fp16 values for fp32 layers, int8 for int8 ones) is rebuilt at
construction, after load_state_dict and after every device move, never per call.

int8 mode is dynamic quantization with the integer kernel: each call quantizes the layer input
symmetrically per tensor (s_x = max|x| / 127, round half to even), runs sparse24_int8_linear with
an identity fixed-point multiplier (int32 out: the exact accumulator sum_k w_q * x_q), and scales
it back with s_x * s_w[n] in fp32, adding the float bias. Pruned weights are never stored, so they
stay exactly zero after quantization (symmetric weights: zero maps to zero).

Non-finite inputs in int8 mode: the per-tensor max is taken over the finite rows only (a row is a
row of the [M, K] input of SparseLinear, an image of SparseConv2d's input; a row is finite when it
holds no NaN and no +-Inf), so one bad row never changes another row's result: the finite rows
give exactly the bits of a batch without the bad rows. A non-finite row is computed in float
instead: its outputs are exactly those of F.linear / F.conv2d of the whole input with
dense_weight() (the dequantized weight) and the bias in fp32 (run only when some row is
non-finite), so they are non-finite as the float layer's would be (NaN where a NaN reaches them,
+-Inf with the sign of x * w, NaN where opposite infinities or an infinity and a zero weight meet).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import numerics, ops
from ..sparse24_layout import groups_over_two, weight_from_rows, weight_rows
from .linear import float_rows_where

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def is_24_sparse(w: torch.Tensor) -> bool:
    """Whether every group of four consecutive weights along K of sparse24_layout.weight_rows (a
    Linear's inputs; a conv's input channels at one kernel tap) holds at most two non-zeros."""
    return w[0].numel() % 4 == 0 and groups_over_two(w) == 0


def _check_quantizable(layer: nn.Module, where: str) -> None:
    """int8 conversion: a NaN or infinite weight would zero its whole output channel (its scale is
    not finite), a non-finite bias would make every output of its channel non-finite: refused."""
    numerics.check_finite(layer.weight, "weight", where)
    if layer.bias is not None:
        numerics.check_finite(layer.bias, "bias", where)


class _Sparse24Base(nn.Module):
    # Whether bf16 values (after module.bfloat16()) run the CPU bf16 kernel (sparse24_bf16_pack);
    # otherwise they are widened to fp32 for the fp32 kernel.
    _bf16_kernel = False

    def _init_buffers(self, out_features: int, k: int, bias: bool, int8: bool) -> None:
        if k % 4:
            raise ValueError(f"{type(self).__name__}: K = {k} (in_features, or kh * kw * in_channels) is not a "
                             "multiple of 4; 2:4 sparsity needs groups of four")
        self.int8 = int8
        self.k = k
        self.register_buffer("values", torch.zeros(out_features, k // 2, dtype=torch.int8 if int8 else torch.float32))
        meta = torch.full((out_features, (k + 7) // 8), 0x44, dtype=torch.uint8)
        if (k // 4) % 2:
            meta[:, -1] = 0x04
        self.register_buffer("meta", meta)
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("weight_scale", torch.ones(out_features) if int8 else None)
        self.register_buffer("packed", torch.zeros(0), persistent=False)
        # CUDA only: the CUTLASS-layout metadata that goes with `packed` (ops.sparse24_cuda_pack).
        self.register_buffer("packed_meta", torch.zeros(0, dtype=torch.uint8), persistent=False)
        self._repack()

    def _set_weight(self, w2d: torch.Tensor) -> None:
        """Compress (and for int8, quantize per output channel) a 2:4 sparse [N, K] weight."""
        w2d = w2d.detach().float().cpu()
        if not is_24_sparse(w2d):
            raise ValueError(f"{type(self).__name__}: the weight is not 2:4 sparse (a group of four consecutive "
                             "input weights holds more than two non-zeros); prune it first, e.g. with "
                             "compress_kernels.prune.prune_(model, PruneConfig(granularity='2:4'))")
        if self.int8:
            w_q, scale = numerics.quantize_weight(w2d, per_channel=True)
            values, meta = ops.sparse24_compress(w_q.reshape(w2d.shape))
            self.weight_scale.copy_(scale.reshape(-1))
        else:
            values, meta = ops.sparse24_compress(w2d)
        self.values.copy_(values)
        self.meta.copy_(meta)
        self._repack()

    def _repack(self) -> None:
        """The kernel layout for the device the weight is on: the CPU kernels' packed buffer, or on
        CUDA the CUTLASS layout of the sparse tensor cores (float16 values for the fp32 mode, int8
        for int8; N and K padded to CUTLASS's multiples, the output sliced back to N)."""
        if self.values.device.type not in ("cpu", "cuda"):  # e.g. the meta device: nothing to pack
            return
        if self.values.is_cuda:
            dtype = torch.int8 if self.int8 else torch.float16
            self.packed, self.packed_meta = ops.sparse24_cuda_pack(self.values, self.meta, dtype)
            return
        values, meta = self.values.cpu(), self.meta.cpu()
        if self.int8:
            packed = ops.sparse24_int8_pack(values, meta)
        elif self._bf16_kernel and values.dtype == torch.bfloat16:
            packed = ops.sparse24_bf16_pack(values, meta)
        else:
            packed = ops.sparse24_f32_pack(values.float(), meta)
        self.packed = packed.to(self.values.device)
        self.packed_meta = torch.zeros(0, dtype=torch.uint8, device=self.values.device)

    def _apply(self, fn, recurse=True):
        # .to(device) / .cuda() / .cpu() move the buffers; the kernel layout depends on the device.
        super()._apply(fn, recurse)
        try:
            self._repack()
        except (RuntimeError, ValueError):
            # to_empty() leaves uninitialized buffers (no valid metadata): nothing to pack until
            # load_state_dict fills them (it repacks); forward refuses until then.
            self.packed = torch.zeros(0, device=self.values.device)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args):
        from ._common import ExtraStateChecker, check_state_tensors, module_label

        if prefix + "_extra_state" in state_dict:
            check = ExtraStateChecker(self, prefix, state_dict[prefix + "_extra_state"], {"int8"})
            check.bool("int8")
            check.equal("int8", self.int8, "build it with int8=...")
        check_state_tensors(self, prefix, state_dict,
                            exact={"meta": torch.uint8, **({"values": torch.int8} if self.int8 else {})},
                            positive_float=("weight_scale",))
        values = state_dict.get(prefix + "values")
        if not self.int8 and isinstance(values, torch.Tensor) and not values.is_floating_point():
            raise TypeError(f"{module_label(self, prefix)}: load_state_dict: {prefix}values has dtype {values.dtype}, "
                            "expected a floating-point dtype (int8=False)")
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._repack()

    def get_extra_state(self):
        return {"int8": self.int8}

    def set_extra_state(self, state):
        pass  # int8 is checked by _load_from_state_dict (it must match the module's)

    def dense_weight(self) -> torch.Tensor:
        """The [N, K] weight the layer computes with (dequantized for int8), K in the order of
        sparse24_layout.weight_rows."""
        w = ops.sparse24_decompress(self.values, self.meta).float()
        return w * self.weight_scale[:, None] if self.int8 else w

    @staticmethod
    def _quantize_input(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Symmetric per-tensor int8 over the finite rows (x.shape[0]; see the module docstring):
        s_x = max|x[finite rows]| / 127 (1 when that max is 0), round half to even. Returns
        (x_q, s_x, nonfinite_rows): x_q is 0 on the non-finite rows, nonfinite_rows the bool mask of
        those rows (None for an empty x)."""
        if x.numel() == 0:
            amax, nonfinite_rows = torch.zeros((), device=x.device), None
        else:
            # the per-row max|x| is NaN / Inf exactly for the non-finite rows: detection rides along the max
            row_amax = x.detach().abs().reshape(x.shape[0], -1).amax(dim=1)
            nonfinite_rows = ~torch.isfinite(row_amax)
            amax = torch.where(nonfinite_rows, 0, row_amax).amax()
        s_x = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax)).float()
        x_q = torch.round(x.float() / s_x).clamp(-127, 127)
        # NaN has no int8 value: those rows become 0 (eagerly only when there is one: no extra pass)
        if nonfinite_rows is not None and (torch.compiler.is_compiling() or bool(nonfinite_rows.any())):
            x_q = torch.where(nonfinite_rows.reshape(-1, *[1] * (x.dim() - 1)), 0, x_q)
        return x_q.to(torch.int8), s_x, nonfinite_rows

    def _dense_float_weight(self, device) -> torch.Tensor:
        """dense_weight() (the dequantized [N, K] weight) in fp32 on `device`."""
        w = ops.sparse24_decompress(self.values.cpu(), self.meta.cpu()).float()
        return (w * self.weight_scale.cpu()[:, None] if self.int8 else w).to(device)

    def _matmul(self, x2: torch.Tensor, s_x: torch.Tensor | None = None) -> torch.Tensor:
        """[M, K] -> [M, N] fp32 through the sparse kernel. int8: x2 is the int8 input quantized
        with scale s_x (quantized here when s_x is None, its non-finite rows then computed in float)."""
        n = self.values.shape[0]
        if self.packed.numel() == 0:
            raise RuntimeError(f"{type(self).__name__}: the weight is not packed (buffers left uninitialized by "
                               "to_empty?); load a state dict first")
        if not self.int8:
            if x2.is_cuda:  # fp16 tensor cores, fp32 in and out (x cast to fp16 by the op)
                y = ops.sparse24_linear(x2.float().contiguous(), self.packed, self.packed_meta, None)[:, :n]
                return y + self.bias.float() if self.bias is not None else y
            if self.packed.dtype == torch.bfloat16:  # bf16 module: bf16 in and out, fp32 accumulation
                return ops.sparse24_linear(x2.to(torch.bfloat16).contiguous(), self.packed, self.meta, self.bias)
            bias = self.bias.float() if self.bias is not None else None
            return ops.sparse24_linear(x2.float().contiguous(), self.packed, self.meta, bias)
        x_float, nonfinite_rows = x2, None
        if s_x is None:
            x2, s_x, nonfinite_rows = self._quantize_input(x2)
        # (m0, shift) = (2^30, 1) is the identity multiplier: the int32 output is the accumulator.
        meta = self.packed_meta if x2.is_cuda else self.meta
        acc = ops.sparse24_int8_linear(x2.contiguous(), 0, self.packed, meta, None, 1 << 30, 1, 0, INT32_MIN,
                                       INT32_MAX, torch.int32)[:, :n]
        y = acc.float() * (s_x * self.weight_scale)
        y = y + self.bias if self.bias is not None else y
        if nonfinite_rows is not None:
            bias = self.bias.float() if self.bias is not None else None
            y = float_rows_where(nonfinite_rows, y,
                                 lambda: F.linear(x_float.float(), self._dense_float_weight(y.device), bias))
        return y

    def compressed_bytes(self) -> int:
        """Bytes of the stored weight (values + metadata, + scales for int8)."""
        n = self.values.numel() * self.values.element_size() + self.meta.numel()
        return n + (self.weight_scale.numel() * 4 if self.int8 else 0)


class SparseLinear(_Sparse24Base):
    """nn.Linear with a 2:4 sparse weight (fp32, or int8 with dynamic activation quantization).
    After .bfloat16() (fp32 mode) it runs the CPU bf16 2:4 kernel: bf16 in and out."""

    _bf16_kernel = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, int8: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_buffers(out_features, in_features, bias, int8)

    @classmethod
    def from_float(cls, linear: nn.Linear, int8: bool = False) -> SparseLinear:
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"SparseLinear.from_float: expected nn.Linear, got {type(linear).__name__}")
        if int8:
            _check_quantizable(linear, f"SparseLinear.from_float({linear!r})")
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, int8=int8)
        m._set_weight(linear.weight)
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach().float())
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self._matmul(x.reshape(-1, self.in_features))
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"int8={self.int8}, sparsity=2:4")


class SparseConv2d(_Sparse24Base):
    """nn.Conv2d (groups=1) with a 2:4 sparse weight over K = kh * kw * in_channels (groups of four
    input channels at one kernel tap: sparse24_layout.weight_rows), run as im2col (one strided copy;
    for int8 on the CPU, sparse24_int8_conv2d gathers the patches itself) followed by the 2:4 sparse
    matmul (fp32, or int8 with dynamic per-tensor activation quantization of the layer input, whose
    zero padding is an exact zero)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, *, int8: bool = False):
        super().__init__()
        pair = nn.modules.utils._pair
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation = pair(padding), pair(dilation)
        self._init_buffers(out_channels, in_channels * self.kernel_size[0] * self.kernel_size[1], bias, int8)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, int8: bool = False) -> SparseConv2d:
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"SparseConv2d.from_float: expected nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError(f"SparseConv2d: groups={conv.groups} is not supported (only groups=1)")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"SparseConv2d: padding={conv.padding!r} / padding_mode={conv.padding_mode!r} is not "
                             "supported (numeric zero padding only)")
        if int8:
            _check_quantizable(conv, f"SparseConv2d.from_float({conv!r})")
        m = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.bias is not None, int8=int8)
        m._set_weight(weight_rows(conv.weight))
        if conv.bias is not None:
            m.bias.copy_(conv.bias.detach().float())
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        oh = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        # int8: quantize the input once (not its kh*kw-times larger im2col); zero padding is an exact 0.
        if self.int8:
            x_in, s_x, nonfinite_images = self._quantize_input(x)
            if not x.is_cuda and self.packed.numel() > 0:
                # the 2:4 conv op gathers the patches itself, a chunk of rows at a time;
                # (m0, shift) = (2^30, 1) is the identity multiplier: the int32 output is the accumulator
                acc = ops.sparse24_int8_conv2d(x_in, 0, self.packed, self.meta, None, 1 << 30, 1, 0, INT32_MIN,
                                               INT32_MAX, torch.int32, self.kernel_size, self.stride, self.padding,
                                               self.dilation)
                y = acc.float() * (s_x * self.weight_scale).reshape(1, -1, 1, 1)
                if self.bias is not None:
                    y = y + self.bias.reshape(1, -1, 1, 1)
            else:
                y = self._im2col_forward(x_in, s_x, n, oh, ow)
            if nonfinite_images is not None:
                y = float_rows_where(nonfinite_images, y, lambda: self._float_conv(x.float()))
            return y.to(x.dtype)
        x_in = x.float()
        if not x.is_cuda and self.packed.numel() > 0:
            bias = self.bias.float() if self.bias is not None else None  # (a bf16 module keeps a bf16 bias)
            # the op itself, not the ops wrapper: the geometry is this module's checked state (see QuantConv2d)
            return torch.ops.compress_kernels.sparse24_conv2d.default(x_in, self.packed, self.meta, bias,
                                                                      self.kernel_size, self.stride, self.padding,
                                                                      self.dilation).to(x.dtype)
        return self._im2col_forward(x_in, None, n, oh, ow).to(x.dtype)

    def _float_conv(self, x: torch.Tensor) -> torch.Tensor:
        """F.conv2d in fp32 with the dequantized dense weight and the bias: the non-finite images."""
        w = weight_from_rows(self._dense_float_weight(x.device), (self.out_channels, self.in_channels,
                                                                  *self.kernel_size))
        bias = self.bias.float() if self.bias is not None else None
        return F.conv2d(x, w, bias, self.stride, self.padding, self.dilation)

    def _im2col_forward(self, x_in: torch.Tensor, s_x: torch.Tensor | None, n: int, oh: int, ow: int) -> torch.Tensor:
        """The conv as im2col + _matmul: fp32 [n, OC, oh, ow]; x_in is int8 (quantized with s_x) or fp32."""
        kh, kw = self.kernel_size
        # im2col as one strided copy: rows (image, oy, ox), columns (ky, kx, c) = the weight's K order.
        xp = F.pad(x_in, (self.padding[1], self.padding[1], self.padding[0], self.padding[0]))
        s_n, s_c, s_h, s_w = xp.stride()
        patches = xp.as_strided((n, oh, ow, kh, kw, self.in_channels),
                                (s_n, s_h * self.stride[0], s_w * self.stride[1], s_h * self.dilation[0],
                                 s_w * self.dilation[1], s_c))
        y = self._matmul(patches.reshape(n * oh * ow, self.k), s_x)  # [n * oh * ow, N]
        return y.reshape(n, oh, ow, self.out_channels).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, int8={self.int8}, "
                "sparsity=2:4")
