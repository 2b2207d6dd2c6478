"""Small, dependency-free training and evaluation loops for the studies and accuracy tests."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 0.05,
          batch_size: int = 64, momentum: float = 0.9, weight_decay: float = 5e-4, seed: int = 0,
          progress: bool = False, loss_fn: Callable | None = None,
          after_step: Callable[[nn.Module], None] | None = None,
          params=None, augment: bool = True, desc: str = "train") -> nn.Module:
    """SGD with momentum and a cosine learning-rate schedule over `epochs` passes of (x, y).

    loss_fn(model, xb, yb) -> loss replaces cross-entropy (e.g. for distillation); after_step(model)
    runs after every optimizer step (e.g. to re-apply pruning masks); params restricts what is
    trained; augment adds random shifts of up to 2 pixels. Returns the model (in eval mode)."""
    g = torch.Generator().manual_seed(seed)
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = max(epochs * steps_per_epoch, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    model.train()
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            if augment:
                dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = loss_fn(model, xb, yb) if loss_fn is not None else F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step(model)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return model


def distillation_loss(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.7) -> Callable:
    """loss_fn for train(): alpha * T^2 * KL(student_T || teacher_T) + (1 - alpha) * CE."""
    teacher.eval()

    def loss_fn(model, xb, yb):
        with torch.no_grad():
            t = teacher(xb)
        s = model(xb)
        kd = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1), reduction="batchmean")
        return alpha * temperature**2 * kd + (1 - alpha) * F.cross_entropy(s, yb)

    return loss_fn


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (predict(model, x, batch_size) == y).float().mean().item()
