"""Triton kernels: the GPU path of the fused fake-quant ops.

The kernels compute exactly what csrc/cpu/fake_quant.h specifies (x / s as x * (1 / s) in fp32,
round half to even, clamp, (c - z) * s; clipped STE; LSQ partial sums), so the GPU forward equals
the CPU one and PyTorch's fake_quantize ops. register_cuda_kernels() makes them the CUDA
implementations of torch.ops.compress_kernels.fake_quant / fake_quant_backward / fake_quant_observe
(launched through torch.library.wrap_triton, so torch.compile and export trace them as ops). The host
functions also run on CPU tensors under TRITON_INTERPRET=1 (set before triton is imported), which
is how the tests check them on a machine without a GPU.

Blocking: the forward is elementwise over the flat tensor, BLOCK elements per program, the channel
of an element being (offset // inner) % channels. The backward runs one program per (span, chunk) (a flat grid)
where a span is the run of `inner` contiguous elements of one channel, so each program's LSQ partial
sums belong to a single channel; the host adds the partials in a fixed order (deterministic, no
atomics). That is efficient when inner is large (per tensor, weights along axis 0, NCHW activations);
a channel axis that is the last one (inner = 1) runs correctly but with one element per span.
"""

from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl

    TRITON_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    triton = None
    tl = None
    TRITON_ERROR = exc

BLOCK = 1024  # elements per program: 4 KB of fp32 per operand, enough to saturate the memory system
SPAN_BLOCK = 1024  # elements per backward program within one span
MAX_LEVEL = 2**23

