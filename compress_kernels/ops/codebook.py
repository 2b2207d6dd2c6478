"""k-means codebook ops: bit-packed indices (codebook_pack / codebook_unpack) and the linear / conv2d
kernels that look the weight up in the codebook, with their autograd (gradients for x, codebook, bias)."""

from __future__ import annotations

import torch

from ._native import NATIVE_ERROR, _int_arg, _int_pair, _lib
from .packed import packed_n

__all__ = ["codebook_conv2d", "codebook_decode", "codebook_linear", "codebook_pack", "codebook_unpack",
           "codebook_words_per_row"]


def codebook_words_per_row(k: int, bits: int) -> int:
    """int32 words per packed row of k indices of `bits` bits: ceil(k / (32 // bits)) (the second
    dimension of codebook_pack's result)."""
    per_word = 32 // bits
    return (k + per_word - 1) // per_word


def codebook_pack(idx: torch.Tensor, bits: int) -> torch.Tensor:
    """Bit-pack codebook indices idx [N, K] (integers in [0, 2^bits), bits in 1..8) into the kernel
    layout: an int32 tensor packed_shape("codebook_pack", N, K, bits) = [header_rows + N,
    ceil(K / (32 // bits))], the header rows first (see compress_kernels.ops.packed; payload:
    packed_payload(p, "codebook_pack")). Each 32-bit word holds 32 // bits indices
    of one row (index j at bits [j*bits, (j+1)*bits), no index straddles two words; bits 3/5/6/7
    leave 32 mod bits bits unused), and rows are interleaved in blocks of 16 so that one 64-byte
    load gives a 16-lane vector of indices (full description: csrc/include/ck/bitpack.h)."""
    return _lib().codebook_pack(idx, bits)


