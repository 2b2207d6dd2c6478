"""Fused fake quantization for QAT: fake_quant (LSQ qparam gradients), its one-pass backward, and
fake_quant_observe (EMA min/max observer + fake quantization). On CUDA the ops run the Triton kernels
of compress_kernels.triton_kernels."""

from __future__ import annotations

import torch

from ._native import NATIVE_ERROR, _lib

__all__ = ["fake_quant", "fake_quant_backward", "fake_quant_observe"]


def _qparam_tensor(v, dtype: torch.dtype, device) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.tensor([v], dtype=dtype, device=device)


def fake_quant(x: torch.Tensor, scale, zero_point=0, qmin: int = -128, qmax: int = 127,
               axis: int | None = None, mask: torch.Tensor | None = None,
               grad_factor: float | None = None) -> torch.Tensor:
    """Fused fake quantization y = (clamp(round_half_even(x / s) + z, qmin, qmax) - z) * s.

    x: float32, bfloat16, float16 (computed in fp32 registers) or float64 (computed in fp64), any
    shape. x / s is evaluated as x * (1 / s) with 1 / s rounded to fp32, as PyTorch's
    fake_quantize_per_tensor_affine / per_channel_affine do, so the forward equals theirs exactly.
    scale: a float or a floating tensor with 1 element (axis=None, per tensor) or x.shape[axis]
    elements (per channel along `axis`, any axis, negative allowed); finite and > 0.
    zero_point: an int or an integer / floating tensor shaped like scale; a floating (learnable)
    zero point is rounded half to even; it must lie in [qmin, qmax]. qmin < qmax, |q| <= 2^23.
    mask: optional bool (or 0 / 1) tensor of x's shape; where it is false, y and grad_x are exactly
    zero and nothing reaches the qparam gradients (pruned weights stay pruned).

    Autograd: grad_x is the clipped straight-through estimator (grad_y where qmin <= round(x/s) + z
    <= qmax, else 0). When scale requires grad: the LSQ gradient (Esser et al.)
    g * sum(grad_y * dy/ds) with dy/ds = round(x/s) - x/s inside the range, qmin - z below,
    qmax - z above; when a floating zero_point requires grad: g * sum(grad_y * dy/dz) with
    dy/dz = 0 inside, -s outside. g = grad_factor, default 1 / sqrt(n * qmax) with n the number of
    elements that share the scale (numel per tensor, numel / channels per channel; qmax - qmin
    when qmax <= 0). torch._fake_quantize_learnable_* take g as an argument (1.0 unless the caller
    scales): pass grad_factor=1.0 to match them. Forward and backward each read and write x once.
    """
    scale_t = _qparam_tensor(scale, torch.float32, x.device)
    zp_t = _qparam_tensor(zero_point, torch.int32, x.device)
    return _lib().fake_quant(x, scale_t, zp_t, qmin, qmax, axis, mask, grad_factor)


def _zero_point_grad_dtype(zero_point):
    return zero_point.dtype if zero_point.dtype.is_floating_point else torch.float32


def fake_quant_backward(grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor,
                        zero_point: torch.Tensor, qmin: int, qmax: int, axis: int | None = None,
                        mask: torch.Tensor | None = None, grad_factor: float | None = None,
                        scale_grad: bool = True, zero_point_grad: bool = True):
    """One pass over (grad, x): returns (grad_x, grad_scale, grad_zero_point) of fake_quant (see
    its docstring). The qparam gradients are reduced from fixed-size blocks in a fixed order, so
    they do not depend on the thread count; they are zeros when not requested."""
    return _lib().fake_quant_backward(grad, x, scale, zero_point, qmin, qmax, axis, mask,
                                      grad_factor, scale_grad, zero_point_grad)


