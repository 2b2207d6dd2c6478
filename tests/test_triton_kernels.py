"""The Triton fake-quant kernels (the GPU path) on the CPU under TRITON_INTERPRET=1: forward equals
the CPU op and PyTorch, backward equals the reference, the observer equals the CPU op, masks and
argument checks. Small sizes: the interpreter runs on numpy. On a CUDA machine the same kernels
are also run on the GPU through torch.ops.compress_kernels."""

import math
import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

import pytest  # noqa: E402
import torch  # noqa: E402

from compress_kernels import ops  # noqa: E402
from compress_kernels import reference as ref  # noqa: E402

tk = pytest.importorskip("compress_kernels.triton_kernels")
if tk.TRITON_ERROR is not None:
    pytest.skip(f"triton is not importable: {tk.TRITON_ERROR}", allow_module_level=True)

CUDA = torch.cuda.is_available()

LAYOUTS = [((3000,), None), ((6, 5, 70), 1), ((33, 40), -1), ((4, 1500), 0)]


def sample(shape, seed=0, dtype=torch.float32):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2).to(dtype)


def qparams(x, axis, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = 1 if axis is None else x.shape[axis]
    return torch.rand(c, generator=g) * 0.05 + 0.01, torch.randint(-20, 20, (c,), generator=g, dtype=torch.int32)


@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_forward_equals_cpu_op_and_torch(shape, axis):
    x = sample(shape)
    x[0] = math.nan if axis is None else x[0]
    s, z = qparams(x, axis)
    y = tk.fake_quant(x, s, z, -128, 127, axis)
    torch.testing.assert_close(y, ops.fake_quant(x, s, z, -128, 127, axis), rtol=0, atol=0, equal_nan=True)
    if axis is not None:
        assert torch.equal(y, torch.fake_quantize_per_channel_affine(x, s, z, axis % x.dim(), -128, 127))


def test_forward_ties_and_low_precision():
    k = torch.arange(-200, 200, dtype=torch.float32)
    x = (k + 0.5) * 0.25
    assert torch.equal(tk.fake_quant(x, torch.tensor([0.25]), torch.tensor([0]), -128, 127),
                       ops.fake_quant(x, 0.25, 0, -128, 127))
    xh = sample((500,), dtype=torch.float16)
    assert torch.equal(tk.fake_quant(xh, torch.tensor([0.02]), torch.tensor([3]), -128, 127),
                       ops.fake_quant(xh, 0.02, 3, -128, 127))


@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_backward_equals_reference(shape, axis):
    x, g = sample(shape) * 2, sample(shape, seed=1)
    s, z = qparams(x, axis)
    mask = sample(shape, seed=2) > -0.5
    gx, gs, gz = tk.fake_quant_backward(g, x, s, z.float(), -128, 127, axis, mask, None, True, True)
    rx, rs, rz = ref.fake_quant_backward(g, x, s, z.float(), -128, 127, axis, mask)
    assert torch.equal(gx, rx)
    # fp32 partial sums per 1024-element chunk (fp64 on the CPU path).
    torch.testing.assert_close(gs, rs, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gz, rz, rtol=1e-4, atol=1e-6)


def test_mask_forward():
    x = sample((40, 30))
    mask = sample((40, 30), seed=3) > 0
    y = tk.fake_quant(x, torch.tensor([0.05]), torch.tensor([1]), -128, 127, None, mask)
    assert torch.all(y[~mask] == 0)
    assert torch.equal(y, ops.fake_quant(x, 0.05, 1, -128, 127, None, mask))


@pytest.mark.parametrize("axis,symmetric", [(None, False), (1, True)])
def test_observe_equals_cpu_op(axis, symmetric):
    c = 1 if axis is None else 5
    stats = [torch.full((c,), math.inf), torch.full((c,), -math.inf)]
    cpu = [t.clone() for t in stats]
    for step in range(2):
        x = sample((6, 5, 70), seed=step) + step
        y, s, z = tk.fake_quant_observe(x, stats[0], stats[1], 0.1, 0, 255, symmetric, axis)
        ye, se, ze = ops.fake_quant_observe(x, cpu[0], cpu[1], 0.1, 0, 255, symmetric, axis)
        assert torch.equal(stats[0], cpu[0]) and torch.equal(stats[1], cpu[1])
        assert torch.equal(s, se) and torch.equal(z, ze) and torch.equal(y, ye)


BAD = [
    (lambda: tk.fake_quant(sample((4,)), torch.tensor([0.0]), torch.tensor([0]), -128, 127), "scale must be finite"),
    (lambda: tk.fake_quant(sample((4,)), torch.tensor([0.1]), torch.tensor([0]), 3, 3), "qmin must be < qmax"),
    (lambda: tk.fake_quant(sample((4,)), torch.tensor([0.1]), torch.tensor([300]), -128, 127),
     r"zero_point must lie in \[qmin, qmax\]"),
    (lambda: tk.fake_quant(sample((4, 3)), torch.ones(3), torch.zeros(3), -128, 127, 2), "axis must be in"),
    (lambda: tk.fake_quant(sample((4,)), torch.tensor([0.1]), torch.tensor([0]), -128, 127, None,
                           torch.ones(3, dtype=torch.bool)), "mask must have x's shape"),
    (lambda: tk.fake_quant(sample((4, 3)), torch.ones(2), torch.zeros(2), -128, 127, 1), "scale must have 3"),
    (lambda: tk.fake_quant(sample((4,)).double(), torch.tensor([0.1]), torch.tensor([0]), -128, 127),
     "x must be float32, bfloat16 or float16"),
    (lambda: tk.fake_quant(sample((4,)), torch.tensor([0.1]), torch.tensor([0]), 0, 2**24), r"\[-2\^23, 2\^23\]"),
    (lambda: tk.fake_quant_backward(sample((4,)), sample((5,)), torch.tensor([0.1]), torch.tensor([0.0]), -128,
                                    127, None, None, None, True, True), "grad must have x's shape"),
    (lambda: tk.fake_quant_observe(sample((4,)), torch.zeros(1), torch.zeros(1), 0.0, 0, 255), "momentum"),
    (lambda: tk.fake_quant_observe(torch.zeros(0), torch.zeros(1), torch.zeros(1), 0.1, 0, 255), "must not be empty"),
    (lambda: tk.fake_quant_observe(torch.tensor([math.inf]), torch.zeros(1), torch.zeros(1), 0.1, 0, 255),
     "must be finite"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_arguments(case):
    call, message = BAD[case]
    with pytest.raises(RuntimeError, match=message):
        call()


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_dispatch_autograd_and_compile():  # pragma: no cover - no GPU here
    x = sample((64, 300)).cuda().requires_grad_()
    s, z = qparams(x, 0)
    s = s.cuda().requires_grad_()
    z = z.cuda()
    y = ops.fake_quant(x, s, z, -128, 127, 0)
    assert torch.equal(y.cpu(), ops.fake_quant(x.detach().cpu(), s.detach().cpu(), z.cpu(), -128, 127, 0))
    y.sum().backward()
    compiled = torch.compile(lambda x: ops.fake_quant(x, s.detach(), z, -128, 127, 0), fullgraph=True)
    assert torch.equal(compiled(x.detach()), y.detach())