def codebook_unpack(packed_idx: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of codebook_pack: uint8 indices [N, k]."""
    return _lib().codebook_unpack(packed_idx, bits, k)


def codebook_linear(x: torch.Tensor, packed_idx: torch.Tensor, codebook: torch.Tensor, bits: int,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W.T + bias with W[n, k] = codebook[n // (N // G), idx[n, k]], the lookup fused into
    the kernel. x: fp32 or bf16 [M, K] (CUDA also fp16; the output has x's dtype); packed_idx: from
    codebook_pack (N rows); codebook: fp32 [G, 2^bits] (G divides N: one codebook per group of N // G
    consecutive output rows); bias: fp32 [N] or None.
    CPU, fp32 x, per output: acc = 0; acc = fmaf(x[m, k], W[n, k], acc) for k in order; y = acc + bias[n]
    (identical on every CPU path and thread count).
    CPU, bf16 x: W's entries rounded to bf16 (nearest even), bf16 subnormals in x and W read as zero, the
    products summed in fp32, + bias, one rounding to bf16 (nearest even; NaN -> 0x7FC0). From 8-16 rows on an
    AMX CPU (or the amx_emulated path) the weight is decoded into bf16 tiles and multiplied with tdpbf16ps
    (per 32 k, an even-k and an odd-k fp32 chain summed into the accumulator); otherwise x is widened and
    the fp32 kernel runs. Either sum is within (K + 2) * 2^-24 * sum_k |x W| (+ K * 2^-126) of the exact
    one before the bf16 rounding (reference.codebook_linear_bf16_bound); the tile kernel equals its scalar
    model bit for bit.
    CUDA: M <= 8 runs a fused GEMV (fp32 sums in another order, one rounding to x's dtype); larger M
    decodes W to x's dtype and uses cuBLAS (see csrc/ops/cuda_codebook.cpp). Differentiable in x,
    codebook and bias; the codebook gradient is the sum of the weight gradients of each entry's members."""
    return _lib().codebook_linear(x, packed_idx, codebook, bits, bias)


def codebook_conv2d(x: torch.Tensor, packed_idx: torch.Tensor, codebook: torch.Tensor, bits: int,
                    bias: torch.Tensor | None, kernel_size, stride=1, padding=0, dilation=1,
                    groups: int = 1) -> torch.Tensor:
    """F.conv2d with a codebook weight: W [C_out, C_in / groups, kh, kw] flattened to
    [C_out, C_in / groups * kh * kw], its indices packed by codebook_pack. x: fp32 NCHW (CUDA:
    also fp16 / bf16, computed by decoding W to x's dtype, then cuDNN with TF32 off);
    kernel_size / stride / padding / dilation: int or pair (zero padding); groups: 1, or any
    divisor of both channel counts with C_out / groups a multiple of 16 (depthwise is refused).
    Computed as im2col + the codebook_linear kernel, so each output has the same fmaf order over
    (c, i, j). Differentiable in x, codebook and bias."""
    op = "codebook_conv2d"
    return _lib().codebook_conv2d(x, packed_idx, codebook, _int_arg(bits, "bits", op), bias,
                                  _int_pair(kernel_size, "kernel_size", op), _int_pair(stride, "stride", op),
                                  _int_pair(padding, "padding", op), _int_pair(dilation, "dilation", op),
                                  _int_arg(groups, "groups", op))


def codebook_decode(packed_idx: torch.Tensor, codebook: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """The dense fp32 weight [N, k] a codebook pack stands for, in one pass: w[n, j] =
    codebook[n // (N / G), idx[n, j]] (codebook [G, 2^bits] fp32), each value a copy of a codebook entry,
    so exactly reference.codebook_dequantize(codebook_unpack(packed_idx, bits, k), codebook). CPU kernel;
    elsewhere the two-step form."""
    op = "codebook_decode"
    bits, k = _int_arg(bits, "bits", op), _int_arg(k, "k", op)
    if packed_idx.device.type != "cpu":
        return _codebook_dense(packed_idx, codebook, bits, k)[0]
    return _lib().codebook_decode(packed_idx, codebook, bits, k)


def _codebook_dense(packed_idx: torch.Tensor, codebook: torch.Tensor, bits: int, k: int) -> tuple[
        torch.Tensor, torch.Tensor]:
    """(W [N, k], flat index [N, k] into codebook.view(-1)) for the backward passes."""
    n, entries = packed_n("codebook_pack", packed_idx.shape), 1 << bits
    idx = codebook_unpack(packed_idx, bits, k).long()
    group = torch.arange(n, device=idx.device) // (n // codebook.shape[0])
    flat = group[:, None] * entries + idx
    return codebook.reshape(-1)[flat], flat


def _codebook_grad(grad_w: torch.Tensor, flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """d loss / d codebook[g, c] = sum of d loss / d W[n, k] over the members (n, k) of entry c of
    group g (Deep Compression's centroid gradient)."""
    out = torch.zeros(codebook.numel(), dtype=codebook.dtype, device=grad_w.device)
    return out.index_add_(0, flat.reshape(-1), grad_w.reshape(-1).to(codebook.dtype)).view(codebook.shape)


def _register_codebook_autograd() -> None:
    def linear_setup(ctx, inputs, output):
        x, packed_idx, codebook, bits, bias = inputs
        ctx.save_for_backward(x, packed_idx, codebook)
        ctx.bits, ctx.has_bias = bits, bias is not None

    def linear_backward(ctx, grad):
        x, packed_idx, codebook = ctx.saved_tensors
        w, flat = _codebook_dense(packed_idx, codebook, ctx.bits, x.shape[1])
        grad_x = grad @ w.to(grad.dtype) if ctx.needs_input_grad[0] else None  # fp16 / bf16 x on CUDA
        grad_cb = _codebook_grad(grad.T @ x, flat, codebook) if ctx.needs_input_grad[2] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[4] else None
        return grad_x, None, grad_cb, None, grad_b

    torch.library.register_autograd("compress_kernels::codebook_linear", linear_backward,
                                    setup_context=linear_setup)

    def conv_setup(ctx, inputs, output):
        x, packed_idx, codebook, bits, bias, kernel_size, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, packed_idx, codebook)
        ctx.bits, ctx.has_bias = bits, bias is not None
        ctx.conv = (list(kernel_size), list(stride), list(padding), list(dilation), groups)

    def conv_backward(ctx, grad):
        x, packed_idx, codebook = ctx.saved_tensors
        kernel_size, stride, padding, dilation, groups = ctx.conv
        c_in = x.shape[1] // groups
        w, flat = _codebook_dense(packed_idx, codebook, ctx.bits, c_in * kernel_size[0] * kernel_size[1])
        w4 = w.view(w.shape[0], c_in, kernel_size[0], kernel_size[1]).to(x.dtype)
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.has_bias and ctx.needs_input_grad[4]]
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad.contiguous(), x, w4, [w4.shape[0]] if ctx.has_bias else None, stride, padding, dilation,
            False, [0, 0], groups, mask)
        grad_cb = _codebook_grad(grad_w, flat, codebook) if mask[1] else None
        return grad_x, None, grad_cb, None, grad_b, None, None, None, None, None

    torch.library.register_autograd("compress_kernels::codebook_conv2d", conv_backward,
                                    setup_context=conv_setup)


if NATIVE_ERROR is None:
    _register_codebook_autograd()