if TRITON_ERROR is None:

    @triton.jit
    def _round_half_even(v):
        # |v| + 2^23 lands in [2^23, 2^24) where the fp32 spacing is 1, so the addition rounds |v| to an
        # integer, ties to even; larger |v| are integers already. The sign is put back (NaN stays NaN).
        a = tl.abs(v)
        r = tl.where(a < 8388608.0, (a + 8388608.0) - 8388608.0, a)
        return tl.where(v < 0, -r, r)

    @triton.jit
    def _fake_quant_fwd_kernel(x_ptr, y_ptr, mask_ptr, scale_ptr, inv_ptr, zp_ptr, n, inner, channels,
                               qmin, qmax, PER_CHANNEL: tl.constexpr, HAS_MASK: tl.constexpr,
                               BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = offs < n
        x = tl.load(x_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        if PER_CHANNEL:
            c = (offs // inner) % channels
            s = tl.load(scale_ptr + c, mask=valid, other=1.0)
            inv = tl.load(inv_ptr + c, mask=valid, other=1.0)
            z = tl.load(zp_ptr + c, mask=valid, other=0.0)
        else:
            s = tl.load(scale_ptr)
            inv = tl.load(inv_ptr)
            z = tl.load(zp_ptr)
        q = _round_half_even(x * inv) + z
        c_q = tl.minimum(tl.maximum(q, qmin), qmax)
        c_q = tl.where(q != q, q, c_q)  # NaN propagates, as on the CPU
        y = (c_q - z) * s
        if HAS_MASK:
            keep = tl.load(mask_ptr + offs, mask=valid, other=0) != 0
            y = tl.where(keep, y, 0.0)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=valid)

    @triton.jit
    def _fake_quant_bwd_kernel(g_ptr, x_ptr, gx_ptr, mask_ptr, scale_ptr, inv_ptr, zp_ptr, partial_s_ptr,
                               partial_z_ptr, inner, channels, chunks, qmin, qmax, HAS_MASK: tl.constexpr,
                               SUMS: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        span = pid // chunks
        chunk = pid % chunks
        c = span % channels
        inv = tl.load(inv_ptr + c)
        z = tl.load(zp_ptr + c)
        pos = chunk * BLOCK + tl.arange(0, BLOCK)
        valid = pos < inner
        offs = span * inner + pos
        x = tl.load(x_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        v = x * inv
        r = _round_half_even(v)
        q = r + z
        inside = (q >= qmin) & (q <= qmax)
        kept = valid
        if HAS_MASK:
            kept = kept & (tl.load(mask_ptr + offs, mask=valid, other=0) != 0)
        tl.store(gx_ptr + offs, tl.where(inside & kept, g, 0.0).to(gx_ptr.dtype.element_ty), mask=valid)
        if SUMS:
            d = tl.where(inside, r - v, tl.where(q < qmin, qmin - z, qmax - z))
            ds = tl.sum(tl.where(kept, d * g, 0.0), axis=0)
            dz = tl.sum(tl.where(kept & (~inside), g, 0.0), axis=0)
            tl.store(partial_s_ptr + pid, ds)
            tl.store(partial_z_ptr + pid, dz)


def _require_triton():
    if TRITON_ERROR is not None:
        raise RuntimeError(f"compress_kernels: triton is not available ({TRITON_ERROR})")


def _launch(kernel, grid, *args, **meta):
    """Launch through torch.library.wrap_triton so make_fx / torch.compile record the kernel.
    enable_fp_fusion=False: no fused multiply-add, so every step rounds like the CPU kernels."""
    return torch.library.wrap_triton(kernel)[grid](*args, enable_fp_fusion=False, **meta)


def _prepare(op, x, scale, zero_point, qmin, qmax, axis, mask):
    """The checks of csrc/ops/cpu_fake_quant.cpp (same messages) and the fp32 qparam vectors."""
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise RuntimeError(f"{op}: x must be float32, bfloat16 or float16 on the Triton path, got {x.dtype}")
    if not qmin < qmax:
        raise RuntimeError(f"{op}: qmin must be < qmax, got qmin={qmin} qmax={qmax}")
    if qmin < -MAX_LEVEL or qmax > MAX_LEVEL:
        raise RuntimeError(f"{op}: [qmin, qmax] must lie in [-2^23, 2^23], got [{qmin}, {qmax}]")
    if axis is not None:
        if x.dim() == 0 or not -x.dim() <= axis < x.dim():
            raise RuntimeError(f"{op}: axis must be in [{-x.dim()}, {x.dim() - 1}] for a {x.dim()}-D x, got {axis}")
        axis = axis % x.dim()
    channels = 1 if axis is None else x.shape[axis]
    if scale.numel() != channels or zero_point.numel() != channels:
        raise RuntimeError(f"{op}: scale must have {channels} element(s) and zero_point like scale, got "
                           f"{scale.numel()} and {zero_point.numel()}")
    s = scale.detach().reshape(-1).to(device=x.device, dtype=torch.float32)
    z = torch.round(zero_point.detach().reshape(-1).to(device=x.device, dtype=torch.float32))
    if not bool(torch.all(torch.isfinite(s) & (s > 0))):
        raise RuntimeError(f"{op}: scale must be finite and > 0, got {s.tolist()}")
    if not bool(torch.all((z >= qmin) & (z <= qmax))):
        raise RuntimeError(f"{op}: zero_point must lie in [qmin, qmax] = [{qmin}, {qmax}], got {z.tolist()}")
    if mask is not None:
        if mask.shape != x.shape:
            raise RuntimeError(f"{op}: mask must have x's shape {list(x.shape)}, got {list(mask.shape)}")
        mask = (mask != 0).contiguous().view(torch.uint8)
    inner = 1
    if axis is not None:
        for d in x.shape[axis + 1:]:
            inner *= d
    else:
        inner = max(x.numel(), 1)
    inv = 1.0 / s  # rounded to fp32, as the CPU path and PyTorch
    return x.contiguous(), s, inv, z, mask, channels, inner


def fake_quant(x, scale, zero_point, qmin, qmax, axis=None, mask=None, grad_factor=None):
    """Forward of compress_kernels.fake_quant on the Triton path (see ops.fake_quant)."""
    _require_triton()
    xc, s, inv, z, m, channels, inner = _prepare("fake_quant", x, scale, zero_point, qmin, qmax, axis, mask)
    y = torch.empty_like(xc)
    n = xc.numel()
    if n:
        _launch(_fake_quant_fwd_kernel, (triton.cdiv(n, BLOCK),), xc, y, m if m is not None else xc, s, inv, z, n,
                inner, channels, float(qmin), float(qmax), PER_CHANNEL=channels > 1, HAS_MASK=m is not None,
                BLOCK=BLOCK)
    return y.view(x.shape)


def fake_quant_backward(grad, x, scale, zero_point, qmin, qmax, axis, mask, grad_factor, scale_grad,
                        zero_point_grad):
    """(grad_x, grad_scale, grad_zero_point) of fake_quant on the Triton path: one pass computing
    grad_x and per-(span, chunk) LSQ partial sums, added on the host in a fixed order."""
    _require_triton()
    xc, s, inv, z, m, channels, inner = _prepare("fake_quant_backward", x, scale, zero_point, qmin, qmax, axis,
                                                 mask)
    if grad.shape != x.shape or grad.dtype != x.dtype:
        raise RuntimeError(f"fake_quant_backward: grad must have x's shape and dtype {list(x.shape)} {x.dtype}, "
                           f"got {list(grad.shape)} {grad.dtype}")
    g = grad.contiguous()
    grad_x = torch.empty_like(xc)
    n = xc.numel()
    spans = n // inner if n else 0
    chunks = triton.cdiv(inner, SPAN_BLOCK)
    sums = scale_grad or zero_point_grad
    partial = torch.zeros((2, max(spans * chunks, 1)), dtype=torch.float32, device=x.device)
    if n:
        _launch(_fake_quant_bwd_kernel, (spans * chunks,), g, xc, grad_x, m if m is not None else xc, s, inv, z,
                partial[0], partial[1], inner, channels, chunks, float(qmin), float(qmax),
                HAS_MASK=m is not None, SUMS=sums, BLOCK=SPAN_BLOCK)
    zp_dtype = zero_point.dtype if zero_point.dtype.is_floating_point else torch.float32
    grad_scale = torch.zeros(scale.shape, dtype=scale.dtype, device=scale.device)
    grad_zp = torch.zeros(zero_point.shape, dtype=zp_dtype, device=zero_point.device)
    if sums and n:
        per_channel = partial.double().view(2, spans // channels, channels, chunks).sum(dim=(1, 3))
        count = max(1.0, n / channels)
        qp = qmax if qmax > 0 else qmax - qmin
        factor = 1.0 / math.sqrt(count * qp) if grad_factor is None else grad_factor
        if scale_grad:
            grad_scale = (factor * per_channel[0]).to(scale.dtype).view(scale.shape)
        if zero_point_grad:
            grad_zp = (-s.double() * factor * per_channel[1]).to(zp_dtype).view(zero_point.shape)
    return grad_x.view(x.shape), grad_scale, grad_zp


def fake_quant_observe(x, running_min, running_max, momentum, qmin, qmax, symmetric=False, axis=None, mask=None):
    """EMA min/max observer + fake quant on the Triton path: the batch range from torch.aminmax on
    the device, the running-range update and the qparams in fp32 tensor arithmetic (the same
    operations as the CPU op), then the forward kernel. Updates running_min / running_max in place."""
    _require_triton()
    if not 0 < momentum <= 1:
        raise RuntimeError(f"fake_quant_observe: momentum must be in (0, 1], got {momentum}")
    if x.numel() == 0:
        raise RuntimeError("fake_quant_observe: x must not be empty (nothing to observe)")
    if axis is None:
        bmin, bmax = torch.aminmax(x.detach())
        bmin, bmax = bmin.float().reshape(1), bmax.float().reshape(1)
    else:
        a = axis % x.dim()
        flat = x.detach().movedim(a, 0).reshape(x.shape[a], -1)
        bmin, bmax = torch.aminmax(flat, dim=1)
        bmin, bmax = bmin.float(), bmax.float()
    if not bool(torch.isfinite(bmin).all() & torch.isfinite(bmax).all()):
        raise RuntimeError("fake_quant_observe: x must be finite to be observed")
    rmin, rmax = running_min.view(-1), running_max.view(-1)
    fresh = (rmin == math.inf) | (rmax == -math.inf)
    rmin.copy_(torch.where(fresh, bmin, rmin + momentum * (bmin - rmin)))
    rmax.copy_(torch.where(fresh, bmax, rmax + momentum * (bmax - rmax)))
    eps = torch.finfo(torch.float32).eps
    min_neg, max_pos = rmin.clamp(max=0), rmax.clamp(min=0)
    if symmetric:
        scale = torch.clamp(torch.maximum(-min_neg, max_pos) / float((qmax - qmin) / 2), min=eps)
        zp = torch.full_like(scale, 0 if qmin < 0 else (qmin + qmax + 1) // 2, dtype=torch.int32)
    else:
        scale = torch.clamp((max_pos - min_neg) / float(qmax - qmin), min=eps)
        zp = (qmin - torch.round(min_neg / scale)).clamp(qmin, qmax).to(torch.int32)
    y = fake_quant(x, scale, zp, qmin, qmax, axis, mask)
    return y, scale.view(running_min.shape), zp.view(running_min.shape)


_REGISTERED = False


def register_cuda_kernels() -> bool:
    """Make the Triton functions the CUDA implementations of the fake-quant ops (once). Returns
    whether they are registered (False without triton)."""
    global _REGISTERED
    if TRITON_ERROR is not None:
        return False
    if not _REGISTERED:
        torch.library.register_kernel("compress_kernels::fake_quant", "cuda", fake_quant)
        torch.library.register_kernel("compress_kernels::fake_quant_backward", "cuda", fake_quant_backward)
        torch.library.register_kernel("compress_kernels::fake_quant_observe", "cuda", fake_quant_observe)
        _REGISTERED = True
    return True