class _ObservedFakeQuant(torch.autograd.Function):
    """fake_quant_observe with the straight-through gradient for x (the observed qparams are not
    learnable, so they get none)."""

    @staticmethod
    def forward(x, running_min, running_max, momentum, qmin, qmax, symmetric, axis, mask):
        return _lib().fake_quant_observe(x, running_min, running_max, momentum, qmin, qmax,
                                         symmetric, axis, mask)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, _, _, qmin, qmax, _, axis, mask = inputs
        _, scale, zero_point = output
        ctx.save_for_backward(x, scale, zero_point, mask)
        ctx.qparams = (qmin, qmax, axis)
        ctx.mark_non_differentiable(scale, zero_point)

    @staticmethod
    def backward(ctx, grad, _grad_scale, _grad_zero_point):
        x, scale, zero_point, mask = ctx.saved_tensors
        qmin, qmax, axis = ctx.qparams
        grad_x, _, _ = _lib().fake_quant_backward(grad, x, scale, zero_point, qmin, qmax, axis,
                                                  mask, None, False, False)
        return grad_x, None, None, None, None, None, None, None, None


def fake_quant_observe(x: torch.Tensor, running_min: torch.Tensor, running_max: torch.Tensor,
                       momentum: float = 0.01, qmin: int = 0, qmax: int = 255,
                       symmetric: bool = False, axis: int | None = None,
                       mask: torch.Tensor | None = None):
    """EMA min/max observer update and fake quantization with the updated qparams, in one op
    (the peer: torch.fused_moving_avg_obs_fake_quant). Returns (y, scale, zero_point).

    running_min / running_max: float32, 1 element (axis=None) or x.shape[axis] elements, updated
    in place. Entries still at their initial values (running_min = +inf or running_max = -inf)
    take the batch's min / max; the others move by r += momentum * (batch - r) in fp32.
    qparams, in fp32 as torch.ao.quantization's MinMaxObserver computes them, from the updated
    range widened to include 0:
      asymmetric (default): scale = max((max - min) / (qmax - qmin), eps),
                            zero_point = clamp(qmin - round(min / scale), qmin, qmax);
      symmetric: scale = max(max(-min, max) / ((qmax - qmin) / 2), eps), zero_point = 0 when
                 qmin < 0 (int8) else (qmin + qmax + 1) // 2 (128 for uint8);
    eps = float32 machine epsilon. Defaults [qmin, qmax] = [0, 255] are the uint8 activation range;
    use [-128, 127] for int8. y = fake_quant(x, scale, zero_point, qmin, qmax, axis, mask); the
    gradient of x is the clipped straight-through estimator. The op reads x twice (min/max, then
    quantize) and writes y once.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _ObservedFakeQuant.apply(x, running_min, running_max, momentum, qmin, qmax,
                                        symmetric, axis, mask)
    return _lib().fake_quant_observe(x, running_min, running_max, momentum, qmin, qmax, symmetric,
                                     axis, mask)


def _register_fake_quant_autograd() -> None:
    def setup_context(ctx, inputs, output):
        x, scale, zero_point, qmin, qmax, axis, mask, grad_factor = inputs
        ctx.save_for_backward(x, scale, zero_point, mask)
        ctx.qparams = (qmin, qmax, axis, grad_factor)

    def backward(ctx, grad):
        x, scale, zero_point, mask = ctx.saved_tensors
        qmin, qmax, axis, grad_factor = ctx.qparams
        need_x, need_scale, need_zero_point = ctx.needs_input_grad[:3]
        grad_x, grad_scale, grad_zero_point = torch.ops.compress_kernels.fake_quant_backward(
            grad, x, scale, zero_point, qmin, qmax, axis, mask, grad_factor, need_scale,
            need_zero_point)
        return (grad_x if need_x else None, grad_scale if need_scale else None,
                grad_zero_point if need_zero_point else None, None, None, None, None, None)

    torch.library.register_autograd("compress_kernels::fake_quant", backward,
                                    setup_context=setup_context)


if NATIVE_ERROR is None:
    _register_fake_quant_autograd()
    if torch.cuda.is_available():  # the GPU path of the fake-quant ops is Triton
        from .. import triton_kernels as _triton_kernels

        _triton_kernels.register_cuda_kernels()
